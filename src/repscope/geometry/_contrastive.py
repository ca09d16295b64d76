"""Contrastive geometry: alignment, uniformity, tolerance and InfoNCE hardness.

Formulas (rows L2-normalised first unless ``normalize=False``, as both papers assume embeddings
on the unit sphere):

* alignment (Wang & Isola, 2020) of positive pairs ``(z_i, z'_i)``:
  :math:`\\mathcal L_{align} = \\mathbb E_i \\lVert z_i - z'_i \\rVert_2^{\\alpha}`, ``alpha = 2``;
  as a per-layer measure the positive pairs are the pairs of distinct samples sharing a label;
* uniformity (Wang & Isola, 2020):
  :math:`\\mathcal L_{unif} = \\log \\mathbb E_{i \\ne j} e^{-t \\lVert z_i - z_j \\rVert^2}`, ``t = 2``
  (lower = more uniform);
* tolerance (Wang & Liu, 2021): :math:`T = \\mathbb E_{i \\ne j,\\ y_i = y_j}\\, z_i^\\top z_j`;
* hardness (Wang & Liu, 2021): the relative penalty InfoNCE puts on negative ``k`` of anchor
  ``i``, :math:`r_{ik} = e^{s_{ik}/\\tau} / \\sum_{k' \\ne i} e^{s_{ik'}/\\tau}` (cosine
  similarities ``s``), and the effective number of negatives :math:`\\exp H(r_{i\\cdot})`, which
  grows with the temperature ``tau`` (one hardest negative as tau -> 0, all ``n - 1`` as
  tau -> inf).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._pairwise import (
    BLOCK,
    DEFAULT_MAX_SAMPLES,
    check_max_samples,
    features64,
    l2_normalize,
    labels_for,
)
from repscope.geometry._registry import register_geometry_measure
from repscope.results import RecordedResult

__all__ = [
    "EffectiveNegativesResult",
    "alignment",
    "class_alignment",
    "effective_negatives",
    "hardness_weights",
    "tolerance",
    "uniformity",
]

_WANG_ISOLA = ("Wang & Isola, Understanding contrastive representation learning through "
               "alignment and uniformity on the hypersphere, ICML 2020")
_WANG_LIU = "Wang & Liu, Understanding the behaviour of contrastive loss, CVPR 2021"


def _prep(X: Any, normalize: bool, caller: str, name: str = "X", min_samples: int = 2) -> np.ndarray:
    Z = features64(X, name=name, caller=caller, min_samples=min_samples)
    return l2_normalize(Z) if normalize else Z


def alignment(Z1: Any, Z2: Any, *, alpha: float = 2.0, normalize: bool = True) -> float:
    """Alignment of positive pairs: the mean ``||z1_i - z2_i||^alpha`` (lower = more aligned).

    Parameters
    ----------
    Z1, Z2 : array-like of shape (n_pairs, n_features)
        Row ``i`` of each is one view of the same input (the positive pair).
    alpha : float, default=2
    normalize : bool, default=True
        L2-normalise rows first.

    Returns
    -------
    float
        In ``[0, 2^alpha]`` for normalised rows.
    """
    check_scalar(alpha, "alpha", caller="alignment", kind=(int, float), min_value=0,
                 include_min=False)
    A = _prep(Z1, normalize, "alignment", "Z1", 1)
    B = _prep(Z2, normalize, "alignment", "Z2", 1)
    if A.shape != B.shape:
        raise RepscopeValueError(
            f"Z1 and Z2 must have the same shape (one row per positive pair); got "
            f"Z1.shape={A.shape} and Z2.shape={B.shape}.")
    d = np.sqrt(np.einsum("ij,ij->i", A - B, A - B))
    return float(np.mean(d ** alpha))


def _class_sums(Z: np.ndarray, y: Any, caller: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class counts, sums of rows and sums of squared row norms."""
    codes = labels_for(y, Z.shape[0], caller=caller)
    K = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=K).astype(np.float64)
    sums = np.zeros((K, Z.shape[1]))
    np.add.at(sums, codes, Z)
    sq = np.bincount(codes, weights=np.einsum("ij,ij->i", Z, Z), minlength=K)
    pairs = float((counts * (counts - 1)).sum())
    if pairs == 0:
        raise RepscopeValueError(
            f"{caller} needs at least one class with two or more samples; every class of y "
            f"has one sample ({Z.shape[0]} samples, {K} classes).")
    return counts, sums, sq


