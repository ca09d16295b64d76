r"""Class-conditional Gaussian mixture OOD score: the log-density of the fitted ID model.

One Gaussian per class, :math:`p(x) = \sum_k \pi_k \mathcal N(x; \mu_k, \Sigma_k)` with
:math:`\pi_k = n_k / n`, class means :math:`\mu_k` and maximum-likelihood covariances
(**divisor** :math:`n_k` per class, ``n`` for the tied one), each plus ``reg_covar`` on the
diagonal (scikit-learn's ``GaussianMixture`` regularisation, so singular covariances —
constant pixels — have a density). The score is :math:`\log p(x)` (higher = more ID).
Covariance types: ``"full"`` (one per class; ``K d^2`` memory), ``"diag"``, ``"tied"``.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope.exceptions import RepscopeValueError
from repscope.ood._base import OODDetector
from repscope.ood._mahalanobis import class_moments
from repscope.ood._registry import register_detector
from repscope.stats import Moments

__all__ = ["GMMDetector"]

_LOG_2PI = float(np.log(2 * np.pi))


@register_detector("gmm", paper="Gaussian discriminant / class-conditional mixture (e.g. Lee "
                   "et al., NeurIPS 2018, generative view)", needs={"labels"}, level="class",
                   summary="log-density of one Gaussian per class, mixed by class priors")
class GMMDetector(OODDetector):
    """Class-conditional Gaussian mixture: score :math:`\\log \\sum_k \\pi_k
    \\mathcal N(x; \\mu_k, \\Sigma_k)`.

    Parameters
    ----------
    covariance_type : {"full", "diag", "tied"}, default="full"
    reg_covar : float, default=1e-6
        Added to every covariance's diagonal.
    moments : Moments, optional
        Labelled Moments to take the statistics from; ``"full"`` needs
        ``Moments(class_cov="full")``, ``"diag"`` ``class_cov="diag"`` or ``"full"``.

    Attributes
    ----------
    classes_, means_ : ndarray
    weights_ : ndarray of shape (n_classes,)
        Class priors :math:`\\pi_k`.
    precision_factors_ : ndarray of shape (n_classes, n_features, n_features), or (1, d, d) tied,
        or (n_classes, n_features) diag
        :math:`L_k` with :math:`L_k L_k^\\top = \\Sigma_k^{-1}` (diag: :math:`1/\\sigma`).
    log_dets_ : ndarray of shape (n_classes,)
        :math:`\\log \\det \\Sigma_k`.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "covariance_type": [StrOptions({"full", "diag", "tied"})],
        "reg_covar": [Interval(Real, 0, None, closed="left")],
        "moments": [None, Moments],
    }

    def __init__(self, covariance_type: str = "full", *, reg_covar: float = 1e-6,
                 moments: Moments | None = None) -> None:
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.moments = moments

    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        kind = self.covariance_type
        need = {"full": "full", "diag": "diag", "tied": "none"}[kind]
        m, _, self.classes_ = class_moments(self, X, y, self.moments, class_cov=need)
        if (kind == "full" and m.class_cov != "full") or (kind == "diag"
                                                         and m.class_cov == "none"):
            raise RepscopeValueError(
                f"GMMDetector(covariance_type={kind!r}) needs Moments(class_cov="
                f"{'full' if kind == 'full' else 'diag'!r}) as moments=; got class_cov="
                f"{m.class_cov!r}.")
        d = int(m.n_features or 0)
        self.n_features_in_ = d
        self.means_ = m.class_means.copy()
        nk = m.class_counts.astype(np.float64)
        self.weights_ = nk / nk.sum()
        reg = float(self.reg_covar)
        if kind == "diag":
            var = m.class_variances(ddof=0) + reg
            self.precision_factors_ = 1.0 / np.sqrt(var)
            self.log_dets_ = np.log(var).sum(axis=1)
        else:
            covs = (m.class_covariances(ddof=0) if kind == "full"
                    else (m.within_class_scatter() / m.n)[None])
            factors, logdets = [], []
            for c in covs:
                vals, vecs = np.linalg.eigh((c + c.T) / 2 + reg * np.eye(d))
                vals = np.maximum(vals, np.finfo(np.float64).tiny)
                factors.append(vecs / np.sqrt(vals))
                logdets.append(float(np.log(vals).sum()))
            self.precision_factors_ = np.stack(factors)
            self.log_dets_ = np.asarray(logdets)
            if kind == "tied":
                self.log_dets_ = np.repeat(self.log_dets_, self.means_.shape[0])
        if not np.all(np.isfinite(self.log_dets_)):
            raise RepscopeValueError(
                "GMMDetector's covariances are singular; raise reg_covar above 0.")
        self.fitted_ = True

    def class_log_densities(self, X: Any) -> np.ndarray:
        """:math:`\\log \\pi_k + \\log \\mathcal N(x; \\mu_k, \\Sigma_k)`, shape (n, n_classes)."""
        self._check_fitted()
        Xn = self._features(X)
        d = Xn.shape[1]
        K = self.means_.shape[0]
        out = np.empty((Xn.shape[0], K))
        for k in range(K):
            diff = Xn - self.means_[k]
            if self.covariance_type == "diag":
                z = diff * self.precision_factors_[k]
            else:
                L = self.precision_factors_[0 if self.covariance_type == "tied" else k]
                z = diff @ L
            out[:, k] = -0.5 * ((z * z).sum(1) + self.log_dets_[k] + d * _LOG_2PI)
        with np.errstate(divide="ignore"):
            return out + np.log(self.weights_)

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        J = self.class_log_densities(X)
        mx = J.max(axis=1)
        return np.asarray(mx + np.log(np.exp(J - mx[:, None]).sum(axis=1)))
