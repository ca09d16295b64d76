"""SAE evaluation: reconstruction and sparsity metrics, streamed over any amount of data.

:func:`evaluate` runs a :class:`~repscope.sae.SparseAutoencoder` over inputs (a tensor, a
numpy array or memmap, or an iterable of batches) and accumulates fixed-size float64 sums —
never the codes — into an :class:`SAEEvaluationResult`: MSE, fraction of variance unexplained (FVU),
L0, dead latents, per-latent firing density, shrinkage and cosine. The same quantities exist as
pure functions on tensors (:func:`fvu`, :func:`mse`, :func:`l0`, :func:`dead_fraction`).

Everything is measured in the **input (raw) space**: ``sae(x)`` normalises, encodes, decodes
and de-normalises, so the numbers do not depend on the SAE's internal normaliser.

This module also re-exports the ground-truth metrics (:func:`recovery`,
:func:`feature_precision_recall`, :func:`seed_stability`, :func:`matched_cosines`) and the
interpretability / control metrics (:func:`attribute_f1`, :func:`supervised_mean_dictionary`,
:func:`edit_success`, :func:`sae_edit`, :func:`manifold_capture`, :func:`atom_groups`,
:func:`modality_split`, :func:`gram_vs_cooccurrence`), and PolySAE's
:func:`interaction_cooccurrence`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repscope._array import as_float64_numpy, is_torch
from repscope._validation import check_features, check_paired, check_positive_int
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result
from repscope.sae.archs._base import SAEOutput, SparseAutoencoder, firing_counts
from repscope.sae.evaluation._ground_truth import (
    PrecisionRecall,
    PrecisionRecallResult,
    RecoveryResult,
    feature_precision_recall,
    matched_cosines,
    recovery,
    seed_stability,
)
from repscope.sae.evaluation._interpret import (
    AttributeF1,
    AttributeF1Result,
    AttributeScores,
    AttributeScoresResult,
    MeanDictionary,
    MeanDictionaryResult,
    ModalitySplit,
    ModalitySplitResult,
    _eval_mode,
    attribute_f1,
    edit_success,
    gram_vs_cooccurrence,
    modality_split,
    sae_edit,
    supervised_mean_dictionary,
)
from repscope.sae.evaluation._manifold import (
    ManifoldCapture,
    ManifoldCaptureResult,
    atom_groups,
    manifold_capture,
)

__all__ = [
    "AttributeF1",
    "AttributeF1Result",
    "AttributeScores",
    "AttributeScoresResult",
    "DensityHistogram",
    "DensityHistogramResult",
    "InteractionCooccurrenceResult",
    "ManifoldCapture",
    "ManifoldCaptureResult",
    "MeanDictionary",
    "MeanDictionaryResult",
    "ModalitySplit",
    "ModalitySplitResult",
    "PrecisionRecall",
    "PrecisionRecallResult",
    "RecoveryResult",
    "SAEEvaluation",
    "SAEEvaluationResult",
    "atom_groups",
    "attribute_f1",
    "dead_fraction",
    "edit_success",
    "evaluate",
    "feature_precision_recall",
    "fvu",
    "gram_vs_cooccurrence",
    "interaction_cooccurrence",
    "l0",
    "manifold_capture",
    "matched_cosines",
    "modality_split",
    "mse",
    "recovery",
    "sae_edit",
    "seed_stability",
    "supervised_mean_dictionary",
]


# ---------------------------------------------------------------------------- pure functions


def _pair64(x: Any, x_hat: Any) -> tuple[np.ndarray, np.ndarray]:
    x, x_hat = check_paired(x, x_hat, names=("x", "x_hat"))
    if tuple(x.shape) != tuple(x_hat.shape):
        raise RepscopeValueError(
            f"x and x_hat must have the same shape; got x.shape={tuple(x.shape)} and "
            f"x_hat.shape={tuple(x_hat.shape)}. Pass inputs and their reconstructions."
        )
    return as_float64_numpy(x, name="x"), as_float64_numpy(x_hat, name="x_hat")


def fvu(x: Any, x_hat: Any) -> float:
    r"""Fraction of variance unexplained by a reconstruction.

    .. math:: \mathrm{FVU} = \frac{\sum_i \lVert x_i - \hat x_i \rVert^2}
        {\sum_i \lVert x_i - \bar x \rVert^2}

    Parameters
    ----------
    x : array-like or Tensor of shape (n, d)
        Inputs.
    x_hat : array-like or Tensor of shape (n, d)
        Reconstructions.

    Returns
    -------
    float
        In float64; NaN when ``x`` has zero total variance (e.g. a single sample).

    Notes
    -----
    Invariant to a common orthogonal transform and a common translation of ``x`` and ``x_hat``,
    and to a common isotropic scaling.
    """
    a, b = _pair64(x, x_hat)
    den = float(((a - a.mean(0)) ** 2).sum())
    return float(((a - b) ** 2).sum()) / den if den > 0 else math.nan


def mse(x: Any, x_hat: Any) -> float:
    r"""Squared error summed over features, averaged over samples: :math:`\frac1n\sum_i
    \lVert x_i - \hat x_i\rVert^2` (the SAE training loss's convention).

    Parameters
    ----------
    x, x_hat : array-like or Tensor of shape (n, d)

    Returns
    -------
    float
    """
    a, b = _pair64(x, x_hat)
    return float(((a - b) ** 2).sum(1).mean())


def l0(out: Any) -> float:
    """Mean number of active (non-zero) latents per sample.

    Parameters
    ----------
    out : SAEOutput, or array-like / Tensor of shape (n, d_sae)
        An SAE output (sparse or dense codes) or dense codes.

    Returns
    -------
    float
    """
    if isinstance(out, SAEOutput):
        if out.values.ndim < 1 or out.values.shape[0] == 0:
            raise RepscopeValueError(
                f"out must hold at least one sample; got values of shape {tuple(out.values.shape)}."
            )
        return float(out.l0().to(torch.float64).mean())
    codes = check_features(out, name="out", allow_nonfinite=False)
    if is_torch(codes):
        return float((codes != 0).sum(-1).to(torch.float64).mean())
    return float((np.asarray(codes) != 0).sum(-1).mean())


def dead_fraction(fire_counts: Any) -> float:
    """Share of latents that never fired.

    Parameters
    ----------
    fire_counts : array-like or Tensor of shape (d_sae,)
        Non-negative firing counts per latent (e.g. ``TrainState.fire_count``).

    Returns
    -------
    float
    """
    c = fire_counts.detach().cpu().numpy() if is_torch(fire_counts) else np.asarray(fire_counts)
    if c.ndim != 1 or c.shape[0] == 0 or c.dtype.kind not in "iuf":
        raise RepscopeValueError(
            "fire_counts must be a non-empty 1-D array of counts per latent (d_sae,); got shape "
            f"{c.shape} and dtype {c.dtype}."
        )
    if not np.all(np.isfinite(c)) or (c < 0).any():
        raise RepscopeValueError(
            "fire_counts must be finite and non-negative (firing counts); got min "
            f"{float(np.nanmin(c)) if np.isfinite(c).any() else 'nan'}."
        )
    return float((c == 0).mean())


# ---------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class DensityHistogramResult(Result):
    """Histogram of log10 firing densities of the latents that fired at least once.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges in log10(density), spanning ``[log10(1 / n), 0]`` (the smallest possible
        non-zero density to always-on).
    counts : ndarray of int64, shape (n_bins,)
        Number of latents per bin.
    n_dead : int
        Latents that never fired (no finite log density; not in ``counts``).
    """

    edges: np.ndarray
    counts: np.ndarray
    n_dead: int


#: The former name of :class:`DensityHistogramResult` (kept for one release).
DensityHistogram = DensityHistogramResult


@dataclass(frozen=True)
class SAEEvaluationResult(Result):
    """Reconstruction and sparsity of an SAE on a data set (all in the input space).

    Attributes
    ----------
    n : int
        Samples evaluated.
    mse : float
        Mean over samples of the summed squared error ``||x - x_hat||^2``.
    fvu : float
        ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (NaN when the data have no variance).
    explained_variance : float
        ``1 - fvu``.
    l0 : float
        Mean number of active latents per sample.
    dead_fraction : float
        Share of latents that never fired on the data.
    density : ndarray of shape (d_sae,)
        Firing frequency of each latent (fraction of samples where it is non-zero).
    density_histogram : DensityHistogramResult
        log10 density histogram of the alive latents.
    shrinkage : float
        Mean over samples of ``||x_hat - c|| / ||x - c||`` with ``c`` the decoder bias mapped to
        the input space (samples with ``x == c`` are skipped). Below 1: reconstructions are
        pulled towards the centre (the L1 shrinkage of Wright & Sharkey); about 1: none.
    reconstruction_bias : float
        Wright & Sharkey's relative reconstruction bias
        ``gamma = sum ||x_hat - c||^2 / sum <x_hat - c, x - c>``, the ``gamma`` minimising
        ``sum ||(x_hat - c) / gamma - (x - c)||^2``; below 1 means shrinkage.
    cosine : float
        Mean cosine between ``x`` and ``x_hat`` (0 for a zero vector).
    architecture : str
        The SAE's registered architecture name ("" if unregistered).
    """

    n: int
    mse: float
    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    density: np.ndarray
    density_histogram: DensityHistogramResult
    shrinkage: float
    reconstruction_bias: float
    cosine: float
    architecture: str = ""


#: The former name of :class:`SAEEvaluationResult` (kept for one release).
SAEEvaluation = SAEEvaluationResult


def _as_batch(b: Any, d_in: int, where: str) -> Tensor:
    if is_torch(b):
        t = b
    elif isinstance(b, np.ndarray):
        arr = np.ascontiguousarray(b)
        if arr.dtype.kind not in "fiub":
            raise RepscopeTypeError(f"X must hold numbers; got dtype {arr.dtype} in {where}.")
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        elif not arr.flags.writeable:  # a read-only memmap: torch wants a writable buffer
            arr = arr.copy()
        t = torch.from_numpy(arr)
    else:
        raise RepscopeTypeError(
            "X must be a torch.Tensor, a numpy array/memmap of shape (n, d_in), or an iterable of "
            f"such batches; got {type(b).__name__} in {where}."
        )
    if t.ndim < 1 or t.shape[-1] != d_in:
        raise RepscopeValueError(
            f"X must have shape (..., d_in={d_in}); got shape {tuple(t.shape)} in {where}."
        )
    if not t.dtype.is_floating_point:
        t = t.to(torch.float32)
    return t.reshape(-1, d_in)


def _batches(X: Any, batch_size: int, d_in: int) -> Iterator[Tensor]:
    if is_torch(X) or isinstance(X, np.ndarray):
        if X.ndim < 1 or X.shape[-1] != d_in:
            raise RepscopeValueError(
                f"X must have shape (n, d_in={d_in}); got shape {tuple(X.shape)}."
            )
        flat = X.reshape(-1, d_in)
        for i in range(0, int(flat.shape[0]), batch_size):
            yield _as_batch(flat[i : i + batch_size], d_in, f"rows {i}..{i + batch_size}")
        return
    if isinstance(X, (str, bytes, SAEOutput)) or not isinstance(X, Iterable):
        raise RepscopeTypeError(
            "X must be a torch.Tensor, a numpy array/memmap of shape (n, d_in), or an iterable of "
            f"such batches; got {type(X).__name__}."
        )
    for j, b in enumerate(X):
        t = _as_batch(b, d_in, f"batch {j}")
        for i in range(0, int(t.shape[0]), batch_size):
            yield t[i : i + batch_size]


def evaluate(
    sae: SparseAutoencoder, X: Any, *, batch_size: int = 4096, n_bins: int = 50
) -> SAEEvaluationResult:
    r"""Evaluate an SAE's reconstruction and sparsity on data, streamed over batches.

    For every batch the SAE runs on raw inputs (``sae(x)``); float64 sufficient statistics are
    accumulated on the SAE's device (sums of squared error, of the shifted inputs and their
    squares, firing counts, L0, norms) and nothing grows with ``n``. The total variance uses a
    shift by the first batch's mean, :math:`\sum\lVert x - \bar x\rVert^2 =
    \sum\lVert x - c\rVert^2 - n\lVert\bar x - c\rVert^2`, which keeps the subtraction accurate.

    Parameters
    ----------
    sae : SparseAutoencoder
        Any repscope SAE, run in eval mode (its previous mode is restored) on its device
        (batches are moved to it).
    X : Tensor, ndarray / memmap of shape (n, d_in), or iterable of such batches
        Inputs in the raw space (leading dimensions beyond the last are flattened).
    batch_size : int, default=4096
        Rows per forward pass (iterable batches larger than this are split).
    n_bins : int, default=50
        Bins of the log10 density histogram.

    Returns
    -------
    SAEEvaluationResult

    Raises
    ------
    RepscopeTypeError
        ``sae`` is not a SparseAutoencoder, or ``X`` is not array data.
    RepscopeValueError
        Wrong last dimension, NaN/inf inputs, no samples, bad ``batch_size`` / ``n_bins``.

    Examples
    --------
    >>> res = evaluate(sae, X)          # doctest: +SKIP
    >>> res.fvu, res.l0, res.dead_fraction   # doctest: +SKIP
    """
    if not isinstance(sae, SparseAutoencoder):
        raise RepscopeTypeError(
            f"The 'sae' parameter of evaluate must be a SparseAutoencoder. Got "
            f"{type(sae).__name__} instead."
        )
    batch_size = check_positive_int(batch_size, "batch_size", caller="evaluate")
    n_bins = check_positive_int(n_bins, "n_bins", caller="evaluate")
    with torch.inference_mode(), _eval_mode(sae):
        return _evaluate(sae, X, batch_size, n_bins)


def _evaluate(sae: SparseAutoencoder, X: Any, batch_size: int, n_bins: int) -> SAEEvaluationResult:
    dev, f64 = sae.device, torch.float64
    d_in, d_sae = sae.d_in, sae.d_sae
    centre = sae.denormalize(sae.b_dec.detach()[None]).to(f64)[0]

    n = 0
    shift: Tensor | None = None
    zero = torch.zeros((), dtype=f64, device=dev)
    sse, sum_sq, l0_sum, cos_sum = zero.clone(), zero.clone(), zero.clone(), zero.clone()
    shrink_sum, shrink_n, rec_sq, rec_dot = zero.clone(), zero.clone(), zero.clone(), zero.clone()
    sum_x = torch.zeros(d_in, dtype=f64, device=dev)
    fire = torch.zeros(d_sae, dtype=torch.int64, device=dev)
    for i, x in enumerate(_batches(X, batch_size, d_in)):
        if x.shape[0] == 0:
            continue
        x = x.to(dev)
        if not bool(torch.isfinite(x).all()):
            raise RepscopeValueError(
                f"X must be finite; batch {i} (rows {n}..{n + x.shape[0]}) holds NaN or inf "
                "values. Drop or impute those samples first."
            )
        out = sae(x)
        xd, xh = x.to(f64), out.reconstruction.to(f64)
        if shift is None:
            shift = xd.mean(0)
        xs = xd - shift
        sse += (xd - xh).pow(2).sum()
        sum_x += xs.sum(0)
        sum_sq += xs.pow(2).sum()
        fire += firing_counts(out)
        l0_sum += out.l0().to(f64).sum()
        nx, nh = torch.linalg.vector_norm(xd, dim=1), torch.linalg.vector_norm(xh, dim=1)
        cos_sum += ((xd * xh).sum(1) / (nx * nh).clamp_min(1e-300)).sum()
        xc, hc = xd - centre, xh - centre
        ncx, nch = torch.linalg.vector_norm(xc, dim=1), torch.linalg.vector_norm(hc, dim=1)
        ok = ncx > 0
        shrink_sum += (nch[ok] / ncx[ok]).sum()
        shrink_n += ok.sum()
        rec_sq += hc.pow(2).sum()
        rec_dot += (hc * xc).sum()
        n += int(x.shape[0])
    if n == 0:
        raise RepscopeValueError("X must hold at least one sample; got no rows.")

    total_var = float(sum_sq) - float(sum_x.pow(2).sum()) / n
    fvu_v = float(sse) / total_var if total_var > 0 else math.nan
    counts = fire.cpu().numpy()
    density = counts / n
    alive = density[counts > 0]
    lo = math.log10(1.0 / n)
    hist, edges = np.histogram(np.log10(alive), bins=n_bins, range=(lo, 0.0) if n > 1 else None)
    rd = float(rec_dot)
    return SAEEvaluationResult(
        n=n,
        mse=float(sse) / n,
        fvu=fvu_v,
        explained_variance=1.0 - fvu_v,
        l0=float(l0_sum) / n,
        dead_fraction=float((counts == 0).mean()),
        density=density,
        density_histogram=DensityHistogramResult(
            edges=edges, counts=hist.astype(np.int64), n_dead=int((counts == 0).sum())
        ),
        shrinkage=float(shrink_sum) / float(shrink_n) if float(shrink_n) > 0 else math.nan,
        reconstruction_bias=float(rec_sq) / rd if rd != 0 else math.nan,
        cosine=float(cos_sum) / n,
        architecture=type(sae).architecture,
    )


# ---------------------------------------------------------------------------- PolySAE interactions


@dataclass(frozen=True)
class InteractionCooccurrenceResult(Result):
    """PolySAE's pairwise interaction strengths against how often the latents fire together.

    Attributes
    ----------
    latents : ndarray of int64, shape (m,)
        The latents compared (pairs ``i < j`` among them).
    strength : ndarray of shape (m, m)
        ``||lambda2 ((U1[i] * U2[j]) + (U1[j] * U2[i])) C2^T||``: what the order-2 term adds to
        the reconstruction per unit of ``z_i z_j`` (symmetric, zero diagonal).
    cooccurrence : ndarray of shape (m, m)
        Fraction of inputs on which both latents fire.
    covariance : ndarray of shape (m, m)
        Covariance of the two latents' activations over the inputs.
    r_interaction : float
        Pearson correlation over the pairs of ``strength`` with ``cooccurrence`` (the paper
        reports 0.06: interactions are not co-occurrence).
    r_covariance : float
        The same for ``covariance`` (the paper's baseline, 0.82). NaN when a side is constant.
    n_samples : int
    """

    latents: np.ndarray
    strength: np.ndarray
    cooccurrence: np.ndarray
    covariance: np.ndarray
    r_interaction: float
    r_covariance: float
    n_samples: int


def _pair_r(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices(a.shape[0], 1)
    x, y = a[iu], b[iu]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _interaction_strength(sae: Any, latents: np.ndarray) -> np.ndarray:
    cfg = sae.cfg
    r2 = int(cfg.resolved_ranks[1])
    with torch.no_grad():
        a = sae._u(1)[latents, :r2].detach().to(torch.float64)
        b = a if cfg.shared_u else sae._u(2)[latents].detach().to(torch.float64)
        G = (sae._c(2).detach().to(torch.float64).T @ sae._c(2).detach().to(torch.float64))
        W = a[:, None, :] * b[None, :, :]
        W = W + W.transpose(0, 1)  # the unordered pair: z_i z_j (a_i b_j + a_j b_i)
        sq = torch.einsum("ijr,rs,ijs->ij", W, G, W).clamp_min(0.0)
        S = float(abs(sae.lambda2.detach())) * sq.sqrt()
    out = S.cpu().numpy()
    np.fill_diagonal(out, 0.0)
    return out


def interaction_cooccurrence(
    sae: SparseAutoencoder,
    X: Any,
    *,
    latents: Any = None,
    max_latents: int = 256,
    batch_size: int = 4096,
) -> InteractionCooccurrenceResult:
    r"""Do a PolySAE's pairwise interactions follow how often latents co-occur? (Koromilas et al.)

    For latents ``i < j``, the interaction strength is the norm of what the order-2 decoder term
    adds per unit of ``z_i z_j``,

    .. math:: s_{ij} = \lvert\lambda_2\rvert \, \big\lVert \big(U_1[i, {:}R_2] \odot U_2[j]
        + U_1[j, {:}R_2] \odot U_2[i]\big) C_2^\top \big\rVert

    (``U_2 = U[:, :R_2]`` in ``shared_u`` mode), in the SAE's normalised space; the result
    correlates it (Pearson, over pairs) with the co-occurrence frequency ``P(z_i > 0, z_j > 0)``
    on ``X``, next to the correlation of the latents' covariance with the same co-occurrence.
    The paper finds ``r = 0.06`` for interactions against ``0.82`` for covariance: the
    interactions encode compositional structure rather than co-occurrence statistics.

    Parameters
    ----------
    sae : PolySAE
        With ``order >= 2``; run in eval mode on its device.
    X : Tensor, ndarray of shape (n, d_in), or a re-iterable of such batches
        Raw inputs.
    latents : array-like of int, optional
        Latents to compare; default the ``max_latents`` most often firing on ``X`` (one extra
        pass over ``X``).
    max_latents : int, default=256
    batch_size : int, default=4096

    Returns
    -------
    InteractionCooccurrenceResult
        Statistics are fixed-size float64 sums over batches (``O(m^2)`` memory).

    Raises
    ------
    RepscopeValueError
        An SAE without an order-2 term, or latents out of range.
    """
    from repscope.sae.archs.poly import PolySAE
    from repscope.sae.evaluation._interpret import _eval_mode

    if not isinstance(sae, PolySAE) or sae.cfg.order < 2:
        raise RepscopeValueError(
            "interaction_cooccurrence needs a PolySAE with order >= 2 (its order-2 decoder term "
            f"holds the interactions); got {type(sae).__name__}"
            + (f" with order {sae.cfg.order}." if isinstance(sae, PolySAE) else ".")
        )
    bs = check_positive_int(batch_size, "batch_size", caller="interaction_cooccurrence")
    m_max = check_positive_int(max_latents, "max_latents", caller="interaction_cooccurrence")
    d_sae = sae.d_sae

    def codes() -> Iterator[Tensor]:
        for x in _batches(X, bs, sae.d_in):
            out = sae.encode(x.to(sae.device, sae.dtype))
            if out.indices is None:
                yield out.values.to(torch.float64)
            else:
                z = out.values.new_zeros((out.values.shape[0], d_sae), dtype=torch.float64)
                yield z.scatter_add_(1, out.indices, out.values.to(torch.float64))

    with torch.no_grad(), _eval_mode(sae):
        if latents is None:
            fires = torch.zeros(d_sae, dtype=torch.float64, device=sae.device)
            for z in codes():
                fires += (z > 0).sum(0)
            order = torch.argsort(-fires, stable=True).cpu().numpy()
            idx = np.sort(order[: min(m_max, d_sae)]).astype(np.int64)
        else:
            idx = np.asarray(latents, dtype=np.int64).ravel()
            if idx.size < 3 or idx.min() < 0 or idx.max() >= d_sae or np.unique(idx).size != idx.size:
                raise RepscopeValueError(
                    f"latents must be at least 3 distinct indices into the {d_sae} latents; "
                    f"got {idx.tolist()[:10]}."
                )
        sel = torch.as_tensor(idx, device=sae.device)
        m = idx.size
        n = 0
        co = torch.zeros((m, m), dtype=torch.float64, device=sae.device)
        zz = torch.zeros((m, m), dtype=torch.float64, device=sae.device)
        zs = torch.zeros(m, dtype=torch.float64, device=sae.device)
        for z in codes():
            zsel = z[:, sel]
            act = (zsel > 0).to(torch.float64)
            co += act.T @ act
            zz += zsel.T @ zsel
            zs += zsel.sum(0)
            n += int(zsel.shape[0])
    if n < 2:
        raise RepscopeValueError(f"X must hold at least 2 inputs; got {n}.")
    cooc = (co / n).cpu().numpy()
    mean = (zs / n).cpu().numpy()
    cov = zz.cpu().numpy() / n - np.outer(mean, mean)
    strength = _interaction_strength(sae, idx)
    return InteractionCooccurrenceResult(
        latents=idx, strength=strength, cooccurrence=cooc, covariance=cov,
        r_interaction=_pair_r(strength, cooc), r_covariance=_pair_r(cov, cooc), n_samples=n,
    )
