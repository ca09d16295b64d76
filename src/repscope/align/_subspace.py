r"""Subspace alignment: project both spaces onto top-k CCA or PCA directions, then map.

The recipe of Hadgi et al. ("Escaping Plato's Cave", CVPR 2025): a full-dimensional orthogonal
or affine map between two independently trained spaces is dominated by directions the spaces
do not share; projecting both onto a well-chosen ``k``-dimensional subspace first (canonical
directions, or each space's principal directions) and aligning there can retrieve better, and a
sweep over ``k`` shows where the shared information ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._array import as_float64_numpy
from repscope._params import ValidatedEstimator, parameter_error
from repscope._validation import check_paired
from repscope.align._maps import (
    MIN_SAMPLES,
    AffineMapMixin,
    _check_moments,
    _eigh_desc,
    apply_affine,
    r2_score_total,
)
from repscope.exceptions import RepscopeValueError
from repscope.results import Result
from repscope.stats import Moments

__all__ = ["SubspaceMap", "SubspaceSweep",
    "SubspaceSweepResult", "sweep_k"]

Method = Literal["cca", "pca"]
Mapper = Literal["orthogonal", "affine"]


@dataclass(frozen=True)
class _Directions:
    """Full direction bases of both spaces (columns sorted by importance) and the moments."""

    wx: np.ndarray
    wy: np.ndarray
    cxx: np.ndarray
    cyy: np.ndarray
    cxy: np.ndarray
    mean_x: np.ndarray
    mean_y: np.ndarray
    n: int


def _inv_sqrt(c: np.ndarray, reg: float) -> np.ndarray:
    lam, v = _eigh_desc(c)
    ridge = reg * float(lam.mean()) if lam.mean() > 0 else reg
    floor = max(ridge, float(lam[0]) * 1e-12 if lam.size else 0.0)
    return (v / np.sqrt(np.maximum(lam + ridge, floor))) @ v.T


def _directions(m: Moments, method: str, reg: float) -> _Directions:
    n = float(m.n)
    cxx, cyy, cxy = m.scatter() / n, m.scatter_y() / n, m.cross_scatter() / n
    if float(np.trace(cxx)) <= 0 or float(np.trace(cyy)) <= 0:
        raise RepscopeValueError(
            "SubspaceMap cannot be fitted: X or Y is constant (zero variance in every feature)."
        )
    if method == "pca":
        wx, wy = _eigh_desc(cxx)[1], _eigh_desc(cyy)[1]
        r = min(wx.shape[1], wy.shape[1])
        wx, wy = wx[:, :r], wy[:, :r]
    else:
        kx, ky = _inv_sqrt(cxx, reg), _inv_sqrt(cyy, reg)
        u, _, vt = np.linalg.svd(kx @ cxy @ ky, full_matrices=False)
        wx, wy = kx @ u, ky @ vt.T
    return _Directions(wx, wy, cxx, cyy, cxy, m.mean, m.mean_y, int(m.n))


class SubspaceMap(AffineMapMixin, ValidatedEstimator):
    r"""Align two spaces inside top-``k`` CCA or PCA subspaces, then map back.

    Both spaces are projected onto ``k`` directions, :math:`z_x = (x - \mu_x) W_x`,
    :math:`z_y = (y - \mu_y) W_y` (``W`` of shape ``(d, k)``), and a map ``R`` (``k x k``)
    carries :math:`z_x` onto :math:`z_y`:

    * ``method="cca"``: the top-``k`` canonical directions of the (ridge-regularised)
      covariances, :math:`W_x = C_{xx}^{-1/2} U_k`, :math:`W_y = C_{yy}^{-1/2} V_k` with
      :math:`C_{xx}^{-1/2} C_{xy} C_{yy}^{-1/2} = U \Sigma V^\top`;
    * ``method="pca"``: each space's own top-``k`` principal directions.
    * ``mapper="orthogonal"``: Procrustes in the subspace; ``"affine"``: least squares.

    :meth:`transform` returns the rank-``k`` prediction in ``Y``'s full space,
    :math:`\hat y = z_x R B_y + \mu_y` with the least-squares back-projection
    :math:`B_y = (W_y^\top C_{yy} W_y)^{-1} W_y^\top C_{yy}`, so with ``method="pca"``,
    ``mapper="orthogonal"`` and ``k`` equal to the full width it is exactly
    :class:`~repscope.align.OrthogonalMap` (centred, no scale). :meth:`embed_x` and
    :meth:`embed_y` give the shared ``k``-dimensional coordinates that retrieval compares.

    ``Y`` is not a target: it is the paired representation of the same inputs in the second
    space. Everything comes from the paired moments, so :meth:`fit_moments` streams.

    Parameters
    ----------
    n_components : int, default=32
        ``k``, at most ``min(d_x, d_y)``.
    method : {"cca", "pca"}, default="cca"
    mapper : {"orthogonal", "affine"}, default="orthogonal"
    reg : float, default=0.1
        CCA ridge on each covariance, relative to its mean eigenvalue; unused by PCA. CCA
        overfits badly when a width is close to ``n`` (on 500 MiniLM-L6/L3 pairs, 384 wide,
        full-width held-out top-1 retrieval is 0.08 at ``reg=1e-3`` and 0.86 at 0.1).

    Attributes
    ----------
    components_x_, components_y_ : ndarray of shape (d_x, k), (d_y, k)
        ``W_x`` and ``W_y``.
    map_ : ndarray of shape (k, k)
        ``R``.
    back_projection_ : ndarray of shape (k, d_y)
        ``B_y``.
    mean_x_, mean_y_, weight_, n_features_in_, n_features_out_
        As in :class:`~repscope.align.OrthogonalMap` (``weight_ = W_x R B_y``).

    References
    ----------
    .. [1] Hadgi, Moschella, Santilli, Gomez, Huang, Rodolà, Melzi, Ovsjanikov. Escaping
       Plato's Cave: Towards the Alignment of 3D and Text Latent Spaces. CVPR 2025.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"cca", "pca"})],
        "mapper": [StrOptions({"orthogonal", "affine"})],
        "reg": [Interval(Real, 0, np.inf, closed="left")],
    }

    def __init__(
        self,
        *,
        n_components: int = 32,
        method: Method = "cca",
        mapper: Mapper = "orthogonal",
        reg: float = 0.1,
    ) -> None:
        self.n_components = n_components
        self.method = method
        self.mapper = mapper
        self.reg = reg

    def fit_moments(self, moments: Moments) -> SubspaceMap:
        """Fit from paired :class:`~repscope.stats.Moments`; returns self."""
        self._validate_params()
        m = _check_moments(moments, "SubspaceMap.fit_moments")
        return self._fit_directions(_directions(m, self.method, float(self.reg)))

    def _fit_directions(self, dirs: _Directions) -> SubspaceMap:
        k, kmax = int(self.n_components), dirs.wx.shape[1]
        if k > kmax:
            raise parameter_error(self, "n_components", f"at most {kmax} (min(d_x, d_y))", k)
        wx, wy = dirs.wx[:, :k], dirs.wy[:, :k]
        czx, czy, czxy = wx.T @ dirs.cxx @ wx, wy.T @ dirs.cyy @ wy, wx.T @ dirs.cxy @ wy
        if self.mapper == "orthogonal":
            u, _, vt = np.linalg.svd(czxy)
            r = u @ vt
        else:
            r = np.linalg.lstsq(czx + 1e-12 * np.trace(czx) * np.eye(k), czxy, rcond=None)[0]
        back = np.linalg.lstsq(czy, wy.T @ dirs.cyy, rcond=None)[0]
        self.components_x_, self.components_y_ = wx, wy
        self.map_, self.back_projection_ = r, back
        self.weight_ = wx @ r @ back
        self.mean_x_, self.mean_y_ = dirs.mean_x, dirs.mean_y
        self.n_features_in_, self.n_features_out_ = int(wx.shape[0]), int(wy.shape[0])
        self.n_samples_fit_ = dirs.n
        return self

    def embed_x(self, X: Any) -> Any:
        """Mapped subspace coordinates of ``X``: ``(X - mu_x) W_x R``, shape (n, k)."""
        self._check_fitted()
        X = self._check_x(X)
        return apply_affine(X, self.mean_x_, self.components_x_ @ self.map_,
                            np.zeros(self.map_.shape[1]))

    def embed_y(self, Y: Any) -> Any:
        """Subspace coordinates of ``Y``: ``(Y - mu_y) W_y``, shape (n, k)."""
        self._check_fitted()
        from repscope._validation import check_features

        Y = check_features(Y, name="Y")
        if int(Y.shape[1]) != self.n_features_out_:
            raise RepscopeValueError(
                f"SubspaceMap.embed_y expected Y with {self.n_features_out_} columns; got "
                f"shape {tuple(Y.shape)}."
            )
        return apply_affine(Y, self.mean_y_, self.components_y_,
                            np.zeros(self.components_y_.shape[1]))

    def score(self, X: Any, Y: Any) -> float:
        """Held-out :math:`R^2` of ``embed_x(X)`` against ``embed_y(Y)`` in the shared subspace.

        With ``method="pca"`` and full ``k`` this equals :meth:`OrthogonalMap.score`
        (``W_y`` is then a rotation of ``Y``'s space).
        """
        self._check_fitted()
        X, Y = check_paired(X, Y, min_samples=2)
        return r2_score_total(as_float64_numpy(self.embed_y(Y)), as_float64_numpy(self.embed_x(X)))


