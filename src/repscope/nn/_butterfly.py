r"""Butterfly-factorised linear maps: a drop-in ``nn.Linear`` applied in :math:`O(N \log N)`.

A butterfly matrix of size :math:`N = 2^m` is the product

.. math::

    W = B^{(N)} \,(I_2 \otimes B^{(N/2)}) \cdots (I_{N/2} \otimes B^{(2)}) \, P,

where each butterfly factor :math:`B^{(k)} = \begin{pmatrix} D_1 & D_2 \\ D_3 & D_4
\end{pmatrix}` has diagonal blocks :math:`D_i` of size :math:`k/2` (untied: :math:`2N`
parameters per factor, :math:`2N \log_2 N` in all) and :math:`P` is a fixed permutation (the
bit reversal, or none). Each factor pairs coordinate :math:`i` with :math:`i + k/2` inside every
block of :math:`k` coordinates and mixes the pair by a :math:`2 \times 2` matrix, so applying
:math:`W` costs :math:`O(N)` per factor and :math:`O(N \log N)` in all, without forming
:math:`W`.

The decimation-in-time Cooley–Tukey FFT is such a product: with :math:`\omega_k =
e^{-2\pi i/k}` the factor of block size :math:`k` holds the :math:`2 \times 2` blocks
:math:`\begin{pmatrix} 1 & \omega_k^{\,i} \\ 1 & -\omega_k^{\,i}\end{pmatrix}`,
:math:`i = 0, \dots, k/2 - 1`, and :math:`P` is the bit-reversal permutation
(:func:`dft_butterfly`). The Sylvester–Hadamard matrix :math:`H_N = H_2 \otimes H_{N/2}` has
every block equal to :math:`\begin{pmatrix} 1 & 1 \\ 1 & -1\end{pmatrix}` and :math:`P = I`
(:func:`hadamard_butterfly`). :func:`fit_butterfly` learns the factors of a given transform
from samples of it.

References
----------
.. [1] Dao, Gu, Eichhorn, Rudra and Ré, "Learning Fast Algorithms for Linear Transforms Using
   Butterfly Factorizations", ICML 2019, arXiv:1903.05895.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from repscope._validation import check_choice, check_positive_int, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._common import check_last_axis
from repscope.results import Result

__all__ = [
    "ButterflyFitResult",
    "ButterflyLinear",
    "bit_reversal_permutation",
    "dft_butterfly",
    "fit_butterfly",
    "hadamard_butterfly",
]

Permutation = Literal["bit_reversal", "identity"]
Init = Literal["random", "identity"]
_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _check_power_of_two(n: Any, name: str, caller: str) -> int:
    n = check_positive_int(n, name, caller=caller)
    if n < 2 or not _is_power_of_two(n):
        up = 1 << max(1, (n - 1).bit_length())
        raise RepscopeValueError(
            f"{name} must be a power of two (at least 2) for the butterfly factors of {caller}; "
            f"got {n}. Pad the input with zeros to {up}.")
    return n


def bit_reversal_permutation(n: int) -> Tensor:
    """The bit-reversal permutation of ``range(n)`` for ``n`` a power of two.

    Parameters
    ----------
    n : int
        A power of two, at least 2.

    Returns
    -------
    Tensor of shape (n,), int64
        ``perm[i]`` is ``i`` with its ``log2(n)`` bits reversed; ``x[..., perm]`` puts ``x`` in
        bit-reversed order (the input order of the decimation-in-time FFT).

    Raises
    ------
    RepscopeValueError
        If ``n`` is not a power of two of at least 2.

    Examples
    --------
    >>> bit_reversal_permutation(8).tolist()
    [0, 4, 2, 6, 1, 5, 3, 7]
    """
    n = _check_power_of_two(n, "n", "bit_reversal_permutation")
    m = n.bit_length() - 1
    idx = np.arange(n)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(m):
        rev |= ((idx >> b) & 1) << (m - 1 - b)
    return torch.from_numpy(rev)


class ButterflyLinear(nn.Module):
    r"""A linear layer whose weight is a butterfly product, applied in :math:`O(N \log N)`.

    ``y = x W^T + b`` like :class:`torch.nn.Linear`, with :math:`W` the first
    ``out_features`` rows and ``in_features`` columns of the butterfly product
    :math:`B^{(N)} (I_2 \otimes B^{(N/2)}) \cdots (I_{N/2} \otimes B^{(2)}) P` of size
    :math:`N`, the smallest power of two at least ``max(in_features, out_features)``: an input
    whose size is not a power of two is padded with zeros to :math:`N` and the output is cut to
    ``out_features``. The dense :math:`W` is never formed (:meth:`to_dense` forms it).

    Parameters
    ----------
    in_features : int
    out_features : int, optional
        Defaults to ``in_features``.
    bias : bool, default=True
    permutation : {"bit_reversal", "identity"}, default="bit_reversal"
        The fixed permutation :math:`P` applied first (the FFT's input order, or none).
    init : {"random", "identity"}, default="random"
        ``"random"``: every entry of every :math:`2 \times 2` block drawn from
        :math:`\mathcal N(0, 1/2)` (real and imaginary parts :math:`\mathcal N(0, 1/4)` each when
        complex), so each factor keeps the expected squared norm of its input;
        ``"identity"``: every block the identity (then :math:`W = P`).
    device : torch.device, optional
    dtype : torch.dtype, optional
        float32 (default), float64, complex64 or complex128; a complex dtype gives a complex
        layer (complex factors, complex output). The factors are stored as real tensors (the
        real and imaginary parts in a last axis of 2), so every torch optimiser applies.
    generator : torch.Generator, optional
        For ``init="random"``.

    Attributes
    ----------
    twiddle : nn.Parameter of shape (log2 N, N / 2, 2, 2) or (log2 N, N / 2, 2, 2, 2) if complex
        The :math:`2 \times 2` blocks, factor by factor from block size 2 to block size
        :math:`N`; in the factor of block size :math:`k` block ``j * k / 2 + i`` mixes
        coordinates ``j * k + i`` and ``j * k + i + k / 2``. :meth:`factors` gives them as one
        (complex) tensor.
    bias : nn.Parameter of shape (out_features,) or (out_features, 2) if complex, or None
    size : int
        :math:`N`.

    Shapes
    ------
    - input: ``(*, in_features)``, real or complex;
    - output: ``(*, out_features)``, in the promoted dtype of the input and the layer.

    Raises
    ------
    RepscopeValueError
        In ``forward``, if the input's last axis is not ``in_features``.

    Examples
    --------
    >>> layer = ButterflyLinear(16, dtype=torch.float64, bias=False)
    >>> x = torch.randn(3, 16, dtype=torch.float64)
    >>> torch.allclose(layer(x), x @ layer.to_dense().T)
    True

    References
    ----------
    .. [1] Dao, Gu, Eichhorn, Rudra and Ré, "Learning Fast Algorithms for Linear Transforms
       Using Butterfly Factorizations", ICML 2019, arXiv:1903.05895.
    """

    perm: Tensor | None

    def __init__(self, in_features: int, out_features: int | None = None, *, bias: bool = True,
                 permutation: Permutation = "bit_reversal", init: Init = "random",
                 device: Any = None, dtype: torch.dtype | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        caller = "ButterflyLinear"
        self.in_features = check_positive_int(in_features, "in_features", caller=caller)
        self.out_features = (self.in_features if out_features is None
                             else check_positive_int(out_features, "out_features", caller=caller))
        self.permutation = check_choice(permutation, "permutation",
                                        ("bit_reversal", "identity"), caller=caller)
        init_kind = check_choice(init, "init", ("random", "identity"), caller=caller)
        dtype = torch.float32 if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype.is_complex):
            raise RepscopeTypeError(
                f"dtype of ButterflyLinear must be a real or complex floating torch dtype "
                f"(float32, float64, complex64, complex128); got {dtype!r}.")
        self.is_complex = dtype.is_complex
        real = _REAL.get(dtype, dtype)
        n = max(2, self.in_features, self.out_features)
        self.size = 1 << (n - 1).bit_length()
        self.n_factors = self.size.bit_length() - 1
        shape: tuple[int, ...] = (self.n_factors, self.size // 2, 2, 2)
        if self.is_complex:
            shape = (*shape, 2)
        tw = torch.zeros(shape, dtype=real, device=device)
        with torch.no_grad():
            if init_kind == "random":
                std = math.sqrt(0.25) if self.is_complex else math.sqrt(0.5)
                tw.normal_(0.0, std, generator=generator)
            else:
                eye = torch.eye(2, dtype=real, device=device)
                if self.is_complex:
                    tw[..., 0] = eye
                else:
                    tw[...] = eye
        self.twiddle = nn.Parameter(tw)
        if bias:
            bshape = (self.out_features, 2) if self.is_complex else (self.out_features,)
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.zeros(bshape, dtype=real, device=device))
        else:
            self.register_parameter("bias", None)
        if self.permutation == "bit_reversal":
            self.register_buffer("perm", bit_reversal_permutation(self.size).to(device))
        else:
            self.perm = None

    @property
    def dtype(self) -> torch.dtype:
        """The layer's dtype (complex when its factors are)."""
        d = self.twiddle.dtype
        return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(
            d, d) if self.is_complex else d

    def factors(self) -> Tensor:
        """The :math:`2 \\times 2` blocks as one tensor of shape (log2 N, N / 2, 2, 2), complex
        for a complex layer (a view of :attr:`twiddle`, gradients flow)."""
        return torch.view_as_complex(self.twiddle) if self.is_complex else self.twiddle

    def bias_value(self) -> Tensor | None:
        """The bias as one (complex) tensor of shape (out_features,), or None."""
        if self.bias is None:
            return None
        return torch.view_as_complex(self.bias) if self.is_complex else self.bias

    def apply_butterfly(self, x: Tensor) -> Tensor:
        """The product :math:`W x` for rows of size :math:`N` (no padding, no bias).

        Parameters
        ----------
        x : Tensor of shape (n_rows, N)

        Returns
        -------
        Tensor of shape (n_rows, N)
        """
        n = self.size
        if self.perm is not None:
            x = x[:, self.perm]
        tw = self.factors()
        rows = x.shape[0]
        for level in range(self.n_factors):
            k = 2 << level
            h = k // 2
            # t[j, i]: the block mixing the pair (j k + i, j k + i + h)
            t = tw[level].reshape(n // k, h, 2, 2)
            xb = x.reshape(rows, n // k, 2, h)
            x0, x1 = xb[:, :, 0], xb[:, :, 1]
            x = torch.stack((t[..., 0, 0] * x0 + t[..., 0, 1] * x1,
                             t[..., 1, 0] * x0 + t[..., 1, 1] * x1), dim=2).reshape(rows, n)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor of shape (*, in_features)

        Returns
        -------
        Tensor of shape (*, out_features)

        Raises
        ------
        RepscopeValueError
            If the last axis of ``x`` is not ``in_features``.
        """
        check_last_axis(x, self.in_features, "ButterflyLinear")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.promote_types(x.dtype, self.dtype))
        if self.in_features < self.size:
            flat = torch.nn.functional.pad(flat, (0, self.size - self.in_features))
        y = self.apply_butterfly(flat)[:, : self.out_features]
        b = self.bias_value()
        if b is not None:
            y = y + b
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> Tensor:
        """The dense weight :math:`W` of shape (out_features, in_features), so that
        ``layer(x) = x @ W.T + bias``."""
        eye = torch.eye(self.in_features, dtype=self.dtype, device=self.twiddle.device)
        if self.in_features < self.size:
            eye = torch.nn.functional.pad(eye, (0, self.size - self.in_features))
        return self.apply_butterfly(eye)[:, : self.out_features].T

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"size={self.size}, bias={self.bias is not None}, dtype={self.dtype}, "
                f"permutation={self.permutation!r}")


def _exact_layer(n: int, dtype: torch.dtype, device: Any, permutation: Permutation,
                 blocks: Callable[[int, np.ndarray], np.ndarray], scale: float,
                 caller: str) -> ButterflyLinear:
    layer = ButterflyLinear(n, bias=False, permutation=permutation, init="identity",
                            device=device, dtype=dtype)
    m = layer.n_factors
    tw = np.empty((m, n // 2, 2, 2), dtype=np.complex128)
    for level in range(m):
        k = 2 << level
        i = np.tile(np.arange(k // 2), n // k)  # position inside the block, for every block
        tw[level] = blocks(k, i) * scale
    with torch.no_grad():
        if layer.is_complex:
            layer.twiddle.copy_(torch.view_as_real(torch.from_numpy(tw)).to(layer.twiddle.dtype))
        else:
            if np.abs(tw.imag).max() > 0:
                raise RepscopeTypeError(f"{caller} needs a complex dtype; got {dtype!r}.")
            layer.twiddle.copy_(torch.from_numpy(tw.real).to(layer.twiddle.dtype))
    return layer


def dft_butterfly(n: int, *, normalized: bool = False, inverse: bool = False,
                  dtype: torch.dtype = torch.complex128, device: Any = None) -> ButterflyLinear:
    r"""The DFT matrix as exact butterfly factors (the radix-2 Cooley–Tukey FFT).

    The factor of block size :math:`k` holds the blocks
    :math:`\begin{pmatrix} 1 & \omega_k^{\,i} \\ 1 & -\omega_k^{\,i}\end{pmatrix}`,
    :math:`\omega_k = e^{\mp 2\pi i / k}`, after the bit-reversal permutation, so that
    ``layer.to_dense()[j, l]`` is :math:`e^{\mp 2\pi i jl/n}` and ``layer(x)`` equals
    ``torch.fft.fft(x)`` (``torch.fft.ifft(x) * n`` with ``inverse``). The twiddles are computed
    in float64 and rounded once to ``dtype``.

    Parameters
    ----------
    n : int
        A power of two, at least 2.
    normalized : bool, default=False
        Scale every factor by :math:`1/\sqrt 2` (the unitary DFT, :math:`1/\sqrt n` overall).
    inverse : bool, default=False
        :math:`\omega_k = e^{+2\pi i/k}` (the unnormalised inverse DFT).
    dtype : {torch.complex128, torch.complex64}, default=torch.complex128
    device : torch.device, optional

    Returns
    -------
    ButterflyLinear
        Without bias, ``permutation="bit_reversal"``.

    Raises
    ------
    RepscopeValueError
        If ``n`` is not a power of two (pad the input with zeros to the next one).
    RepscopeTypeError
        If ``dtype`` is not complex.

    Examples
    --------
    >>> layer = dft_butterfly(8)
    >>> x = torch.randn(2, 8, dtype=torch.complex128)
    >>> torch.allclose(layer(x), torch.fft.fft(x))
    True
    """
    n = _check_power_of_two(n, "n", "dft_butterfly")
    if not isinstance(dtype, torch.dtype) or not dtype.is_complex:
        raise RepscopeTypeError(
            f"dtype of dft_butterfly must be complex64 or complex128; got {dtype!r}.")
    sign = 1.0 if inverse else -1.0

    def blocks(k: int, i: np.ndarray) -> np.ndarray:
        w = np.exp(sign * 2j * np.pi * i / k)
        out = np.empty((len(i), 2, 2), dtype=np.complex128)
        out[:, 0, 0] = 1.0
        out[:, 0, 1] = w
        out[:, 1, 0] = 1.0
        out[:, 1, 1] = -w
        return out

    scale = 1.0 / math.sqrt(2.0) if normalized else 1.0
    return _exact_layer(n, dtype, device, "bit_reversal", blocks, scale, "dft_butterfly")


def hadamard_butterfly(n: int, *, normalized: bool = False, dtype: torch.dtype = torch.float64,
                       device: Any = None) -> ButterflyLinear:
    r"""The Sylvester–Hadamard matrix :math:`H_n = H_2 \otimes H_{n/2}` as butterfly factors.

    Every block is :math:`\begin{pmatrix} 1 & 1 \\ 1 & -1\end{pmatrix}` and there is no
    permutation, so ``layer.to_dense()[j, l]`` is :math:`(-1)^{\mathrm{popcount}(j \,\&\, l)}`
    (``scipy.linalg.hadamard(n)``): the fast Walsh–Hadamard transform.

    Parameters
    ----------
    n : int
        A power of two, at least 2.
    normalized : bool, default=False
        Scale every factor by :math:`1/\sqrt 2` (an orthogonal matrix).
    dtype : torch.dtype, default=torch.float64
        Real or complex.
    device : torch.device, optional

    Returns
    -------
    ButterflyLinear
        Without bias, ``permutation="identity"``.

    Raises
    ------
    RepscopeValueError
        If ``n`` is not a power of two (pad the input with zeros to the next one).

    Examples
    --------
    >>> hadamard_butterfly(4).to_dense().detach()
    tensor([[ 1.,  1.,  1.,  1.],
            [ 1., -1.,  1., -1.],
            [ 1.,  1., -1., -1.],
            [ 1., -1., -1.,  1.]], dtype=torch.float64)
    """
    n = _check_power_of_two(n, "n", "hadamard_butterfly")

    def blocks(k: int, i: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([[1.0, 1.0], [1.0, -1.0]], dtype=np.complex128),
                               (len(i), 2, 2))

    scale = 1.0 / math.sqrt(2.0) if normalized else 1.0
    return _exact_layer(n, dtype, device, "identity", blocks, scale, "hadamard_butterfly")


@dataclass(frozen=True)
class ButterflyFitResult(Result):
    """A butterfly fitted to a transform by :func:`fit_butterfly`.

    Attributes
    ----------
    layer : ButterflyLinear
        The fitted layer (no bias).
    rmse : float
        Root mean squared error of the layer's outputs on the fitting inputs, over all
        entries (with the default identity inputs: the entry RMSE of ``layer.to_dense()``
        against the transform's matrix).
    max_abs_error : float
        The largest absolute error over the same entries.
    history : tuple of float
        The loss (mean squared error) every ``log_every`` steps, and at the end.
    n_steps : int
        Adam steps taken (fewer than ``steps`` when ``tol`` was reached).
    """

    layer: ButterflyLinear
    rmse: float
    max_abs_error: float
    history: tuple[float, ...]
    n_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "rmse": self.rmse,
                "max_abs_error": self.max_abs_error, "history": list(self.history),
                "n_steps": self.n_steps, "size": self.layer.size,
                "dtype": str(self.layer.dtype)}


def fit_butterfly(transform: Any, n: int | None = None, *, inputs: Tensor | None = None,
                  permutation: Permutation = "bit_reversal", dtype: torch.dtype | None = None,
                  steps: int = 4000, lr: float = 0.02, tol: float | None = None,
                  log_every: int = 100, seed: int = 0) -> ButterflyFitResult:
    r"""Learn butterfly factors of a linear transform from samples of it.

    Minimises the mean squared error :math:`\frac{1}{n_{\rm rows} N}\sum \lvert W x - T x
    \rvert^2` over the rows ``x`` of ``inputs`` with Adam (cosine learning-rate decay from
    ``lr`` to 0 over ``steps``), the permutation fixed. With the default identity inputs this
    is the paper's objective :math:`\lVert W I - T\rVert_F^2 / N^2`.

    Parameters
    ----------
    transform : array-like of shape (N, N), or callable
        The target: a matrix :math:`T` (``y = T x``), or a function mapping a batch of rows of
        shape (n_rows, N) to their images of shape (n_rows, N) (e.g. ``torch.fft.fft``).
    n : int, optional
        :math:`N`, a power of two; needed only for a callable without ``inputs``.
    inputs : Tensor of shape (n_rows, N), optional
        Sample inputs; default the identity (the :math:`N` basis vectors).
    permutation : {"bit_reversal", "identity"}, default="bit_reversal"
    dtype : torch.dtype, optional
        The layer's dtype. Default: complex128 / float64 for a float64 target, else complex64 /
        float32, complex when the target's outputs are.
    steps : int, default=4000
    lr : float, default=0.02
    tol : float, optional
        Stop once the RMSE falls below ``tol``.
    log_every : int, default=100
    seed : int, default=0
        Seeds the random initialisation of the factors.

    Returns
    -------
    ButterflyFitResult

    Raises
    ------
    RepscopeValueError
        If :math:`N` is not a power of two, the matrix is not square, or ``inputs`` and the
        transform's outputs disagree in shape.

    Examples
    --------
    >>> res = fit_butterfly(torch.fft.fft, n=8, steps=600)  # learn the FFT of size 8
    >>> res.rmse < 1e-4
    True
    """
    caller = "fit_butterfly"
    steps = check_positive_int(steps, "steps", caller=caller)
    log_every = check_positive_int(log_every, "log_every", caller=caller)
    check_scalar(lr, "lr", caller=caller, min_value=0.0, include_min=False)
    if tol is not None:
        check_scalar(tol, "tol", caller=caller, min_value=0.0, include_min=False)
    matrix: Tensor | None = None
    if not callable(transform):
        matrix = torch.as_tensor(np.asarray(transform) if not isinstance(transform, Tensor)
                                 else transform)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise RepscopeValueError(
                f"transform must be a square matrix of shape (N, N) or a callable; got shape "
                f"{tuple(matrix.shape)}.")
        n = int(matrix.shape[0])
    elif inputs is not None:
        n = int(inputs.shape[-1])
    elif n is None:
        raise RepscopeValueError(
            "fit_butterfly needs n (the transform's size) or inputs when transform is a "
            "callable; got neither.")
    n = _check_power_of_two(n, "n", caller)
    if inputs is None:
        probe_dtype = (matrix.dtype if matrix is not None and matrix.dtype in
                       (torch.float64, torch.complex128) else torch.float32)
        base = torch.float64 if probe_dtype in (torch.float64, torch.complex128) else torch.float32
        inputs = torch.eye(n, dtype=base)
    if inputs.ndim != 2 or inputs.shape[1] != n:
        raise RepscopeValueError(
            f"inputs must have shape (n_rows, {n}); got {tuple(inputs.shape)}.")
    with torch.no_grad():
        if matrix is not None:
            dt = torch.promote_types(inputs.dtype, matrix.dtype)
            targets = inputs.to(dt) @ matrix.to(dt).T
        else:
            targets = torch.as_tensor(transform(inputs))
    if targets.shape != inputs.shape:
        raise RepscopeValueError(
            f"the transform's outputs must have the inputs' shape {tuple(inputs.shape)}; got "
            f"{tuple(targets.shape)}.")
    if dtype is None:
        wide = torch.float64 in (inputs.dtype, targets.dtype) or torch.complex128 in (
            inputs.dtype, targets.dtype)
        cplx = targets.is_complex() or inputs.is_complex()
        dtype = {(True, True): torch.complex128, (True, False): torch.float64,
                 (False, True): torch.complex64, (False, False): torch.float32}[(wide, cplx)]
    gen = torch.Generator(device=inputs.device).manual_seed(int(seed))
    layer = ButterflyLinear(n, bias=False, permutation=permutation, init="random",
                            dtype=dtype, generator=gen, device=inputs.device)
    x = inputs.to(layer.dtype)
    y = targets.to(torch.promote_types(targets.dtype, layer.dtype))
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history: list[float] = []
    taken = 0
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (layer(x) - y).abs().pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        taken = step + 1
        value = float(loss.detach())
        if step % log_every == 0:
            history.append(value)
        if tol is not None and math.sqrt(value) < tol:
            break
    with torch.no_grad():
        err = (layer(x) - y).abs()
        rmse = float(err.pow(2).mean().sqrt())
        history.append(rmse**2)
        return ButterflyFitResult(layer=layer, rmse=rmse, max_abs_error=float(err.max()),
                                  history=tuple(history), n_steps=taken)
