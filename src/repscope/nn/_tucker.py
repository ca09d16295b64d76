"""Tucker decomposition of activation tensors: HOSVD and HOOI, and token activations as a tensor.

An activation tensor (samples x tokens x channels, or a conv map N x C x H x W) is written as a
small core multiplied by one orthonormal factor per mode,

.. math:: \\mathcal{X} \\approx \\mathcal{G} \\times_1 U^{(1)} \\times_2 U^{(2)} \\cdots
          \\times_K U^{(K)},

which says how many directions each mode needs (the multilinear rank) and how much of the
tensor's energy each mode keeps. This is the deterministic part of functional Bayesian Tucker
decomposition (Fang et al., 2024); its GP priors over continuous indices are out of scope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["TuckerResult", "hosvd", "tucker", "tucker_of_tokens"]


@dataclass(frozen=True)
class TuckerResult(RecordedResult):
    """A Tucker decomposition ``X ≈ core x_1 U1 x_2 U2 ... x_K UK``.

    ``core`` and ``factors`` come in the input's backend (numpy or torch), device and floating
    dtype; the energies are computed in float64.

    Attributes
    ----------
    core : array of shape ranks
        :math:`\\mathcal{G} = \\mathcal{X} \\times_1 U^{(1)\\top} \\cdots \\times_K U^{(K)\\top}`.
    factors : tuple of arrays, the k-th of shape (shape[k], ranks[k])
        Orthonormal columns, each sign fixed so its largest-magnitude entry is positive.
    ranks, shape : tuple of int
        The multilinear rank kept and the tensor's shape.
    mode_energy : ndarray of shape (K,)
        Fraction of :math:`\\lVert\\mathcal{X}\\rVert_F^2` kept when only mode ``k`` is
        projected onto its factor, :math:`\\lVert U^{(k)\\top} X_{(k)}\\rVert_F^2 /
        \\lVert\\mathcal{X}\\rVert_F^2`.
    mode_spectra : tuple of ndarray, the k-th of shape (shape[k],)
        Eigenvalues of the mode-``k`` unfolding's Gram matrix :math:`X_{(k)} X_{(k)}^\\top`
        (squared mode-k singular values), descending, over
        :math:`\\lVert\\mathcal{X}\\rVert_F^2`: how the energy spreads over each mode's
        directions, for choosing ranks.
    fit : float
        :math:`\\lVert\\mathcal{G}\\rVert_F^2 / \\lVert\\mathcal{X}\\rVert_F^2 =
        1 - \\lVert\\mathcal{X} - \\hat{\\mathcal{X}}\\rVert_F^2 / \\lVert\\mathcal{X}\\rVert_F^2`
        (orthonormal factors make the reconstruction an orthogonal projection).
    relative_error : float
        :math:`\\lVert\\mathcal{X} - \\hat{\\mathcal{X}}\\rVert_F / \\lVert\\mathcal{X}\\rVert_F
        = \\sqrt{1 - \\mathrm{fit}}`.
    method : {"hosvd", "hooi"}
    n_iter : int
        HOOI sweeps run (0 for HOSVD).
    """

    analysis: ClassVar[str] = "tucker"

    core: Any
    factors: tuple[Any, ...]
    ranks: tuple[int, ...]
    shape: tuple[int, ...]
    mode_energy: np.ndarray
    mode_spectra: tuple[np.ndarray, ...]
    fit: float
    relative_error: float
    method: str
    n_iter: int

    def reconstruct(self) -> Any:
        """The Tucker approximation, an array of ``shape`` in the core's backend and dtype."""
        is_np = isinstance(self.core, np.ndarray)
        core = torch.from_numpy(self.core) if is_np else self.core
        out = core
        for k, u in enumerate(self.factors):
            out = _mode_product(out, torch.from_numpy(u) if is_np else u, k)
        return out.numpy() if is_np else out

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``tucker`` record: ranks, shape, energy per mode and the fit."""
        return [("", {
            "method": self.method,
            "ranks": list(self.ranks),
            "shape": list(self.shape),
            "mode_energy": self.mode_energy,
            "mode_spectra": [s[: max(self.ranks)] for s in self.mode_spectra],
            "fit": self.fit,
            "relative_error": self.relative_error,
            "n_iter": self.n_iter})]


def _mode_product(x: Tensor, m: Tensor, k: int) -> Tensor:
    """The mode-``k`` product ``x x_k m`` for ``m`` of shape (J, I_k): mode ``k`` of size I_k
    becomes size J."""
    return torch.movedim(torch.tensordot(x, m, dims=([k], [1])), -1, k)


def _mode_gram(x: Tensor, k: int) -> Tensor:
    """``X_(k) X_(k)^T`` of shape (I_k, I_k)."""
    other = [d for d in range(x.ndim) if d != k]
    return torch.tensordot(x, x, dims=(other, other))


def _top_eigvecs(gram: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """All eigenvalues (descending) and the top-``r`` eigenvectors, signs fixed."""
    vals, vecs = torch.linalg.eigh(gram)
    vals, vecs = torch.flip(vals, [0]), torch.flip(vecs, [1])
    u = vecs[:, :r]
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(r, device=u.device)])
    signs[signs == 0] = 1
    return vals.clamp_min(0), u * signs


def _as_tensor(tensor: Any, name: str) -> tuple[Tensor, bool, Any]:
    """float64 torch copy of the input, whether it was numpy, and the dtype to return."""
    out_dtype: Any
    if isinstance(tensor, Tensor):
        t = tensor.detach()
        out_dtype = t.dtype if t.dtype.is_floating_point else torch.float64
        is_np = False
    else:
        try:
            arr = np.asarray(tensor)
        except Exception as err:  # ragged nested lists and the like
            raise RepscopeTypeError(
                f"{name} must be a numpy array or torch tensor; got {type(tensor).__name__}."
            ) from err
        if arr.dtype.kind not in "fiu":
            raise RepscopeTypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
        out_dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        is_np = True
    if t.ndim < 2:
        raise RepscopeValueError(
            f"{name} must have at least 2 modes (dimensions); got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise RepscopeValueError(f"{name} is empty: shape {tuple(t.shape)}.")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise RepscopeValueError(
            f"{name} has NaN or inf entries (shape {tuple(t.shape)}); remove or impute them.")
    return t, is_np, out_dtype


def _check_ranks(ranks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """An int for every mode, or one entry per mode (int, or None for the mode's size)."""
    k = len(shape)
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        entries: list[Any] = [int(ranks)] * k
    elif isinstance(ranks, Sequence) and not isinstance(ranks, str):
        entries = list(ranks)
        if len(entries) != k:
            raise RepscopeValueError(
                f"ranks must have one entry per mode of the tensor ({k} for shape {shape}); "
                f"got {len(entries)}: {tuple(entries)}.")
    else:
        raise RepscopeTypeError(
            f"ranks must be an int or a sequence of {k} ints (None keeps a mode whole); got "
            f"{type(ranks).__name__}.")
    out = []
    for mode, (r, size) in enumerate(zip(entries, shape, strict=True)):
        if r is None:
            out.append(size)
            continue
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise RepscopeTypeError(
                f"ranks[{mode}] must be an int or None; got {r!r} ({type(r).__name__}).")
        if not 1 <= int(r) <= size:
            raise RepscopeValueError(
                f"ranks[{mode}] must be in [1, {size}] (the size of mode {mode}); got {int(r)}.")
        out.append(int(r))
    return tuple(out)


def _finish(x: Tensor, core: Tensor, factors: list[Tensor], grams: list[Tensor],
            spectra: list[Tensor], ranks: tuple[int, ...], is_np: bool, out_dtype: Any,
            method: str, n_iter: int) -> TuckerResult:
    total = float((x * x).sum())
    if total > 0:
        energy = np.array([float(torch.sum(u * (g @ u))) / total
                           for u, g in zip(factors, grams, strict=True)])
        fit = min(float((core * core).sum()) / total, 1.0)
    else:
        energy, fit = np.zeros(len(factors)), 1.0

    def back(t: Tensor) -> Any:
        return t.cpu().numpy().astype(out_dtype) if is_np else t.to(out_dtype)

    return TuckerResult(
        core=back(core),
        factors=tuple(back(u) for u in factors),
        ranks=ranks,
        shape=tuple(int(s) for s in x.shape),
        mode_energy=energy,
        mode_spectra=tuple((s / total if total > 0 else s).cpu().numpy() for s in spectra),
        fit=fit,
        relative_error=math.sqrt(max(0.0, 1.0 - fit)),
        method=method,
        n_iter=n_iter,
    )


def _hosvd(x: Tensor, ranks: tuple[int, ...]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    grams, spectra, factors = [], [], []
    for k, r in enumerate(ranks):
        g = _mode_gram(x, k)
        vals, u = _top_eigvecs(g, r)
        grams.append(g)
        spectra.append(vals)
        factors.append(u)
    return factors, grams, spectra


def _project(x: Tensor, factors: list[Tensor], skip: int | None = None) -> Tensor:
    """``x x_k U_k^T`` for every mode but ``skip``, largest reduction first."""
    order = sorted((k for k in range(x.ndim) if k != skip),
                   key=lambda k: factors[k].shape[1] / factors[k].shape[0])
    out = x
    for k in order:
        out = _mode_product(out, factors[k].T, k)
    return out


def hosvd(tensor: Any, ranks: Any) -> TuckerResult:
    """Truncated higher-order SVD: each factor is the top left singular vectors of its unfolding.

    .. math:: U^{(k)} = \\text{top-}r_k \\text{ eigenvectors of } X_{(k)} X_{(k)}^\\top,
              \\qquad \\mathcal{G} = \\mathcal{X} \\times_1 U^{(1)\\top} \\cdots
              \\times_K U^{(K)\\top}

    Quasi-optimal: its error is at most :math:`\\sqrt{K}` times the best rank-``ranks``
    Tucker error (De Lathauwer et al., 2000); :func:`tucker` refines it.

    Parameters
    ----------
    tensor : array-like or Tensor of shape (I_1, ..., I_K), K >= 2
        numpy or torch, any device. Computed in float64 (a float64 copy of the tensor is
        made); each mode's Gram matrix is I_k x I_k.
    ranks : int or sequence of (int or None)
        The rank kept in every mode, or one per mode (``None``: the whole mode).

    Returns
    -------
    TuckerResult
        ``method="hosvd"``, ``n_iter=0``. At full ranks the reconstruction is the tensor.

    Raises
    ------
    RepscopeValueError
        A rank outside [1, size of its mode], a ranks sequence of the wrong length, fewer
        than 2 modes, an empty tensor, NaN or inf.
    RepscopeTypeError
        Ranks that are not ints, a tensor that is not numeric.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((6, 5, 4))
    >>> res = hosvd(x, (2, 2, 2))
    >>> res.core.shape, res.factors[0].shape
    ((2, 2, 2), (6, 2))
    >>> bool(np.allclose(hosvd(x, (6, 5, 4)).reconstruct(), x))
    True

    References
    ----------
    .. [1] L. De Lathauwer, B. De Moor, J. Vandewalle. "A multilinear singular value
       decomposition." SIAM J. Matrix Anal. Appl. 21(4), 2000.
    .. [2] S. Fang, X. Yu, Z. Wang, S. Li, M. Kirby, S. Zhe. "Functional Bayesian Tucker
       Decomposition for Continuous-indexed Tensor Data." ICLR 2024, arXiv:2311.04829.
    """
    x, is_np, out_dtype = _as_tensor(tensor, "tensor")
    r = _check_ranks(ranks, tuple(x.shape))
    factors, grams, spectra = _hosvd(x, r)
    core = _project(x, factors)
    return _finish(x, core, factors, grams, spectra, r, is_np, out_dtype, "hosvd", 0)


def tucker(tensor: Any, ranks: Any, n_iter: int = 100, *, tol: float = 1e-8) -> TuckerResult:
    """Tucker decomposition by higher-order orthogonal iteration (HOOI), started from HOSVD.

    Each sweep updates every factor in turn to the top-:math:`r_k` left singular vectors of
    :math:`\\mathcal{X}` projected on all the other factors,

    .. math:: U^{(k)} \\leftarrow \\text{top-}r_k \\text{ eigenvectors of } Y_{(k)}
              Y_{(k)}^\\top, \\quad \\mathcal{Y} = \\mathcal{X} \\times_{j \\ne k}
              U^{(j)\\top},

    which maximises :math:`\\lVert\\mathcal{G}\\rVert_F` over :math:`U^{(k)}` with the others
    fixed, so the fit never decreases from the HOSVD start (the error is at most HOSVD's).

    Parameters
    ----------
    tensor : array-like or Tensor of shape (I_1, ..., I_K), K >= 2
        As in :func:`hosvd`.
    ranks : int or sequence of (int or None)
        As in :func:`hosvd`.
    n_iter : int, default=100
        Most sweeps over all modes.
    tol : float, default=1e-8
        Stop when a sweep raises the fit by less than this.

    Returns
    -------
    TuckerResult
        ``method="hooi"``; ``n_iter`` the sweeps run.

    Raises
    ------
    RepscopeValueError
        As :func:`hosvd`; ``n_iter`` below 1, ``tol`` negative.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((6, 5, 4))
    >>> tucker(x, 2).fit >= hosvd(x, 2).fit
    True

    References
    ----------
    .. [1] L. De Lathauwer, B. De Moor, J. Vandewalle. "On the best rank-1 and rank-(R1, R2,
       ..., RN) approximation of higher-order tensors." SIAM J. Matrix Anal. Appl. 21(4), 2000.
    .. [2] T. G. Kolda, B. W. Bader. "Tensor decompositions and applications." SIAM Review
       51(3), 2009.
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise RepscopeValueError(f"n_iter must be a positive integer; got {n_iter!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise RepscopeValueError(f"tol must be a non-negative number; got {tol!r}.")
    x, is_np, out_dtype = _as_tensor(tensor, "tensor")
    r = _check_ranks(ranks, tuple(x.shape))
    factors, grams, spectra = _hosvd(x, r)
    total = float((x * x).sum())
    core = _project(x, factors)
    fit = float((core * core).sum()) / total if total > 0 else 1.0
    sweeps = 0
    for sweeps in range(1, int(n_iter) + 1):  # noqa: B007 - the count is reported
        for k in range(x.ndim):
            y = _project(x, factors, skip=k)
            _, factors[k] = _top_eigvecs(_mode_gram(y, k), r[k])
        core = _project(x, factors)
        new_fit = float((core * core).sum()) / total if total > 0 else 1.0
        done = new_fit - fit < tol
        fit = new_fit
        if done:
            break
    return _finish(x, core, factors, grams, spectra, r, is_np, out_dtype, "hooi", sweeps)


def tucker_of_tokens(
    tokens: Any,
    ranks: Any,
    *,
    mask: Any = None,
    center: bool = False,
    n_iter: int = 100,
    tol: float = 1e-8,
) -> TuckerResult:
    """Tucker (HOOI) of token activations as a samples x tokens x channels tensor.

    Samples of different lengths are zero-padded to the longest: padding adds nothing to any
    mode's Gram matrix, so the sample and channel factors are fitted to the real tokens only,
    while the token-position factor sees late positions, reached by fewer samples, with less
    energy. Positions are the tokens' positions within each sample (first token first).

    Parameters
    ----------
    tokens : RaggedArray, PaddedArray, or array of shape (n_samples, n_tokens, n_channels)
        A store's token layer (``store.read_ragged(layer)`` or ``store.read_padded(layer)``,
        whose padding is set to zero here whatever its ``pad_value``), or a padded array.
    ranks : int or sequence of 3 (int or None)
        Ranks of the samples, tokens and channels modes.
    mask : array of bool of shape (n_samples, n_tokens), optional
        With a padded array: True at real tokens (the rest is zeroed). Not with a
        RaggedArray or PaddedArray, which carry their own.
    center : bool, default=False
        Subtract the channels' mean over the real tokens first (padding stays zero), so the
        decomposition describes the variation around the mean token rather than the mean.
    n_iter, tol
        As in :func:`tucker`.

    Returns
    -------
    TuckerResult
        Of the (n_samples, t_max, n_channels) tensor, in numpy float64 for store layers
        (torch in, torch out for a padded torch tensor).

    Raises
    ------
    RepscopeValueError
        A tensor that is not 3-D (one channel axis), a mask of the wrong shape, a mask given
        with a RaggedArray/PaddedArray, and what :func:`tucker` raises.

    Examples
    --------
    >>> from repscope.store import FeatureStore  # doctest: +SKIP
    >>> store = FeatureStore.open("minilm-austen")  # doctest: +SKIP
    >>> res = tucker_of_tokens(store.read_padded("encoder.layer.5"), (8, 8, 16))  # doctest: +SKIP
    >>> res.mode_energy, res.fit  # doctest: +SKIP
    """
    from repscope.store._ragged import PaddedArray, RaggedArray, pad_ragged

    if isinstance(tokens, (RaggedArray, PaddedArray)) and mask is not None:
        raise RepscopeValueError(
            f"mask must not be given with a {type(tokens).__name__}, which carries its own "
            "token mask; pass mask only with a padded array.")
    if isinstance(tokens, RaggedArray):
        tokens = pad_ragged(tokens, pad_value=0.0)
    if isinstance(tokens, PaddedArray):
        values: Any = np.asarray(tokens.values, dtype=np.float64)
        mask = np.asarray(tokens.mask, dtype=bool)
    else:
        values = tokens
    shape = tuple(values.shape)
    if len(shape) != 3:
        raise RepscopeValueError(
            f"tokens must be (n_samples, n_tokens, n_channels); got shape {shape}. Flatten "
            "extra channel axes first.")
    if mask is not None:
        m_shape = tuple(np.shape(mask))
        if m_shape != shape[:2]:
            raise RepscopeValueError(
                f"mask must have shape (n_samples, n_tokens) = {shape[:2]}; got {m_shape}.")
        if isinstance(values, Tensor):
            keep = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask,
                                   dtype=torch.bool, device=values.device)
            values = values * keep[..., None].to(values.dtype)
        else:
            keep_np = np.asarray(mask, dtype=bool)
            values = np.asarray(values) * keep_np[..., None]
    if center:
        if isinstance(values, Tensor):
            keep_t = (torch.ones(shape[:2], dtype=torch.bool, device=values.device)
                      if mask is None else keep)
            w = keep_t[..., None].to(values.dtype)
            mean = (values * w).sum((0, 1)) / w.sum().clamp_min(1)
            values = (values - mean) * w
        else:
            keep_n = np.ones(shape[:2], dtype=bool) if mask is None else keep_np
            w_n = keep_n[..., None].astype(np.float64)
            mean_n = (values * w_n).sum((0, 1)) / max(float(w_n.sum()), 1.0)
            values = (values - mean_n) * w_n
    return tucker(values, ranks, n_iter, tol=tol)
