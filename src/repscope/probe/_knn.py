"""The k-nearest-neighbour probe: DINO-style temperature-weighted vote over cosine neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._array import is_torch, to_numpy
from repscope._kernels.knn import knn_search
from repscope._params import ValidatedEstimator, parameter_error
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["KNNProbe"]


def _check_fitted(est: Any) -> None:
    from sklearn.exceptions import NotFittedError

    if not hasattr(est, "index_"):
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with training "
            "features and labels first."
        )


def _writable(X: np.ndarray) -> np.ndarray:
    return X if X.flags.writeable and X.flags.c_contiguous else np.array(X, copy=True)


class KNNProbe(ClassifierMixin, ValidatedEstimator):
    r"""k-nearest-neighbour classifier on frozen features (the DINO kNN evaluation).

    For a query :math:`q` with neighbours :math:`x_1..x_k` (similarities :math:`s_j`), class
    :math:`c` gets the vote

    .. math:: v_c = \sum_{j=1}^{k} w_j\,[y_j = c], \qquad
              w_j = \exp(s_j / \tau) \ (\text{``dino''}) \quad\text{or}\quad 1
              \ (\text{``uniform''}),

    the prediction is :math:`\arg\max_c v_c` (ties go to the smallest class) and
    ``predict_proba`` is :math:`v / \sum_c v_c`. For ``metric="euclidean"`` the DINO weight
    uses the negative distance, :math:`\exp(-d_j/\tau)`. Every ``k`` in :attr:`k` is answered
    from one search with the largest ``k``.

    Parameters
    ----------
    k : int or sequence of int, default=(10, 20)
        Numbers of neighbours. ``predict``/``predict_proba``/``score`` use the first one
        unless told otherwise; :meth:`score` fills :attr:`scores_` for all of them.
    metric : {"cosine", "euclidean", "inner_product"}, default="cosine"
    temperature : float, default=0.07
        :math:`\tau` of the DINO weighting.
    weighting : {"dino", "uniform"}, default="dino"
    block_size : int, default=4096
        Index rows scored at a time (memory is O(query block x block_size)).
    backend : {"torch", "faiss"}, default="torch"
        The search backend (see :func:`repscope._kernels.knn.knn_search`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    index_ : torch.Tensor of shape (n_samples, n_features)
        The training features (float32/float64, on the training device).
    labels_ : torch.Tensor of shape (n_samples,)
        Encoded training labels (indices into ``classes_``).
    n_features_in_ : int
    scores_ : dict of int to float
        Accuracy for each ``k`` from the last :meth:`score` call.

    Notes
    -----
    kNN needs the whole training set at prediction time; it does not reduce to moments, so it
    does not stream from a FeatureStore. The search is exact and blocked (no ``n x n`` matrix).

    References
    ----------
    .. [1] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
       ICCV 2021 (the weighted kNN evaluation, k=20, tau=0.07).
    .. [2] Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
       Discrimination", CVPR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> KNNProbe(k=1).fit(X, [0, 0, 1, 1]).predict(np.array([[1.0, 0.05]])).tolist()
    [0]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "k": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "metric": [StrOptions({"cosine", "euclidean", "inner_product"})],
        "temperature": [Interval(Real, 0, np.inf, closed="neither")],
        "weighting": [StrOptions({"dino", "uniform"})],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"torch", "faiss"})],
    }

    def __init__(
        self,
        k: int | Sequence[int] = (10, 20),
        *,
        metric: Literal["cosine", "euclidean", "inner_product"] = "cosine",
        temperature: float = 0.07,
        weighting: Literal["dino", "uniform"] = "dino",
        block_size: int = 4096,
        backend: Literal["torch", "faiss"] = "torch",
    ) -> None:
        self.k = k
        self.metric = metric
        self.temperature = temperature
        self.weighting = weighting
        self.block_size = block_size
        self.backend = backend

    def _ks(self) -> tuple[int, ...]:
        """``k`` as a tuple; a sequence must be non-empty and hold positive ints."""
        ks = (self.k,) if isinstance(self.k, (int, np.integer)) else tuple(self.k)
        if not ks or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                             and v >= 1 for v in ks):
            raise parameter_error(self, "k", "a positive int or a non-empty sequence of them",
                                  self.k)
        return tuple(int(v) for v in ks)

    def fit(self, X: Any, y: Any) -> KNNProbe:
        """Store the (normalised) training features and encoded labels.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (ints or strings).

        Returns
        -------
        self
        """
        import torch

        self._validate_params()
        ks = self._ks()
        X = check_features(X, name="X")
        labels = check_labels(y, n_samples=int(X.shape[0]), name="y")
        if max(ks) > X.shape[0]:
            raise parameter_error(
                self, "k", f"at most the number of training samples ({X.shape[0]})", max(ks))
        self.classes_, enc = np.unique(labels, return_inverse=True)
        t = X if is_torch(X) else torch.from_numpy(np.array(X, copy=True))
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        self.index_ = t.detach().to(dtype)
        self.labels_ = torch.from_numpy(enc.astype(np.int64)).to(self.index_.device)
        self.n_features_in_ = int(X.shape[1])
        return self

    def _votes(self, X: Any) -> dict[int, Any]:
        """Class votes (n, n_classes) torch tensors for every k, from one search."""
        import torch

        _check_fitted(self)
        X = check_features(X, name="X")
        if int(X.shape[1]) != self.n_features_in_:
            raise RepscopeValueError(
                f"X has {X.shape[1]} features, but KNNProbe is expecting "
                f"{self.n_features_in_} features as input; pass features from the fitted layer."
            )
        if is_torch(X):
            if X.device != self.index_.device:
                raise RepscopeTypeError(
                    f"X is on {X.device} but the probe was fitted on {self.index_.device}; "
                    "pass features on the training device."
                )
            q = X.detach().to(self.index_.dtype)
        else:
            q = torch.as_tensor(_writable(X)).to(self.index_.dtype)
        ks = self._ks()
        res = knn_search(q, self.index_, max(ks), metric=self.metric,
                         block_size=self.block_size, backend=self.backend)
        vals, idx = res.values, res.indices
        if self.weighting == "dino":
            s = -vals if self.metric == "euclidean" else vals
            w = torch.exp((s - s[:, :1]) / float(self.temperature))  # shift: no overflow
        else:
            w = torch.ones_like(vals)
        onehot_labels = self.labels_[idx]
        out = {}
        n_classes = len(self.classes_)
        for k in ks:
            v = torch.zeros((q.shape[0], n_classes), dtype=w.dtype, device=w.device)
            v.scatter_add_(1, onehot_labels[:, :k], w[:, :k])
            out[k] = v
        return out

    def _pick_k(self, k: int | None) -> int:
        ks = self._ks()
        if k is None:
            return ks[0]
        if k not in ks:
            raise RepscopeValueError(
                f"k={k} was not among the probe's k values {list(ks)}; refit with it included."
            )
        return int(k)

    def predict_proba(self, X: Any, k: int | None = None) -> Any:
        """Normalised votes of shape (n_samples, n_classes) (same backend as ``X``)."""
        v = self._votes(X)[self._pick_k(k)]
        p = v / v.sum(dim=1, keepdim=True)
        return p.to(X.dtype if X.dtype.is_floating_point else p.dtype) if is_torch(X) else \
            p.cpu().numpy()

    def predict(self, X: Any, k: int | None = None) -> np.ndarray:
        """Predicted classes (numpy array of ``classes_`` values)."""
        v = self._votes(X)[self._pick_k(k)]
        return self.classes_[to_numpy(v.argmax(dim=1))]

    def predict_all(self, X: Any) -> dict[int, np.ndarray]:
        """Predictions for every ``k`` from one search."""
        return {k: self.classes_[to_numpy(v.argmax(dim=1))] for k, v in self._votes(X).items()}

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy at the first ``k``; :attr:`scores_` gets the accuracy for every ``k``."""
        labels = check_labels(y, n_samples=int(X.shape[0]), name="y")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        scores = {}
        for k, pred in self.predict_all(X).items():
            hit = (pred == labels).astype(np.float64)
            scores[k] = float(np.average(hit, weights=w))
        self.scores_ = scores
        return scores[self._ks()[0]]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
