r"""LinearScope: the exact local linear view :math:`f(x) = A(x)\,x + c(x)` of a module.

Recipe: Navarrete Michelini, Liu, Lu & Jiang, "A Tour of Convolutional Networks Guided by Linear
Interpreters" (ICCV 2019, arXiv 1908.05168; reconstructed from the paper's description,
checked against the abstract: "a hooking layer, called a LinearScope, which allows us to
run the network and the linear interpreter in parallel ... popular networks use a pixel-wise vote
per class strategy and heavily rely on bias parameters").

For a network built from affine layers (linear, convolution, eval-mode batch norm, average
pooling, flatten) and piecewise-linear units (ReLU, leaky ReLU, ReLU6 / hardtanh, max pooling),
freezing every unit's *gate* at the input :math:`x` (which inputs pass, which max-pool index
wins, which side of a clamp is active) leaves an affine map :math:`F_x(x') = A(x)\,x' + c(x)`
with :math:`F_x(x) = f(x)`. :math:`A(x)` is the Jacobian of :math:`f` at :math:`x` (exact: the
gates are locally constant) and :math:`c(x) = F_x(0)` is the *bias path*: what the biases (and
the constants of saturated clamps) contribute through the gates of :math:`x`.

Two routes, one definition:

* ``method="gates"`` (the paper's hook): a doubled batch :math:`[x; 0]` runs through the
  module; a hook on each piecewise-linear unit computes the first half normally and applies the
  first half's frozen gate to the second half, so the second half returns :math:`c(x)`.
  :math:`A(x)\,x` comes from one forward-mode product (``torch.func.jvp`` with tangent
  :math:`x`). The two are independent, so ``reconstruction_error``
  :math:`= \max |A(x)x + c(x) - f(x)|` is a real check; a non-linearity the hooks cannot see
  (``F.relu`` called inside ``forward``) breaks it, and the call is refused.
* ``method="jacobian"``: :math:`A(x)\,x` by the same product and :math:`c(x) := f(x) - A(x)\,x`.
  For a piecewise-linear module this is the bias path above. For any other differentiable module
  (GELU, SiLU, softmax, layer norm) the identity holds *by construction* and means something
  else: :math:`A(x)x + c(x)` is the first-order Taylor expansion of :math:`f` around :math:`x`
  evaluated at :math:`x`, :math:`c(x)` is the intercept of the tangent plane at :math:`x` (not a
  bias contribution; a smooth unit's curvature leaks into it), and :math:`A(x)x' + c(x)` does
  not reproduce :math:`f(x')` anywhere else. ``piecewise_linear`` in the result says which case
  it is.

``method="auto"`` takes ``gates`` when every leaf module is recognised as affine or
piecewise-linear and ``jacobian`` otherwise.

Bias share (defined per sample, medians in the record):

* ``bias_share`` :math:`= \lVert c(x)\rVert_2 / \lVert f(x)\rVert_2` (can exceed 1 when the
  two parts cancel);
* ``bias_fraction`` :math:`= \lVert c(x)\rVert_2 / (\lVert A(x)x\rVert_2 + \lVert c(x)\rVert_2)`
  in [0, 1];
* ``class_bias_share`` :math:`= |c_y| / (|A_y x| + |c_y|)` for the largest output
  :math:`y = \arg\max_j f_j(x)` (the recipe's per-class share, for logits).

``matrix=True`` also returns :math:`A(x)` itself, (n, outputs, inputs) on flattened shapes:
its rows are what each output looks at (per-class pixel votes for a classifier), its columns
the response to an input impulse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

__all__ = ["LinearScopeResult", "linear_scope"]

Method = Literal["auto", "gates", "jacobian"]


@dataclass(frozen=True)
class LinearScopeResult(RecordedResult):
    """The decomposition :math:`f(x) = A(x)x + c(x)` of a batch (outputs flattened per sample).

    Record keys (one record, layer ``""``): ``method`` ("gates" or "jacobian"),
    ``piecewise_linear`` (bool), ``n_samples``, ``n_inputs``, ``n_outputs``,
    ``bias_share_median``, ``bias_fraction_median``, ``class_bias_share_median``,
    ``reconstruction_error``.

    Attributes
    ----------
    output : ndarray (n, m)
        :math:`f(x)`.
    linear : ndarray (n, m)
        :math:`A(x)\\,x`.
    bias : ndarray (n, m)
        :math:`c(x)`.
    matrix : ndarray (n, m, p) or None
        :math:`A(x)` when asked for.
    bias_share, bias_fraction, class_bias_share : ndarray (n,)
        Per-sample shares (module docstring).
    reconstruction_error : float
        :math:`\\max |A(x)x + c(x) - f(x)|` (with ``matrix``, :math:`A(x)x` is the matrix
        product, so it also checks the matrix).
    method : str
    piecewise_linear : bool
        Every leaf module is affine or a recognised piecewise-linear unit.
    """

    analysis: ClassVar[str] = "concepts_linearscope"

    output: np.ndarray
    linear: np.ndarray
    bias: np.ndarray
    matrix: np.ndarray | None
    bias_share: np.ndarray
    bias_fraction: np.ndarray
    class_bias_share: np.ndarray
    reconstruction_error: float
    method: str
    piecewise_linear: bool

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        n, m = self.output.shape
        p = int(self.matrix.shape[2]) if self.matrix is not None else -1
        return [("", {
            "method": self.method,
            "piecewise_linear": bool(self.piecewise_linear),
            "n_samples": int(n),
            "n_inputs": p,
            "n_outputs": int(m),
            "bias_share_median": float(np.median(self.bias_share)),
            "bias_fraction_median": float(np.median(self.bias_fraction)),
            "class_bias_share_median": float(np.median(self.class_bias_share)),
            "reconstruction_error": float(self.reconstruction_error),
        })]


def _kinds() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(affine leaf types, piecewise-linear unit types, train-mode-sensitive types)."""
    from torch import nn

    affine = (
        nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
        nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Flatten,
        nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
        nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    )
    gates = (nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    train_sensitive = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout,
                       nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
    return affine, gates, train_sensitive


def _leaves(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if not any(True for _ in m.children())]


def _classify(module: torch.nn.Module) -> tuple[bool, str]:
    """(piecewise_linear, the first unrecognised leaf's description or "")."""
    affine, gates, train_sensitive = _kinds()
    for name, m in _leaves(module):
        where = f"{name or '<root>'!r} ({type(m).__name__})"
        if isinstance(m, train_sensitive) and m.training:
            raise RepscopeValueError(
                f"linear_scope: module {where} is in training mode, so f(x) depends on the "
                "batch (batch statistics or dropout); expected a module in eval mode (call "
                "module.eval() first)."
            )
        if isinstance(m, gates) and getattr(m, "return_indices", False):
            return False, f"{name!r} ({type(m).__name__} with return_indices)"
        if not isinstance(m, affine + gates):
            return False, where
    return True, ""


def _frozen(m: Any, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The second branch through unit ``m`` with the gate of the first branch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if isinstance(m, nn.LeakyReLU):
        return torch.where(z1 > 0, z2, m.negative_slope * z2)
    if isinstance(m, nn.ReLU):
        return torch.where(z1 > 0, z2, torch.zeros_like(z2))
    if isinstance(m, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        lo, hi = float(m.min_val), float(m.max_val)
        inside = (z1 > lo) & (z1 < hi)
        return torch.where(inside, z2, torch.where(z1 >= hi, torch.full_like(z2, hi),
                                                   torch.full_like(z2, lo)))
    pool = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
    fn = pool[type(m)] if type(m) in pool else next(f for t, f in pool.items() if isinstance(m, t))
    out, idx = fn(z1, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode,
                  return_indices=True)
    flat = z2.flatten(2).gather(2, idx.flatten(2))
    return flat.view_as(out)


def _bias_path(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x), c(x)): the doubled batch [x; 0] with every piecewise-linear unit gate-frozen."""
    import torch

    _, gates, _ = _kinds()
    n = x.shape[0]
    saved: dict[int, torch.Tensor] = {}
    handles = []

    def pre(m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        z = args[0]
        saved[id(m)] = z
        return (z.clone(), *args[1:])  # an in-place unit then overwrites the copy only

    def post(m: Any, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        z = saved.pop(id(m))
        if z.shape[0] != 2 * n:
            raise RepscopeValueError(
                f"linear_scope(method='gates'): a {type(m).__name__} saw a batch of "
                f"{z.shape[0]} rows; expected {2 * n} (the module must keep the batch "
                "dimension first and treat samples independently)."
            )
        return torch.cat([out[:n], _frozen(m, z[:n], z[n:])], dim=0)

    try:
        for _, m in _leaves(module):
            if isinstance(m, gates):
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
        with torch.no_grad():
            both = module(torch.cat([x, torch.zeros_like(x)], dim=0))
    finally:
        for h in handles:
            h.remove()
    if not isinstance(both, torch.Tensor):
        raise RepscopeTypeError(
            f"linear_scope: the module must return a tensor; got {type(both).__name__}."
        )
    return both[:n], both[n:]


def linear_scope(
    module: torch.nn.Module,
    x: Any,
    *,
    method: Method = "auto",
    matrix: bool = False,
    max_matrix_entries: int = 20_000_000,
) -> LinearScopeResult:
    """Decompose ``module`` at each input of the batch ``x`` as :math:`A(x)x + c(x)`.

    Parameters
    ----------
    module : torch.nn.Module
        In eval mode; maps a batch (n, ...) to a tensor (n, ...) treating samples independently.
    x : Tensor or array (n, ...)
        Floating inputs (the module's dtype is used as is; float64 gives the tightest check).
    method : {"auto", "gates", "jacobian"}
        See the module docstring. ``"gates"`` refuses a module with a leaf it does not know
        as affine or piecewise-linear.
    matrix : bool
        Also return :math:`A(x)` (one reverse-mode Jacobian per sample).
    max_matrix_entries : int
        Refuse ``matrix=True`` when n x outputs x inputs exceeds this.

    Returns
    -------
    LinearScopeResult

    Raises
    ------
    RepscopeValueError
        Unknown ``method``; a module in training mode with batch norm or dropout; ``"gates"``
        on a module with an unrecognised leaf, or whose gate-frozen bias path does not
        reproduce f(x) (a non-linearity hidden from the hooks); a matrix over the limit;
        an empty or non-floating batch.
    RepscopeTypeError
        ``module`` is not a torch module or does not return a tensor.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise RepscopeTypeError(
            f"linear_scope: module must be a torch.nn.Module; got {type(module).__name__}."
        )
    if method not in ("auto", "gates", "jacobian"):
        raise RepscopeValueError(
            f"linear_scope: method must be 'auto', 'gates' or 'jacobian'; got {method!r}."
        )
    xt = torch.as_tensor(x)
    if not xt.is_floating_point() or xt.ndim < 1 or xt.shape[0] == 0:
        raise RepscopeValueError(
            "linear_scope: x must be a non-empty floating batch (n, ...); got "
            f"dtype {xt.dtype} and shape {tuple(xt.shape)}."
        )
    pl, culprit = _classify(module)
    if method == "gates" and not pl:
        raise RepscopeValueError(
            f"linear_scope(method='gates'): leaf module {culprit} is neither affine nor a "
            "piecewise-linear unit it can freeze; expected only Linear/Conv/BatchNorm(eval)/"
            "pooling and ReLU/LeakyReLU/ReLU6/Hardtanh/MaxPool (use method='jacobian' for the "
            "tangent-plane view)."
        )
    use = ("gates" if pl else "jacobian") if method == "auto" else method
    n = int(xt.shape[0])

    from torch.func import jvp

    with torch.no_grad():
        pair = jvp(module, (xt,), (xt,))
    f, ax = pair[0], pair[1]
    if not isinstance(f, torch.Tensor):
        raise RepscopeTypeError(
            f"linear_scope: the module must return a tensor; got {type(f).__name__}."
        )
    f2, ax2 = f.reshape(n, -1), ax.reshape(n, -1)
    if use == "gates":
        f_g, c = _bias_path(module, xt)
        c2 = c.reshape(n, -1)
        scale = float(f2.abs().max()) + 1.0
        err = float((ax2 + c2 - f2).abs().max())
        tol = 1e3 * float(torch.finfo(f2.dtype).eps) * scale * max(1.0, float(np.sqrt(xt[0].numel())))
        if err > tol or float((f_g.reshape(n, -1) - f2).abs().max()) > tol:
            raise RepscopeValueError(
                "linear_scope(method='gates'): A(x)x + c(x) misses f(x) by "
                f"{err:.3g} (tolerance {tol:.2g}); the module hides a non-linearity from the "
                "hooks (a functional call such as F.relu inside forward) or mixes samples; "
                "expected a module built from the recognised layers (method='jacobian' gives "
                "the tangent-plane view)."
            )
    else:
        c2 = f2 - ax2

    A = None
    lin = ax2
    if matrix:
        p = int(xt[0].numel())
        m_out = int(f2.shape[1])
        if n * m_out * p > max_matrix_entries:
            raise RepscopeValueError(
                f"linear_scope: matrix=True needs {n} x {m_out} x {p} = {n * m_out * p:,} "
                f"entries; expected at most max_matrix_entries={max_matrix_entries:,} (pass "
                "fewer samples or raise the limit)."
            )
        from torch.func import jacrev

        def one(xi: torch.Tensor) -> torch.Tensor:
            return module(xi.unsqueeze(0)).reshape(-1)

        A = torch.stack([jacrev(one)(xt[i]).reshape(m_out, p) for i in range(n)]).detach()
        lin = torch.einsum("nmp,np->nm", A, xt.reshape(n, -1))
    err_all = float((lin + c2 - f2).abs().max())

    fn = f2.detach().double().cpu().numpy()
    ln = lin.detach().double().cpu().numpy()
    cn = c2.detach().double().cpu().numpy()
    tiny = np.finfo(np.float64).tiny
    nf = np.linalg.norm(fn, axis=1)
    nl = np.linalg.norm(ln, axis=1)
    nc = np.linalg.norm(cn, axis=1)
    top = fn.argmax(axis=1)
    cy = np.abs(cn[np.arange(n), top])
    ly = np.abs(ln[np.arange(n), top])
    return LinearScopeResult(
        output=fn, linear=ln, bias=cn,
        matrix=None if A is None else A.double().cpu().numpy(),
        bias_share=nc / np.maximum(nf, tiny),
        bias_fraction=nc / np.maximum(nl + nc, tiny),
        class_bias_share=cy / np.maximum(ly + cy, tiny),
        reconstruction_error=err_all, method=use, piecewise_linear=pl,
    )
