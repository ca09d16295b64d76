"""Linear concept erasure: LEACE (closed form) and INLP (iterative nullspace projection).

- :func:`fit_leace` / :meth:`LeaceEraser.from_moments`: LEAst-squares Concept Erasure (Belrose
  et al., 2023, arXiv 2306.03819). From the mean, the covariance :math:`\\Sigma_{xx}` and the
  cross-covariance :math:`\\Sigma_{xz}` with the one-hot labels (all read from a
  :class:`~repscope.stats.Moments`, so the fit streams and merges),

  .. math:: W = \\Sigma_{xx}^{-1/2},\\quad U = \\operatorname{colspan}(W\\Sigma_{xz}),\\quad
      r(x) = x - W^{+} U U^\\top W (x - \\mu),

  the affine map that removes every linear correlation with the labels while moving points
  least (in the :math:`\\Sigma`-weighted least-squares sense). The numerics follow EleutherAI's
  ``concept-erasure`` 0.2.4 (``LeaceFitter``) so the two agree to rounding: the optimal linear
  shrinkage of the covariance, the pseudo-inverse cut of its eigenvalues, the ``svd_tol`` cut
  of the singular values of :math:`W\\Sigma_{xz}` and the trace constraint (see
  :func:`fit_leace`).
- :func:`fit_inlp`: Iterative Nullspace Projection (Ravfogel et al., 2020): train a linear
  probe (:class:`~repscope.probe.LinearProbe`), project its weight rows out, repeat until the
  probe is at chance on held-out rows; the eraser is the orthogonal projection onto the
  intersection of the nullspaces.
- :func:`erasure`: both on one split, checked by a fresh probe's held-out accuracy after
  erasure and by the paired distance every point moved (:class:`ErasureResult`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope._array import as_float64_numpy, from_numpy_like, is_torch
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_features, check_labels, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    from repscope.stats import Moments

__all__ = [
    "ErasureResult",
    "INLPEraser",
    "LeaceEraser",
    "erasure",
    "fit_inlp",
    "fit_leace",
    "one_hot",
]

_METHODS = ("leace", "inlp")


def one_hot(labels: Any, *, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes and the (n, K) float64 one-hot matrix of ``labels``."""
    y = check_labels(labels, name=name)
    classes, inv = np.unique(y, return_inverse=True)
    z = np.zeros((y.shape[0], classes.shape[0]))
    z[np.arange(y.shape[0]), inv] = 1.0
    return classes, z


def _shrink(S: np.ndarray, n: float) -> np.ndarray:
    """Optimal linear shrinkage of ``S`` (the ``1/n`` sample covariance) towards
    ``trace(S)/p I`` — ``concept_erasure.optimal_linear_shrinkage`` in float64 numpy."""
    p = S.shape[0]
    tr = float(np.trace(S))
    sigma0_sq = tr * tr / p  # ||tr/p I||_F^2
    s_sq = float(np.sum(S * S))
    prod = tr * tr / p  # trace(S sigma0)
    eps = float(np.finfo(np.float64).eps)
    top = tr * tr * sigma0_sq / n
    bottom = s_sq * sigma0_sq - prod * prod
    alpha = 1.0 - (top + eps) / (bottom + eps)
    beta = (1.0 - alpha) * (prod + eps) / (sigma0_sq + eps)
    out = alpha * S
    out[np.diag_indices(p)] += beta * tr / p
    return out


