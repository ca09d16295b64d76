"""Regression-based similarity: in-sample linear R^2 and held-out ridge predictivity.

Both are closed forms of paired second moments. R^2 is the **variance-weighted** total over
the targets, ``1 - sum SSE / sum SST``, so it is invariant to rotations of the targets.

Ridge predictivity (KRR-ST's "representation predictivity", Lee et al. 2024, as a linear ridge
map) is **held out**: rows go to ``folds`` folds by their running index modulo ``folds`` (so a
stream of batches gives the same split as the concatenation); each fold is predicted by the
ridge map fitted on the other folds, and ``R^2 = 1 - sum_folds SSE / sum_folds SST`` with SST
about each test fold's mean. The penalty is relative, ``lambda = alpha tr(S_xx) / d_x`` with the
training scatter ``S_xx``, which keeps the measure invariant to isotropic scaling.

Kernel ridge predictivity (:func:`kernel_ridge_predictivity`) is KRR-ST's map itself, in the
dual: on the same folds, ``Y_hat = K_te,tr (K_tr + lambda I)^{-1} (Y_tr - mean) + mean`` with
an RBF (or centred linear) kernel and ``lambda = alpha tr(K_tr)`` computed from the training
kernel exactly (KRR-ST: ``alpha = 1e-6``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy
from repscope._validation import check_choice, check_paired, check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.similarity._measures._common import PairStats, centered_f64, row_space
from repscope.similarity._measures._streaming_specs import register_streaming
from repscope.similarity._registry import register_measure
from repscope.stats import Moments

__all__ = ["kernel_ridge_predictivity", "linear_r2", "ridge_predictivity"]

Direction = Literal["forward", "backward", "mean"]
_ALL4 = {"orthogonal", "isotropic_scale", "translation", "permutation"}


def _r2_from_moments(m: Moments, *, direction: Direction = "forward") -> float:
    def one(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> float:
        w, V = np.linalg.eigh(sxx)
        keep = w > 1e-12 * max(float(w[-1]), 0.0)
        P = V[:, keep].T @ sxy
        sst = float(np.trace(syy))
        if not sst > 0:
            raise RepscopeValueError("R^2 is undefined: the target representation is constant.")
        return float(min(np.einsum("ij,ij->", P / w[keep][:, None], P) / sst, 1.0))

    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    fwd = lambda: one(sxx, syy, sxy)  # noqa: E731
    bwd = lambda: one(syy, sxx, sxy.T)  # noqa: E731
    return _directed(direction, fwd, bwd)


def _directed(direction: str, fwd: Any, bwd: Any) -> float:
    check_choice(direction, "direction", ("forward", "backward", "mean"), caller="predictivity")
    if direction == "forward":
        return float(fwd())
    if direction == "backward":
        return float(bwd())
    return 0.5 * (float(fwd()) + float(bwd()))


@register_measure(
    "linear_r2", higher_is_better=True, is_metric=False, invariances=_ALL4, symmetric=False,
    identity=1.0, estimator="in-sample least squares, variance-weighted R^2", streaming=True,
)
def linear_r2(X: Any, Y: Any, *, direction: Direction = "forward") -> float:
    """In-sample R^2 of the least-squares linear map (with intercept) from X to Y.

    .. math::

        R^2 = \\frac{\\operatorname{tr}(S_{xy}^\\top S_{xx}^{+} S_{xy})}{\\operatorname{tr} S_{yy}}

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    direction : {"forward", "backward", "mean"}, default="forward"
        X predicts Y, Y predicts X, or the mean of both (symmetric).

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    In-sample: it reaches 1 whenever ``rank(X) >= n - 1``; use :func:`ridge_predictivity` for a
    held-out score. Invariant to invertible linear maps of the predictor and to orthogonal maps,
    isotropic scaling, translation and permutation of the target.
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if dx + dy > n:
        X, Y = row_space(centered_f64(X, "X")), row_space(centered_f64(Y, "Y"))
    return _r2_from_moments(PairStats.from_arrays(X, Y).moments, direction=direction)


register_streaming("linear_r2")(lambda s, **o: _r2_from_moments(s.moments, **o))


def _fold_r2(train: Moments, test: Moments, alpha: float, swap: bool) -> tuple[float, float]:
    """(SSE, SST) of the ridge map fitted on ``train`` evaluated on ``test``."""
    if swap:
        sxx, sxy, mx, my = train.scatter_y(), train.cross_scatter().T, train.mean_y, train.mean
        txx, tyy, txy = test.scatter_y(), test.scatter(), test.cross_scatter().T
        tmx, tmy = test.mean_y, test.mean
    else:
        sxx, sxy, mx, my = train.scatter(), train.cross_scatter(), train.mean, train.mean_y
        txx, tyy, txy = test.scatter(), test.scatter_y(), test.cross_scatter()
        tmx, tmy = test.mean, test.mean_y
    d = sxx.shape[0]
    lam = alpha * float(np.trace(sxx)) / d
    w, V = np.linalg.eigh(sxx)
    keep = (w + lam) > 1e-12 * max(float(w[-1] + lam), 0.0)
    V, w = V[:, keep], w[keep]
    W = V @ ((V.T @ sxy) / (w + lam)[:, None])
    delta = (tmy - my) - (tmx - mx) @ W
    sst = float(np.trace(tyy))
    sse = (sst - 2.0 * float(np.einsum("ij,ij->", W, txy))
           + float(np.einsum("ij,ij->", W, txx @ W)) + test.n * float(delta @ delta))
    return sse, sst


