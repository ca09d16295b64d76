"""Calibration of probe heads (temperature scaling, ECE, NLL, Brier) and head diagnostics.

The LP-FT analysis (Tomihari & Sato, NeurIPS 2024) observes that cross-entropy training of a
linear head on (nearly) separable frozen features makes the head norm ``||W||_F`` grow, which
makes the probe over-confident; temperature scaling (one scalar ``T`` fitted on validation
NLL) repairs the calibration without changing any prediction. The functions here take
probabilities or logits as numpy arrays or torch tensors and return Python floats or frozen
dataclasses; all sums are float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope._array import from_numpy_like, is_torch, to_numpy
from repscope._validation import check_features, check_labels, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult, Result

if TYPE_CHECKING:
    pass

__all__ = [
    "CalibrationResult",
    "HeadDiagnostics",
    "HeadDiagnosticsResult",
    "ReliabilityDiagram",
    "ReliabilityDiagramResult",
    "TemperatureScaler",
    "brier_score",
    "calibration_report",
    "ece",
    "fit_temperature",
    "head_diagnostics",
    "nll",
    "reliability_diagram",
]


def _probs_labels(probs: Any, y: Any, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    P = check_features(probs, name=name)
    Pn = np.asarray(to_numpy(P), dtype=np.float64)
    if Pn.min() < -1e-6 or Pn.max() > 1 + 1e-6:
        raise RepscopeValueError(
            f"{name} must hold probabilities in [0, 1]; got values in [{Pn.min():.3g}, "
            f"{Pn.max():.3g}]. Pass softmax outputs (or logits to the *_from_logits helpers)."
        )
    yi = _label_indices(y, Pn.shape)
    return Pn, yi


def _label_indices(y: Any, shape: tuple[int, ...]) -> np.ndarray:
    yi = check_labels(y, n_samples=int(shape[0]), name="y", allow_strings=False)
    if yi.size and (yi.min() < 0 or yi.max() >= shape[1]):
        raise RepscopeValueError(
            f"y must hold column indices in [0, {shape[1] - 1}] of the probabilities/logits; "
            f"got values in [{yi.min()}, {yi.max()}]. Map labels with "
            "np.searchsorted(probe.classes_, y)."
        )
    return yi.astype(np.int64)


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


def _nll_logits(Z: np.ndarray, y: np.ndarray) -> float:
    zmax = Z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(Z - zmax).sum(axis=1)) + zmax[:, 0]
    return float(np.mean(lse - Z[np.arange(Z.shape[0]), y]))


# ---------------------------------------------------------------------- metrics
def nll(probs: Any, y: Any, *, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood ``-(1/n) sum_i log p_{i, y_i}`` (probabilities clipped at ``eps``).

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
    y : array-like of shape (n_samples,)
        Column indices of the true classes.
    """
    P, yi = _probs_labels(probs, y)
    return float(-np.mean(np.log(np.clip(P[np.arange(P.shape[0]), yi], eps, 1.0))))


def brier_score(probs: Any, y: Any) -> float:
    """Multiclass Brier score ``(1/n) sum_i sum_k (p_ik - [y_i = k])^2`` (in [0, 2])."""
    P, yi = _probs_labels(probs, y)
    R = P.copy()
    R[np.arange(P.shape[0]), yi] -= 1.0
    return float(np.mean(np.sum(R * R, axis=1)))


@dataclass(frozen=True)
class ReliabilityDiagramResult(Result):
    """Top-label reliability data in equal-width confidence bins ``(k/B, (k+1)/B]``.

    Attributes
    ----------
    bin_edges : tuple of float (n_bins + 1)
    confidence, accuracy : tuple of float (n_bins)
        Mean top-label confidence and accuracy per bin (NaN for an empty bin).
    counts : tuple of int (n_bins)
    ece : float
        ``sum_k (counts_k / n) |accuracy_k - confidence_k|`` over non-empty bins.
    """

    bin_edges: tuple[float, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]
    ece: float


#: The former name of :class:`ReliabilityDiagramResult` (kept for one release).
ReliabilityDiagram = ReliabilityDiagramResult


def reliability_diagram(probs: Any, y: Any, n_bins: int = 15) -> ReliabilityDiagramResult:
    """Bin the top-label confidences into ``n_bins`` equal-width bins (the ECE's data).

    A confidence ``c`` falls in bin ``k`` when ``k/B < c <= (k+1)/B`` (a confidence of exactly
    0 goes to the first bin).
    """
    check_scalar(n_bins, "n_bins", caller="reliability_diagram", kind=int, min_value=1)
    P, yi = _probs_labels(probs, y)
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == yi).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(counts > 0, sum_conf / counts, np.nan)
        ma = np.where(counts > 0, sum_acc / counts, np.nan)
    n = max(P.shape[0], 1)
    value = float(np.sum(np.abs(sum_acc - sum_conf)) / n)
    return ReliabilityDiagramResult(
        tuple(edges.tolist()), tuple(mc.tolist()), tuple(ma.tolist()),
        tuple(int(c) for c in counts), value,
    )


