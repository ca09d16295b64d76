r"""Supervised separability: Fisher ratio, neural collapse, Thornton's kNN agreement,
silhouette and Calinski–Harabasz.

The Fisher, neural-collapse and Calinski–Harabasz measures depend on the data only through
class counts, class means and the pooled within/between scatter, so they are computed from
:class:`~repscope.stats.Moments` (``class_cov="none"``: no per-class d x d matrices) and
stream from a store. Thornton's index and the silhouette need every point: they run in
O(n) memory over blocked distances (O(n^2) time) and refuse ``n > max_samples``.

Notation: ``n`` samples, ``K`` classes with counts :math:`n_k` and means :math:`\mu_k`, global
mean :math:`\mu`, within-class scatter :math:`S_W = \sum_k \sum_{i \in k}(x_i-\mu_k)(x_i-\mu_k)^\top`
and between-class scatter :math:`S_B = \sum_k n_k (\mu_k-\mu)(\mu_k-\mu)^\top`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._kernels.mst import DEFAULT_MAX_SAMPLES, check_max_samples
from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._inputs import as_array, as_moments, labels_for
from repscope.geometry._registry import register_geometry_measure

__all__ = [
    "calinski_harabasz",
    "fisher_directions",
    "fisher_ratio",
    "fisher_trace_ratio",
    "nc_equiangularity",
    "nc_equinorm",
    "nc_max_angle",
    "nc_self_duality",
    "nc_variability",
    "silhouette",
    "thornton_index",
]


def _moments(X: Any, y: Any, caller: str, layer: str | None) -> Any:
    from repscope.stats import Moments

    if y is None and not isinstance(X, Moments):  # a Moments carries its class sums
        raise RepscopeValueError(f"{caller} needs class labels (y); got None.")
    m = as_moments(X, y, layer=layer, caller=caller)
    K = m.classes.size
    if K < 2:
        raise RepscopeValueError(f"{caller} needs at least 2 classes; got {K}.")
    if m.n <= K:
        raise RepscopeValueError(
            f"{caller} needs more samples than classes; got {m.n} samples and {K} classes.")
    return m


def _regularised(S: np.ndarray, reg: float) -> np.ndarray:
    """``S + reg * (tr S / d) I`` (a relative ridge; singular within-class scatter when
    ``d >= n - K``)."""
    d = S.shape[0]
    scale = float(np.trace(S)) / d if d else 0.0
    return S + (reg * scale if scale > 0 else reg) * np.eye(d)


def fisher_directions(X: Any, y: Any = None, *, reg: float = 1e-6,
                      layer: str | None = None) -> np.ndarray:
    r"""Fisher ratio along each discriminant direction: the ``K - 1`` largest generalised
    eigenvalues :math:`\lambda_j` of :math:`S_B v = \lambda (S_W + r I) v` (descending).

    Each :math:`\lambda_j` is the between/within variance ratio of the projection on the
    ``j``-th discriminant (LDA) direction; their sum is :func:`fisher_ratio`.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), Moments, store or LayerSource
    y : array-like of shape (n_samples,)
    reg : float, default=1e-6
        Relative ridge on :math:`S_W` (times its mean eigenvalue), so a singular within-class
        scatter (``d >= n - K``) has a defined answer.
    layer : str, optional
        The layer, for a store with several.

    Returns
    -------
    ndarray of shape (min(K - 1, d),)
    """
    import scipy.linalg

    check_scalar(reg, "reg", caller="fisher_directions", min_value=0.0)
    m = _moments(X, y, "fisher_directions", layer)
    Sw = _regularised(m.within_class_scatter(), reg)
    Sb = m.between_class_scatter()
    vals = scipy.linalg.eigh(Sb, Sw, eigvals_only=True)
    r = min(m.classes.size - 1, Sb.shape[0])
    return np.clip(np.sort(vals)[::-1][:r], 0.0, None)


@register_geometry_measure(
    "fisher_ratio", higher_is="more separable classes", higher_is_better=True,
    labels="required", cost="moments", range=(0.0, None),
    reference="Fisher (1936); multi-class trace form tr(S_W^-1 S_B) (Fukunaga 1990)")
def fisher_ratio(X: Any, y: Any = None, *, reg: float = 1e-6, layer: str | None = None) -> float:
    r"""Multi-class Fisher ratio, trace form :math:`J = \mathrm{tr}\big((S_W + rI)^{-1} S_B\big)`.

    The sum of :func:`fisher_directions`; invariant to invertible linear maps of the features
    (up to the ridge ``reg``). Streams from a store (Moments, no per-class matrices).

    Parameters
    ----------
    X : array of shape (n_samples, n_features), Moments, store or LayerSource
    y : array-like of shape (n_samples,)
    reg : float, default=1e-6
        Relative ridge on :math:`S_W` (see :func:`fisher_directions`).
    layer : str, optional

    Returns
    -------
    float

    Raises
    ------
    RepscopeValueError
        No labels, one class, or no more samples than classes.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> round(fisher_ratio(X, [0, 0, 1, 1]), 3)
    100.0
    """
    check_scalar(reg, "reg", caller="fisher_ratio", min_value=0.0)
    m = _moments(X, y, "fisher_ratio", layer)
    Sw = _regularised(m.within_class_scatter(), reg)
    return float(np.trace(np.linalg.solve(Sw, m.between_class_scatter())))


@register_geometry_measure(
    "fisher_trace_ratio", higher_is="more separable classes", higher_is_better=True,
    labels="required", cost="moments", range=(0.0, None),
    reference="tr(S_B) / tr(S_W) (the scalar Fisher criterion; rotation invariant)")
def fisher_trace_ratio(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    r"""Ratio of traces :math:`\mathrm{tr}(S_B) / \mathrm{tr}(S_W)` (between over within
    spread; rotation and scale invariant, defined when :math:`S_W` is singular; ``inf`` when
    every class is a single point)."""
    m = _moments(X, y, "fisher_trace_ratio", layer)
    w = float(np.trace(m.within_class_scatter()))
    b = float(np.trace(m.between_class_scatter()))
    return b / w if w > 0 else (np.inf if b > 0 else np.nan)


@register_geometry_measure(
    "calinski_harabasz", higher_is="more separable classes", higher_is_better=True,
    labels="required", cost="moments", range=(0.0, None),
    reference="Calinski & Harabasz (1974); equals sklearn.metrics.calinski_harabasz_score")
def calinski_harabasz(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    r"""Calinski–Harabasz index
    :math:`\frac{\mathrm{tr}(S_B)/(K-1)}{\mathrm{tr}(S_W)/(n-K)}` (scikit-learn's value; 1.0
    when every class is a single point, as scikit-learn returns)."""
    m = _moments(X, y, "calinski_harabasz", layer)
    K, n = m.classes.size, m.n
    w = float(np.trace(m.within_class_scatter()))
    b = float(np.trace(m.between_class_scatter()))
    return 1.0 if w == 0 else b * (n - K) / (w * (K - 1))


# --------------------------------------------------------------------------- neural collapse
def _centred_means(m: Any) -> np.ndarray:
    """Class means minus the mean of the class means (Papyan et al.'s global mean is the
    mean over samples; with balanced classes both agree). We use the sample mean."""
    return np.asarray(m.class_means - m.mean)


@register_geometry_measure(
    "nc_variability", higher_is="less collapsed (more within-class spread)",
    higher_is_better=False, labels="required", cost="moments", range=(0.0, None),
    reference="Papyan, Han & Donoho (2020), NC1 = tr(Sigma_W Sigma_B^+) / K")
def nc_variability(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    r"""Neural-collapse NC1: within/between variability ratio
    :math:`\mathrm{tr}(\Sigma_W \Sigma_B^{+})/K` with :math:`\Sigma_W = S_W/n`,
    :math:`\Sigma_B = \frac1K \sum_k (\mu_k-\mu)(\mu_k-\mu)^\top`. 0 under full collapse."""
    m = _moments(X, y, "nc_variability", layer)
    K = m.classes.size
    M = _centred_means(m)
    Sigma_b = M.T @ M / K
    Sigma_w = m.within_class_scatter() / m.n
    return float(np.trace(Sigma_w @ np.linalg.pinv(Sigma_b, hermitian=True)) / K)


@register_geometry_measure(
    "nc_equinorm", higher_is="less equal class-mean norms", higher_is_better=False,
    labels="required", cost="moments", range=(0.0, None),
    reference="Papyan, Han & Donoho (2020), NC2: std/mean of ||mu_k - mu||")
def nc_equinorm(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    r"""Coefficient of variation of the centred class-mean norms
    :math:`\mathrm{std}_k \|\mu_k-\mu\| / \mathrm{mean}_k \|\mu_k-\mu\|` (0: equal norms)."""
    m = _moments(X, y, "nc_equinorm", layer)
    norms = np.linalg.norm(_centred_means(m), axis=1)
    mean = float(norms.mean())
    return float(norms.std() / mean) if mean > 0 else np.nan


def _cosines(m: Any) -> np.ndarray:
    M = _centred_means(m)
    norms = np.linalg.norm(M, axis=1)
    U = M / np.where(norms > 0, norms, 1.0)[:, None]
    C = U @ U.T
    return C[~np.eye(C.shape[0], dtype=bool)]


@register_geometry_measure(
    "nc_equiangularity", higher_is="less equal angles between class means",
    higher_is_better=False, labels="required", cost="moments", range=(0.0, None),
    reference="Papyan, Han & Donoho (2020), NC2: std over k != l of cos(mu_k - mu, mu_l - mu)")
def nc_equiangularity(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    """Standard deviation of the cosines between distinct centred class means (0: equal
    angles)."""
    m = _moments(X, y, "nc_equiangularity", layer)
    return float(_cosines(m).std())


@register_geometry_measure(
    "nc_max_angle", higher_is="further from a simplex of class means", higher_is_better=False,
    labels="required", cost="moments", range=(0.0, None),
    reference="Papyan, Han & Donoho (2020), NC2: mean |cos + 1/(K-1)|")
def nc_max_angle(X: Any, y: Any = None, *, layer: str | None = None) -> float:
    r"""Mean of :math:`|\cos(\mu_k-\mu, \mu_l-\mu) + 1/(K-1)|` over distinct classes: 0 when the
    centred class means form a simplex equiangular tight frame (maximal equal angles)."""
    m = _moments(X, y, "nc_max_angle", layer)
    K = m.classes.size
    return float(np.abs(_cosines(m) + 1.0 / (K - 1)).mean())


def nc_self_duality(X: Any, y: Any, classifier: Any, *, layer: str | None = None) -> float:
    r"""Neural-collapse NC3: :math:`\big\| W/\|W\|_F - M/\|M\|_F \big\|_F^2` between the
    classifier's weights ``W`` (``K x d``, rows in the order of the sorted classes) and the
    centred class means ``M``; 0 when the classifier is a scaled copy of the means.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), Moments, store or LayerSource
    y : array-like of shape (n_samples,)
    classifier : fitted linear classifier (``coef_`` of shape (K, d)) or array (K, d)
        A binary scikit-learn classifier's single row ``coef_`` is expanded to ``[-w/2, w/2]``.
    layer : str, optional

    Returns
    -------
    float in [0, 4]
    """
    m = _moments(X, y, "nc_self_duality", layer)
    W = np.asarray(getattr(classifier, "coef_", classifier), dtype=np.float64)
    K = m.classes.size
    if W.ndim == 1 or (W.shape[0] == 1 and K == 2):
        w = W.reshape(-1)
        W = np.stack([-w / 2, w / 2])
    M = _centred_means(m)
    if W.shape != M.shape:
        raise RepscopeValueError(
            f"classifier weights must have shape (n_classes, n_features) = {M.shape}; got "
            f"{W.shape}.")
    W = W - W.mean(axis=0)
    wn, mn = np.linalg.norm(W), np.linalg.norm(M)
    if wn == 0 or mn == 0:
        return np.nan
    return float(np.linalg.norm(W / wn - M / mn) ** 2)


# --------------------------------------------------------------------------- pairwise (O(n^2))
@register_geometry_measure(
    "thornton", higher_is="more neighbours share the label", higher_is_better=True,
    labels="required", cost="n^2", range=(0.0, 1.0),
    reference="Thornton (1998) separability index: mean fraction of a point's k nearest "
    "neighbours with its label")
def thornton_index(X: Any, y: Any = None, *, k: int = 5, max_samples: int = DEFAULT_MAX_SAMPLES,
                   layer: str | None = None) -> float:
    """Thornton's separability index: the mean fraction of each point's ``k`` nearest
    neighbours (Euclidean, itself excluded) that share its label. Exact blocked kNN search
    (O(n^2 d) time, O(n) memory); refuses ``n > max_samples``."""
    from repscope._kernels.knn import knn_search

    A = as_array(X, layer=layer, caller="thornton_index", min_samples=2)
    if y is None:
        raise RepscopeValueError("thornton_index needs class labels (y); got None.")
    lab = labels_for(y, A.shape[0], caller="thornton_index")
    k = check_positive_int(k, "k", caller="thornton_index")
    check_max_samples(A.shape[0], max_samples, what="thornton_index")
    k = min(k, A.shape[0] - 1)
    idx = knn_search(A, A, k, metric="euclidean", exclude_self=True).indices
    return float((lab[np.asarray(idx)] == lab[:, None]).mean())


@register_geometry_measure(
    "silhouette", higher_is="tighter, better separated classes", higher_is_better=True,
    labels="required", cost="n^2", range=(-1.0, 1.0),
    reference="Rousseeuw (1987); equals sklearn.metrics.silhouette_score (Euclidean)")
def silhouette(X: Any, y: Any = None, *, max_samples: int = DEFAULT_MAX_SAMPLES,
               block_elements: int = 1 << 22, layer: str | None = None) -> float:
    r"""Mean silhouette :math:`s_i = (b_i - a_i)/\max(a_i, b_i)` (Euclidean), computed over
    blocks of rows: each block's ``rows x n`` distances are summed per class with one matrix
    product, so memory is O(n) (``block_elements`` distances at a time). Points of
    single-sample classes score 0, as in scikit-learn."""
    A = as_array(X, layer=layer, caller="silhouette", min_samples=2)
    if y is None:
        raise RepscopeValueError("silhouette needs class labels (y); got None.")
    lab = labels_for(y, A.shape[0], caller="silhouette")
    n = A.shape[0]
    check_max_samples(n, max_samples, what="silhouette")
    classes, code = np.unique(lab, return_inverse=True)
    K = classes.size
    if n <= K:
        raise RepscopeValueError(
            f"silhouette needs fewer classes than samples (2 <= K <= n - 1); got {K} classes "
            f"and {n} samples.")
    onehot = np.zeros((n, K))
    onehot[np.arange(n), code] = 1.0
    counts = onehot.sum(axis=0)
    A = A - A.mean(axis=0)
    sq = np.einsum("ij,ij->i", A, A)
    rows = max(1, min(n, int(block_elements) // n))
    s = np.empty(n)
    for start in range(0, n, rows):
        e = min(n, start + rows)
        D = A[start:e] @ A.T
        D *= -2.0
        D += sq[start:e, None]
        D += sq[None, :]
        np.maximum(D, 0.0, out=D)
        np.sqrt(D, out=D)
        D[np.arange(e - start), np.arange(start, e)] = 0.0
        sums = D @ onehot
        own = code[start:e]
        n_own = counts[own] - 1
        a = np.where(n_own > 0, sums[np.arange(e - start), own] / np.maximum(n_own, 1), 0.0)
        mean_other = sums / counts[None, :]
        mean_other[np.arange(e - start), own] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        si = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
        s[start:e] = np.where(n_own > 0, si, 0.0)
    return float(s.mean())
