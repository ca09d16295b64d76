r"""The kNN OOD score (Sun et al. 2022): distance to the k-th nearest training feature.

* ``metric="cosine"``: features are L2-normalised, :math:`z = x / \|x\|`, and the score is
  :math:`-\|z - z_{(k)}\|` with :math:`z_{(k)}` the k-th nearest normalised training feature
  (:math:`\|z - z'\| = \sqrt{2 - 2\cos}`).
* ``metric="whitened"``: features are whitened by the within-class covariance (divisor ``n``,
  shrunk and pseudo-inverted as in :mod:`repscope.ood._mahalanobis`), :math:`z = W^\top (x -
  \mu)`, and the score is :math:`-\|z - z_{(k)}\|`: the Mahalanobis distance to the k-th
  nearest training sample under the tied class covariance. Needs labels (or ``moments=``).

The search is exact and blocked (:func:`repscope._kernels.knn.knn_search`; memory
``O(query block x index block)``). It returns ``k + margin`` candidates, whose distances are
then recomputed in float64 from the stored vectors; the score is the k-th smallest of those.
So the scores do not depend on the search backend: ``backend="faiss"`` gives the same scores
as the torch search, as long as both find the true k nearest among their candidates.
``"auto"`` is the torch search: on the benchmark (``benchmarks/ood.py``: 50,000 x 768 index,
10,000 queries, k = 50, one thread) faiss-cpu 1.15's flat index took 25.8 CPU-s through this
detector against 10.9 for torch, so faiss is opt-in.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope.exceptions import RepscopeValueError
from repscope.ood._base import OODDetector
from repscope.ood._mahalanobis import class_moments, whitening
from repscope.ood._registry import register_detector
from repscope.stats import Moments

__all__ = ["KNNDetector"]

_RECOMPUTE_ELEMENTS = 1 << 22  # float64 entries per re-ranking chunk (32 MiB)


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@register_detector("knn", paper="Sun, Ming, Zhu & Li, ICML 2022 (arXiv 2204.06507)",
                   needs=set(), level="instance",
                   summary="negative distance to the k-th nearest training feature")
class KNNDetector(OODDetector):
    """k-th nearest-neighbour distance on normalised or class-whitened features.

    Parameters
    ----------
    k : int or "auto", default="auto"
        The neighbour whose distance is the score. ``"auto"`` scales it with the training
        set as kNN-OOD does (Sun et al., 2022: k = 50 for CIFAR's 50,000 images, and k in
        proportion when a fraction of the data is used): ``max(1, round(n_train / 1000))``.
        A fixed 50 on a few hundred training samples reaches into other classes and washes
        the score out (Lite0 MNIST 0-4 vs 5-9, 350 training images: AUROC 0.59 at k = 50,
        0.82 at k = 1).
    metric : {"cosine", "whitened"}, default="cosine"
        L2-normalised features, or features whitened by the within-class covariance (needs
        labels or ``moments=``).
    shrinkage : float in [0, 1] or "oas", default=0.0
        Covariance shrinkage for ``metric="whitened"``.
    moments : Moments, optional
        Labelled Moments for the whitening (shared with the Mahalanobis detectors).
    backend : {"auto", "torch", "faiss"}, default="auto"
        Candidate search; ``"auto"`` is the torch search (measured faster here than faiss's
        flat index), ``"faiss"`` needs faiss-cpu (the ``knn`` extra). Same scores either way.
    block_size : int, default=4096
        Index rows scored at a time.
    margin : int, default=8
        Extra candidates re-ranked exactly in float64.

    Attributes
    ----------
    index_ : ndarray of shape (n_samples, n_dims)
        The normalised (or whitened) training features, float32 unless X was float64.
    mean_, whitener_ : ndarray or None
        The whitening (``metric="whitened"``).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> KNNDetector(k=1).fit(X).score_samples(np.array([[2.0, 0.0]])).tolist()
    [-0.0]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "k": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "metric": [StrOptions({"cosine", "whitened"})],
        "shrinkage": [Interval(Real, 0, 1, closed="both"), StrOptions({"oas"})],
        "moments": [None, Moments],
        "backend": [StrOptions({"auto", "torch", "faiss"})],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "margin": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, k: int | str = "auto", *, metric: str = "cosine", shrinkage: float | str = 0.0,
                 moments: Moments | None = None, backend: str = "auto",
                 block_size: int = 4096, margin: int = 8) -> None:
        self.k = k
        self.metric = metric
        self.shrinkage = shrinkage
        self.moments = moments
        self.backend = backend
        self.block_size = block_size
        self.margin = margin

    def _embed(self, Xn: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            norms = np.sqrt((Xn.astype(np.float64) ** 2).sum(1))
            out = Xn / np.where(norms > 0, norms, 1.0)[:, None].astype(Xn.dtype)
            return np.asarray(out, dtype=Xn.dtype)
        assert self.mean_ is not None and self.whitener_ is not None
        Z = (Xn.astype(np.float64) - self.mean_) @ self.whitener_
        return Z.astype(Xn.dtype)

    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        Xn = self._features(X, fitting=True, dtype=None)
        if self.k != "auto" and int(self.k) > Xn.shape[0]:
            from repscope._params import parameter_error

            raise parameter_error(self, "k", f"at most the number of training samples "
                                  f"({Xn.shape[0]})", self.k)
        self.n_features_in_ = int(Xn.shape[1])
        self.mean_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None
        if self.metric == "whitened":
            m, _, _ = class_moments(self, Xn if self.moments is None else None, y, self.moments)
            if m.n_features != Xn.shape[1]:
                raise RepscopeValueError(
                    f"X must have {m.n_features} features (columns), as in moments=; got shape "
                    f"{Xn.shape}.")
            self.mean_ = m.mean.copy()
            self.whitener_, _ = whitening(m.within_class_scatter() / m.n, self.shrinkage, m.n)
        self.index_ = np.ascontiguousarray(self._embed(Xn))
        self.fitted_ = True

    def _backend(self) -> str:
        if self.backend == "faiss" and not _faiss_available():
            raise RepscopeValueError(
                "KNNDetector(backend='faiss') needs faiss; install faiss-cpu (the 'knn' extra) "
                "or use backend='torch'.")
        return "torch" if self.backend == "auto" else str(self.backend)

    def k_for(self, n_train: int) -> int:
        """The neighbour used with ``n_train`` training samples (``k``, or the ``"auto"``
        rule)."""
        if self.k == "auto":
            return max(1, min(n_train, round(n_train / 1000)))
        return int(self.k)

    def kth_distances(self, X: Any) -> np.ndarray:
        """Distance to the k-th nearest training feature (float64), shape (n_samples,)."""
        from repscope._kernels.knn import Metric, knn_search

        self._check_fitted()
        Q = self._embed(self._features(X, dtype=self.index_.dtype.type))
        n_index = self.index_.shape[0]
        k = self.k_for(n_index)
        if k > n_index:
            raise RepscopeValueError(f"k={k} exceeds the {n_index} training samples.")
        kc = min(k + int(self.margin), n_index)
        metric: Metric = "inner_product" if self.metric == "cosine" else "euclidean"
        res = knn_search(Q, self.index_, kc, metric=metric, block_size=self.block_size,
                         backend=self._backend())  # type: ignore[arg-type]
        cand = np.asarray(res.indices)
        out = np.empty(Q.shape[0])
        step = max(1, _RECOMPUTE_ELEMENTS // max(1, kc * Q.shape[1]))
        for a in range(0, Q.shape[0], step):
            q = Q[a:a + step].astype(np.float64)
            xs = self.index_[cand[a:a + step]].astype(np.float64)  # (m, kc, d)
            diff = xs - q[:, None, :]
            d2 = np.einsum("mkd,mkd->mk", diff, diff)
            out[a:a + step] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
        return out

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        return -self.kth_distances(X)
