r"""ViM: virtual-logit matching (Wang et al., CVPR 2022).

With a linear head :math:`z = W x + b` (``W`` of shape (K, d)):

1. origin :math:`o = -W^{+} b` (so that :math:`W o + b = 0` in the least-squares sense);
2. principal subspace: the top-``D`` eigenvectors :math:`P` of
   :math:`\frac1n \sum_i (x_i - o)(x_i - o)^\top` (about the origin, not the mean; divisor
   ``n``), and :math:`R` the remaining ``d - D`` eigenvectors;
3. virtual logit :math:`\|R^\top (x - o)\|`, scaled by
   :math:`\alpha = \overline{\max_k z_k} / \overline{\|R^\top (x - o)\|}` (means over the
   training data);
4. score :math:`\log \sum_k e^{z_k} - \alpha \|R^\top (x - o)\|` (higher = more ID).

Step 4 is the reference code's ``energy - vlogit``; the paper writes it as minus the softmax
probability of the virtual class, :math:`-e^{\alpha v} / (\sum_k e^{z_k} + e^{\alpha v})`, a
monotone function of the same quantity (same AUROC).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from repscope.exceptions import RepscopeValueError
from repscope.ood._base import (
    LinearHead,
    MissingLogitsError,
    OODDetector,
    check_logits,
    head_weights,
)
from repscope.ood._logit import _logsumexp
from repscope.ood._registry import register_detector
from repscope.stats import Moments

__all__ = ["ViMDetector"]


def default_dim(d: int) -> int:
    """The paper's principal dimension: 1000 for d >= 2048, 512 for d >= 768, else d // 2."""
    if d >= 2048:
        return 1000
    if d >= 768:
        return 512
    return max(1, d // 2)


@register_detector("vim", paper="Wang et al., CVPR 2022 (ViM, arXiv 2203.10807)",
                   needs={"head"}, level="class",
                   summary="energy minus the scaled norm of the residual off the principal space")
class ViMDetector(OODDetector):
    """Virtual-logit matching on a linear head (see :mod:`repscope.ood._vim` for the formula).

    Parameters
    ----------
    head : fitted linear probe, (W, b) or "probe"
        The head: a probe with ``coef_``/``intercept_`` (e.g. a fitted
        :class:`~repscope.probe.LinearProbe`), weights and bias, or ``"probe"`` to fit
        ``LinearProbe(C=1)`` on ``fit(X, y)``. Required (the origin needs the weights).
    n_components : int, optional
        Principal dimension ``D`` (< n_features); default :func:`default_dim`.

    Attributes
    ----------
    origin_ : ndarray of shape (n_features,)
    residual_ : ndarray of shape (n_features, n_features - D)
    alpha_ : float
    head_weight_, head_bias_ : ndarray
        The head (a binary head expanded to two logits ``[0, z]``).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "head": [None, StrOptions({"probe"}), LinearHead()],
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, head: Any = None, *, n_components: int | None = None) -> None:
        self.head = head
        self.n_components = n_components

    def _fit(self, X: Any, y: Any, logits: Any) -> None:
        name = type(self).__name__
        Xn = self._features(X, fitting=True)
        d = Xn.shape[1]
        if self.head is None:
            raise MissingLogitsError(
                f"{name} needs head= (a fitted linear probe, a pair (W, b) or 'probe' with "
                "labels): its origin comes from the head's weights, not from logits alone.")
        if isinstance(self.head, str):
            from repscope.probe import LinearProbe

            classes, enc = self._labels(y, Xn.shape[0])
            if classes.size < 2:
                raise RepscopeValueError(f"{name}(head='probe') needs at least 2 classes in y; "
                                         f"got {classes.size}.")
            W, b = head_weights(LinearProbe(C=1.0).fit(Xn, enc), name)
        else:
            W, b = head_weights(self.head, name)
        if W.shape[1] != d:
            raise RepscopeValueError(f"The head of {name} takes {W.shape[1]} features; X has "
                                     f"shape {Xn.shape}. Pass the head fitted on this layer.")
        dim = default_dim(d) if self.n_components is None else int(self.n_components)
        if dim >= d:
            from repscope._params import parameter_error

            raise parameter_error(self, "n_components", f"less than n_features ({d})", dim)
        self.n_features_in_ = d
        self.head_weight_, self.head_bias_ = W, b
        self.origin_ = -np.linalg.pinv(W) @ b
        m = Moments().update(Xn)
        centred = m.mean - self.origin_
        about_origin = m.scatter() / m.n + np.outer(centred, centred)
        vals, vecs = np.linalg.eigh((about_origin + about_origin.T) / 2)
        order = np.argsort(vals)[::-1]
        self.residual_ = np.ascontiguousarray(vecs[:, order[dim:]])
        Z = self._head_logits(Xn, None)
        v = self._virtual(Xn)
        vmean = float(v.mean())
        self.alpha_ = float(Z.max(axis=1).mean()) / vmean if vmean > 0 else 0.0
        self.fitted_ = True

    def _virtual(self, Xn: np.ndarray) -> np.ndarray:
        return np.asarray(np.linalg.norm((Xn - self.origin_) @ self.residual_, axis=1))

    def _head_logits(self, Xn: np.ndarray, logits: Any) -> np.ndarray:
        if logits is not None:
            return check_logits(logits, Xn.shape[0], self.head_weight_.shape[0],
                                type(self).__name__)
        return np.asarray(Xn @ self.head_weight_.T + self.head_bias_)

    def _score(self, X: Any, logits: Any) -> np.ndarray:
        Xn = self._features(X)
        return np.asarray(_logsumexp(self._head_logits(Xn, logits))
                          - self.alpha_ * self._virtual(Xn))
