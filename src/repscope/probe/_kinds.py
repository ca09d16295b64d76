"""The probe kinds that ``repscope probe --probe`` offers, declared in ``_capability.py``.

Every factory takes the same keywords: ``seed`` (random state), ``k`` (neighbours, for kNN)
and ``small`` (few-shot and small learning-curve fits: no model selection on a holdout of a
handful of rows). A kind whose estimator has ``reads_tokens = True`` (``moment``) probes token
sets: the command reads each layer's tokens with :func:`token_features` (one flattened row of
``n_tokens x n_features`` per sample, zero vectors for padding) and tells the estimator the
token shape through ``set_params(token_shape=...)``. Another package adds a probe kind by declaring
``kinds={"probe": {"name": Kind("package.module:factory", "one line")}}`` in its capability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["TokenSetProbe", "arcface", "cosface", "elasticface", "knn", "lda", "logistic",
           "make_probe", "moment", "nb", "ridge", "token_features"]


def ridge(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Closed-form ridge on one-hot targets (every alpha from one eigendecomposition, GCV)."""
    from repscope.probe._ridge import RidgeProbe

    return RidgeProbe(random_state=seed)


def lda(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Linear discriminant analysis with OAS shrinkage."""
    from repscope.probe._generative import LDAProbe

    return LDAProbe(shrinkage="oas")


def nb(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Gaussian naive Bayes."""
    from repscope.probe._generative import GaussianNBProbe

    return GaussianNBProbe()


def logistic(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Softmax regression; ``small=True`` fixes ``C=1`` instead of selecting it on a holdout."""
    from repscope.probe._logistic import LinearProbe

    return LinearProbe(C=1.0, random_state=seed) if small else LinearProbe(random_state=seed)


def knn(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """DINO-style weighted kNN with ``k`` neighbours."""
    from repscope.probe._knn import KNNProbe

    return KNNProbe(k=k)


def moment(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """Moment probing on token sets (:class:`~repscope.probe.MomentProbe`, mean and
    second-order moments, PCA projection), wrapped to read flattened token rows."""
    from repscope.probe._moment import MomentProbe

    return TokenSetProbe(MomentProbe(random_state=seed))


class TokenSetProbe(ClassifierMixin, BaseEstimator):
    """A token-set probe fitted on token sets flattened to one row per sample.

    Rows of ``X`` are ``n_tokens x n_features`` values (``token_shape``), token by token, as
    :func:`token_features` reads them; a token that is exactly the zero vector is padding and
    is masked out. ``probe`` takes ``fit(tokens, y, mask=...)`` and ``predict(tokens,
    mask=...)`` on ``(n, n_tokens, n_features)`` arrays (e.g. :class:`MomentProbe`).

    Parameters
    ----------
    probe : estimator
    token_shape : (int, int), optional
        ``(n_tokens, n_features)`` of each row; required before ``fit``.
    """

    #: ``repscope probe`` reads token layers (not pooled rows) for this estimator.
    reads_tokens: ClassVar[bool] = True

    def __init__(self, probe: Any = None, token_shape: tuple[int, int] | None = None) -> None:
        self.probe = probe
        self.token_shape = token_shape

    def _unpack(self, X: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
        from repscope.exceptions import RepscopeValueError

        if self.token_shape is None:
            raise RepscopeValueError(
                f"{caller} needs token_shape = (n_tokens, n_features) to read its flattened "
                "token rows; set it with set_params(token_shape=...).")
        t, d = (int(v) for v in self.token_shape)
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != t * d:
            raise RepscopeValueError(
                f"{caller} expects rows of {t} tokens x {d} features = {t * d} values; got "
                f"shape {x.shape}.")
        tokens = x.reshape(x.shape[0], t, d)
        return tokens, (tokens != 0).any(axis=2)

    def fit(self, X: Any, y: Any) -> TokenSetProbe:
        """Fit ``probe`` on the token sets of ``X`` (rows of ``token_shape``)."""
        from sklearn.base import clone

        tokens, mask = self._unpack(X, "TokenSetProbe.fit")
        self.probe_ = clone(self.probe).fit(tokens, y, mask=mask)
        self.classes_ = np.asarray(self.probe_.classes_)
        self.n_features_in_ = int(tokens.shape[1] * tokens.shape[2])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes, shape (n_samples,)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "probe_")
        tokens, mask = self._unpack(X, "TokenSetProbe.predict")
        return np.asarray(self.probe_.predict(tokens, mask=mask))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes)."""
        from sklearn.utils.validation import check_is_fitted

        from repscope._array import to_numpy

        check_is_fitted(self, "probe_")
        tokens, mask = self._unpack(X, "TokenSetProbe.predict_proba")
        return np.asarray(to_numpy(self.probe_.predict_proba(tokens, mask=mask)),
                          dtype=np.float64)


def token_features(path: Any, layers: Sequence[str] | None = None, *,
                   option: str = "--layer") -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Token layers of a store or files, one flattened row of tokens per sample.

    Ragged layers (``--pooling tokens``) are padded to their longest sample with zero vectors;
    dense layers of shape ``(n_tokens, n_features)`` per sample (``--pooling none``) are read
    as they are. Every layer must share one token shape (the probe is built once).

    Returns
    -------
    features : dict of str to ndarray of shape (n_samples, n_tokens * n_features), float32
    token_shape : (int, int)

    Raises
    ------
    RepscopeValueError
        No chosen layer holds tokens, or the layers hold tokens of different shapes.
    """
    from repscope.exceptions import RepscopeValueError
    from repscope.store import RaggedArray, open_layers, pad_ragged

    src = open_layers(path, list(layers) if layers else None, pooling="none")
    out: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for name in src.layers:
        shape = src.shape(name)
        if src.is_ragged(name) and len(shape) == 1:
            raw = src.read(name)
            assert isinstance(raw, RaggedArray)
            tok = np.asarray(pad_ragged(raw).values, dtype=np.float32)
        elif not src.is_ragged(name) and len(shape) == 2:
            tok = np.asarray(src.read(name), dtype=np.float32).reshape(-1, *shape)
        else:
            if layers:
                raise RepscopeValueError(
                    f"{option} {name!r} holds {tuple(shape)} per sample; the moment probe needs "
                    "tokens (extract with --pooling tokens or --pooling none).")
            continue
        shapes[name] = (int(tok.shape[1]), int(tok.shape[2]))
        out[name] = np.ascontiguousarray(tok.reshape(tok.shape[0], -1))
    if not out:
        raise RepscopeValueError(
            f"FEATURES ({path}) has no token layer; the moment probe needs tokens (extract "
            "with --pooling tokens or --pooling none).")
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}: {v[0]}x{v[1]}" for k, v in shapes.items())
        raise RepscopeValueError(
            f"the token layers hold different token shapes ({listed}); choose layers of one "
            f"shape with {option}.")
    return out, next(iter(shapes.values()))


def make_probe(name: str, *, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """A fresh probe of kind ``name`` (any kind declared by a capability).

    Raises
    ------
    UnknownNameError
        ``name`` is not a declared probe kind; the message lists them and the closest.
    """
    from repscope.capability import load_kind

    return load_kind("probe", name)(seed=seed, k=k, small=small)


def arcface(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """ArcFace cosine-margin probe (additive angular margin 0.5, s = 64, 128-d embedding)."""
    from repscope.probe._margin import MarginProbe

    return MarginProbe(loss="arcface", random_state=seed)


def cosface(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """CosFace cosine-margin probe (additive cosine margin 0.35, s = 64, 128-d embedding)."""
    from repscope.probe._margin import MarginProbe

    return MarginProbe(loss="cosface", random_state=seed)


def elasticface(*, seed: int = 0, k: int = 10, small: bool = False) -> Any:
    """ElasticFace-Arc probe (angular margin drawn per sample from N(0.5, 0.05), s = 64)."""
    from repscope.probe._margin import MarginProbe

    return MarginProbe(loss="elasticarc", random_state=seed)
