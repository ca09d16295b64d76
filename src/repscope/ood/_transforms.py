r"""Feature transforms for post-ReLU activations: ReAct, ASH and SCALE.

They rewrite features *before* a linear head, so they compose with the logit-based detectors
(``get_detector("energy", head=probe, feature_transform="react")``). All three assume non-negative
(post-ReLU) activations and refuse signed features with :class:`SignedFeaturesError`: on
signed features (e.g. a transformer's residual stream) clipping and pruning have no meaning.

With ``p`` the percentile and, per sample, :math:`s_1 = \sum_j x_j`, the ``k = d -
\mathrm{round}(d p / 100)`` largest activations kept (the reference implementations'
``topk``) and :math:`s_2` their sum:

* ReAct: :math:`\min(x, c)` with :math:`c` the ``p``-th percentile of all in-distribution
  training activations (fitted).
* ASH: the other activations set to 0; variant ``"p"`` stops there, ``"b"`` sets the kept ones
  to :math:`s_1 / k`, ``"s"`` multiplies the kept ones by :math:`\exp(s_1 / s_2)`.
* SCALE: :math:`x \exp(s_1 / s_2)` (nothing pruned).

A sample with :math:`s_2 = 0` (all zero) gets the factor 1. Among equal activations (the
zeros of a ReLU) the lower feature index counts as larger, so ``k`` is exact and the result
deterministic (the reference code's ``torch.topk`` breaks such ties arbitrarily; only ASH-B,
which fills every kept entry, can tell the difference).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._array import to_numpy
from repscope._params import ValidatedEstimator
from repscope._validation import check_features
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.ood._base import SignedFeaturesError
from repscope.ood._registry import TRANSFORMS, register_transform

__all__ = ["ASH", "SCALE", "FeatureTransform", "ReAct", "make_transform"]


class FeatureTransform(TransformerMixin, ValidatedEstimator, ABC):
    """Base of the post-ReLU feature transforms: validation and the non-negativity check."""

    transform_name: ClassVar[str] = ""

    def _check(self, X: Any, *, fitting: bool) -> np.ndarray:
        X = check_features(X, name="X")
        expected = getattr(self, "n_features_in_", None)
        if not fitting and expected is not None and int(X.shape[1]) != expected:
            raise RepscopeValueError(
                f"X has {int(X.shape[1])} features, but {type(self).__name__} is expecting "
                f"{expected} features as input (the width at fit).")
        Xn = np.asarray(to_numpy(X), dtype=np.float64)
        lo = float(Xn.min()) if Xn.size else 0.0
        if lo < 0:
            raise SignedFeaturesError(
                f"{type(self).__name__} assumes non-negative (post-ReLU) features; X has a "
                f"minimum of {lo:.4g}. Use activations taken after a ReLU, or a detector "
                "without feature_transform=.")
        return Xn

    def fit(self, X: Any, y: Any = None) -> FeatureTransform:
        """Fit on in-distribution features (non-negative); returns self."""
        self._validate_params()
        Xn = self._check(X, fitting=True)
        self.n_features_in_ = int(Xn.shape[1])
        self._fit(Xn)
        self.fitted_ = True
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The transformed features, float64 of the same shape."""
        if not getattr(self, "fitted_", False):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X).")
        return self._transform(self._check(X, fitting=False))

    def _fit(self, X: np.ndarray) -> None:
        pass

    @abstractmethod
    def _transform(self, X: np.ndarray) -> np.ndarray:
        """The transformed features of checked, non-negative ``X``."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


def _kept(X: np.ndarray, percentile: float) -> tuple[np.ndarray, int]:
    """Mask of the ``k = d - round(d p / 100)`` largest entries per row (at least 1); among
    equal values the lower column index is kept."""
    d = X.shape[1]
    k = max(1, d - int(np.round(d * percentile / 100.0)))
    idx = np.argsort(-X, axis=1, kind="stable")[:, :k]
    mask = np.zeros(X.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask, k


def _ratio(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    return np.where(s2 > 0, s1 / np.where(s2 > 0, s2, 1.0), 0.0)


@register_transform("react", paper="Sun, Guo & Li, NeurIPS 2021 (ReAct, arXiv 2111.12797)",
                    summary="clip activations at a percentile of the in-distribution ones")
class ReAct(FeatureTransform):
    """ReAct: clip activations at the ``percentile``-th percentile of the training ones.

    Parameters
    ----------
    percentile : float, default=90.0
        In (0, 100]; the paper's default is 90.

    Attributes
    ----------
    threshold_ : float
        The clip value :math:`c`.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "percentile": [Interval(Real, 0, 100, closed="right")],
    }

    def __init__(self, percentile: float = 90.0) -> None:
        self.percentile = percentile

    def _fit(self, X: np.ndarray) -> None:
        self.threshold_ = float(np.percentile(X, float(self.percentile)))

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return np.minimum(X, self.threshold_)