def ece(probs: Any, y: Any, n_bins: int = 15) -> float:
    """Expected calibration error (top label, equal-width bins).

    .. math:: \\mathrm{ECE} = \\sum_{k=1}^{B} \\frac{|B_k|}{n} \\,
              \\bigl|\\mathrm{acc}(B_k) - \\mathrm{conf}(B_k)\\bigr|

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
        Predicted probabilities (rows sum to 1).
    y : array-like of shape (n_samples,)
        Column indices of the true classes.
    n_bins : int
        Number of bins ``B`` in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> ece(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
    0.4
    """
    return reliability_diagram(probs, y, n_bins).ece


# ---------------------------------------------------------------------- temperature scaling
def fit_temperature(logits: Any, y: Any, *, bounds: tuple[float, float] = (1e-3, 1e3)) -> float:
    """The temperature ``T`` minimising ``NLL(softmax(logits / T), y)``.

    A bounded 1-D minimisation over ``log T`` (Brent's method); the NLL is convex in ``1/T``,
    so the minimiser is unique.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
        Validation logits of the head (never the data the head was fitted on).
    y : array-like of shape (n_samples,)
        Column indices of the true classes.
    bounds : (float, float)
        Range searched for ``T``.

    Returns
    -------
    float
    """
    from scipy.optimize import minimize_scalar

    Z = np.asarray(to_numpy(check_features(logits, name="logits")), dtype=np.float64)
    yi = _label_indices(y, Z.shape)
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0 < lo < hi:
        raise RepscopeValueError(f"bounds must satisfy 0 < low < high; got {bounds!r}.")
    res = minimize_scalar(
        lambda s: _nll_logits(Z * np.exp(-s), yi),
        bounds=(np.log(lo), np.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


class TemperatureScaler:
    """Temperature scaling: ``softmax(logits / T)`` with ``T`` fitted on validation NLL.

    Parameters
    ----------
    bounds : (float, float)
        Range searched for ``T``.

    Attributes
    ----------
    temperature_ : float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 500); Z = 10.0 * np.eye(3)[y] + 8.0 * rng.standard_normal((500, 3))
    >>> TemperatureScaler().fit(Z, y).temperature_ > 1.0   # over-confident logits get T > 1
    True
    """

    def __init__(self, bounds: tuple[float, float] = (1e-3, 1e3)) -> None:
        self.bounds = bounds

    def fit(self, logits: Any, y: Any) -> TemperatureScaler:
        """Fit ``T`` on validation logits; returns self."""
        self.temperature_ = fit_temperature(logits, y, bounds=self.bounds)
        return self

    def transform(self, logits: Any) -> Any:
        """Scaled logits ``logits / T`` in the caller's backend."""
        self._check()
        return logits / self.temperature_

    def predict_proba(self, logits: Any) -> Any:
        """Calibrated probabilities ``softmax(logits / T)`` in the caller's backend."""
        self._check()
        Z = np.asarray(to_numpy(check_features(logits, name="logits")), dtype=np.float64)
        return from_numpy_like(_softmax(Z / self.temperature_), logits)

    def _check(self) -> None:
        if not hasattr(self, "temperature_"):
            from repscope.exceptions import NotFittedError

            raise NotFittedError("This TemperatureScaler is not fitted yet; call fit first.")


@dataclass(frozen=True)
class CalibrationResult(RecordedResult):
    """Test-set calibration before and after temperature scaling (``T`` fitted on validation).

    Attributes
    ----------
    temperature : float
    ece_before, ece_after, nll_before, nll_after, brier_before, brier_after : float
    accuracy : float
        Test accuracy (unchanged by the temperature).
    n_bins : int
    diagram_before, diagram_after : ReliabilityDiagramResult
    """

    analysis: ClassVar[str] = "probe_calibration"

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    brier_before: float
    brier_after: float
    accuracy: float
    n_bins: int
    diagram_before: ReliabilityDiagramResult
    diagram_after: ReliabilityDiagramResult

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``probe_calibration`` record: T, ECE/NLL before and after, both diagrams."""
        return [("", {
            "temperature": self.temperature, "ece_before": self.ece_before,
            "ece_after": self.ece_after, "nll_before": self.nll_before,
            "nll_after": self.nll_after, "accuracy": self.accuracy,
            "bin_edges": list(self.diagram_before.bin_edges),
            "confidence_before": list(self.diagram_before.confidence),
            "accuracy_before": list(self.diagram_before.accuracy),
            "confidence_after": list(self.diagram_after.confidence),
            "accuracy_after": list(self.diagram_after.accuracy),
            "counts_before": list(self.diagram_before.counts)})]


#: The former name of :class:`CalibrationResult` (kept for one release).
CalibrationReport = CalibrationResult


def calibration_report(
    logits_val: Any, y_val: Any, logits_test: Any, y_test: Any, *, n_bins: int = 15
) -> CalibrationResult:
    """Fit ``T`` on ``(logits_val, y_val)`` and report test ECE/NLL/Brier before and after.

    ``y_val`` and ``y_test`` are column indices of the logits (``np.searchsorted(classes_, y)``).
    """
    T = fit_temperature(logits_val, y_val)
    Zt = np.asarray(to_numpy(check_features(logits_test, name="logits_test")), dtype=np.float64)
    yt = _label_indices(y_test, Zt.shape)
    before, after = _softmax(Zt), _softmax(Zt / T)
    db, da = reliability_diagram(before, yt, n_bins), reliability_diagram(after, yt, n_bins)
    return CalibrationResult(
        temperature=T, ece_before=db.ece, ece_after=da.ece, nll_before=nll(before, yt),
        nll_after=nll(after, yt), brier_before=brier_score(before, yt),
        brier_after=brier_score(after, yt),
        accuracy=float(np.mean(before.argmax(axis=1) == yt)), n_bins=int(n_bins),
        diagram_before=db, diagram_after=da,
    )


# ---------------------------------------------------------------------- head diagnostics
@dataclass(frozen=True)
class HeadDiagnosticsResult(Result):
    """LP-FT head diagnostics of a linear softmax head on features.

    Attributes
    ----------
    head_norm : float
        ``||W||_F``.
    mean_margin : float
        Mean over samples of ``z_{i, y_i} - max_{k != y_i} z_{ik}`` (logit margin).
    ce_residual_norm : float
        ``||softmax(X W^T + b) - Y||_F / sqrt(n)``: the root-mean-square per-sample norm of the
        cross-entropy gradient with respect to the logits (small when the head fits the data).
    ce_grad_norm : float
        ``||(softmax(X W^T + b) - Y)^T X||_F / n``: the norm of the mean cross-entropy
        gradient with respect to ``W``.
    """

    head_norm: float
    mean_margin: float
    ce_residual_norm: float
    ce_grad_norm: float


#: The former name of :class:`HeadDiagnosticsResult` (kept for one release).
HeadDiagnostics = HeadDiagnosticsResult


def head_diagnostics(W: Any, b: Any, X: Any, y: Any) -> HeadDiagnosticsResult:
    """Head norm, mean margin and cross-entropy gradient norms (LP-FT, Tomihari & Sato 2024).

    Parameters
    ----------
    W : array-like of shape (n_classes, n_features)
        Softmax head weights (``probe.coef_`` of a multi-class probe).
    b : array-like of shape (n_classes,)
        Intercepts.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Column indices of the true classes.
    """
    Wn = np.asarray(to_numpy(W) if is_torch(W) else W, dtype=np.float64)
    bn = np.asarray(to_numpy(b) if is_torch(b) else b, dtype=np.float64)
    Xn = np.asarray(to_numpy(check_features(X, name="X")), dtype=np.float64)
    if Wn.ndim != 2 or Wn.shape[1] != Xn.shape[1] or bn.shape != (Wn.shape[0],):
        raise RepscopeValueError(
            f"W must be (n_classes, {Xn.shape[1]}) and b (n_classes,); got W.shape={Wn.shape}, "
            f"b.shape={bn.shape}."
        )
    if Wn.shape[0] < 2:
        raise RepscopeValueError(
            "head_diagnostics needs a softmax head with >= 2 rows; for a binary sigmoid head "
            "use W = np.vstack([-coef_ / 2, coef_ / 2]) and b likewise."
        )
    Z = Xn @ Wn.T + bn
    yi = _label_indices(y, Z.shape)
    n = Z.shape[0]
    rows = np.arange(n)
    R = _softmax(Z)
    R[rows, yi] -= 1.0
    other = Z.copy()
    other[rows, yi] = -np.inf
    margin = Z[rows, yi] - other.max(axis=1)
    return HeadDiagnosticsResult(
        head_norm=float(np.linalg.norm(Wn)),
        mean_margin=float(np.mean(margin)),
        ce_residual_norm=float(np.linalg.norm(R) / np.sqrt(n)),
        ce_grad_norm=float(np.linalg.norm(R.T @ Xn) / n),
    )
