r"""How well one space has been carried onto another: paired cosine, retrieval top-k,
matching accuracy, kernel agreement; the cross-modal :func:`transfer` of a fitted map and the
orthogonality-gap diagnostic.

Retrieval uses the shared blocked kNN kernel (:func:`repscope._kernels.knn.knn_search`), so
memory is ``O(block x n)``, never ``n x n``. Matching solves the linear assignment problem on
the similarity matrix, which is inherently ``n x n`` (refused above ``max_n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy, is_torch
from repscope._validation import check_choice, check_features, check_paired, check_scalar
from repscope.align._maps import MIN_SAMPLES, AffineMapMixin, LinearMap, OrthogonalMap
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result

__all__ = [
    "OrthogonalityGap",
    "OrthogonalityGapResult",
    "RetrievalResult",
    "kernel_agreement",
    "matching_accuracy",
    "orthogonality_gap",
    "paired_cosine",
    "retrieval_topk",
    "transfer",
]


def _check_same_width(A: Any, B: Any, caller: str) -> None:
    if int(A.shape[1]) != int(B.shape[1]):
        raise RepscopeValueError(
            f"{caller} compares rows of A and B in one space: they must have the same number "
            f"of columns; got A.shape={tuple(A.shape)} and B.shape={tuple(B.shape)}. Map one "
            "space onto the other first (e.g. OrthogonalMap().fit(A, B).transform(A))."
        )


def paired_cosine(A: Any, B: Any) -> float:
    r"""Mean cosine similarity of paired rows, :math:`\frac1n\sum_i \cos(a_i, b_i)`.

    Parameters
    ----------
    A, B : array-like of shape (n_samples, n_features)
        E.g. a map's held-out output and the true partner representation.

    Returns
    -------
    float in [-1, 1]. Rows of zero norm count as cosine 0.
    """
    A, B = check_paired(A, B, names=("A", "B"), min_samples=1)
    _check_same_width(A, B, "paired_cosine")
    a, b = as_float64_numpy(A), as_float64_numpy(B)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    den = na * nb
    dots = np.einsum("ij,ij->i", a, b)
    cos = np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)
    return float(cos.mean())


@dataclass(frozen=True)
class RetrievalResult(Result):
    """Top-k retrieval accuracy: query ``A[i]`` should find ``B[i]`` among all rows of ``B``.

    Attributes
    ----------
    topk : dict of int to float
        Fraction of queries whose partner is among their ``k`` nearest gallery rows.
    chance : dict of int to float
        ``k / n``, the accuracy of a random ranking.
    n_samples : int
    metric : str
    """

    topk: dict[int, float]
    chance: dict[int, float]
    n_samples: int
    metric: str
    details: dict[str, Any] = field(default_factory=dict)


def retrieval_topk(
    A: Any,
    B: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    metric: Literal["cosine", "euclidean", "inner_product"] = "cosine",
    block_size: int = 4096,
) -> RetrievalResult:
    r"""Cross-space retrieval: is ``B[i]`` among the ``k`` nearest rows of ``B`` to ``A[i]``?

    .. math:: \mathrm{top}\text{-}k = \frac1n \sum_i
        \mathbf 1\!\left[i \in \operatorname{kNN}_B(a_i, k)\right]

    One exact blocked search (:func:`repscope._kernels.knn.knn_search`) with the largest
    ``k`` answers every ``k``; memory is ``O(block_size x n)``, never ``n x n``.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_features)
        Queries (e.g. mapped representations of model A).
    B : array-like of shape (n_samples, n_features)
        Gallery, row ``i`` paired with ``A[i]``.
    ks : sequence of int, default=(1, 5, 10)
        Cut-offs, each at most ``n_samples``.
    metric : {"cosine", "euclidean", "inner_product"}, default="cosine"
    block_size : int, default=4096
        Gallery rows scored at a time.

    Returns
    -------
    RetrievalResult
    """
    from repscope._kernels.knn import knn_search

    A, B = check_paired(A, B, names=("A", "B"), min_samples=1)
    _check_same_width(A, B, "retrieval_topk")
    n = int(A.shape[0])
    kk = [check_scalar(int(k) if isinstance(k, (np.integer,)) else k, "ks", caller="retrieval_topk",
                       kind=int, min_value=1, max_value=n) for k in ks]
    if not kk:
        raise RepscopeValueError("The 'ks' parameter of retrieval_topk must not be empty.")
    res = knn_search(A, B, max(kk), metric=metric, block_size=block_size)
    idx = res.indices.cpu().numpy() if is_torch(res.indices) else np.asarray(res.indices)
    hit = idx == np.arange(n)[:, None]
    topk = {int(k): float(hit[:, :k].any(axis=1).mean()) for k in kk}
    return RetrievalResult(topk=topk, chance={int(k): k / n for k in kk}, n_samples=n,
                           metric=str(metric))


def matching_accuracy(
    A: Any, B: Any, *, metric: Literal["cosine", "inner_product"] = "cosine",
    max_n: int = 20_000,
) -> float:
    r"""Fraction of rows that a one-to-one matching of ``A`` to ``B`` pairs correctly.

    The matching maximises the total similarity :math:`\sum_i s_{i\pi(i)}` over permutations
    :math:`\pi` (Hungarian / Jonker-Volgenant on the ``n x n`` similarity matrix); the score is
    :math:`\frac1n\sum_i \mathbf 1[\pi(i) = i]`.

    Parameters
    ----------
    A, B : array-like of shape (n_samples, n_features)
        Paired rows in one space.
    metric : {"cosine", "inner_product"}, default="cosine"
    max_n : int, default=20000
        Largest ``n`` accepted (the similarity matrix is ``n x n`` float64).

    Returns
    -------
    float in [0, 1]
    """
    A, B = check_paired(A, B, names=("A", "B"), min_samples=1)
    _check_same_width(A, B, "matching_accuracy")
    metric = check_choice(metric, "metric", ("cosine", "inner_product"),  # type: ignore[assignment]
                          caller="matching_accuracy")
    n = int(A.shape[0])
    if n > max_n:
        raise RepscopeValueError(
            f"matching_accuracy builds an n x n similarity matrix; n={n} exceeds max_n={max_n}. "
            "Subsample the pairs or raise max_n."
        )
    a, b = as_float64_numpy(A), as_float64_numpy(B)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    rows, cols = _assign_max(a @ b.T)
    return float(np.mean(cols[np.argsort(rows)] == np.arange(n)))


def _assign_max(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight perfect matching of a square similarity matrix (shared kernel)."""
    from repscope._kernels.assignment import linear_assignment

    a = linear_assignment(sim, maximize=True)
    return np.asarray(a.rows), np.asarray(a.cols)


