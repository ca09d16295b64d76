r"""Mahalanobis-family OOD scores from class statistics (one shared ``Moments``).

With class means :math:`\mu_k`, the tied within-class covariance

.. math:: \Sigma = \frac{1}{n} \sum_k \sum_{i \in k} (x_i - \mu_k)(x_i - \mu_k)^\top

(**divisor n**, the maximum-likelihood estimate, as in Lee et al. and scikit-learn's LDA; the
same divisor for every covariance of :mod:`repscope.ood`), its shrunk version
:math:`\Sigma_s = (1 - s)\Sigma + s \frac{\mathrm{tr}\Sigma}{d} I` and the pseudo-inverse of
:math:`\Sigma_s` from its eigendecomposition (eigenvalues at most :math:`d\,\epsilon\,
\lambda_{\max}` count as zero, so a singular covariance — constant pixels — works without
shrinkage; those directions are ignored):

* Mahalanobis: :math:`-\min_k (x - \mu_k)^\top \Sigma_s^{+} (x - \mu_k)`
* relative Mahalanobis: :math:`-\min_k [\mathrm{MD}_k(x) - \mathrm{MD}_0(x)]`, with
  :math:`\mathrm{MD}_0` the distance to the global mean under the total covariance
  :math:`\frac1n \sum_i (x_i - \mu)(x_i - \mu)^\top` (shrunk the same way)
* multi-layer Mahalanobis: the mean over layers of each layer's Mahalanobis score,
  standardised by the mean and standard deviation of that layer's scores on the training data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._kernels.eigenpath import eigh_psd
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.ood._base import OODDetector
from repscope.ood._registry import register_detector
from repscope.stats import Moments

__all__ = [
    "MahalanobisDetector",
    "MultiLayerMahalanobisDetector",
    "RelativeMahalanobisDetector",
    "whitening",
]

_CHUNK = 8192


def whitening(cov: np.ndarray, shrinkage: float | str, n: int) -> tuple[np.ndarray, float]:
    r"""``(W, s)``: ``W`` of shape (d, r) with :math:`W W^\top = \Sigma_s^{+}`, and the shrinkage.

    ``shrinkage`` is a float in [0, 1] or ``"oas"`` (:func:`repscope.probe.oas_shrinkage`).
    """
    from repscope.probe._generative import oas_shrinkage

    cov = np.asarray(cov, dtype=np.float64)
    d = cov.shape[0]
    s = oas_shrinkage(cov, n) if shrinkage == "oas" else float(shrinkage)
    mu = float(np.trace(cov)) / d
    target = (1.0 - s) * cov + s * mu * np.eye(d) if s > 0 else cov
    basis = eigh_psd(target)
    lam = basis.values
    top = float(lam.max()) if lam.size else 0.0
    keep = lam > top * d * np.finfo(np.float64).eps
    return basis.vectors[:, keep] / np.sqrt(lam[keep]), s


def class_moments(det: OODDetector, X: Any, y: Any, moments: Any,
                  class_cov: Any = "none") -> tuple[Moments, Any, np.ndarray]:
    """The labelled Moments to use (given, or accumulated from ``X, y`` with the labels
    encoded as ``0..K-1``), the validated X (or None) and the class labels."""
    name = type(det).__name__
    if moments is not None:
        if not isinstance(moments, Moments):
            raise RepscopeTypeError(
                f"The 'moments' parameter of {name} must be a repscope.stats.Moments; got "
                f"{type(moments).__name__}.")
        if moments.n == 0 or not moments._labelled:
            raise RepscopeValueError(
                f"{name} needs class statistics: moments= must have seen labelled samples "
                "(update(X, labels=y)).")
        Xn = None if X is None else det._features(X, fitting=True)
        if Xn is not None and Xn.shape[1] != moments.n_features:
            raise RepscopeValueError(
                f"X must have {moments.n_features} features (columns), as in moments=; got "
                f"shape {Xn.shape}.")
        return moments, Xn, moments.classes.copy()
    if X is None:
        raise RepscopeValueError(f"{name} needs features: pass fit(X, y) or moments=.")
    Xn = det._features(X, fitting=True)
    classes, enc = det._labels(y, Xn.shape[0])
    return Moments(class_cov=class_cov).update(Xn, labels=enc), Xn, classes


def _sq_dists(Z: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, K) between rows of Z and rows of M."""
    d2 = (Z * Z).sum(1)[:, None] + (M * M).sum(1)[None, :] - 2.0 * (Z @ M.T)
    return np.maximum(d2, 0.0)


