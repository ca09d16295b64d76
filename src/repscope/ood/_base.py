"""The OOD detector contract: ``fit(X, y=None, *, logits=None)`` / ``score_samples(X)``.

Convention, said once and used everywhere in :mod:`repscope.ood`: **a higher score means more
in-distribution**. Every detector returns a float64 numpy vector of shape ``(n_samples,)``.

Class statistics are maximum-likelihood estimates: every covariance in this package divides
by ``n`` (the number of samples, ``n_k`` within a class), never by ``n - 1`` or ``n - K``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import HasMethods

from repscope._array import to_numpy
from repscope._params import ValidatedEstimator
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = [
    "LinearHead",
    "MissingLogitsError",
    "OODDetector",
    "SignedFeaturesError",
]


class MissingLogitsError(RepscopeValueError):
    """A logit-based detector was given neither logits nor a head to compute them."""


class SignedFeaturesError(RepscopeValueError):
    """A transform for post-ReLU activations (ReAct, ASH, SCALE) was given negative features."""


class LinearHead(HasMethods):
    """Constraint satisfied by a fitted linear head: an object with ``coef_`` and
    ``intercept_`` or a pair ``(W, b)``.

    (A ``HasMethods`` subclass only so that scikit-learn's ``make_constraint`` accepts it.)
    """

    def __init__(self) -> None:
        super().__init__([])

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, (tuple, list)):
            return len(val) == 2
        return hasattr(val, "coef_") and hasattr(val, "intercept_")

    def __str__(self) -> str:
        return "a fitted linear probe (with coef_ and intercept_) or a pair (W, b)"


class OODDetector(ValidatedEstimator, ABC):
    """Base class of every out-of-distribution detector on frozen features.

    Subclasses implement ``_fit(X, y, logits)`` and ``_score(X, logits)``; this class
    validates the inputs (finite values, the width seen at fit) and fixes the convention:
    :meth:`score_samples` returns float64 scores where **higher = more in-distribution**.

    Class attributes
    ----------------
    needs : frozenset of {"labels", "logits", "head", "nonnegative"}
        What :meth:`fit` needs beyond the features: class labels ``y``; logits (given as
        ``logits=`` or computed from a linear ``head``); a linear head itself (its weights,
        not just its outputs); non-negative (post-ReLU) features.
    detector_name : str
        The name it is registered under (:func:`repscope.ood.get_detector`).
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    detector_name: ClassVar[str] = ""

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any = None, *, logits: Any = None) -> OODDetector:
        """Fit on in-distribution features.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            In-distribution features.
        y : array-like of shape (n_samples,), optional
            Class labels (detectors whose :attr:`needs` holds ``"labels"``).
        logits : array-like of shape (n_samples, n_classes), optional
            Logits of ``X`` (logit-based detectors without a ``head``).

        Returns
        -------
        self
        """
        self._validate_params()
        self._fit(X, y, logits)
        return self

    def score_samples(self, X: Any, *, logits: Any = None) -> np.ndarray:
        """Scores of ``X``, float64 of shape (n_samples,); higher = more in-distribution."""
        self._check_fitted()
        return np.asarray(self._score(X, logits), dtype=np.float64)

    def save(self, path: str | Path) -> Path:
        """Save the fitted detector as one safetensors file (arrays) with its parameters and
        fitted scalars as JSON in the header; nothing is pickled."""
        from repscope.ood._io import save_detector

        return save_detector(self, path)

    @classmethod
    def load(cls, path: str | Path) -> OODDetector:
        """Load a detector written by :meth:`save` (of this class, or any when called on
        :class:`OODDetector`)."""
        from repscope.ood._io import load_detector

        det = load_detector(path)
        if not isinstance(det, cls):
            raise RepscopeTypeError(
                f"{path} holds a {type(det).__name__}, not a {cls.__name__}; load it with "
                "OODDetector.load."
            )
        return det

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        """Fit the detector's statistics on in-distribution ``X`` (``y``, ``logits``)."""

    @abstractmethod
    def _score(self, X: Any, logits: Any) -> np.ndarray:
        """Scores of ``X`` (higher = more in-distribution)."""

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(X, ...) on "
                "in-distribution features first."
            )

    def _features(self, X: Any, *, name: str = "X", fitting: bool = False,
                  dtype: Any = np.float64) -> np.ndarray:
        """Validated numpy features (float64 unless ``dtype``); checks the width seen at fit."""
        X = check_features(X, name=name)
        expected = getattr(self, "n_features_in_", None)
        if not fitting and expected is not None and int(X.shape[1]) != expected:
            raise RepscopeValueError(
                f"{name} must have {expected} features (columns), as at fit; got shape "
                f"{tuple(int(s) for s in X.shape)}. Score features of the layer the "
                f"{type(self).__name__} was fitted on."
            )
        out = to_numpy(X)
        if dtype is None:
            dtype = np.float64 if out.dtype == np.float64 else np.float32
        return np.asarray(out, dtype=dtype)

    def _labels(self, y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(classes, encoded)`` of the labels ``y`` (needed: this detector uses classes)."""
        if y is None:
            raise RepscopeValueError(
                f"{type(self).__name__} needs class labels: pass fit(X, y) with one label per "
                "sample (or a labelled Moments as moments=)."
            )
        labels = check_labels(y, n_samples=n, name="y")
        classes, enc = np.unique(labels, return_inverse=True)
        return classes, enc.astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        return tags


def check_logits(logits: Any, n: int | None, n_classes: int | None, owner: str) -> np.ndarray:
    """Validated float64 logits of shape (n, n_classes)."""
    Z = check_features(logits, name="logits")
    Zn = np.asarray(to_numpy(Z), dtype=np.float64)
    if n is not None and Zn.shape[0] != n:
        raise RepscopeValueError(
            f"logits must have one row per sample of X ({n}); got shape {Zn.shape}. Pass the "
            "logits of exactly these features."
        )
    if n_classes is not None and Zn.shape[1] != n_classes:
        raise RepscopeValueError(
            f"logits must have {n_classes} columns, as at fit of the {owner}; got shape "
            f"{Zn.shape}."
        )
    return Zn


def head_weights(head: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` float64 of shape (n_classes, d) / (n_classes,) from a fitted linear head.

    ``head`` is an object with ``coef_`` and ``intercept_`` (a fitted
    :class:`~repscope.probe.LinearProbe`, a scikit-learn ``LogisticRegression``) or a pair
    ``(W, b)``. A binary head's single decision column ``z`` becomes the two logits
    ``[0, z]`` (same softmax as the sigmoid).
    """
    if isinstance(head, (tuple, list)) and len(head) == 2:
        W, b = head
    elif hasattr(head, "coef_") and hasattr(head, "intercept_"):
        W, b = head.coef_, head.intercept_
    else:
        raise RepscopeTypeError(
            f"The 'head' parameter of {owner} must be a fitted linear probe (with coef_ and "
            f"intercept_), a pair (W, b) or 'probe'; got {type(head).__name__}."
        )
    W = np.atleast_2d(np.asarray(to_numpy(W), dtype=np.float64))
    b = np.atleast_1d(np.asarray(to_numpy(b), dtype=np.float64)).ravel()
    if W.ndim != 2 or b.shape[0] != W.shape[0]:
        raise RepscopeValueError(
            f"The head of {owner} must have weights of shape (n_classes, n_features) and a "
            f"bias of shape (n_classes,); got {W.shape} and {b.shape}."
        )
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
        raise RepscopeValueError(f"The head of {owner} must have finite weights and bias.")
    if W.shape[0] == 1:
        W = np.vstack([np.zeros_like(W), W])
        b = np.concatenate([[0.0], b])
    return W, b
