"""Neuron-level comparison of two networks (Li, Yosinski, Clune, Lipson & Hopcroft, 2016).

Given activations ``A`` (n_samples, n_units_a) and ``B`` (n_samples, n_units_b) of two networks on
the same inputs (conv maps flattened over positions into samples by the caller):

* :func:`unit_correlation` -- Pearson correlations between units, from one paired
  :class:`~repscope.stats.Moments` pass (float64, streams, ``O(n d^2)``).
* :func:`match_units` -- one-to-one matching on the correlation matrix: Hungarian (max total
  correlation) or greedy, per-unit matched correlation vs the within-network next best.
* :func:`sparse_predictability` -- lasso ``b_j ~ A w_j`` per unit ``j`` of ``B`` over a grid of
  penalties: normalised MSE vs number of non-zero weights (local vs distributed codes).
* :func:`unit_mutual_information` -- plug-in mutual information between units on
  equal-frequency bins (the paper's alternative to correlation; sees non-linear links).
* :func:`unit_coclusters` -- spectral co-clustering of the ``|corr|`` (or MI) bipartite matrix,
  or spectral clustering of the joint ``[[C11, C12], [C21, C22]]`` matrix (the paper's
  many-to-many analysis): groups of units of both networks that span a shared subspace, and
  groups of one network alone (net-specific features).

Constant units (dead ReLUs) have no defined correlation; they get correlation 0 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from repscope._kernels.assignment import greedy_assignment, linear_assignment
from repscope._kernels.spectral import spectral_cluster, spectral_cocluster
from repscope._validation import check_choice, check_paired, check_positive_int
from repscope.exceptions import RepscopeValueError
from repscope.results import Result
from repscope.stats import Moments

__all__ = [
    "SparsePredictability",
    "SparsePredictabilityResult",
    "UnitCoclusters",
    "UnitCoclustersResult",
    "UnitMatching",
    "UnitMatchingResult",
    "match_units",
    "sparse_predictability",
    "unit_coclusters",
    "unit_correlation",
    "unit_mutual_information",
]


def _corr_from_scatter(s: np.ndarray, va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    den = np.sqrt(np.outer(va, vb))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(den > 0, s / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(c, -1.0, 1.0)


def _moments(A: Any, B: Any) -> Moments:
    if isinstance(A, Moments):
        if B is not None:
            raise RepscopeValueError("pass B=None when A is a paired Moments of (A, B).")
        if A.n_targets is None:
            raise RepscopeValueError(
                "A is a Moments without paired targets; accumulate it with update(A, B)."
            )
        if A.n < 2:
            raise RepscopeValueError(f"the Moments must hold at least 2 samples; got {A.n}.")
        return A
    A, B = check_paired(A, B, names=("A", "B"), min_samples=2)
    return Moments().update(A, B)


def unit_correlation(
    A: Any, B: Any = None, *, within: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Pearson correlation between the units of two networks.

    .. math:: C^{12}_{ij} = \frac{\sum_s (a_{si} - \bar a_i)(b_{sj} - \bar b_j)}
        {\sqrt{\sum_s (a_{si} - \bar a_i)^2 \sum_s (b_{sj} - \bar b_j)^2}}

    Parameters
    ----------
    A : array-like of shape (n_samples, n_units_a), or a paired Moments of (A, B)
    B : array-like of shape (n_samples, n_units_b), optional
        Omit when ``A`` is a Moments.
    within : bool, default=False
        Also return the within-network matrices ``C^{11}`` and ``C^{22}``.

    Returns
    -------
    ndarray of shape (n_units_a, n_units_b), or ``(C12, C11, C22)`` when ``within``.
        Constant units correlate 0 with everything (also with themselves).
    """
    c12, c11, c22 = _all_corr(A, B)
    return (c12, c11, c22) if within else c12


