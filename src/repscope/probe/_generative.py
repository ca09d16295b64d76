"""Generative closed-form probes: shrinkage LDA (with its whole shrinkage path) and Gaussian
naive Bayes (per-class or shared pooled-diagonal variances), both fitted from ``Moments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._array import is_torch
from repscope._kernels.eigenpath import (
    ClassSums,
    eigh_psd,
    path_coefs,
    path_decision,
    shrinkage_filters,
)
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.probe._ridge import (
    BATCH_SIZE,
    CV_FOLDS,
    FRACTION,
    SEED,
    _ClosedFormClassifier,
    _Source,
    _take,
    check_grid,
    fold_ids,
    fold_moments,
    sums_of,
)
from repscope.stats import Moments

__all__ = ["GaussianNBProbe", "LDAProbe", "ledoit_wolf_shrinkage", "oas_shrinkage"]

DEFAULT_SHRINKAGES = (0.0, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def oas_shrinkage(S: np.ndarray, n_samples: int) -> float:
    """Oracle Approximating Shrinkage intensity of a covariance ``S`` (scikit-learn's formula).

    .. math:: s = \\min\\Big(1, \\frac{\\bar{S^2} + \\mu^2}{(n + 1)(\\bar{S^2} - \\mu^2 / d)}\\Big),
              \\quad \\bar{S^2} = \\mathrm{mean}(S_{ij}^2),\\ \\mu = \\mathrm{tr}(S)/d.

    Needs only the covariance: computable from Moments.
    """
    d = S.shape[0]
    if d == 1:
        return 0.0
    alpha = float(np.mean(S**2))
    mu = float(np.trace(S)) / d
    den = (n_samples + 1) * (alpha - mu**2 / d)
    return 1.0 if den == 0 else float(min((alpha + mu**2) / den, 1.0))


def ledoit_wolf_shrinkage(S: np.ndarray, n_samples: int, sum_sq_norms2: float) -> float:
    """Ledoit–Wolf shrinkage intensity (scikit-learn's ``ledoit_wolf_shrinkage`` formula).

    With ``S`` the (biased) covariance of centred rows ``r_i`` and
    ``sum_sq_norms2 = sum_i ||r_i||^4`` (the sum of squared entries of the per-sample outer
    products ``r_i r_i^T``, which no second moment holds — a second pass over the rows):

    .. math:: \\beta = \\frac{1}{d n}\\Big(\\frac{\\sum_i \\|r_i\\|^4}{n} - \\|S\\|_F^2\\Big),\\quad
              \\delta = \\frac{\\|S - \\mu I\\|_F^2}{d},\\quad s = \\min(\\beta, \\delta)/\\delta.
    """
    d = S.shape[0]
    mu = float(np.trace(S)) / d
    delta_ = float((S**2).sum())
    beta = (sum_sq_norms2 / n_samples - delta_) / (d * n_samples)
    delta = (delta_ - 2.0 * mu * float(np.trace(S)) + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


class LDAProbe(_ClosedFormClassifier):
    """Linear discriminant analysis with a tied, shrunk covariance and its shrinkage path.

    The tied covariance is the pooled within-class covariance
    :math:`S = \\frac{1}{n}\\sum_k \\sum_{i \\in k} (x_i - m_k)(x_i - m_k)^T` (scikit-learn's
    prior-weighted sum of biased class covariances), shrunk toward :math:`\\mu I`,
    :math:`\\mu = \\mathrm{tr}(S)/d`:

    .. math:: \\Sigma_s = (1 - s) S + s \\mu I,\\qquad
              \\delta_k(x) = x^T \\Sigma_s^{-1} m_k - \\tfrac12 m_k^T \\Sigma_s^{-1} m_k
              + \\log \\pi_k.

    Every :math:`\\Sigma_s` has the eigenvectors of :math:`S`, so the whole path in
    ``[0, 1]`` costs one ``eigh`` (per fold).

    Parameters
    ----------
    shrinkage : None, float in [0, 1], "path", "ledoit-wolf" or "oas", default=None
        ``None`` = no shrinkage (pseudo-inverse on a singular ``S``, like scikit-learn's
        ``lsqr``); a float fixes ``s``; ``"path"`` selects ``s`` from ``shrinkages`` by
        held-out accuracy (``selection``); ``"oas"`` uses the OAS formula (from the moments);
        ``"ledoit-wolf"`` the Ledoit–Wolf formula applied to the within-class residuals
        ``x_i - m_{y_i}`` — it needs ``sum_i ||x_i - m_{y_i}||^4``, which takes a second pass
        over the rows. (scikit-learn's ``shrinkage="auto"`` applies Ledoit–Wolf per class
        to standardised data, a different estimator.)
    shrinkages : sequence of float in [0, 1]
        The path for ``shrinkage="path"`` (9 values by default).
    selection : {"kfold", "holdout"}, default="kfold"
    cv : int, default=5
    validation_fraction : float, default=0.2
    random_state : int or None, default=0
    batch_size : int, default=1024

    Attributes
    ----------
    classes_, n_features_in_
    coef_ : ndarray of shape (1, d) for two classes, else (n_classes, d)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    means_ : ndarray of shape (n_classes, d)
    priors_ : ndarray of shape (n_classes,)
    covariance_ : ndarray of shape (d, d)
        The unshrunk pooled within-class covariance ``S``.
    shrinkage_ : float
        The shrinkage used.
    path_ : ndarray of shape (n_shrinkages,) or None
        Held-out accuracy along the path (``shrinkage="path"`` only).

    Notes
    -----
    Needs more samples than classes (``S`` is otherwise 0); a class with a single sample is
    fine (it adds nothing to ``S``). From Moments alone (:meth:`fit_moments`) ``None``, a
    float and ``"oas"`` work; ``"path"`` and ``"ledoit-wolf"`` need the rows.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "shrinkage": [None, Interval(Real, 0, 1, closed="both"),
                      StrOptions({"path", "ledoit-wolf", "oas"})],
        "shrinkages": [Interval(Real, 0, 1, closed="both"), "array-like"],
        "selection": [StrOptions({"kfold", "holdout"})],
        "cv": CV_FOLDS,
        "validation_fraction": FRACTION,
        "random_state": SEED,
        "batch_size": BATCH_SIZE,
    }

    def __init__(
        self,
        shrinkage: float | Literal["path", "ledoit-wolf", "oas"] | None = None,
        *,
        shrinkages: Sequence[float] = DEFAULT_SHRINKAGES,
        selection: Literal["kfold", "holdout"] = "kfold",
        cv: int = 5,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        batch_size: int = 1024,
    ) -> None:
        self.shrinkage = shrinkage
        self.shrinkages = shrinkages
        self.selection = selection
        self.cv = cv
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.batch_size = batch_size

    def _check_params(self) -> np.ndarray:
        """Validate the parameters (``_parameter_constraints``); the shrinkage grid."""
        self._validate_params()
        return check_grid(self, "shrinkages", self.shrinkages,
                          "a non-empty sequence of floats in [0, 1]", 0.0, 1.0)

    def fit(self, X: Any, y: Any) -> LDAProbe:
        """Fit from in-memory features (numpy or torch) and labels (ints or strings)."""
        grid = self._check_params()
        X, targets = self._encode(X, y)
        return self._fit_source(_Source(X, targets, self.batch_size), grid)

    @classmethod
    def from_store(cls, store: Any, layer: str, *, labels: Any, **params: Any) -> LDAProbe:
        """Fit on one layer of a FeatureStore, streaming (a second pass for ``"path"`` and
        ``"ledoit-wolf"``)."""
        probe = cls(**params)
        grid = probe._check_params()
        targets = probe._store_targets(store, layer, labels)
        return probe._fit_source(_Source(None, targets, probe.batch_size, store, layer), grid)

    def fit_moments(self, moments: Moments) -> LDAProbe:
        """Fit from labelled (e.g. all-reduced) Moments; ``shrinkage`` None, float or "oas"."""
        self._check_params()
        if self.shrinkage in ("path", "ledoit-wolf"):
            raise RepscopeValueError(
                f"fit_moments supports shrinkage None, a float or 'oas'; got "
                f"{self.shrinkage!r}, which needs the rows. Use fit(X, y) or from_store."
            )
        if not isinstance(moments, Moments):
            raise RepscopeTypeError(f"moments must be a Moments; got {type(moments).__name__}.")
        if moments.classes.size < 2:
            raise RepscopeValueError(
                f"y must contain at least 2 distinct classes; the moments hold "
                f"{moments.classes.size}.")
        self.classes_ = moments.classes.copy()
        self.n_features_in_ = int(moments.n_features or 0)
        total = ClassSums.from_moments(moments, self.classes_, moments.mean)
        self._finish(total, self._fixed_shrinkage(total, None))
        return self

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _covariance(cs: ClassSums, n_classes: int) -> np.ndarray:
        if cs.n <= n_classes:
            raise RepscopeValueError(
                f"LDAProbe needs more samples than classes for a within-class covariance; got "
                f"{cs.n:.0f} samples and {n_classes} classes."
            )
        return cs.within_scatter() / cs.n

    def _fixed_shrinkage(self, cs: ClassSums, source: _Source | None) -> float:
        sh = self.shrinkage
        if sh is None:
            return 0.0
        if sh == "oas":
            return oas_shrinkage(self._covariance(cs, len(self.classes_)), int(cs.n))
        if sh == "ledoit-wolf":
            assert source is not None
            S = self._covariance(cs, len(self.classes_))
            means = cs.class_means()
            s4 = 0.0
            for Xb, tb, _ in source.batches():
                R = _as_f64(Xb) - means[tb]
                s4 += float(((R * R).sum(1) ** 2).sum())
            return ledoit_wolf_shrinkage(S, int(cs.n), s4)
        return float(sh)

    def _path_models(self, cs: ClassSums, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (A, d, K) and intercepts (A, K) of every shrinkage, about cs.mean."""
        S = self._covariance(cs, len(self.classes_))
        basis = eigh_psd(S)
        mu = float(np.trace(S)) / S.shape[0]
        Mc = cs.class_means() - cs.mean
        W = path_coefs(basis, shrinkage_filters(basis.values, grid, mu), basis.vectors.T @ Mc.T)
        pri = cs.nk / cs.n
        with np.errstate(divide="ignore"):
            logp = np.where(pri > 0, np.log(np.where(pri > 0, pri, 1.0)), -np.inf)
        b = -0.5 * np.einsum("kd,adk->ak", Mc, W) + logp
        return W, b

    def _fit_source(self, source: _Source, grid: np.ndarray) -> LDAProbe:
        path = self.shrinkage == "path"
        folds, k = fold_ids(source.n, self.selection if path else "none", self.cv,
                            self.validation_fraction, self.random_state)
        total_m, parts = fold_moments(source, folds, k, False)
        K = len(self.classes_)
        total = sums_of(total_m, K, total_m.mean, False)
        self.path_ = None
        if not path:
            self._finish(total, self._fixed_shrinkage(total, source))
            return self
        models = []
        for p in parts:
            tr = total - sums_of(p, K, total.shift, False)
            W, b = self._path_models(tr, grid)
            A, d, _ = W.shape
            models.append((tr.mean, W.transpose(1, 0, 2).reshape(d, A * K), b.ravel()))
        correct = np.zeros((k, grid.size))
        counts = np.zeros(k)
        for Xb, tb, rows in source.batches():
            fb = folds[rows]
            for f, (c, W_all, off) in enumerate(models):
                mask = fb == f
                if mask.any():
                    D = _np(path_decision(_take(Xb, mask), c, W_all, off)).reshape(-1, grid.size, K)
                    correct[f] += (D.argmax(2) == tb[mask][:, None]).sum(0)
                    counts[f] += mask.sum()
        self.path_ = (correct / np.maximum(counts, 1)[:, None]).mean(0)
        self._finish(total, float(grid[int(np.argmax(self.path_))]))
        return self

    def _finish(self, cs: ClassSums, shrinkage: float) -> None:
        S = self._covariance(cs, len(self.classes_))
        basis = eigh_psd(S)
        mu = float(np.trace(S)) / S.shape[0]
        g = shrinkage_filters(basis.values, np.array([shrinkage]), mu)[0]
        M = cs.class_means()
        coef = ((M @ basis.vectors) * g) @ basis.vectors.T  # (K, d) = M Sigma^-1
        self.priors_ = cs.nk / cs.n
        intercept = -0.5 * (coef * M).sum(1) + np.log(self.priors_)
        if len(self.classes_) == 2:
            coef = coef[1:] - coef[:1]
            intercept = intercept[1:] - intercept[:1]
        self.coef_, self.intercept_ = coef, intercept
        self.means_, self.covariance_, self.shrinkage_ = M, S, float(shrinkage)


class GaussianNBProbe(_ClosedFormClassifier):
    """Gaussian naive Bayes with per-class or shared (pooled) diagonal variances.

    .. math:: \\log p(x, k) = \\log \\pi_k - \\tfrac12 \\sum_j \\log(2\\pi\\sigma^2_{kj})
              - \\tfrac12 \\sum_j (x_j - \\mu_{kj})^2 / \\sigma^2_{kj}.

    Parameters
    ----------
    variance : {"per-class", "shared"}, default="per-class"
        ``"per-class"``: :math:`\\sigma^2_{kj} = \\mathrm{Var}(x_j \\mid k) + \\epsilon`
        (scikit-learn ``GaussianNB``). ``"shared"``: the prior-weighted pooled diagonal of
        Zheng et al. (2023), :math:`\\sigma^2_j = \\sum_k \\pi_k \\mathrm{Var}(x_j \\mid k) +
        \\epsilon` for every class — a diagonal LDA, linear in ``x``.
    var_smoothing : float, default=1e-9
        :math:`\\epsilon` = ``var_smoothing`` times the largest feature variance (scikit-
        learn's rule, used for both variants; the paper adds ``1e-9`` to features scaled to
        ``[0, 1]``, which is the same up to that scale factor).
    batch_size : int, default=1024

    Attributes
    ----------
    classes_, n_features_in_
    theta_ : ndarray of shape (n_classes, d)
        Class means.
    var_ : ndarray of shape (n_classes, d)
        Variances used (the same row for every class when ``variance="shared"``).
    class_prior_ : ndarray of shape (n_classes,)
    epsilon_ : float

    Notes
    -----
    ``decision_function`` returns the joint log-likelihood (n_samples, n_classes). A class
    with a single sample gets variance ``epsilon`` (per-class), as in scikit-learn. One pass
    over the rows (biased, ``ddof=0``, per-class variances from the diagonal moments).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "variance": [StrOptions({"per-class", "shared"})],
        "var_smoothing": [Interval(Real, 0, np.inf, closed="left")],
        "batch_size": BATCH_SIZE,
    }

    def __init__(
        self,
        variance: Literal["per-class", "shared"] = "per-class",
        *,
        var_smoothing: float = 1e-9,
        batch_size: int = 1024,
    ) -> None:
        self.variance = variance
        self.var_smoothing = var_smoothing
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any) -> GaussianNBProbe:
        """Fit from in-memory features (numpy or torch) and labels (ints or strings)."""
        self._validate_params()
        X, targets = self._encode(X, y)
        if not is_torch(X) and X.shape[0] <= 50_000:
            return self._fit_small(np.asarray(X), targets)
        m = Moments.from_arrays(X, labels=targets, batch_size=self.batch_size)
        return self._from_moments(m, self.classes_)

    def _fit_small(self, X: np.ndarray, targets: np.ndarray) -> GaussianNBProbe:
        """Fast path for small numpy inputs: direct two-pass float64 statistics."""
        K = len(self.classes_)
        Xf = X.astype(np.float64, copy=False)
        nk = np.bincount(targets, minlength=K).astype(np.float64)
        onehot = np.zeros((K, Xf.shape[0]))
        onehot[targets, np.arange(Xf.shape[0])] = 1.0
        theta = (onehot @ Xf) / nk[:, None]
        R = Xf - theta[targets]
        var = (onehot @ (R * R)) / nk[:, None]
        self._set(theta, var, nk, float(Xf.var(axis=0).max()))
        return self

    @classmethod
    def from_store(cls, store: Any, layer: str, *, labels: Any, **params: Any) -> GaussianNBProbe:
        """Fit on one layer of a FeatureStore (one streaming pass)."""
        probe = cls(**params)
        probe._validate_params()
        targets = probe._store_targets(store, layer, labels)
        m = Moments.from_batches(
            (Xb, None, tb) for Xb, tb, _ in _Source(None, targets, probe.batch_size, store,
                                                    layer).batches())
        return probe._from_moments(m, probe.classes_)

    def fit_moments(self, moments: Moments) -> GaussianNBProbe:
        """Fit from labelled (e.g. all-reduced) Moments."""
        self._validate_params()
        if not isinstance(moments, Moments):
            raise RepscopeTypeError(f"moments must be a Moments; got {type(moments).__name__}.")
        if moments.classes.size < 2:
            raise RepscopeValueError(
                f"y must contain at least 2 distinct classes; the moments hold "
                f"{moments.classes.size}.")
        self.n_features_in_ = int(moments.n_features or 0)
        return self._from_moments(moments, moments.classes.copy())

    def _from_moments(self, m: Moments, classes: np.ndarray) -> GaussianNBProbe:
        # ``m`` may be labelled with encoded indices (fit) or the original labels.
        self.classes_ = classes
        nk = m.class_counts.astype(np.float64)
        total_var = float(np.diag(m.covariance(ddof=0)).max())
        self._set(m.class_means, m.class_variances(ddof=0), nk, total_var)
        return self

    def _set(self, theta: np.ndarray, var: np.ndarray, nk: np.ndarray, total_var: float) -> None:
        self.epsilon_ = float(self.var_smoothing) * total_var
        self.class_prior_ = nk / nk.sum()
        if self.variance == "shared":
            var = np.broadcast_to(self.class_prior_ @ var, var.shape).copy()
        self.theta_ = theta
        self.var_ = var + self.epsilon_
        if self.epsilon_ == 0 and (self.var_ == 0).any():
            self.var_ = np.where(self.var_ == 0, np.finfo(np.float64).tiny, self.var_)
        self._shift = theta.mean(0)

    def _decision(self, X: Any) -> Any:
        """Joint log-likelihood ``log p(x, k)``, shape (n_samples, n_classes)."""
        inv = 1.0 / self.var_
        tc = self.theta_ - self._shift
        const = (np.log(self.class_prior_) - 0.5 * np.log(2 * np.pi * self.var_).sum(1)
                 - 0.5 * (tc * tc * inv).sum(1))
        lin = (tc * inv).T  # (d, K)
        if is_torch(X):
            import torch

            kw = {"dtype": torch.float64, "device": X.device}
            Xc = X.to(torch.float64) - torch.as_tensor(self._shift, **kw)
            out = (-0.5 * (Xc * Xc) @ torch.as_tensor(inv.T, **kw) + Xc @ torch.as_tensor(lin, **kw)
                   + torch.as_tensor(const, **kw))
            return out.to(X.dtype) if X.dtype.is_floating_point else out
        Xc = np.asarray(X, dtype=np.float64) - self._shift
        return -0.5 * (Xc * Xc) @ inv.T + Xc @ lin + const

    def predict_joint_log_proba(self, X: Any) -> Any:
        """Joint log-likelihood, as scikit-learn's ``GaussianNB.predict_joint_log_proba``."""
        return self._decision(self._check_X(X))


def _as_f64(Xb: Any) -> np.ndarray:
    from repscope._array import to_numpy

    return to_numpy(Xb).astype(np.float64, copy=False)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
