r"""Self-expressive subspace clustering on frozen features (Sindičić & Kopriva, 2025; linear
core).

Each sample is written as a combination of the others, :math:`h_i \approx \sum_{j \ne i}
c_{ij} h_j`; samples from the same linear subspace use each other. Coefficients:

* **least squares** (closed form, LSR with a zero diagonal): with :math:`G = HH^\top` and
  :math:`Z = (G + \lambda I)^{-1}`, row ``i`` of ``C`` is :math:`-Z_{i\cdot}/Z_{ii}` with
  :math:`c_{ii} = 0`, which is each sample's ridge regression on all the others;
  :math:`(G + \lambda I)^{-1}` comes from a ``d x d`` solve (Woodbury) when ``d < n``;
* **elastic net** (EnSC): one scikit-learn :class:`~sklearn.linear_model.ElasticNet` per
  sample on the other samples.

Then the ``k`` largest :math:`|c_{ij}|` of each row are kept, the affinity is
:math:`W = |C| + |C|^\top` and spectral clustering splits it
(:func:`repscope._kernels.spectral.spectral_cluster`).

**Several layers** share one coefficient matrix (the recipe's joint ``C``): the objective
:math:`\sum_l \|H_l - C H_l\|^2` has the Gram :math:`\sum_l H_l H_l^\top`, i.e. the
self-expression of the layers concatenated. Each layer's rows are L2-normalised first so that
no layer dominates by scale (our choice; the recipe trains an autoencoder instead).

``C`` is ``n x n`` (``8 n^2`` bytes), so ``n`` is limited (``max_samples``, default 5,000).
The recipe's self-stopping rule (relative change of a loss below a tolerance) is
:func:`repscope.geometry.plateau_index`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repscope._kernels.mst import check_max_samples
from repscope._validation import check_choice, check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._inputs import as_array, labels_for, normalize_rows
from repscope.geometry._registry import register_geometry_measure
from repscope.results import Result

__all__ = [
    "SubspaceClusteringResult",
    "prune_top_k",
    "self_expression",
    "subspace_affinity",
    "subspace_clustering",
    "subspace_clustering_accuracy",
]

#: Largest n by default (C is n x n).
SUBSPACE_MAX_SAMPLES = 5_000


def _features(X: Any, normalize: bool, caller: str) -> np.ndarray:
    """One array, or several layers concatenated (each row-normalised when ``normalize``)."""
    from repscope.stats import Moments
    from repscope.store import FeatureStore, LayerSource

    if isinstance(X, (FeatureStore, LayerSource, Mapping)) or (
            isinstance(X, Sequence) and not isinstance(X, (str, np.ndarray))
            and not isinstance(X, Moments) and len(X) and np.ndim(X[0]) == 2):
        if isinstance(X, Sequence) and not isinstance(X, (FeatureStore, LayerSource, Mapping)):
            X = {str(i): a for i, a in enumerate(X)}
        from repscope.store._layers import layer_source

        src = layer_source(X, None, pooling="mean", name="X", caller=caller)
        parts = [as_array(src.read(name), caller=caller) for name in src.layers]
        parts = [normalize_rows(p) if normalize else p for p in parts]
        return np.hstack(parts)
    A = as_array(X, caller=caller, min_samples=3)
    return normalize_rows(A) if normalize else A


def self_expression(
    X: Any,
    *,
    method: Literal["least_squares", "elastic_net"] = "least_squares",
    lam: float = 0.1,
    alpha: float = 0.01,
    l1_ratio: float = 0.5,
    normalize: bool = True,
    max_samples: int = SUBSPACE_MAX_SAMPLES,
) -> np.ndarray:
    r"""Self-expressive coefficients ``C`` (``n x n``, zero diagonal) with :math:`H \approx CH`.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), or several layers
        A mapping/sequence of arrays, a store or a LayerSource: the layers share one ``C``
        (joint Gram, rows of each layer normalised).
    method : {"least_squares", "elastic_net"}, default="least_squares"
    lam : float, default=0.1
        Ridge :math:`\lambda` of the least-squares form, times the mean diagonal of the Gram.
    alpha, l1_ratio : float
        scikit-learn's ElasticNet penalty (``method="elastic_net"``).
    normalize : bool, default=True
        L2-normalise rows first.
    max_samples : int, default=5,000

    Returns
    -------
    ndarray of shape (n_samples, n_samples)
    """
    caller = "self_expression"
    check_choice(method, "method", ("least_squares", "elastic_net"), caller=caller)
    check_scalar(lam, "lam", caller=caller, min_value=0.0, include_min=False)
    H = _features(X, normalize, caller)
    n, D = H.shape
    check_max_samples(n, max_samples, what="self_expression (an n x n coefficient matrix)")
    if method == "elastic_net":
        return _elastic_net(H, alpha, l1_ratio)
    lam_abs = lam * max(float(np.einsum("ij,ij->", H, H)) / n, 1e-12)
    if n > D:  # Woodbury: (HH^T + l I)^-1 = (I - H (l I + H^T H)^-1 H^T) / l
        inner = np.linalg.solve(lam_abs * np.eye(D) + H.T @ H, H.T)
        Z = -(H @ inner)
        Z[np.diag_indices(n)] += 1.0
        Z /= lam_abs
    else:
        G = H @ H.T
        G[np.diag_indices(n)] += lam_abs
        Z = np.linalg.inv(G)
    Z = (Z + Z.T) / 2
    C = -Z / np.diag(Z)[:, None]
    C[np.diag_indices(n)] = 0.0
    return C


def _elastic_net(H: np.ndarray, alpha: float, l1_ratio: float) -> np.ndarray:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet

    check_scalar(alpha, "alpha", caller="self_expression", min_value=0.0, include_min=False)
    check_scalar(l1_ratio, "l1_ratio", caller="self_expression", min_value=0.0, max_value=1.0)
    n = H.shape[0]
    C = np.zeros((n, n))
    model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, max_iter=2000)
    others = np.ones(n, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(n):
            others[i] = False
            model.fit(H[others].T, H[i])
            C[i, others] = model.coef_
            others[i] = True
    return C


def prune_top_k(C: Any, k: int) -> np.ndarray:
    """Keep the ``k`` largest ``|c_ij|`` of each row (each sample's strongest helpers)."""
    C = np.asarray(C, dtype=np.float64)
    k = check_positive_int(k, "k", caller="prune_top_k")
    if k >= C.shape[1]:
        return C.copy()
    keep = np.argpartition(-np.abs(C), k - 1, axis=1)[:, :k]
    out = np.zeros_like(C)
    rows = np.arange(C.shape[0])[:, None]
    out[rows, keep] = C[rows, keep]
    return out


def subspace_affinity(C: Any) -> np.ndarray:
    """The symmetric affinity ``|C| + |C|^T``."""
    A = np.abs(np.asarray(C, dtype=np.float64))
    return A + A.T


@dataclass(frozen=True)
class SubspaceClusteringResult(Result):
    """Clusters from self-expression.

    Attributes
    ----------
    labels : ndarray of int64, shape (n_samples,)
    n_clusters : int
    method : str
    k : int or None
        Entries kept per row (None: no pruning).
    n_layers : int
        Layers sharing the coefficients.
    """

    labels: np.ndarray
    n_clusters: int
    method: str
    k: int | None
    n_layers: int


def subspace_clustering(
    X: Any,
    n_clusters: int,
    *,
    method: Literal["least_squares", "elastic_net"] = "least_squares",
    k: int | None = 10,
    lam: float = 0.1,
    alpha: float = 0.01,
    l1_ratio: float = 0.5,
    normalize: bool = True,
    random_state: int | None = 0,
    max_samples: int = SUBSPACE_MAX_SAMPLES,
) -> SubspaceClusteringResult:
    """Self-expression, top-``k`` pruning, ``|C| + |C|^T`` and spectral clustering.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), or several layers (joint coefficients)
    n_clusters : int
    method, lam, alpha, l1_ratio, normalize, max_samples
        See :func:`self_expression`.
    k : int or None, default=10
        Entries kept per row (roughly the subspace dimension); None keeps all.
    random_state : int or None, default=0

    Returns
    -------
    SubspaceClusteringResult
    """
    from repscope._kernels.spectral import spectral_cluster

    C = self_expression(X, method=method, lam=lam, alpha=alpha, l1_ratio=l1_ratio,
                        normalize=normalize, max_samples=max_samples)
    if k is not None:
        C = prune_top_k(C, k)
    labels = spectral_cluster(subspace_affinity(C), n_clusters, random_state=random_state)
    n_layers = len(X) if isinstance(X, (Mapping, list, tuple)) else 1
    return SubspaceClusteringResult(labels, int(n_clusters), str(method), k, n_layers)


@register_geometry_measure(
    "subspace_clustering_accuracy",
    higher_is="classes lie on more distinct linear subspaces", higher_is_better=True,
    labels="required", cost="n^2", range=(0.0, 1.0),
    reference="Least-squares self-expression (LSR, Lu et al. 2012) + top-k + spectral "
    "clustering (Sindicic & Kopriva 2025, linear core); Hungarian accuracy vs labels")
def subspace_clustering_accuracy(X: Any, y: Any = None, *, k: int = 10, lam: float = 0.1,
                                 max_samples: int = SUBSPACE_MAX_SAMPLES,
                                 layer: str | None = None) -> float:
    """Accuracy (Hungarian matching) of least-squares subspace clustering with ``K`` = the
    number of classes in ``y``. ``C`` is ``n x n``: ``n <= max_samples``."""
    from repscope.geometry._coding_rate import clustering_scores

    A = as_array(X, layer=layer, caller="subspace_clustering_accuracy", min_samples=3)
    if y is None:
        raise RepscopeValueError("subspace_clustering_accuracy needs labels (y); got None.")
    lab = labels_for(y, A.shape[0], caller="subspace_clustering_accuracy")
    K = int(np.unique(lab).size)
    res = subspace_clustering(A, K, k=k, lam=lam, max_samples=max_samples)
    return clustering_scores(lab, res.labels).accuracy