def _ridge_from_folds(folds: Sequence[PairStats], *, alpha: float = 1e-2,
                      direction: Direction = "forward") -> float:
    ms = [f.moments for f in folds]
    if any(m.n < 2 for m in ms):
        raise RepscopeValueError(
            f"ridge_predictivity needs at least 2 samples in each of its {len(ms)} folds; got "
            f"fold sizes {[m.n for m in ms]}. Pass more samples or fewer folds."
        )

    def run(swap: bool) -> float:
        sse = sst = 0.0
        for i, test in enumerate(ms):
            train = Moments()
            for j, m in enumerate(ms):
                if j != i:
                    train.merge(m)
            a, b = _fold_r2(train, test, alpha, swap)
            sse += a
            sst += b
        if not sst > 0:
            raise RepscopeValueError("R^2 is undefined: the target representation is constant.")
        return 1.0 - sse / sst

    return _directed(direction, lambda: run(False), lambda: run(True))


def fold_stats(X: Any, Y: Any, folds: int, start: int = 0) -> list[PairStats]:
    """Per-fold statistics; row ``i`` (counting from ``start``) goes to fold ``i % folds``."""
    idx = (start + np.arange(int(X.shape[0]))) % folds
    out = []
    for f in range(folds):
        rows = np.flatnonzero(idx == f)
        out.append(PairStats.from_arrays(X[rows], Y[rows]))
    return out