def _all_corr(A: Any, B: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = _moments(A, B)
    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    va, vb = np.diag(sxx).copy(), np.diag(syy).copy()
    return (_corr_from_scatter(sxy, va, vb), _corr_from_scatter(sxx, va, va),
            _corr_from_scatter(syy, vb, vb))


def _next_best(c: np.ndarray) -> np.ndarray:
    off = c.copy()
    np.fill_diagonal(off, -np.inf)
    return off.max(axis=1) if off.shape[1] > 1 else np.full(off.shape[0], np.nan)


@dataclass(frozen=True)
class UnitMatchingResult(Result):
    """A one-to-one matching of the units of network A to those of network B.

    Attributes
    ----------
    rows, cols : ndarray of int64, shape (n_matched,)
        Unit ``rows[i]`` of A is matched to unit ``cols[i]`` of B.
    matched_corr : ndarray of shape (n_matched,)
        Correlation of each matched pair (``|corr|`` when ``absolute``).
    within_next_best : ndarray of shape (n_matched,)
        For each matched unit of A, its highest correlation with another unit of A.
    method : str
    absolute : bool
    """

    rows: np.ndarray
    cols: np.ndarray
    matched_corr: np.ndarray
    within_next_best: np.ndarray
    method: str
    absolute: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Sum of the matched correlations (what Hungarian maximises)."""
        return float(self.matched_corr.sum())

    @property
    def mean_matched_corr(self) -> float:
        """Mean matched correlation."""
        return float(self.matched_corr.mean())

    @property
    def fraction_above_within(self) -> float:
        """Fraction of units whose match in B beats their best partner within A."""
        return float(np.mean(self.matched_corr > self.within_next_best))


#: The former name of :class:`UnitMatchingResult` (kept for one release).
UnitMatching = UnitMatchingResult


def match_units(
    A: Any,
    B: Any = None,
    *,
    method: Literal["hungarian", "greedy", "semi"] = "hungarian",
    absolute: bool = False,
) -> UnitMatchingResult:
    """Match units of network A to units of network B by correlation.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_units_a), or a paired Moments of (A, B)
    B : array-like of shape (n_samples, n_units_b), optional
    method : {"hungarian", "greedy", "semi"}, default="hungarian"
        ``"hungarian"``: one-to-one matching maximising the total correlation (exact,
        :func:`scipy.optimize.linear_sum_assignment`). ``"greedy"``: one-to-one, best remaining
        pair first (total <= Hungarian's). ``"semi"``: every unit of A takes its most
        correlated unit of B (not one-to-one; the paper's greedy semi-matching).
    absolute : bool, default=False
        Match on ``|corr|`` (a unit and its sign-flipped copy count as the same feature).

    Returns
    -------
    UnitMatchingResult
        ``min(n_units_a, n_units_b)`` pairs (``n_units_a`` for ``"semi"``).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((200, 4))
    >>> match_units(A, A[:, [2, 0, 3, 1]]).cols.tolist()
    [1, 3, 0, 2]
    """
    method = check_choice(method, "method", ("hungarian", "greedy", "semi"),  # type: ignore[assignment]
                          caller="match_units")
    c12, c11, _ = _all_corr(A, B)
    W = np.abs(c12) if absolute else c12
    if method == "hungarian":
        a = linear_assignment(W, maximize=True)
        rows, cols = a.rows, a.cols
    elif method == "greedy":
        a = greedy_assignment(W, maximize=True)
        rows, cols = a.rows, a.cols
    else:
        rows = np.arange(W.shape[0], dtype=np.int64)
        cols = np.argmax(W, axis=1).astype(np.int64)
    nb = _next_best(np.abs(c11) if absolute else c11)
    return UnitMatchingResult(
        rows=rows,
        cols=cols,
        matched_corr=W[rows, cols],
        within_next_best=nb[rows],
        method=method,
        absolute=bool(absolute),
        details={"n_units_a": int(W.shape[0]), "n_units_b": int(W.shape[1])},
    )


@dataclass(frozen=True)
class SparsePredictabilityResult(Result):
    """Lasso predictability of each unit of B from all units of A.

    Attributes
    ----------
    alphas : ndarray of shape (n_alphas,)
        L1 penalties, decreasing (scikit-learn's ``alpha`` on standardised units).
    units : ndarray of int64, shape (n_units,)
        The units of B that were predicted.
    nmse : ndarray of shape (n_units, n_alphas)
        In-sample normalised MSE ``||b - A w||^2 / ||b - mean(b)||^2`` (1 = no better than the
        mean, 0 = perfect).
    n_nonzero : ndarray of int64, shape (n_units, n_alphas)
        Non-zero weights of each fit.
    """

    alphas: np.ndarray
    units: np.ndarray
    nmse: np.ndarray
    n_nonzero: np.ndarray

    def best_nmse_with_at_most(self, max_nonzero: int) -> np.ndarray:
        """Per unit, the lowest NMSE among fits with at most ``max_nonzero`` weights."""
        ok = self.n_nonzero <= max_nonzero
        return np.where(ok, self.nmse, np.inf).min(axis=1)


#: The former name of :class:`SparsePredictabilityResult` (kept for one release).
SparsePredictability = SparsePredictabilityResult


def _standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Xc = X - X.mean(axis=0)
    sd = np.sqrt((Xc * Xc).mean(axis=0))
    live = sd > 0
    Xc[:, live] /= sd[live]
    Xc[:, ~live] = 0.0
    return Xc, live


def sparse_predictability(
    A: Any,
    B: Any,
    *,
    alphas: Any = None,
    n_alphas: int = 8,
    units: Any = None,
    max_iter: int = 2000,
    tol: float = 1e-5,
) -> SparsePredictabilityResult:
    r"""Lasso fits of each unit of B from the units of A, over a grid of penalties.

    For each unit ``j`` (standardised ``b_j``) and each ``alpha``,

    .. math:: \hat w_j = \arg\min_w \frac{1}{2n} \lVert b_j - \tilde A w \rVert^2
        + \alpha \lVert w \rVert_1

    with ``A~`` the standardised units of A. Each unit is one scikit-learn
    :func:`~sklearn.linear_model.lasso_path` run (coordinate descent with warm starts along the
    path) on the shared precomputed Gram matrix ``A~^T A~`` (computed once; each path then costs
    ``O(iterations x n_units_a^2)``, independent of ``n``). A near-local code reaches a low NMSE
    with few non-zeros.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_units_a)
    B : array-like of shape (n_samples, n_units_b)
    alphas : array-like of float, optional
        Penalties; default a geometric grid of ``n_alphas`` values from 0.5 down to 0.005 (on
        standardised data ``alpha >= max|corr|`` gives the empty model).
    n_alphas : int, default=8
    units : array-like of int, optional
        Units of B to predict (default all). Constant units are skipped with NMSE 1.
    max_iter : int, default=2000
    tol : float, default=1e-5

    Returns
    -------
    SparsePredictabilityResult
    """
    from sklearn.linear_model import lasso_path

    A, B = check_paired(A, B, names=("A", "B"), min_samples=3)
    from repscope._array import to_numpy

    As, _ = _standardize(to_numpy(A).astype(np.float64))
    Bn = to_numpy(B).astype(np.float64)
    idx = np.arange(Bn.shape[1]) if units is None else np.asarray(units, dtype=np.int64).ravel()
    if idx.size == 0 or idx.min() < 0 or idx.max() >= Bn.shape[1]:
        raise RepscopeValueError(
            f"units must be non-empty indices into the {Bn.shape[1]} units of B; got {idx!r}."
        )
    Bs, live = _standardize(Bn[:, idx])
    if alphas is None:
        grid = np.geomspace(0.5, 0.005, int(n_alphas))
    else:
        grid = np.sort(np.asarray(alphas, dtype=np.float64).ravel())[::-1]
        if grid.size == 0 or (grid <= 0).any():
            raise RepscopeValueError(f"alphas must be positive floats; got {alphas!r}.")
    n = As.shape[0]
    G = As.T @ As
    XY = As.T @ Bs
    nmse = np.ones((idx.size, grid.size))
    nnz = np.zeros((idx.size, grid.size), dtype=np.int64)
    for u in range(idx.size):
        if not live[u]:
            continue
        y = Bs[:, u]
        xy = XY[:, u]
        _, coefs, _ = lasso_path(
            As, y, alphas=grid, precompute=G, Xy=xy, max_iter=max_iter, tol=tol
        )
        W = coefs.reshape(As.shape[1], grid.size)
        rss = n - 2.0 * (xy @ W) + np.einsum("ia,ij,ja->a", W, G, W)
        nmse[u] = np.maximum(rss, 0.0) / n
        nnz[u] = (W != 0).sum(axis=0)
    return SparsePredictabilityResult(alphas=grid, units=idx, nmse=nmse, n_nonzero=nnz)


def _bin_codes(X: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, codes ``0 .. b_j - 1`` of equal-frequency bins (quantile edges, ties merged)."""
    q = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    codes = np.empty(X.shape, dtype=np.int64)
    nb = np.empty(X.shape[1], dtype=np.int64)
    for j in range(X.shape[1]):
        edges = np.unique(np.quantile(X[:, j], q))
        c = np.searchsorted(edges, X[:, j], side="right")
        _, c = np.unique(c, return_inverse=True)  # drop empty bins
        codes[:, j] = c
        nb[j] = int(c.max()) + 1
    return codes, nb


def _mi_matrix(X: np.ndarray, n_bins: int) -> np.ndarray:
    """Plug-in MI (nats) between every pair of columns, from one one-hot Gram matrix."""
    codes, nb = _bin_codes(X, n_bins)
    n = codes.shape[0]
    offsets = np.concatenate([[0], np.cumsum(nb)[:-1]])
    H = np.zeros((n, int(nb.sum())))
    H[np.arange(n)[:, None], codes + offsets] = 1.0
    P = (H.T @ H) / n
    p = H.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = np.where(P > 0, P * np.log(P / np.outer(p, p)), 0.0)
    M = np.add.reduceat(np.add.reduceat(T, offsets, axis=0), offsets, axis=1)
    return np.maximum(M, 0.0)


def unit_mutual_information(
    A: Any, B: Any, *, n_bins: int = 10, within: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Mutual information between the units of two networks (plug-in, binned).

    Each unit is cut into ``n_bins`` equal-frequency bins (quantile edges; tied edges merge,
    so a ReLU unit that is 0 on most inputs keeps one bin for 0); for every pair of units

    .. math:: I_{ij} = \sum_{a, b} p_{ij}(a, b) \log \frac{p_{ij}(a, b)}{p_i(a)\, p_j(b)}

    in nats, from the joint bin frequencies. All pairs come from one one-hot Gram matrix
    (memory ``O((n_units x n_bins)^2)``).

    Parameters
    ----------
    A : array-like of shape (n_samples, n_units_a)
    B : array-like of shape (n_samples, n_units_b)
    n_bins : int, default=10
    within : bool, default=False
        Also return the within-network matrices ``I^{11}`` and ``I^{22}``.

    Returns
    -------
    ndarray of shape (n_units_a, n_units_b), or ``(I12, I11, I22)`` when ``within``.
        A constant unit has MI 0 with everything.
    """
    from repscope._array import to_numpy

    b = check_positive_int(n_bins, "n_bins", caller="unit_mutual_information")
    if b < 2:
        raise RepscopeValueError(
            f"The 'n_bins' parameter of unit_mutual_information must be >= 2. Got {b}.")
    if isinstance(A, Moments):
        raise RepscopeValueError(
            "mutual information needs the activations themselves, not a Moments (which holds "
            "only second moments); pass the arrays A and B.")
    A, B = check_paired(A, B, names=("A", "B"), min_samples=2)
    An, Bn = to_numpy(A).astype(np.float64), to_numpy(B).astype(np.float64)
    M = _mi_matrix(np.concatenate([An, Bn], axis=1), b)
    ua = An.shape[1]
    i12, i11, i22 = M[:ua, ua:], M[:ua, :ua], M[ua:, ua:]
    return (i12, i11, i22) if within else i12


@dataclass(frozen=True)
class UnitCoclustersResult(Result):
    """Spectral co-clusters of the units of two networks.

    Attributes
    ----------
    labels_a : ndarray of int64, shape (n_units_a,)
    labels_b : ndarray of int64, shape (n_units_b,)
        Co-cluster of each unit; same label = same shared group.
    sizes : ndarray of int64, shape (n_clusters, 2)
        Units of A and of B in each co-cluster.
    mean_abs_corr : ndarray of shape (n_clusters,)
        Mean weight between the A-units and B-units of each co-cluster: ``|corr|``, or the
        mutual information in nats when ``stat="mi"`` (NaN if one side is empty).
    matrix : {"bipartite", "joint"}
    stat : {"corr", "mi"}
    """

    labels_a: np.ndarray
    labels_b: np.ndarray
    sizes: np.ndarray
    mean_abs_corr: np.ndarray
    matrix: str = "bipartite"
    stat: str = "corr"

    @property
    def n_shared(self) -> int:
        """Clusters holding units of both networks (shared subspaces)."""
        return int(((self.sizes[:, 0] > 0) & (self.sizes[:, 1] > 0)).sum())


#: The former name of :class:`UnitCoclustersResult` (kept for one release).
UnitCoclusters = UnitCoclustersResult


def unit_coclusters(
    A: Any,
    B: Any = None,
    *,
    n_clusters: int,
    random_state: int | None = 0,
    matrix: Literal["bipartite", "joint"] = "bipartite",
    stat: Literal["corr", "mi"] = "corr",
    n_bins: int = 10,
) -> UnitCoclustersResult:
    """Spectral clustering of the units of A and B together.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_units_a), or a paired Moments of (A, B)
        (``stat="corr"`` only)
    B : array-like of shape (n_samples, n_units_b), optional
    n_clusters : int
        Number of clusters.
    random_state : int or None, default=0
    matrix : {"bipartite", "joint"}, default="bipartite"
        ``"bipartite"``: spectral co-clustering (Dhillon) of the between-network matrix
        ``W12`` alone. ``"joint"``: normalised spectral clustering of the
        ``(n_units_a + n_units_b)`` square matrix ``[[W11, W12], [W12^T, W22]]`` with a zero
        diagonal (Li et al.'s many-to-many analysis): within-network links count too, so a
        group of units with no counterpart in the other network forms a cluster of its own.
    stat : {"corr", "mi"}, default="corr"
        ``W = |corr|`` (:func:`unit_correlation`) or the mutual information
        (:func:`unit_mutual_information`, ``n_bins`` equal-frequency bins), which also links
        units related non-linearly.
    n_bins : int, default=10
        Bins per unit for ``stat="mi"``.

    Returns
    -------
    UnitCoclustersResult
    """
    matrix = check_choice(matrix, "matrix", ("bipartite", "joint"),  # type: ignore[assignment]
                          caller="unit_coclusters")
    stat = check_choice(stat, "stat", ("corr", "mi"), caller="unit_coclusters")  # type: ignore[assignment]
    if stat == "mi":
        W, W11, W22 = unit_mutual_information(A, B, n_bins=n_bins, within=True)
    else:
        c12, c11, c22 = _all_corr(A, B)
        W, W11, W22 = np.abs(c12), np.abs(c11), np.abs(c22)
    k = int(n_clusters)
    if matrix == "bipartite":
        cc = spectral_cocluster(W, n_clusters, random_state=random_state)
        row_labels, col_labels = cc.row_labels, cc.col_labels
    else:
        ua, ub = W.shape
        if not 2 <= k <= ua + ub:
            raise RepscopeValueError(
                f"The 'n_clusters' parameter of unit_coclusters must be in [2, {ua + ub}] (the "
                f"units of both networks). Got {n_clusters!r} instead.")
        J = np.block([[W11, W], [W.T, W22]])
        np.fill_diagonal(J, 0.0)
        labels = spectral_cluster(J, k, random_state=random_state)
        row_labels, col_labels = labels[:ua], labels[ua:]
    sizes = np.zeros((k, 2), dtype=np.int64)
    mac = np.full(k, np.nan)
    for c in range(k):
        ra, rb = row_labels == c, col_labels == c
        sizes[c] = (int(ra.sum()), int(rb.sum()))
        if ra.any() and rb.any():
            mac[c] = float(W[np.ix_(ra, rb)].mean())
    return UnitCoclustersResult(
        labels_a=row_labels, labels_b=col_labels, sizes=sizes, mean_abs_corr=mac,
        matrix=str(matrix), stat=str(stat),
    )