@register_transform("ash", paper="Djurisic et al., ICLR 2023 (ASH, arXiv 2209.09858)",
                    summary="prune all but the top activations per sample, then rescale")
class ASH(FeatureTransform):
    """ASH: activation shaping per sample (prune below the percentile, then P/B/S).

    Parameters
    ----------
    percentile : float, default=90.0
        Share (in percent) of each sample's activations set to zero, in [0, 100).
    variant : {"s", "p", "b"}, default="s"
        ``"p"`` prune only, ``"b"`` binarize the kept ones to :math:`s_1/k`, ``"s"`` scale
        the kept ones by :math:`\\exp(s_1/s_2)`.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "percentile": [Interval(Real, 0, 100, closed="left")],
        "variant": [StrOptions({"s", "p", "b"})],
    }

    def __init__(self, percentile: float = 90.0, variant: str = "s") -> None:
        self.percentile = percentile
        self.variant = variant

    def _transform(self, X: np.ndarray) -> np.ndarray:
        mask, k = _kept(X, float(self.percentile))
        pruned = np.where(mask, X, 0.0)
        s1 = X.sum(axis=1)
        if self.variant == "p":
            return pruned
        if self.variant == "b":
            return np.where(mask, (s1 / k)[:, None], 0.0)
        return pruned * np.exp(_ratio(s1, pruned.sum(axis=1)))[:, None]


@register_transform("scale", paper="Xu et al., ICLR 2024 (SCALE, arXiv 2310.00227)",
                    summary="scale each sample by exp(total / top-percentile sum)")
class SCALE(FeatureTransform):
    """SCALE: multiply each sample by :math:`\\exp(s_1/s_2)`, nothing pruned.

    Parameters
    ----------
    percentile : float, default=85.0
        Share (in percent) of each sample's activations left out of :math:`s_2`, in [0, 100).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "percentile": [Interval(Real, 0, 100, closed="left")],
    }

    def __init__(self, percentile: float = 85.0) -> None:
        self.percentile = percentile

    def _transform(self, X: np.ndarray) -> np.ndarray:
        mask, _ = _kept(X, float(self.percentile))
        s2 = np.where(mask, X, 0.0).sum(axis=1)
        return X * np.exp(_ratio(X.sum(axis=1), s2))[:, None]


def make_transform(spec: Any, *, owner: str) -> FeatureTransform:
    """A fresh, unfitted transform from a name or a (possibly fitted) transform object."""
    from sklearn.base import clone

    if isinstance(spec, str):
        cls = TRANSFORMS.get(spec)
        out: FeatureTransform = cls()
        return out
    if isinstance(spec, FeatureTransform):
        cloned: FeatureTransform = clone(spec)
        return cloned
    raise RepscopeTypeError(
        f"The 'transform' parameter of {owner} must be 'react', 'ash', 'scale' or a transform "
        f"object (ReAct, ASH, SCALE); got {type(spec).__name__}.")