class _ClassMahalanobis(OODDetector):
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "shrinkage": [Interval(Real, 0, 1, closed="both"), StrOptions({"oas"})],
        "moments": [None, Moments],
    }

    def __init__(self, *, shrinkage: float | str = 0.0, moments: Moments | None = None) -> None:
        self.shrinkage = shrinkage
        self.moments = moments

    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        m, _, self.classes_ = class_moments(self, X, y, self.moments)
        self.n_features_in_ = int(m.n_features or 0)
        self.center_ = m.mean.copy()
        self.means_ = m.class_means.copy()
        cov = m.within_class_scatter() / m.n
        self.whitener_, self.shrinkage_ = whitening(cov, self.shrinkage, m.n)
        self._fit_more(m)
        self.fitted_ = True

    def _fit_more(self, m: Moments) -> None:
        pass

    def class_distances(self, X: Any) -> np.ndarray:
        """Squared Mahalanobis distances to every class mean, shape (n_samples, n_classes)."""
        self._check_fitted()
        Xn = self._features(X)
        Mw = (self.means_ - self.center_) @ self.whitener_
        out = np.empty((Xn.shape[0], Mw.shape[0]))
        for a in range(0, Xn.shape[0], _CHUNK):
            Z = (Xn[a:a + _CHUNK] - self.center_) @ self.whitener_
            out[a:a + _CHUNK] = _sq_dists(Z, Mw)
        return out


@register_detector("mahalanobis", paper="Lee et al., NeurIPS 2018 (arXiv 1807.03888)",
                   needs={"labels"}, level="class",
                   summary="negative distance to the closest class mean, tied covariance")
class MahalanobisDetector(_ClassMahalanobis):
    """Mahalanobis distance to the closest class mean with a tied, shrunk covariance.

    Score :math:`-\\min_k (x - \\mu_k)^\\top \\Sigma_s^{+} (x - \\mu_k)`; the covariance divides
    by ``n`` (see :mod:`repscope.ood._mahalanobis`).

    Parameters
    ----------
    shrinkage : float in [0, 1] or "oas", default=0.0
        Shrinkage :math:`s` towards :math:`\\frac{\\mathrm{tr}\\Sigma}{d} I`. 0 is the paper's
        estimator (pseudo-inverse where singular).
    moments : Moments, optional
        Labelled :class:`~repscope.stats.Moments` to take the class statistics from (shared
        between detectors and with the probes); ``X, y`` are then only checked.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    means_ : ndarray of shape (n_classes, n_features)
    center_ : ndarray of shape (n_features,)
        The global mean (distances are computed about it).
    whitener_ : ndarray of shape (n_features, rank)
        :math:`W` with :math:`W W^\\top = \\Sigma_s^{+}`.
    shrinkage_ : float

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0], [2, 0], [1, 1], [0, 2], [2, 2], [1, 3]]); y = [0, 0, 0, 1, 1, 1]
    >>> det = MahalanobisDetector().fit(X, y)
    >>> det.score_samples(np.array([[1.0, 0], [1, 9]])).round(3).tolist()
    [-0.5, -200.0]
    """

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        return np.asarray(-self.class_distances(X).min(axis=1))


@register_detector("relative_mahalanobis",
                   paper="Ren et al., 2021 (arXiv 2106.09022)", needs={"labels"}, level="class",
                   summary="class Mahalanobis minus the distance under the global Gaussian")
class RelativeMahalanobisDetector(_ClassMahalanobis):
    """Relative Mahalanobis: :math:`-\\min_k [\\mathrm{MD}_k(x) - \\mathrm{MD}_0(x)]`.

    :math:`\\mathrm{MD}_0` uses the global mean and the total covariance (divisor ``n``),
    shrunk like the class one. Parameters as :class:`MahalanobisDetector`.

    Attributes
    ----------
    background_whitener_ : ndarray of shape (n_features, rank0)
        :math:`W_0` with :math:`W_0 W_0^\\top` the pseudo-inverse of the shrunk total covariance.
    """

    def _fit_more(self, m: Moments) -> None:
        self.background_whitener_, _ = whitening(m.scatter() / m.n, self.shrinkage, m.n)

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        d = self.class_distances(X).min(axis=1)
        Xn = self._features(X)
        Z0 = (Xn - self.center_) @ self.background_whitener_
        return np.asarray((Z0 * Z0).sum(1) - d)


