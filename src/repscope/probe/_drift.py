"""Feature drift between two checkpoints of one model, and the head kernel (LP-FT diagnostics).

Tomihari & Sato (NeurIPS 2024) explain why linear probing then fine-tuning (LP-FT) keeps the
pre-trained features: the feature change in fine-tuning is ``Δh ∝ -J_h J_hᵀ Vᵀ (softmax(f) -
e_y)``, small when the linear-probe head ``V`` already fits the training set (small
cross-entropy residual, see :func:`~repscope.probe.head_diagnostics`) with a large norm. The
functions here measure that change on the features of the same inputs taken from two
checkpoints (before and after fine-tuning): per-sample cosine and L2 distance, linear CKA, and
the change of the head kernel ``Θ_V(x, x') = h(x)ᵀ h(x')`` (the NTK block of the head; times
``I_K``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._array import to_numpy
from repscope._validation import check_features
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult

__all__ = [
    "CheckpointMismatchError",
    "FeatureDriftResult",
    "checkpoint_drift",
    "feature_drift",
    "head_kernel",
]


class CheckpointMismatchError(RepscopeValueError):
    """The two checkpoints' features do not come from the same architecture (different layer
    sets or widths) or not from the same inputs (different numbers of samples)."""


def _as_2d(X: Any, name: str) -> np.ndarray:
    A = np.asarray(to_numpy(check_features(X, name=name)), dtype=np.float64)
    return A.reshape(A.shape[0], -1)


def head_kernel(H: Any) -> np.ndarray:
    """The head kernel ``K = H Hᵀ`` of features ``H`` (n_samples, d), float64 (n, n).

    It is the pre-train-effective part of the empirical NTK of ``f(x) = V h(x)``: ``Θ_V(x, x')
    = h(x)ᵀ h(x') I_K`` (Tomihari & Sato 2024); its change between checkpoints is what the
    features' drift does to a linear head.
    """
    A = _as_2d(H, "H")
    return A @ A.T


@dataclass(frozen=True)
class FeatureDriftResult(RecordedResult):
    """How far one layer's features moved between two checkpoints, on the same inputs.

    Attributes
    ----------
    layer : str
    n_samples, width : int
    cosine : tuple of float
        Per-sample cosine similarity of ``h_a(x_i)`` and ``h_b(x_i)`` (1 = same direction;
        NaN-free: a zero vector on either side counts as cosine 0).
    l2 : tuple of float
        Per-sample ``||h_b(x_i) - h_a(x_i)||``.
    cosine_mean, cosine_median : float
    l2_mean : float
    relative_l2 : float
        ``mean_i ||h_b - h_a|| / mean_i ||h_a||``: the mean drift in units of the mean norm of
        the first checkpoint's features.
    linear_cka : float
        Linear CKA of the two feature sets (1 = the same up to rotation and scale); NaN when
        either side is the same for every input (a collapsed layer), where CKA is undefined.
    head_kernel_change : float
        ``||K_b - K_a||_F / ||K_a||_F`` for the head kernels ``K = H Hᵀ``.
    """

    analysis: ClassVar[str] = "feature_drift"

    layer: str
    n_samples: int
    width: int
    cosine: tuple[float, ...]
    l2: tuple[float, ...]
    cosine_mean: float
    cosine_median: float
    l2_mean: float
    relative_l2: float
    linear_cka: float
    head_kernel_change: float

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``feature_drift`` record per layer: the summary measures (not the per-sample
        values)."""
        return [(self.layer, {
            "n_samples": self.n_samples, "width": self.width,
            "cosine_mean": self.cosine_mean, "cosine_median": self.cosine_median,
            "l2_mean": self.l2_mean, "relative_l2": self.relative_l2,
            "linear_cka": self.linear_cka, "head_kernel_change": self.head_kernel_change})]


def feature_drift(before: Any, after: Any, *, layer: str = "") -> FeatureDriftResult:
    """Drift of one layer's features between two checkpoints (row ``i`` = input ``i`` on both).

    Parameters
    ----------
    before, after : array-like of shape (n_samples, ...)
        The features of the same inputs from the first and the second checkpoint; anything
        after the first axis is flattened (spatial maps, token grids).
    layer : str
        The layer's name (kept in the result and its record).

    Returns
    -------
    FeatureDriftResult

    Raises
    ------
    CheckpointMismatchError
        Different numbers of samples or different widths.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.random.default_rng(0).standard_normal((50, 8))
    >>> r = feature_drift(H, 2.0 * H)
    >>> round(r.cosine_mean, 6), round(r.linear_cka, 6), round(r.relative_l2, 6)
    (1.0, 1.0, 1.0)
    """
    from repscope.similarity import linear_cka

    where = f" of layer {layer!r}" if layer else ""
    A, B = _as_2d(before, "before"), _as_2d(after, "after")
    if A.shape != B.shape:
        raise CheckpointMismatchError(
            f"the two checkpoints' features{where} must have the same shape (same inputs, same "
            f"architecture); got {A.shape[0]} x {A.shape[1]} (before) and {B.shape[0]} x "
            f"{B.shape[1]} (after).")
    na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
    den = na * nb
    cos = np.where(den > 0, np.einsum("ij,ij->i", A, B) / np.where(den > 0, den, 1.0), 0.0)
    l2 = np.linalg.norm(B - A, axis=1)
    mean_norm = float(na.mean())
    Ka, Kb = A @ A.T, B @ B.T
    ka = float(np.linalg.norm(Ka))
    return FeatureDriftResult(
        layer=layer, n_samples=int(A.shape[0]), width=int(A.shape[1]),
        cosine=tuple(cos.tolist()), l2=tuple(l2.tolist()),
        cosine_mean=float(cos.mean()), cosine_median=float(np.median(cos)),
        l2_mean=float(l2.mean()),
        relative_l2=float(l2.mean() / mean_norm) if mean_norm > 0 else float("nan"),
        linear_cka=float(linear_cka(A, B)) if _varies(A) and _varies(B) else float("nan"),
        head_kernel_change=float(np.linalg.norm(Kb - Ka) / ka) if ka > 0 else float("nan"),
    )


def _varies(A: np.ndarray) -> bool:
    return bool(A.shape[0] > 1 and np.any(A[0] != A))


def checkpoint_drift(before: Mapping[str, Any], after: Mapping[str, Any]
                     ) -> list[FeatureDriftResult]:
    """:func:`feature_drift` of every layer of two checkpoints of the same architecture.

    Parameters
    ----------
    before, after : mapping of layer name to array of shape (n_samples, ...)
        The same layers (same names, same widths) of the two checkpoints on the same inputs.

    Returns
    -------
    list of FeatureDriftResult
        In ``before``'s layer order.

    Raises
    ------
    CheckpointMismatchError
        Different layer sets, a layer of different width, or different sample counts: the
        checkpoints are not two states of one architecture on the same inputs.
    """
    la, lb = list(before), list(after)
    if not la:
        raise RepscopeValueError("checkpoint_drift needs at least one layer; got none.")
    if set(la) != set(lb):
        only_a = sorted(set(la) - set(lb))
        only_b = sorted(set(lb) - set(la))
        raise CheckpointMismatchError(
            "the two checkpoints must have the same layers (one architecture); layers only in "
            f"the first: {only_a or 'none'}, only in the second: {only_b or 'none'}.")
    out = []
    for name in la:
        out.append(feature_drift(before[name], after[name], layer=name))
    return out