def kernel_agreement(A: Any, B: Any) -> float:
    """Agreement of the two spaces' linear kernels: linear CKA of ``A`` and ``B``.

    Invariant to rotation, isotropic scale and translation of either input, so it measures
    whether the *geometry* of a mapped space matches its partner's, independently of how well
    individual points land (see :func:`paired_cosine`). Widths may differ.
    """
    from repscope.similarity import linear_cka

    return float(linear_cka(A, B))


def transfer(
    fitted_map: Any,
    X: Any,
    *,
    source_mean: Literal["fitted", "own"] | Any = "fitted",
    target_mean: Literal["fitted"] | Any = "fitted",
) -> Any:
    r"""Apply a map fitted on one modality to the paired other modality.

    Gupta et al.: with two contrastive models :math:`(f, g)` and :math:`(\tilde f, \tilde g)`,
    the rotation fitted on image anchors, :math:`\tilde f(x) \approx (f(x)-\mu_f) Q + \mu_{\tilde f}`,
    also carries the text side: :math:`\tilde g(y) \approx (g(y) - \mu) Q + \tilde\mu`. Which
    means :math:`\mu, \tilde\mu` the text side uses is left open by the paper, so both are
    offered:

    * ``source_mean="fitted"`` (default): centre with the mean fitted on the first modality;
      ``"own"``: with ``X``'s own mean; or pass a vector.
    * ``target_mean="fitted"`` (default): add the fitted target mean; or pass a vector (e.g.
      the mean of unpaired target-model embeddings of the second modality).

    Parameters
    ----------
    fitted_map : OrthogonalMap, LinearMap or SubspaceMap
        Fitted on the first modality.
    X : array-like of shape (n_samples, d_x)
        The second modality, embedded by the source model.

    Returns
    -------
    array of shape (n_samples, d_y), in ``X``'s backend and dtype.
    """
    from repscope.align._maps import apply_affine

    if not isinstance(fitted_map, AffineMapMixin):
        raise RepscopeTypeError(
            "transfer expects a fitted OrthogonalMap, LinearMap or SubspaceMap; got "
            f"{type(fitted_map).__name__}."
        )
    fitted_map._check_fitted()
    X = fitted_map._check_x(X)
    if isinstance(source_mean, str) and source_mean == "own":
        mx = as_float64_numpy(X).mean(axis=0)
    elif isinstance(source_mean, str) and source_mean == "fitted":
        mx = fitted_map.mean_x_
    else:
        mx = _vector(source_mean, fitted_map.n_features_in_, "source_mean")
    if isinstance(target_mean, str) and target_mean == "fitted":
        my = fitted_map.mean_y_
    else:
        my = _vector(target_mean, fitted_map.n_features_out_, "target_mean")
    return apply_affine(X, mx, fitted_map.weight_, my)