@dataclass(frozen=True)
class SubspaceSweepResult(Result):
    """Held-out quality of :class:`SubspaceMap` for each ``k``.

    Attributes
    ----------
    ks : list of int
    retrieval : dict of int to list of float
        Top-``j`` retrieval accuracy (query: mapped ``X``; gallery: ``Y``; cosine in the
        shared subspace) for each ``j`` in ``retrieval_ks``, one value per ``k``.
    r2 : list of float
        :meth:`SubspaceMap.score` per ``k``.
    cosine : list of float
        Mean paired cosine in the subspace per ``k``.
    method, mapper : str
    n_train, n_test : int
    """

    ks: list[int]
    retrieval: dict[int, list[float]]
    r2: list[float]
    cosine: list[float]
    method: str
    mapper: str
    n_train: int
    n_test: int
    details: dict[str, Any] = field(default_factory=dict)

    def best_k(self, top: int = 1) -> int:
        """The ``k`` with the highest top-``top`` retrieval."""
        return int(self.ks[int(np.argmax(self.retrieval[top]))])


#: The former name of :class:`SubspaceSweepResult` (kept for one release).
SubspaceSweep = SubspaceSweepResult


def sweep_k(
    X: Any,
    Y: Any,
    X_test: Any,
    Y_test: Any,
    ks: Sequence[int] | None = None,
    *,
    method: Method = "cca",
    mapper: Mapper = "orthogonal",
    reg: float = 0.1,
    retrieval_ks: Sequence[int] = (1, 5, 10),
) -> SubspaceSweepResult:
    """Fit :class:`SubspaceMap` for every ``k`` in ``ks`` and score each on held-out pairs.

    The directions are computed once (one eigendecomposition / SVD); each ``k`` only solves
    its ``k x k`` map.

    Parameters
    ----------
    X, Y : array-like of shape (n_train, d_x), (n_train, d_y)
        Paired training representations.
    X_test, Y_test : array-like of shape (n_test, d_x), (n_test, d_y)
        Held-out pairs.
    ks : sequence of int, optional
        Subspace sizes (default: powers of two up to ``min(d_x, d_y)``, plus the full width).
    method, mapper, reg
        As in :class:`SubspaceMap`.
    retrieval_ks : sequence of int, default=(1, 5, 10)
        Retrieval cut-offs reported.

    Returns
    -------
    SubspaceSweepResult
    """
    from repscope.align._metrics import paired_cosine, retrieval_topk

    X, Y = check_paired(X, Y, min_samples=MIN_SAMPLES)
    X_test, Y_test = check_paired(X_test, Y_test, names=("X_test", "Y_test"), min_samples=2)
    base = SubspaceMap(n_components=1, method=method, mapper=mapper, reg=reg)
    base._validate_params()
    dirs = _directions(Moments().update(X, Y), method, float(reg))
    kmax = dirs.wx.shape[1]
    if ks is None:
        ks = sorted({*(2**i for i in range(int(np.log2(kmax)) + 1)), kmax})
    ks = [int(k) for k in ks]
    rks = tuple(int(j) for j in retrieval_ks)
    rks = tuple(j for j in rks if j <= int(X_test.shape[0]))
    retrieval: dict[int, list[float]] = {j: [] for j in rks}
    r2, cos = [], []
    for k in ks:
        mk = SubspaceMap(n_components=k, method=method, mapper=mapper, reg=reg)
        mk._fit_directions(dirs)
        zx, zy = as_float64_numpy(mk.embed_x(X_test)), as_float64_numpy(mk.embed_y(Y_test))
        res = retrieval_topk(zx, zy, ks=rks)
        for j in rks:
            retrieval[j].append(res.topk[j])
        r2.append(r2_score_total(zy, zx))
        cos.append(paired_cosine(zx, zy))
    return SubspaceSweepResult(ks=ks, retrieval=retrieval, r2=r2, cosine=cos, method=method,
                         mapper=mapper, n_train=int(X.shape[0]), n_test=int(X_test.shape[0]))