def tolerance(X: Any, y: Any, *, normalize: bool = True) -> float:
    """Tolerance: the mean cosine ``z_i . z_j`` over pairs of distinct samples with one label.

    Computed from per-class sums in ``O(n d)``: ``sum_{i != j in c} z_i.z_j = ||S_c||^2 -
    sum_i ||z_i||^2``. Pairs are pooled over classes (a class with ``n_c`` samples has
    ``n_c (n_c - 1)`` ordered pairs).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    normalize : bool, default=True

    Returns
    -------
    float
        In ``[-1, 1]`` for normalised rows; higher = same-class samples closer together.

    Raises
    ------
    RepscopeValueError
        No class has two samples.
    """
    Z = _prep(X, normalize, "tolerance")
    counts, sums, sq = _class_sums(Z, y, "tolerance")
    within = float((np.einsum("kj,kj->k", sums, sums) - sq).sum())
    return within / float((counts * (counts - 1)).sum())


def class_alignment(X: Any, y: Any, *, normalize: bool = True) -> float:
    """Alignment with same-label pairs as positives: mean ``||z_i - z_j||^2`` over pairs of
    distinct samples sharing a label (``alpha = 2``; supervised-contrastive positives).

    ``sum_{i != j in c} ||z_i - z_j||^2 = 2 n_c sum_i ||z_i||^2 - 2 ||S_c||^2``, so it runs in
    ``O(n d)``. For normalised rows it equals ``2 - 2 * tolerance``.
    """
    Z = _prep(X, normalize, "alignment")
    counts, sums, sq = _class_sums(Z, y, "alignment")
    total = float((2.0 * counts * sq - 2.0 * np.einsum("kj,kj->k", sums, sums)).sum())
    return max(total, 0.0) / float((counts * (counts - 1)).sum())