@register_detector("multilayer_mahalanobis",
                   paper="Lee et al., NeurIPS 2018 (feature ensemble, arXiv 1807.03888)",
                   needs={"labels"}, level="class",
                   summary="mean of standardised Mahalanobis scores over several layers")
class MultiLayerMahalanobisDetector(OODDetector):
    """One score from several layers: the mean of per-layer Mahalanobis scores, each
    standardised by its mean and standard deviation on the in-distribution training data.

    Lee et al. weight the layers with a logistic regression fitted on OOD validation data;
    without OOD data the standardised mean gives every layer the same say.

    Parameters
    ----------
    layers : sequence of str, optional
        Layers to use, in order; default: every key of the mapping given to :meth:`fit`.
    shrinkage : float in [0, 1] or "oas", default=0.0
    moments : mapping of str to Moments, optional
        Labelled Moments per layer (shared with other detectors and the probes).

    Attributes
    ----------
    layers_ : list of str
    score_mean_, score_std_ : ndarray of shape (n_layers,)
        Training-score standardisation per layer.
    means_, centers_, whiteners_ : dict of str to ndarray
        Per-layer class means, global means and whiteners.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "layers": [None, "array-like"],
        "shrinkage": [Interval(Real, 0, 1, closed="both"), StrOptions({"oas"})],
        "moments": [None, Mapping],
    }

    def __init__(self, layers: Sequence[str] | None = None, *, shrinkage: float | str = 0.0,
                 moments: Mapping[str, Moments] | None = None) -> None:
        self.layers = layers
        self.shrinkage = shrinkage
        self.moments = moments

    def _mapping(self, X: Any, what: str) -> Mapping[str, Any]:
        if not isinstance(X, Mapping):
            raise RepscopeTypeError(
                f"{type(self).__name__}.{what} takes a mapping {{layer name: features}}; got "
                f"{type(X).__name__}.")
        return X

    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        X = self._mapping(X, "fit")
        layers = list(self.layers) if self.layers is not None else list(X)
        if not layers:
            raise RepscopeValueError(f"{type(self).__name__} needs at least one layer; got none.")
        missing = [name for name in layers if name not in X]
        if missing:
            raise RepscopeValueError(f"X has no features for layer(s) {missing}; it has "
                                     f"{sorted(X)}.")
        self.layers_ = layers
        self.means_: dict[str, np.ndarray] = {}
        self.centers_: dict[str, np.ndarray] = {}
        self.whiteners_: dict[str, np.ndarray] = {}
        mean, std = [], []
        for name in layers:
            det = MahalanobisDetector(
                shrinkage=self.shrinkage,
                moments=None if self.moments is None else self.moments[name]).fit(X[name], y)
            self.means_[name], self.centers_[name] = det.means_, det.center_
            self.whiteners_[name] = det.whitener_
            s = det.score_samples(X[name])
            mean.append(float(s.mean()))
            std.append(float(s.std()))
        self.score_mean_ = np.asarray(mean)
        self.score_std_ = np.where(np.asarray(std) > 0, np.asarray(std), 1.0)
        self.classes_ = det.classes_
        self.fitted_ = True

    def layer_scores(self, X: Any) -> np.ndarray:
        """Standardised Mahalanobis scores per layer, shape (n_samples, n_layers)."""
        self._check_fitted()
        X = self._mapping(X, "score_samples")
        cols = []
        for i, name in enumerate(self.layers_):
            if name not in X:
                raise RepscopeValueError(f"X has no features for layer {name!r}; the detector "
                                         f"was fitted on {self.layers_}.")
            det = MahalanobisDetector()
            det.means_, det.center_ = self.means_[name], self.centers_[name]
            det.whitener_, det.n_features_in_ = self.whiteners_[name], self.means_[name].shape[1]
            det.fitted_ = True
            s = -det.class_distances(X[name]).min(axis=1)
            cols.append((s - self.score_mean_[i]) / self.score_std_[i])
        return np.stack(cols, axis=1)

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        return np.asarray(self.layer_scores(X).mean(axis=1))