def _vector(v: Any, d: int, name: str) -> np.ndarray:
    if isinstance(v, str):
        raise RepscopeValueError(
            f"The {name!r} parameter of transfer must be 'fitted'"
            + (", 'own'" if name == "source_mean" else "")
            + f" or a vector of length {d}. Got {v!r} instead."
        )
    out = as_float64_numpy(v, name=name).ravel()
    if out.shape[0] != d:
        raise RepscopeValueError(
            f"The {name!r} parameter of transfer must have length {d}; got {out.shape[0]}."
        )
    return out


@dataclass(frozen=True)
class OrthogonalityGapResult(Result):
    """Held-out residuals of an orthogonal and a general linear map fitted on the same pairs.

    Attributes
    ----------
    orthogonal_residual, linear_residual : float
        ``1 - R^2`` on the held-out pairs (relative squared error; 0 is perfect).
    gap : float
        ``orthogonal_residual - linear_residual``: about 0 when the spaces are related by a
        rotation (plus shift and scale), positive when a general linear map is needed.
    alpha : float
        The ridge strength the linear map chose (GCV).
    n_train, n_test : int
    """

    orthogonal_residual: float
    linear_residual: float
    gap: float
    alpha: float
    n_train: int
    n_test: int


#: The former name of :class:`OrthogonalityGapResult` (kept for one release).
OrthogonalityGap = OrthogonalityGapResult


def orthogonality_gap(
    X: Any, Y: Any, X_test: Any, Y_test: Any, *, scale: bool = True,
    alphas: float | Sequence[float] | None = None,
) -> OrthogonalityGapResult:
    r"""The orthogonality-gap diagnostic: is a rotation enough to carry ``X`` onto ``Y``?

    Fits :class:`OrthogonalMap` (centred, with isotropic ``scale``) and :class:`LinearMap`
    (ridge, GCV-chosen alpha) on ``(X, Y)`` and compares their held-out residuals
    :math:`1 - R^2` on ``(X_test, Y_test)``:
    :math:`\text{gap} = r_{\text{orth}} - r_{\text{lin}}`. Near 0 (it can dip slightly below
    when the linear map overfits) means the spaces are related by a rotation; a clearly
    positive gap means the relation needs a general linear map. Needs ``d_x == d_y`` for a
    rotation to be meaningful (a partial isometry is used otherwise).

    Parameters
    ----------
    X, Y : array-like of shape (n_train, d_x), (n_train, d_y)
    X_test, Y_test : array-like of shape (n_test, d_x), (n_test, d_y)
    scale : bool, default=True
    alphas : float or sequence of float, optional
        Passed to :class:`LinearMap`.

    Returns
    -------
    OrthogonalityGapResult
    """
    X, Y = check_paired(X, Y, min_samples=MIN_SAMPLES)
    X_test, Y_test = check_paired(X_test, Y_test, names=("X_test", "Y_test"), min_samples=2)
    check_features(X_test, name="X_test")
    orth = OrthogonalMap(center=True, scale=scale).fit(X, Y)
    lin = LinearMap(alphas=alphas).fit(X, Y)
    ro = 1.0 - orth.score(X_test, Y_test)
    rl = 1.0 - lin.score(X_test, Y_test)
    return OrthogonalityGapResult(orthogonal_residual=ro, linear_residual=rl, gap=ro - rl,
                            alpha=lin.alpha_, n_train=int(X.shape[0]),
                            n_test=int(X_test.shape[0]))
