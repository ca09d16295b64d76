r"""Coding rate and rate reduction (MCR², Yu et al. 2020; MLC, Ding et al. ICCV 2023).

For ``n`` rows :math:`z_i \in \mathbb{R}^d` (L2-normalised by default, as the recipe does) and
precision :math:`\epsilon`:

.. math::

    R(Z) = \tfrac12 \log\det\!\Big(I + \frac{d}{n\epsilon^2} Z^\top Z\Big), \qquad
    R_c(Z, \Pi) = \sum_j \frac{\mathrm{tr}\,\Pi_j}{2n}
        \log\det\!\Big(I + \frac{d}{\mathrm{tr}\,\Pi_j\,\epsilon^2} Z^\top \Pi_j Z\Big),

with :math:`\Pi_j = \mathrm{diag}(\pi_j)` the membership weights of group ``j``, and the rate
reduction :math:`\Delta R = R - R_c`. Hard labels are one-hot memberships; a soft membership
is an ``(n, K)`` matrix whose columns are the groups; MLC's doubly stochastic ``n x n``
membership :math:`\Gamma` makes every column a group of total weight 1, which gives
:math:`R_c(Z,\Gamma) = \frac1{2n}\sum_i \log\det(I + \frac{d}{\epsilon^2} Z^\top
\mathrm{diag}(\Gamma_i) Z)`. A uniform membership gives :math:`\Delta R = 0`.

``R`` streams from :class:`~repscope.stats.Moments` (:math:`Z^\top Z = S + n\mu\mu^\top`).
Per-class rates need per-class ``d x d`` matrices: one class at a time (arrays), or one pass
with ``K`` accumulators when ``K d^2`` fits in memory, else ``K`` passes (stores).
Every log-determinant is taken on the smaller side (``d x d`` or the group's Gram).

Clustering from a membership: :func:`membership_clustering` runs spectral clustering on the
doubly stochastic :math:`\Gamma`, and :func:`clustering_scores` gives accuracy (Hungarian
matching of clusters to classes), NMI and ARI.

Recipe notes (reconstructed): :math:`\epsilon^2 = 0.5` and unit-norm rows follow the recipe's
CPU check; :math:`\eta = 0.1` for the Sinkhorn affinity is our choice (not retrieved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._inputs import (
    LayerView,
    as_array,
    as_moments,
    class_grams,
    labels_for,
    normalize_rows,
)
from repscope.geometry._registry import register_geometry_measure
from repscope.results import RecordedResult, Result

__all__ = [
    "ClusteringScores",
    "CodingRateResult",
    "clustering_scores",
    "coding_rate",
    "coding_rate_table",
    "membership_clustering",
    "rate_reduction",
]

#: The recipe's precision (digits PCA-32, unit-norm rows).
DEFAULT_EPS2 = 0.5


def _logdet_i_plus(a: float, G: np.ndarray) -> float:
    """``log det(I + a G)`` for a PSD ``G`` (Cholesky; eigenvalues when it fails)."""
    M = a * G
    M[np.abs(M) < 1e-150] = 0.0  # subnormal products make LAPACK hundreds of times slower
    M[np.diag_indices_from(M)] += 1.0
    try:
        L = np.linalg.cholesky(M)
        return float(2.0 * np.log(np.diag(L)).sum())
    except np.linalg.LinAlgError:
        w = np.linalg.eigvalsh((M + M.T) / 2)
        return float(np.log(np.clip(w, 1e-300, None)).sum())


def _rate_of(n: float, d: int, gram: np.ndarray, eps2: float) -> float:
    """``n/(2 N)``-free rate ``1/2 logdet(I + d/(n eps2) G)`` of a group of weight ``n``."""
    if n <= 0:
        return 0.0
    return 0.5 * _logdet_i_plus(d / (n * eps2), gram)


def _total_rate(Z: Any, normalize: bool, eps2: float, caller: str) -> tuple[float, int, int]:
    """``(R, n, d)``: from the ``n x n`` Gram when the rows are in memory and ``n < d``, else
    from Moments (``d x d``, streamed)."""
    from repscope.geometry._inputs import _view
    from repscope.stats import Moments

    Z = _view(Z, None, caller) or Z
    in_memory = not isinstance(Z, (LayerView, Moments)) or (
        isinstance(Z, LayerView) and Z._X is not None)
    if in_memory:
        A = Z.array() if isinstance(Z, LayerView) else as_array(Z, caller=caller)
        n, d = A.shape
        if n < d:
            A = normalize_rows(A) if normalize else A
            return _rate_of(n, d, A @ A.T, eps2), n, d
    m = as_moments(Z, normalize=normalize, caller=caller)
    d = int(m.n_features)
    return _rate_of(m.n, d, m.scatter() + m.n * np.outer(m.mean, m.mean), eps2), m.n, d


def _check_eps2(eps2: float, caller: str) -> float:
    return float(check_scalar(eps2, "eps2", caller=caller, min_value=0.0, include_min=False))


@register_geometry_measure(
    "coding_rate", higher_is="more spread over more directions (less compressed)",
    higher_is_better=None, labels="none", cost="moments", range=(0.0, None),
    reference="Yu et al. (2020) MCR^2; Ding et al. (2023) MLC: R = 1/2 logdet(I + d/(n eps^2) "
    "Z^T Z), unit-norm rows", defaults={"normalize": True})
def coding_rate(X: Any, y: Any = None, *, eps2: float = DEFAULT_EPS2, normalize: bool = True,
                layer: str | None = None) -> float:
    r"""Coding rate :math:`R(Z) = \frac12\log\det(I + \frac{d}{n\epsilon^2}Z^\top Z)`.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), Moments, store or LayerSource
        A Moments must hold the rows as measured (normalised when ``normalize``).
    y : ignored
    eps2 : float, default=0.5
        :math:`\epsilon^2`.
    normalize : bool, default=True
        L2-normalise the rows first.
    layer : str, optional

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> Z = np.eye(4)
    >>> bool(abs(coding_rate(Z, eps2=1.0) - 2 * np.log(2.0)) < 1e-12)
    True
    """
    from repscope.geometry._inputs import _view

    eps2 = _check_eps2(eps2, "coding_rate")
    return _total_rate(_view(X, layer, "coding_rate") or X, normalize, eps2, "coding_rate")[0]


def _membership(Pi: Any, n: int) -> tuple[str, np.ndarray]:
    """``("hard", labels)`` or ``("soft", (n, K) weights)``."""
    P = np.asarray(Pi)
    if P.ndim == 1:
        return "hard", labels_for(P, n, caller="rate_reduction", min_classes=1)
    if P.ndim != 2 or P.shape[0] != n:
        raise RepscopeValueError(
            f"membership must be labels of shape ({n},) or weights of shape ({n}, n_groups); "
            f"got shape {P.shape}.")
    P = P.astype(np.float64)
    if not np.all(np.isfinite(P)) or (P < 0).any():
        raise RepscopeValueError("membership weights must be finite and non-negative.")
    if not np.allclose(P.sum(axis=1), 1.0, atol=1e-6):
        raise RepscopeValueError(
            "membership weights of each sample (row) must sum to 1 (soft assignments or a "
            f"doubly stochastic matrix); row sums range over [{P.sum(axis=1).min():.4g}, "
            f"{P.sum(axis=1).max():.4g}].")
    return "soft", P


def _compressed_rate(Z: Any, member: tuple[str, np.ndarray], n: int, d: int, eps2: float,
                     normalize: bool) -> tuple[float, dict[Any, float]]:
    """``R_c`` and the per-group rates (hard labels only)."""
    kind, P = member
    per: dict[Any, float] = {}
    if kind == "hard":
        total = 0.0
        for c, nk, G in class_grams(Z, P, normalize=normalize, caller="rate_reduction"):
            r = _rate_of(nk, d, G, eps2)
            per[c] = r
            total += nk / n * r
        return total, per
    A = as_array(Z, caller="rate_reduction")
    A = normalize_rows(A) if normalize else A
    tr = P.sum(axis=0)
    keep = np.nonzero(tr > 0)[0]
    outer = A[:, :, None] * A[:, None, :] if n * d * d <= 2**25 else None  # (n, d, d)
    total = 0.0
    block = max(1, int(2**24 // max(1, d * d)))
    for s in range(0, keep.size, block):
        cols = keep[s:s + block]
        W = P[:, cols]                                   # (n, b)
        if outer is not None:
            grams = (W.T @ outer.reshape(n, d * d)).reshape(cols.size, d, d)
        else:
            grams = np.stack([(A.T * W[:, j]) @ A for j in range(cols.size)])
        scale = d / (tr[cols] * eps2)
        M = grams * scale[:, None, None]
        M[:, np.arange(d), np.arange(d)] += 1.0
        logdet = np.linalg.slogdet(M)[1]
        total += float((tr[cols] / n * 0.5 * logdet).sum())
    return total, per


@register_geometry_measure(
    "rate_reduction", higher_is="more discriminative (classes span different subspaces)",
    higher_is_better=True, labels="required", cost="moments", range=(0.0, None),
    reference="Yu et al. (2020) MCR^2: Delta R = R(Z) - R_c(Z, Pi), unit-norm rows",
    defaults={"normalize": True})
def rate_reduction(X: Any, y: Any = None, *, eps2: float = DEFAULT_EPS2, normalize: bool = True,
                   layer: str | None = None) -> float:
    r"""Rate reduction :math:`\Delta R = R(Z) - R_c(Z, \Pi)`.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), store or LayerSource
    y : array-like of shape (n_samples,) or (n_samples, n_groups)
        Hard labels, soft memberships (rows summing to 1), or a doubly stochastic
        ``(n, n)`` membership (every column a group).
    eps2 : float, default=0.5
    normalize : bool, default=True
    layer : str, optional

    Returns
    -------
    float
        ``>= 0`` up to rounding; 0 for a uniform membership.
    """
    if y is None:
        raise RepscopeValueError("rate_reduction needs a membership (labels or weights); got None.")
    eps2 = _check_eps2(eps2, "rate_reduction")
    from repscope.geometry._inputs import _view

    Z = _view(X, layer, "rate_reduction") or as_array(X, caller="rate_reduction")
    n = Z.n_samples if isinstance(Z, LayerView) else Z.shape[0]
    member = _membership(y, n)
    R, _, d = _total_rate(Z, normalize, eps2, "rate_reduction")
    Rc, _ = _compressed_rate(Z, member, n, d, eps2, normalize)
    return R - Rc


@dataclass(frozen=True)
class CodingRateResult(RecordedResult):
    """Coding rates of one layer: the whole, each class, and the rate reduction (with a
    shuffled-label baseline).

    Attributes
    ----------
    rate : float
        :math:`R(Z)`.
    compressed_rate : float
        :math:`R_c(Z, \\Pi_y)` for the true labels.
    rate_reduction : float
    rate_reduction_shuffled : float
        :math:`\\Delta R` for the same labels randomly permuted (a chance baseline).
    class_rates : tuple of float
        Each class's own rate, in the order of ``classes``.
    classes : tuple of str
    class_counts : tuple of int
    eps2 : float
    n_samples, n_features : int
    """

    analysis: ClassVar[str] = "geometry_coding_rate"

    rate: float
    compressed_rate: float
    rate_reduction: float
    rate_reduction_shuffled: float
    class_rates: tuple[float, ...]
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    eps2: float
    n_samples: int
    n_features: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One record: the rates, the per-class rates and the parameters."""
        return [("", {
            "rate": self.rate, "compressed_rate": self.compressed_rate,
            "rate_reduction": self.rate_reduction,
            "rate_reduction_shuffled": self.rate_reduction_shuffled,
            "class_rates": list(self.class_rates), "classes": list(self.classes),
            "class_counts": list(self.class_counts), "eps2": self.eps2,
            "n_samples": self.n_samples, "n_features": self.n_features})]