@dataclass(frozen=True)
class LeaceEraser:
    """An affine concept eraser ``r(x) = x - ((x - bias) @ proj_right.T) @ proj_left.T``.

    The same parametrisation as ``concept_erasure.LeaceEraser``: ``I - proj_left @ proj_right``
    is the (oblique) projection, of rank ``d - rank``.

    Attributes
    ----------
    proj_left, proj_right : ndarray of shape (d, k) and (k, d)
    bias : ndarray of shape (d,)
        The feature mean (erasure keeps it).
    rank : int
        Directions removed (singular values of the whitened cross-covariance above ``svd_tol``).
    """

    proj_left: np.ndarray
    proj_right: np.ndarray
    bias: np.ndarray
    rank: int

    @property
    def P(self) -> np.ndarray:
        """The projection matrix ``I - proj_left @ proj_right``, shape (d, d)."""
        return np.eye(self.bias.shape[0]) - self.proj_left @ self.proj_right

    def __call__(self, X: Any) -> Any:
        """Erase the concept from ``X`` (n, d); numpy in, numpy out; a tensor comes back in
        its own device and dtype."""
        x = as_float64_numpy(check_features(X, name="X"), name="X")
        if x.shape[1] != self.bias.shape[0]:
            raise RepscopeValueError(
                f"X must have {self.bias.shape[0]} columns (the width the eraser was fitted "
                f"on); got shape {x.shape}."
            )
        out = x - ((x - self.bias) @ self.proj_right.T) @ self.proj_left.T
        return from_numpy_like(out, X) if is_torch(X) else out

    @classmethod
    def from_moments(
        cls,
        moments: Moments,
        *,
        shrinkage: bool = True,
        svd_tol: float = 0.01,
        constrain_cov_trace: bool = True,
    ) -> LeaceEraser:
        """LEACE from accumulated moments of ``X`` paired with the concept ``Y`` (one-hot
        labels, or any numeric concept encoding), e.g. ``Moments.from_arrays(X, one_hot(y)[1])``.

        See :func:`fit_leace` for the parameters.
        """
        from repscope._kernels.eigenpath import eigh_psd

        check_scalar(svd_tol, "svd_tol", caller="LeaceEraser.from_moments", kind=float,
                     min_value=0.0, include_min=False)
        if moments.n_targets is None:
            raise RepscopeValueError(
                "moments must hold the concept as paired targets Y (update(X, Y=one_hot_labels)); "
                "got moments of X alone."
            )
        if moments.n < 2:
            raise RepscopeValueError(
                f"moments must hold at least 2 samples for a LEACE fit; got {moments.n}."
            )
        n = float(moments.n)
        scatter = moments.scatter()
        d = scatter.shape[0]
        sigma = _shrink(scatter / n, n) if shrinkage else scatter / (n - 1.0)
        sigma_xz = moments.cross_scatter() / (n - 1.0)
        eig = eigh_psd(sigma)
        L, V = eig.values, eig.vectors
        # the pseudo-inverse cut of torch.linalg.pinv (concept-erasure's)
        cut = L[-1] * d * np.finfo(np.float64).eps
        keep = cut < L
        safe = np.where(keep, L, 1.0)
        W = (V * np.where(keep, 1.0 / np.sqrt(safe), 0.0)) @ V.T
        W_inv = (V * np.where(keep, np.sqrt(L), 0.0)) @ V.T
        u, s, _ = np.linalg.svd(W @ sigma_xz, full_matrices=False)
        u = u * (s > svd_tol)
        proj_left = W_inv @ u
        proj_right = u.T @ W
        rank = int(np.sum(s > svd_tol))
        if constrain_cov_trace:
            P = np.eye(d) - proj_left @ proj_right
            old = float(np.trace(sigma))
            new = float(np.trace(P @ sigma @ P.T))
            if new > old:
                # mix towards the orthogonal projection Q until the trace is back to ``old``
                Q = np.eye(d) - u @ u.T
                x_, y_ = new, 2.0 * float(np.trace(P @ sigma @ Q.T))
                z_, w_ = float(np.trace(Q @ sigma @ Q.T)), old
                disc = np.sqrt(4 * w_ * x_ - 4 * w_ * y_ + 4 * w_ * z_ - 4 * x_ * z_ + y_**2)
                den = x_ - y_ + z_
                a1 = (-y_ / 2 + z_ - disc / 2) / den
                a2 = (-y_ / 2 + z_ + disc / 2) / den
                alpha = float(np.clip(a1 if a1 > 0 else a2, 0.0, 1.0))
                M = np.eye(d) - (alpha * P + (1 - alpha) * Q)
                # I - P' = U S V^T, stored as (U S^1/2)(S^1/2 V^T)
                uu, ss, vh = np.linalg.svd(M)
                root = np.sqrt(ss)
                proj_left = uu * root
                proj_right = root[:, None] * vh
        return cls(proj_left=proj_left, proj_right=proj_right, bias=moments.mean.copy(),
                   rank=rank)


