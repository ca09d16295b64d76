r"""Logit-based OOD scores: MSP, MaxLogit, energy, entropy and GEN.

With logits :math:`z \in \mathbb{R}^K` and temperature :math:`T` (default 1), the scores
(higher = more in-distribution) are

* MSP: :math:`\max_k \mathrm{softmax}(z / T)_k`
* MaxLogit: :math:`\max_k z_k / T`
* energy: :math:`T \log \sum_k e^{z_k / T}` (the negative free energy)
* entropy: :math:`\sum_k p_k \log p_k` with :math:`p = \mathrm{softmax}(z / T)` (negative
  entropy)
* GEN: :math:`-\sum_{k \in \text{top-}M} p_k^\gamma (1 - p_k)^\gamma` (negative generalized
  entropy over the ``M`` largest probabilities).

Logits come from ``logits=`` (given) or from ``head=``: a fitted linear probe (anything with
``coef_`` and ``intercept_``), a pair ``(W, b)``, or ``"probe"`` to fit a
:class:`~repscope.probe.LinearProbe` with ``C=1`` on the labelled training features. A binary
head's single column ``z`` is expanded to the logits ``[0, z]``. With a head,
``feature_transform=``
(``"react"``, ``"ash"``, ``"scale"`` or a transform object) rewrites the features before the
head (:mod:`repscope.ood._transforms`).
"""

from __future__ import annotations

from abc import abstractmethod
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope.ood._base import (
    LinearHead,
    MissingLogitsError,
    OODDetector,
    check_logits,
    head_weights,
)
from repscope.ood._registry import register_detector
from repscope.ood._transforms import FeatureTransform

__all__ = [
    "EnergyDetector",
    "EntropyDetector",
    "GENDetector",
    "MSPDetector",
    "MaxLogitDetector",
]


def _logsumexp(Z: np.ndarray) -> np.ndarray:
    m = Z.max(axis=1)
    return m + np.log(np.exp(Z - m[:, None]).sum(axis=1))


def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


class _LogitDetector(OODDetector):
    """Shared machinery: where the logits come from (given, or head + optional transform)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "head": [None, StrOptions({"probe"}), LinearHead()],
        "temperature": [Interval(Real, 0, np.inf, closed="neither")],
        "feature_transform": [None, StrOptions({"react", "ash", "scale"}), FeatureTransform],
    }

    def __init__(self, *, head: Any = None, temperature: float = 1.0,
                 feature_transform: Any = None) -> None:
        self.head = head
        self.temperature = temperature
        self.feature_transform = feature_transform

    # ------------------------------------------------------------------ fit
    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        name = type(self).__name__
        Xn = None if X is None else self._features(X, fitting=True)
        self.n_features_in_ = None if Xn is None else int(Xn.shape[1])
        self.head_weight_: np.ndarray | None = None
        self.head_bias_: np.ndarray | None = None
        self.transform_: Any = None
        if isinstance(self.head, str):
            if Xn is None:
                raise MissingLogitsError(f"{name}(head='probe') needs the features X to fit a "
                                         "probe on; got X=None.")
            from repscope.probe import LinearProbe

            classes, enc = self._labels(y, Xn.shape[0])
            if classes.size < 2:
                raise MissingLogitsError(
                    f"{name}(head='probe') needs at least 2 classes in y to fit a probe; got "
                    f"{classes.size}.")
            probe = LinearProbe(C=1.0).fit(Xn, enc)
            self.head_weight_, self.head_bias_ = head_weights(probe, name)
        elif self.head is not None:
            self.head_weight_, self.head_bias_ = head_weights(self.head, name)
            if Xn is not None and self.head_weight_.shape[1] != Xn.shape[1]:
                from repscope.exceptions import RepscopeValueError

                raise RepscopeValueError(
                    f"The head of {name} takes {self.head_weight_.shape[1]} features; X has "
                    f"shape {Xn.shape}. Pass the head fitted on this layer.")
            if self.n_features_in_ is None:
                self.n_features_in_ = int(self.head_weight_.shape[1])
        if self.feature_transform is not None:
            if self.head_weight_ is None:
                raise MissingLogitsError(
                    f"{name}(feature_transform=...) rewrites the features before the head, so it needs "
                    "head= (a fitted linear probe, a pair (W, b) or 'probe'); got no head.")
            if Xn is None:
                raise MissingLogitsError(
                    f"{name}(feature_transform=...) is fitted on the training features; got X=None.")
            from repscope.ood._transforms import make_transform

            self.transform_ = make_transform(self.feature_transform, owner=name).fit(Xn)
        self.n_classes_: int | None = None
        if self.head_weight_ is not None:
            self.n_classes_ = int(self.head_weight_.shape[0])
        elif logits is not None:
            self.n_classes_ = int(check_logits(
                logits, None if Xn is None else Xn.shape[0], None, name).shape[1])
        self.fitted_ = True

    # ------------------------------------------------------------------ score
    def _logits(self, X: Any, logits: Any) -> np.ndarray:
        name = type(self).__name__
        if logits is not None:
            n = None if X is None else int(self._features(X).shape[0])
            return check_logits(logits, n, self.n_classes_, name)
        if self.head_weight_ is None:
            raise MissingLogitsError(
                f"{name} scores logits: pass score_samples(X, logits=...) or fit it with head= "
                "(a fitted linear probe, a pair (W, b) or 'probe' with labels); got neither.")
        if X is None:
            raise MissingLogitsError(f"{name} computes logits from X with its head; got X=None.")
        Xn = self._features(X)
        if self.transform_ is not None:
            Xn = self.transform_.transform(Xn)
        assert self.head_bias_ is not None
        return np.asarray(Xn @ self.head_weight_.T + self.head_bias_)

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        return self._from_logits(self._logits(X, logits) / float(self.temperature))

    @abstractmethod
    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        """Scores from (temperature-scaled) logits ``Z`` of shape (n, n_classes)."""

    def fit(self, X: Any = None, y: Any = None, *, logits: Any = None) -> _LogitDetector:
        """Take the head (and fit the transform) from in-distribution data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), optional
            In-distribution features (needed for ``head="probe"`` and ``transform``).
        y : array-like of shape (n_samples,), optional
            Labels (for ``head="probe"``).
        logits : array-like of shape (n_samples, n_classes), optional
            Without a head: the logits, to fix the number of classes.

        Returns
        -------
        self
        """
        super().fit(X, y, logits=logits)
        return self

    def score_samples(self, X: Any = None, *, logits: Any = None) -> np.ndarray:
        """Scores (n_samples,), higher = more in-distribution, from ``logits`` if given, else
        from the head applied to (transformed) ``X``.

        Raises
        ------
        MissingLogitsError
            Neither ``logits`` nor a head.
        """
        return super().score_samples(X, logits=logits)


_HEAD_DOC = """
    Parameters
    ----------
    head : fitted linear probe, (W, b), "probe" or None, default=None
        Where logits come from when ``score_samples`` gets none: a probe with ``coef_`` and
        ``intercept_`` (e.g. :class:`~repscope.probe.LinearProbe`), weights ``W`` of shape
        (n_classes, n_features) and bias ``b``, or ``"probe"`` to fit ``LinearProbe(C=1)`` on
        ``fit(X, y)``. A binary head's one column ``z`` becomes ``[0, z]``.
    temperature : float, default=1.0
        Logits are divided by it.
    feature_transform : "react", "ash", "scale", a transform object or None, default=None
        Rewrites post-ReLU features before the head (needs ``head``).