def coding_rate_table(X: Any, y: Any, *, eps2: float = DEFAULT_EPS2, normalize: bool = True,
                      seed: int = 0, layer: str | None = None) -> CodingRateResult:
    """:func:`coding_rate`, the per-class rates and :func:`rate_reduction` of one layer, with
    the rate reduction of shuffled labels as a baseline (one class's ``d x d`` matrix at a
    time; streams from a store).

    Parameters
    ----------
    X : array of shape (n_samples, n_features), store or LayerSource
    y : array-like of shape (n_samples,)
        Class labels.
    eps2 : float, default=0.5
    normalize : bool, default=True
    seed : int, default=0
        Seed of the label permutation.
    layer : str, optional

    Returns
    -------
    CodingRateResult
    """
    from repscope.geometry._inputs import _view

    eps2 = _check_eps2(eps2, "coding_rate_table")
    Z = _view(X, layer, "coding_rate_table") or as_array(X, caller="coding_rate_table")
    n = Z.n_samples if isinstance(Z, LayerView) else Z.shape[0]
    lab = labels_for(y, n, caller="coding_rate_table", min_classes=1)
    R, _, d = _total_rate(Z, normalize, eps2, "coding_rate_table")
    Rc, per = _compressed_rate(Z, ("hard", lab), n, d, eps2, normalize)
    shuffled = np.random.default_rng(seed).permutation(lab)
    Rc_s, _ = _compressed_rate(Z, ("hard", shuffled), n, d, eps2, normalize)
    classes, counts = np.unique(lab, return_counts=True)
    return CodingRateResult(
        rate=R, compressed_rate=Rc, rate_reduction=R - Rc, rate_reduction_shuffled=R - Rc_s,
        class_rates=tuple(float(per[c]) for c in classes),
        classes=tuple(str(c) for c in classes), class_counts=tuple(int(c) for c in counts),
        eps2=eps2, n_samples=n, n_features=d)