def fit_leace(
    X: Any,
    labels: Any,
    *,
    shrinkage: bool = True,
    svd_tol: float = 0.01,
    constrain_cov_trace: bool = True,
    batch_size: int | None = None,
) -> LeaceEraser:
    """Fit LEACE on features and class labels (one-hot concept).

    Parameters
    ----------
    X : array-like or Tensor of shape (n, d)
    labels : array-like of shape (n,)
        Class labels (ints or strings), at least two classes.
    shrinkage : bool
        Shrink the covariance with the optimal linear shrinkage (concept-erasure's default);
        False uses the plain covariance (``n - 1``).
    svd_tol : float
        Singular values of :math:`W\\Sigma_{xz}` at or under this are not erased.
    constrain_cov_trace : bool
        When the oblique projection would raise the trace of the covariance, mix it with the
        orthogonal projection until the trace is unchanged (concept-erasure's default).
        concept-erasure 0.2.4 then stores the factors as ``(U S^1/2)(V^T S^1/2)``, whose product
        is not ``I - P`` (its ``vh * s.sqrt()`` scales columns); we store ``(U S^1/2)(S^1/2
        V^T)``, so the two differ exactly when this constraint is active (it did not trigger
        on any data of our tests: LEACE rarely raises the trace).
    batch_size : int, optional
        Accumulate the moments in row batches (memory of one batch's float64 copy).

    Returns
    -------
    LeaceEraser
    """
    from repscope.stats import Moments

    X = check_features(X, name="X", min_samples=2)
    y = check_labels(labels, n_samples=int(X.shape[0]), name="labels", min_classes=2)
    _, z = one_hot(y)
    m = Moments.from_arrays(X, z, batch_size=batch_size, class_cov="none")
    return LeaceEraser.from_moments(m, shrinkage=shrinkage, svd_tol=svd_tol,
                                    constrain_cov_trace=constrain_cov_trace)


@dataclass(frozen=True)
class INLPEraser:
    """Orthogonal projection onto the intersection of the probes' nullspaces, about the mean.

    ``r(x) = mean + (x - mean) - ((x - mean) @ basis.T) @ basis``.

    Attributes
    ----------
    basis : ndarray of shape (k, d)
        Orthonormal rows: every probe direction removed.
    mean : ndarray of shape (d,)
    accuracies : ndarray of shape (n_iterations + 1,)
        Held-out probe accuracy before erasure and after each iteration.
    chance : float
        Majority-class share of the held-out rows.
    """

    basis: np.ndarray
    mean: np.ndarray
    accuracies: np.ndarray
    chance: float

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @property
    def P(self) -> np.ndarray:
        return np.eye(self.mean.shape[0]) - self.basis.T @ self.basis

    def __call__(self, X: Any) -> Any:
        x = as_float64_numpy(check_features(X, name="X"), name="X")
        if x.shape[1] != self.mean.shape[0]:
            raise RepscopeValueError(
                f"X must have {self.mean.shape[0]} columns (the width the eraser was fitted "
                f"on); got shape {x.shape}."
            )
        c = x - self.mean
        out = x - (c @ self.basis.T) @ self.basis
        return from_numpy_like(out, X) if is_torch(X) else out


def _probe(C: float) -> Any:
    from repscope.probe import LinearProbe

    return LinearProbe(C=C, max_iter=300)


def _chance(y: np.ndarray) -> float:
    return float(np.unique(y, return_counts=True)[1].max() / y.shape[0])