@register_measure(
    "ridge_predictivity", higher_is_better=True, is_metric=False, invariances=_ALL4,
    symmetric=False, requires_fit=True,
    estimator="ridge, interleaved k-fold held-out variance-weighted R^2", streaming=True,
)
def ridge_predictivity(X: Any, Y: Any, *, alpha: float = 1e-2, folds: int = 5,
                       direction: Direction = "forward") -> float:
    """Held-out R^2 of a ridge map from X to Y (cross-validated over interleaved folds).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    alpha : float, default=1e-2
        Relative ridge penalty, ``lambda = alpha * tr(S_xx) / d_x``. KRR-ST's
        ``lambda = 1e-6 tr(K)`` on the centred linear kernel is ``alpha = 1e-6 d_x`` here
        (exactly); :func:`kernel_ridge_predictivity` takes ``tr(K)`` as it is, for any kernel.
    folds : int, default=5
        Row ``i`` is in fold ``i % folds``.
    direction : {"forward", "backward", "mean"}, default="forward"

    Returns
    -------
    float at most 1 (can be negative when the map does not generalise)

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling, translation and permutation of
    either input (not to general invertible maps of the predictor: the ridge penalty is
    isotropic).
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_scalar(alpha, "alpha", caller="ridge_predictivity", min_value=0)
    k = check_positive_int(folds, "folds", caller="ridge_predictivity")
    if k < 2:
        raise RepscopeValueError(f"The 'folds' parameter of ridge_predictivity must be >= 2. Got {k}.")
    return _ridge_from_folds(fold_stats(X, Y, k), alpha=alpha, direction=direction)


register_streaming("ridge_predictivity", folds="folds")(
    lambda f, **o: _ridge_from_folds(f, **{k: v for k, v in o.items() if k != "folds"})
)


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


def _median_gamma(Xtr: np.ndarray) -> float:
    """``1 / (2 sigma^2)`` with ``sigma^2`` the median squared distance over distinct pairs."""
    D = _sq_dists(Xtr, Xtr)
    med = float(np.median(D[np.triu_indices(D.shape[0], 1)]))
    if not med > 0:
        raise RepscopeValueError(
            "kernel_ridge_predictivity's median-heuristic bandwidth is 0: more than half of the "
            "training rows of the predictor are identical. Pass gamma explicitly."
        )
    return 1.0 / (2.0 * med)


def _kernels(Xtr: np.ndarray, Xte: np.ndarray, kernel: str,
             gamma: float | None) -> tuple[np.ndarray, np.ndarray]:
    if kernel == "rbf":
        g = _median_gamma(Xtr) if gamma is None else float(gamma)
        return np.exp(-g * _sq_dists(Xtr, Xtr)), np.exp(-g * _sq_dists(Xte, Xtr))
    mx = Xtr.mean(0)
    A, B = Xtr - mx, Xte - mx
    return A @ A.T, B @ A.T


def _krr_fold(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, Yte: np.ndarray,
              kernel: str, gamma: float | None, alpha: float) -> tuple[float, float]:
    """(SSE, SST) of kernel ridge with ``lambda = alpha tr(K_tr)`` on one held-out fold."""
    K, Kte = _kernels(Xtr, Xte, kernel, gamma)
    lam = alpha * float(np.trace(K))
    w, V = np.linalg.eigh(K)
    keep = (w + lam) > 1e-12 * max(float(w[-1] + lam), 0.0)
    V, w = V[:, keep], w[keep]
    my = Ytr.mean(0)
    coef = V @ ((V.T @ (Ytr - my)) / (w + lam)[:, None])
    resid = Yte - (Kte @ coef + my)
    return float((resid * resid).sum()), float(((Yte - Yte.mean(0)) ** 2).sum())


@register_measure(
    "kernel_ridge_predictivity", higher_is_better=True, is_metric=False, invariances=_ALL4,
    symmetric=False, requires_fit=True,
    estimator="RBF kernel ridge (median bandwidth), lambda = alpha tr K (KRR-ST), interleaved "
              "k-fold held-out variance-weighted R^2",
)
def kernel_ridge_predictivity(X: Any, Y: Any, *, kernel: Literal["rbf", "linear"] = "rbf",
                              gamma: float | None = None, alpha: float = 1e-6, folds: int = 5,
                              direction: Direction = "forward") -> float:
    r"""Held-out R^2 of a kernel ridge map from X to Y (KRR-ST's representation predictivity).

    For each of ``folds`` interleaved folds (row ``i`` in fold ``i % folds``, as
    :func:`ridge_predictivity`), with ``K`` the kernel among the training rows and ``K_*`` between
    the test and training rows:

    .. math::

        \hat Y_* = K_* (K + \lambda I)^{-1} (Y - \bar Y) + \bar Y, \qquad
        \lambda = \alpha \operatorname{tr} K,

    and ``R^2 = 1 - sum_folds SSE / sum_folds SST`` (SST about each test fold's mean).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    kernel : {"rbf", "linear"}, default="rbf"
        ``"rbf"``: :math:`k(x, x') = \exp(-\gamma \lVert x - x' \rVert^2)` (``tr K`` is the
        number of training rows). ``"linear"``: the Gram matrix of the training-centred rows
        (then equal to :func:`ridge_predictivity` with ``alpha * d_x``).
    gamma : float, optional
        RBF width; default ``1 / (2 sigma^2)`` with ``sigma^2`` the median squared distance
        between distinct training rows (the :func:`rbf_cka` bandwidth), per fold.
    alpha : float, default=1e-6
        ``lambda = alpha * tr(K)`` of each training kernel, exactly (KRR-ST's ``1e-6 tr K``).
    folds : int, default=5
    direction : {"forward", "backward", "mean"}, default="forward"

    Returns
    -------
    float at most 1 (can be negative when the map does not generalise)

    Notes
    -----
    Memory and time grow as ``n^2`` and ``n^3`` (one ``n_train x n_train`` kernel per fold);
    not streamable. KRR-ST appends a bias column to the features, an intercept that ``lambda``
    also shrinks; here the intercept is the training mean of ``Y`` (not shrunk), which makes the
    measure exactly invariant to translations of either input. With the median bandwidth it is
    also invariant to orthogonal transforms, isotropic scaling and permutation of either input
    (not to general invertible maps).

    Examples
    --------
    >>> import numpy as np
    >>> from repscope.similarity import ridge_predictivity
    >>> X = np.random.default_rng(0).standard_normal((200, 2))
    >>> round(kernel_ridge_predictivity(X, np.sin(2 * X)), 2), round(ridge_predictivity(X, np.sin(2 * X)), 2)
    (0.99, 0.16)
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    kernel = check_choice(kernel, "kernel", ("rbf", "linear"),  # type: ignore[assignment]
                          caller="kernel_ridge_predictivity")
    check_scalar(alpha, "alpha", caller="kernel_ridge_predictivity", min_value=0)
    if gamma is not None:
        check_scalar(gamma, "gamma", caller="kernel_ridge_predictivity", min_value=0,
                     include_min=False)
    k = check_positive_int(folds, "folds", caller="kernel_ridge_predictivity")
    if k < 2:
        raise RepscopeValueError(
            f"The 'folds' parameter of kernel_ridge_predictivity must be >= 2. Got {k}.")
    Xn, Yn = as_float64_numpy(X, name="X"), as_float64_numpy(Y, name="Y")
    idx = np.arange(Xn.shape[0]) % k
    if np.bincount(idx, minlength=k).min() < 2:
        raise RepscopeValueError(
            f"kernel_ridge_predictivity needs at least 2 samples in each of its {k} folds; got "
            f"{Xn.shape[0]} samples. Pass more samples or fewer folds."
        )

    def run(A: np.ndarray, B: np.ndarray) -> float:
        sse = sst = 0.0
        for f in range(k):
            te = idx == f
            a, b = _krr_fold(A[~te], B[~te], A[te], B[te], kernel, gamma, alpha)
            sse += a
            sst += b
        if not sst > 0:
            raise RepscopeValueError("R^2 is undefined: the target representation is constant.")
        return 1.0 - sse / sst

    return _directed(direction, lambda: run(Xn, Yn), lambda: run(Yn, Xn))