"""


@register_detector("msp", paper="Hendrycks & Gimpel, ICLR 2017 (arXiv 1610.02136)",
                   needs={"logits"}, transforms=True,
                   summary="maximum softmax probability of the head")
class MSPDetector(_LogitDetector):
    __doc__ = r"""Maximum softmax probability, :math:`\max_k \mathrm{softmax}(z/T)_k`.
    """ + _HEAD_DOC + """
    Examples
    --------
    >>> import numpy as np
    >>> MSPDetector().fit(logits=np.zeros((1, 2))).score_samples(
    ...     logits=np.array([[0.0, 0.0], [9.0, 0.0]])).round(3).tolist()
    [0.5, 1.0]
    """

    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(Z.max(axis=1) - _logsumexp(Z)))


@register_detector("maxlogit", paper="Hendrycks et al., ICML 2022 (arXiv 1911.11132)",
                   needs={"logits"}, transforms=True, summary="largest logit of the head")
class MaxLogitDetector(_LogitDetector):
    __doc__ = r"""Largest logit, :math:`\max_k z_k / T`.
    """ + _HEAD_DOC

    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(Z.max(axis=1))


@register_detector("energy", paper="Liu et al., NeurIPS 2020 (arXiv 2010.03759)",
                   needs={"logits"}, transforms=True,
                   summary="negative free energy T logsumexp(z / T)")
class EnergyDetector(_LogitDetector):
    __doc__ = r"""Negative energy, :math:`T \log \sum_k \exp(z_k / T)`.
    """ + _HEAD_DOC

    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        return float(self.temperature) * _logsumexp(Z)


@register_detector("entropy", paper="Hendrycks & Gimpel, ICLR 2017; (negative) predictive "
                   "entropy", needs={"logits"}, transforms=True,
                   summary="negative entropy of softmax(z / T)")
class EntropyDetector(_LogitDetector):
    __doc__ = r"""Negative predictive entropy, :math:`\sum_k p_k \log p_k`.
    """ + _HEAD_DOC

    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        logp = Z - _logsumexp(Z)[:, None]
        return np.asarray((np.exp(logp) * logp).sum(axis=1))


@register_detector("gen", paper="Liu, Lochman & Zach, CVPR 2023 (GEN: generalized entropy)",
                   needs={"logits"}, transforms=True,
                   summary="negative generalized entropy of the top-M probabilities")
class GENDetector(_LogitDetector):
    __doc__ = r"""Negative generalized entropy,
    :math:`-\sum_{k \in \mathrm{top}_M} p_k^\gamma (1 - p_k)^\gamma`.
    """ + _HEAD_DOC + """    gamma : float, default=0.1
        The exponent :math:`\\gamma` (the paper's default).
    top_m : int, default=100
        The number ``M`` of largest probabilities summed (all classes when fewer).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_LogitDetector._parameter_constraints,
        "gamma": [Interval(Real, 0, np.inf, closed="neither")],
        "top_m": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, head: Any = None, temperature: float = 1.0,
                 feature_transform: Any = None, gamma: float = 0.1, top_m: int = 100) -> None:
        super().__init__(head=head, temperature=temperature, feature_transform=feature_transform)
        self.gamma = gamma
        self.top_m = top_m

    def _from_logits(self, Z: np.ndarray) -> np.ndarray:
        P = _softmax(Z)
        m = min(int(self.top_m), P.shape[1])
        top = -np.sort(-P, axis=1)[:, :m]
        g = float(self.gamma)
        return np.asarray(-(top**g * (1.0 - top) ** g).sum(axis=1))