def fit_inlp(
    X: Any,
    labels: Any,
    *,
    X_val: Any = None,
    labels_val: Any = None,
    max_iter: int = 50,
    tol: float = 0.01,
    C: float = 1.0,
    validation_fraction: float = 0.3,
    random_state: int = 0,
    progress: ProgressLike = False,
) -> INLPEraser:
    """Iterative nullspace projection (Ravfogel et al., 2020).

    Each iteration fits a :class:`~repscope.probe.LinearProbe` on the projected training rows,
    adds its weight rows (orthonormalised against those already removed) to the removed
    basis, and scores a probe on the projected validation rows; it stops once that accuracy
    is within ``tol`` of chance (the majority-class share) or after ``max_iter`` iterations.

    Parameters
    ----------
    X, labels : features (n, d) and class labels (n,)
    X_val, labels_val : optional validation rows; default: a stratified
        ``validation_fraction`` of ``X``.
    max_iter : int
    tol : float
        Stop when the validation accuracy is at most ``chance + tol``.
    C : float
        The probes' inverse L2 strength (scikit-learn's convention).
    progress : bool or callable
        A bar over iterations.

    Returns
    -------
    INLPEraser
    """
    caller = "fit_inlp"
    check_scalar(max_iter, "max_iter", caller=caller, kind=int, min_value=1)
    check_scalar(tol, "tol", caller=caller, kind=float, min_value=0.0)
    check_scalar(C, "C", caller=caller, kind=float, min_value=0.0, include_min=False)
    x = as_float64_numpy(check_features(X, name="X", min_samples=2), name="X")
    y = check_labels(labels, n_samples=x.shape[0], name="labels", min_classes=2)
    if (X_val is None) != (labels_val is None):
        raise RepscopeValueError(
            "X_val and labels_val of fit_inlp go together; got only one of them."
        )
    if X_val is None:
        tr, va = _split(y, validation_fraction, random_state, caller, "validation_fraction")
        xt, yt, xv, yv = x[tr], y[tr], x[va], y[va]
    else:
        xt, yt = x, y
        xv = as_float64_numpy(check_features(X_val, name="X_val"), name="X_val")
        yv = check_labels(labels_val, n_samples=xv.shape[0], name="labels_val")
        if xv.shape[1] != x.shape[1]:
            raise RepscopeValueError(
                f"X_val must have {x.shape[1]} columns like X; got shape {xv.shape}."
            )
    mean = xt.mean(0)
    ct, cv = xt - mean, xv - mean
    d = x.shape[1]
    basis = np.zeros((0, d))
    chance = _chance(yv)
    accs = [float(_probe(C).fit(ct, yt).score(cv, yv))]
    with progress_for(progress, "INLP iterations", max_iter, prefix="concepts") as advance:
        for _ in range(max_iter):
            if accs[-1] <= chance + tol or basis.shape[0] >= d:
                break
            pt = ct - (ct @ basis.T) @ basis
            w = np.atleast_2d(_probe(C).fit(pt, yt).coef_)
            w = w - (w @ basis.T) @ basis
            q, r = np.linalg.qr(w.T)
            ok = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(r).max(initial=0.0)))
            if not np.any(ok):
                break
            basis = np.vstack([basis, q[:, ok].T])
            pv = cv - (cv @ basis.T) @ basis
            pt = ct - (ct @ basis.T) @ basis
            accs.append(float(_probe(C).fit(pt, yt).score(pv, yv)))
            advance(1)
    return INLPEraser(basis=basis, mean=mean, accuracies=np.asarray(accs), chance=chance)