# --------------------------------------------------------------------------- clustering
@dataclass(frozen=True)
class ClusteringScores(Result):
    """Agreement of a clustering with reference labels.

    Attributes
    ----------
    accuracy : float
        Best one-to-one matching of clusters to classes (Hungarian), fraction correct.
    nmi : float
        Normalised mutual information (arithmetic mean normalisation, scikit-learn's default).
    ari : float
        Adjusted Rand index.
    mapping : tuple of (int, int)
        Matched (cluster, class index) pairs.
    """

    accuracy: float
    nmi: float
    ari: float
    mapping: tuple[tuple[int, int], ...]


def clustering_scores(y_true: Any, y_pred: Any) -> ClusteringScores:
    """Clustering accuracy (Hungarian matching), NMI and ARI of ``y_pred`` against ``y_true``.

    Examples
    --------
    >>> clustering_scores([0, 0, 1, 1, 2], [2, 2, 0, 0, 1]).accuracy
    1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from repscope._kernels.assignment import linear_assignment

    t = labels_for(y_true, len(np.asarray(y_true)), caller="clustering_scores", min_classes=1)
    p = labels_for(y_pred, t.size, caller="clustering_scores", min_classes=1)
    ct, ti = np.unique(t, return_inverse=True)
    cp, pi = np.unique(p, return_inverse=True)
    table = np.zeros((cp.size, ct.size))
    np.add.at(table, (pi, ti), 1.0)
    a = linear_assignment(table, maximize=True)
    return ClusteringScores(
        accuracy=float(a.total / t.size), nmi=float(normalized_mutual_info_score(t, p)),
        ari=float(adjusted_rand_score(t, p)),
        mapping=tuple((int(r), int(c)) for r, c in zip(a.rows, a.cols)))


def membership_clustering(X: Any, n_clusters: int, *, eta: float = 0.1,
                          exclude_self: bool = True, random_state: int | None = 0,
                          max_samples: int = 10_000, layer: str | None = None) -> np.ndarray:
    r"""Cluster the rows through MLC's doubly stochastic membership: spectral clustering of
    :math:`\Gamma = \mathrm{SinkhornProject}(\exp(\hat Z\hat Z^\top/\eta))`.

    ``Gamma`` is ``n x n`` (``8 n^2`` bytes), so ``n`` is limited to ``max_samples``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), store or LayerSource
    n_clusters : int
    eta : float, default=0.1
    exclude_self : bool, default=True
        Zero the diagonal before the projection.
    random_state : int or None, default=0
    max_samples : int, default=10,000
    layer : str, optional

    Returns
    -------
    ndarray of int64, shape (n_samples,)
    """
    from repscope._kernels.mst import check_max_samples
    from repscope._kernels.sinkhorn import sinkhorn_affinity
    from repscope._kernels.spectral import spectral_cluster

    A = as_array(X, layer=layer, caller="membership_clustering", min_samples=2)
    check_max_samples(A.shape[0], max_samples, what="membership_clustering (an n x n membership)")
    G = sinkhorn_affinity(A, eta=eta, exclude_self=exclude_self).matrix
    return spectral_cluster(G, n_clusters, random_state=random_state)