def uniformity(
    X: Any, *, t: float = 2.0, normalize: bool = True, max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> float:
    """Uniformity ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` (lower = more uniform).

    ``O(n^2 d)`` time, ``O(n)`` memory (row blocks, log-sum-exp).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    t : float, default=2
    normalize : bool, default=True
    max_samples : int or None, default=50000
        Refuse more rows than this (pass a subsample).

    Returns
    -------
    float
        In ``[-4t, 0]`` for normalised rows.
    """
    check_scalar(t, "t", caller="uniformity", kind=(int, float), min_value=0, include_min=False)
    Z = _prep(X, normalize, "uniformity")
    n = Z.shape[0]
    check_max_samples(n, max_samples, caller="uniformity", cost="O(n^2) time")
    sq = np.einsum("ij,ij->i", Z, Z)
    lse_parts = []
    for s in range(0, n, BLOCK):
        sl = slice(s, min(s + BLOCK, n))
        D = sq[sl, None] + sq[None, :] - 2.0 * (Z[sl] @ Z.T)
        np.maximum(D, 0.0, out=D)
        E = -t * D
        rows = np.arange(sl.start, sl.stop)
        E[rows - s, rows] = -np.inf
        m = float(E.max())
        lse_parts.append(m + np.log(np.exp(E - m).sum()))
    parts = np.asarray(lse_parts)
    top = float(parts.max())
    return float(top + np.log(np.exp(parts - top).sum()) - np.log(n * (n - 1.0)))


def _similarities(Z: np.ndarray, P: np.ndarray | None, sl: slice) -> np.ndarray:
    """Cosine similarities of anchors ``sl`` to the candidates; the anchor's own column (its
    positive, or itself) is set to -inf, so what remains are its negatives."""
    S = Z[sl] @ (P if P is not None else Z).T
    rows = np.arange(sl.start, sl.stop)
    S[rows - sl.start, rows] = -np.inf
    return S


def hardness_weights(Z: Any, positives: Any = None, *, tau: float) -> np.ndarray:
    """InfoNCE's relative penalty on each negative, ``r_ik`` (a Boltzmann distribution per row).

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
        Anchors (L2-normalised here).
    positives : array-like of shape (n_samples, n_features), optional
        The positive view of each anchor; the candidates ``k`` are these rows (row ``i`` is the
        positive of anchor ``i`` and not a negative). Without it the candidates are the other
        anchors.
    tau : float
        Temperature.

    Returns
    -------
    ndarray of shape (n_samples, n_samples)
        ``r[i, k]``, zero on the diagonal, rows summing to 1. An ``n x n`` matrix: for large
        ``n`` use :func:`effective_negatives`, which streams.
    """
    check_scalar(tau, "tau", caller="hardness_weights", kind=(int, float), min_value=0,
                 include_min=False)
    A = _prep(Z, True, "hardness_weights", "Z", 3)
    P = None if positives is None else _prep(positives, True, "hardness_weights", "positives", 3)
    if P is not None and P.shape != A.shape:
        raise RepscopeValueError(
            f"positives must have the shape of Z (one positive per anchor); got "
            f"Z.shape={A.shape} and positives.shape={P.shape}.")
    S = _similarities(A, P, slice(0, A.shape[0])) / tau
    S -= S.max(axis=1, keepdims=True)
    W = np.exp(S)
    return W / W.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class EffectiveNegativesResult(RecordedResult):
    """How InfoNCE spreads its penalty over negatives, as a function of the temperature.

    Attributes
    ----------
    temperatures : tuple of float
        Ascending.
    effective_negatives : tuple of float
        Mean over anchors of ``exp(H(r_i.))``, in ``[1, n_negatives]``.
    entropy : tuple of float
        Mean over anchors of ``H(r_i.)`` (nats).
    hardest_weight : tuple of float
        Mean over anchors of ``max_k r_ik`` (1 when only the hardest negative counts).
    n_negatives : int
        Negatives per anchor (``n - 1``).
    n_samples : int
    """

    analysis: ClassVar[str] = "geometry_hardness"

    temperatures: tuple[float, ...]
    effective_negatives: tuple[float, ...]
    entropy: tuple[float, ...]
    hardest_weight: tuple[float, ...]
    n_negatives: int
    n_samples: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry_hardness`` record: the curves over temperature."""
        return [("", {
            "temperatures": list(self.temperatures),
            "effective_negatives": list(self.effective_negatives),
            "entropy": list(self.entropy), "hardest_weight": list(self.hardest_weight),
            "n_negatives": self.n_negatives, "n_samples": self.n_samples})]


def effective_negatives(
    Z: Any,
    positives: Any = None,
    *,
    temperatures: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> EffectiveNegativesResult:
    """Effective number of negatives ``exp(H(r_i.))`` of InfoNCE at each temperature.

    Streams over anchor blocks: ``O(n^2 d)`` time, ``O(n)`` memory per block row.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    positives : array-like of shape (n_samples, n_features), optional
        See :func:`hardness_weights`.
    temperatures : sequence of float, default=(0.05, 0.1, 0.2, 0.5, 1, 2)
        Each > 0; sorted ascending in the result.
    max_samples : int or None, default=50000

    Returns
    -------
    EffectiveNegativesResult
    """
    taus = sorted(float(check_scalar(t, "temperatures", caller="effective_negatives",
                                     kind=(int, float), min_value=0, include_min=False))
                  for t in temperatures)
    if not taus:
        raise RepscopeValueError("temperatures of effective_negatives must hold at least one "
                                 "value; got an empty sequence.")
    A = _prep(Z, True, "effective_negatives", "Z", 3)
    P = None if positives is None else _prep(positives, True, "effective_negatives",
                                             "positives", 3)
    if P is not None and P.shape != A.shape:
        raise RepscopeValueError(
            f"positives must have the shape of Z (one positive per anchor); got "
            f"Z.shape={A.shape} and positives.shape={P.shape}.")
    n = A.shape[0]
    check_max_samples(n, max_samples, caller="effective_negatives", cost="O(n^2) time")
    ent = np.zeros(len(taus))
    eff = np.zeros(len(taus))
    hard = np.zeros(len(taus))
    for s in range(0, n, BLOCK):
        sl = slice(s, min(s + BLOCK, n))
        S = _similarities(A, P, sl)
        for j, tau in enumerate(taus):
            E = S / tau
            E -= E.max(axis=1, keepdims=True)
            W = np.exp(E)
            W /= W.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.where(W > 0, W * np.log(W), 0.0).sum(axis=1)
            ent[j] += h.sum()
            eff[j] += np.exp(h).sum()
            hard[j] += W.max(axis=1).sum()
    return EffectiveNegativesResult(
        temperatures=tuple(taus), effective_negatives=tuple(float(v) for v in eff / n),
        entropy=tuple(float(v) for v in ent / n), hardest_weight=tuple(float(v) for v in hard / n),
        n_negatives=n - 1, n_samples=n)


@register_geometry_measure(
    "uniformity", higher_is="less uniform on the sphere", higher_is_better=False, labels="none",
    cost="n^2", range=(None, 0.0), reference=_WANG_ISOLA)
def _uniformity_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """Uniformity (t = 2) of the L2-normalised rows; see :func:`uniformity`."""
    return uniformity(X, **opts)


@register_geometry_measure(
    "alignment", higher_is="less aligned (same-class pairs farther apart)",
    higher_is_better=False, labels="required", cost="moments", range=(0.0, 4.0),
    reference=_WANG_ISOLA)
def _alignment_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """Alignment with same-label pairs as positives; see :func:`class_alignment`."""
    return class_alignment(X, y, **opts)


@register_geometry_measure(
    "tolerance", higher_is="more tolerant (same-class samples closer)", higher_is_better=True,
    labels="required", cost="moments", range=(-1.0, 1.0), reference=_WANG_LIU)
def _tolerance_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """Mean same-class cosine; see :func:`tolerance`."""
    return tolerance(X, y, **opts)