def _split(y: np.ndarray, fraction: float, seed: int, caller: str = "erasure",
           name: str = "test_fraction") -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) row indices with ``fraction`` of each class held out."""
    check_scalar(fraction, name, caller=caller, kind=float, min_value=0.0,
                 max_value=1.0, include_min=False, include_max=False)
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = round(fraction * idx.shape[0])
        k = min(max(k, 1), idx.shape[0] - 1) if idx.shape[0] > 1 else 0
        test.append(idx[:k])
    te = np.sort(np.concatenate(test))
    mask = np.ones(y.shape[0], dtype=bool)
    mask[te] = False
    return np.flatnonzero(mask), te


@dataclass(frozen=True)
class ErasureResult(RecordedResult):
    """Concept erasure by LEACE and INLP on one train/test split (:func:`erasure`).

    Erasers are fitted on the training rows; a fresh :class:`~repscope.probe.LinearProbe` is
    trained on the erased training rows and scored on the erased test rows.

    Record keys (one record per method): ``method`` ("leace" or "inlp"), ``accuracy_before``
    (the probe's test accuracy on the raw features), ``accuracy_after`` (after erasure),
    ``chance`` (majority-class share of the test rows), ``mean_distance`` (mean paired
    ``||x - r(x)||`` over the test rows), ``relative_distance`` (``mean_distance`` over the
    mean ``||x - mean||``), ``rank_removed`` (directions erased), ``accuracy_curve`` (list:
    LEACE ``[before, after]``; INLP the validation accuracy before and after each iteration),
    ``n_train``, ``n_test``, ``n_features``, ``n_classes``.

    Attributes
    ----------
    methods : tuple of str
    accuracy_before : float
    accuracy_after, mean_distance, relative_distance : dict of str to float
    rank_removed : dict of str to int
    accuracy_curve : dict of str to list of float
    chance : float
    n_train, n_test, n_features, n_classes : int
    erasers : dict of str to LeaceEraser or INLPEraser
    """

    analysis: ClassVar[str] = "concepts_erasure"

    methods: tuple[str, ...]
    accuracy_before: float
    accuracy_after: dict[str, float]
    mean_distance: dict[str, float]
    relative_distance: dict[str, float]
    rank_removed: dict[str, int]
    accuracy_curve: dict[str, list[float]]
    chance: float
    n_train: int
    n_test: int
    n_features: int
    n_classes: int
    erasers: dict[str, Any]

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("", {
                "method": m,
                "accuracy_before": self.accuracy_before,
                "accuracy_after": self.accuracy_after[m],
                "chance": self.chance,
                "mean_distance": self.mean_distance[m],
                "relative_distance": self.relative_distance[m],
                "rank_removed": self.rank_removed[m],
                "accuracy_curve": list(self.accuracy_curve[m]),
                "n_train": self.n_train,
                "n_test": self.n_test,
                "n_features": self.n_features,
                "n_classes": self.n_classes,
            })
            for m in self.methods
        ]

    def to_dict(self) -> dict[str, Any]:
        from repscope.results import to_jsonable

        out = {f: to_jsonable(getattr(self, f)) for f in (
            "methods", "accuracy_before", "accuracy_after", "mean_distance", "relative_distance",
            "rank_removed", "accuracy_curve", "chance", "n_train", "n_test", "n_features",
            "n_classes")}
        out["type"] = type(self).__name__
        return out


def erasure(
    X: Any,
    labels: Any,
    *,
    methods: Sequence[str] = _METHODS,
    test_fraction: float = 0.3,
    C: float = 1.0,
    inlp_max_iter: int = 50,
    inlp_tol: float = 0.01,
    random_state: int = 0,
    progress: ProgressLike = False,
) -> ErasureResult:
    """Erase a concept with LEACE and INLP and check each by a fresh probe and the distance moved.

    Parameters
    ----------
    X : array-like or Tensor of shape (n, d)
    labels : array-like of shape (n,)
        The concept's class labels (at least two classes).
    methods : sequence of {"leace", "inlp"}
    test_fraction : float
        Stratified share of rows held out for scoring.
    C : float
        Inverse L2 strength of every probe (scikit-learn's convention).
    inlp_max_iter, inlp_tol : INLP's stopping rule (:func:`fit_inlp`); INLP's own validation
        rows are a split of the training rows, never the test rows.
    random_state : int
    progress : bool or callable

    Returns
    -------
    ErasureResult
    """
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise RepscopeTypeError(
            "The 'methods' parameter of erasure must be a non-empty list drawn from "
            f"{list(_METHODS)}. Got {methods!r} instead."
        )
    for m in methods:
        if m not in _METHODS:
            raise RepscopeValueError(
                f"The 'methods' parameter of erasure takes {list(_METHODS)}; got {m!r}."
            )
    x = as_float64_numpy(check_features(X, name="X", min_samples=4), name="X")
    y = check_labels(labels, n_samples=x.shape[0], name="labels", min_classes=2)
    check_scalar(C, "C", caller="erasure", kind=float, min_value=0.0, include_min=False)
    tr, te = _split(y, test_fraction, random_state)
    xt, yt, xe, ye = x[tr], y[tr], x[te], y[te]
    chance = _chance(ye)
    before = float(_probe(C).fit(xt, yt).score(xe, ye))
    spread = float(np.linalg.norm(xe - xt.mean(0), axis=1).mean())
    after: dict[str, float] = {}
    dist: dict[str, float] = {}
    rel: dict[str, float] = {}
    rank: dict[str, int] = {}
    curve: dict[str, list[float]] = {}
    erasers: dict[str, Any] = {}
    for m in methods:
        eraser: Any
        if m == "leace":
            eraser = fit_leace(xt, yt)
        else:
            eraser = fit_inlp(xt, yt, max_iter=inlp_max_iter, tol=inlp_tol, C=C,
                              random_state=random_state, progress=progress)
        et, ee = eraser(xt), eraser(xe)
        acc = float(_probe(C).fit(et, yt).score(ee, ye))
        after[m] = acc
        dist[m] = float(np.linalg.norm(xe - ee, axis=1).mean())
        rel[m] = dist[m] / spread if spread > 0 else float("nan")
        rank[m] = int(eraser.rank)
        curve[m] = [before, acc] if m == "leace" else [float(a) for a in eraser.accuracies]
        erasers[m] = eraser
    return ErasureResult(
        methods=tuple(methods), accuracy_before=before, accuracy_after=after,
        mean_distance=dist, relative_distance=rel, rank_removed=rank, accuracy_curve=curve,
        chance=chance, n_train=int(tr.shape[0]), n_test=int(te.shape[0]),
        n_features=int(x.shape[1]), n_classes=int(np.unique(y).shape[0]), erasers=erasers,
    )
