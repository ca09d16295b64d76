"""Evaluation protocols as data: holdout, k-fold, fixed validation; few-shot and learning curves.

Every function takes an *estimator factory*: a scikit-learn estimator (cloned for every fit)
or a zero-argument callable returning a fresh one. Every fit sees only its training rows, so
any hyperparameter search inside the estimator (``LogisticRegressionCV``, a probe with
built-in selection) happens within them — nothing leaks from the test rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope._array import is_torch
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_choice, check_labels, check_positive_int, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult, Result

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_PROTOCOL",
    "EstimatorFactory",
    "EvaluationResult",
    "FewShotResult",
    "FixedValidation",
    "Holdout",
    "KFold",
    "LearningCurveResult",
    "Protocol",
    "evaluate",
    "few_shot",
    "learning_curve",
    "make_estimator",
    "mean_interval",
    "wilson_interval",
]

EstimatorFactory = Any | Callable[[], Any]


def make_estimator(factory: EstimatorFactory) -> Any:
    """A fresh, unfitted estimator: ``clone(factory)`` for an estimator, ``factory()`` else."""
    if hasattr(factory, "fit") and hasattr(factory, "get_params"):
        from sklearn.base import clone

        return clone(factory)
    if callable(factory):
        est = factory()
        if not hasattr(est, "fit"):
            raise RepscopeTypeError(
                f"the estimator factory must return an object with fit/predict; it returned "
                f"{type(est).__name__}."
            )
        return est
    raise RepscopeTypeError(
        f"estimator must be a scikit-learn style estimator or a zero-argument callable that "
        f"returns one; got {type(factory).__name__}."
    )


def _take(X: Any, idx: np.ndarray) -> Any:
    if is_torch(X):
        import torch

        return X[torch.as_tensor(idx, device=X.device)]
    return X[idx]


def _n_rows(X: Any) -> int:
    return int(X.shape[0])


# ---------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------
def mean_interval(values: Sequence[float], level: float = 0.95,
                  method: Literal["t", "bootstrap"] = "t", seed: int = 0,
                  n_boot: int = 2000,
                  bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Confidence interval of the mean of ``values`` (Student t, or percentile bootstrap).

    Fewer than two values give ``(nan, nan)``. ``bounds`` clips the interval to the range the
    quantity can take (an accuracy's ``(0, 1)``: a t interval of a few tries can reach past
    it, e.g. [0.68, 1.16] for three tries at 2 shots).
    """
    lo, hi = _mean_interval(values, level, method, seed, n_boot)
    if bounds is not None and math.isfinite(lo):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return lo, hi


def _mean_interval(values: Sequence[float], level: float, method: str, seed: int,
                   n_boot: int) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return (math.nan, math.nan)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return (float(lo), float(hi))
    from scipy import stats

    half = float(stats.t.ppf((1 + level) / 2, v.size - 1)) * v.std(ddof=1) / math.sqrt(v.size)
    return (float(v.mean() - half), float(v.mean() + half))


def wilson_interval(correct: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / total``."""
    if total <= 0:
        return (math.nan, math.nan)
    from scipy import stats

    z = float(stats.norm.ppf((1 + level) / 2))
    p = correct / total
    den = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / den
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, test_size: float, rng: np.random.Generator,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class shuffled split; each class keeps at least one training row."""
    test = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        n_test = round(test_size * rows.size)
        n_test = min(n_test, rows.size - 1)
        test.append(rows[:n_test])
    te = np.sort(np.concatenate(test)) if test else np.array([], dtype=np.int64)
    tr = np.setdiff1d(np.arange(labels.size), te)
    return tr, te


@dataclass(frozen=True)
class Holdout:
    """One stratified train/test split.

    Attributes
    ----------
    test_size : float
        Fraction of each class held out, in (0, 1).
    seed : int
    """

    test_size: float = 0.2
    seed: int = 0

    def splits(self, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(train_indices, test_indices)]``."""
        check_scalar(self.test_size, "test_size", caller="Holdout", kind=float, min_value=0,
                     max_value=1, include_min=False, include_max=False)
        labels = check_labels(y, name="y")
        tr, te = _stratified_split(labels, self.test_size, np.random.default_rng(self.seed))
        if te.size == 0:
            raise RepscopeValueError(
                f"Holdout(test_size={self.test_size}) leaves no test rows for {labels.size} "
                "samples; use a larger test_size."
            )
        return [(tr, te)]


@dataclass(frozen=True)
class KFold:
    """Stratified k-fold cross-validation (shuffled with ``seed``).

    Attributes
    ----------
    k : int
        Number of folds (>= 2); every class needs at least ``k`` samples.
    seed : int
    """

    k: int = 5
    seed: int = 0

    def splits(self, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """``k`` pairs ``(train_indices, test_indices)``; test folds partition the rows."""
        from sklearn.model_selection import StratifiedKFold

        check_scalar(self.k, "k", caller="KFold", kind=int, min_value=2)
        labels = check_labels(y, name="y")
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() < self.k:
            raise RepscopeValueError(
                f"KFold(k={self.k}) needs at least {self.k} samples in every class; the smallest "
                f"class has {int(counts.min())}. Use fewer folds or Holdout."
            )
        skf = StratifiedKFold(n_splits=self.k, shuffle=True, random_state=self.seed)
        return [(tr, te) for tr, te in skf.split(np.zeros(labels.size), labels)]


@dataclass(frozen=True)
class FixedValidation:
    """A given set of test (validation) rows; every other row trains.

    Attributes
    ----------
    val_indices : tuple of int
    """

    val_indices: tuple[int, ...] = field(default_factory=tuple)

    def splits(self, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(train_indices, val_indices)]``."""
        labels = check_labels(y, name="y")
        te = np.unique(np.asarray(self.val_indices, dtype=np.int64))
        if te.size == 0 or te.min() < 0 or te.max() >= labels.size:
            raise RepscopeValueError(
                f"FixedValidation.val_indices must be a non-empty set of row indices in "
                f"[0, {labels.size}); got {te.size} indices"
                + (f" spanning [{te.min()}, {te.max()}]." if te.size else ".")
            )
        tr = np.setdiff1d(np.arange(labels.size), te)
        if tr.size == 0:
            raise RepscopeValueError("FixedValidation leaves no training rows.")
        return [(tr, te)]


Protocol = Holdout | KFold | FixedValidation

#: The default protocol: stratified 5-fold cross-validation, seed 0.
DEFAULT_PROTOCOL = KFold()


@dataclass(frozen=True)
class EvaluationResult(Result):
    """Scores of one estimator under one protocol.

    Attributes
    ----------
    accuracy : float
        Pooled held-out accuracy (correct / total over every test split).
    ci_low, ci_high : float
        95% Wilson interval of the pooled accuracy.
    split_scores : tuple of float
        Accuracy on each split.
    std : float
        Standard deviation of ``split_scores`` (0 for one split).
    n_test : int
        Total held-out predictions.
    chance : float
        Majority-class accuracy.
    protocol : str
    """

    accuracy: float
    ci_low: float
    ci_high: float
    split_scores: tuple[float, ...]
    std: float
    n_test: int
    chance: float
    protocol: str


def evaluate(estimator: EstimatorFactory, X: Any, y: Any, protocol: Protocol = DEFAULT_PROTOCOL,
             *, refit: bool = False) -> tuple[EvaluationResult, Any]:
    """Fit on each training split, score held-out accuracy; optionally refit on all rows.

    Parameters
    ----------
    estimator : estimator or callable
        See :func:`make_estimator`.
    X : array-like or torch.Tensor, first axis = samples
    y : array-like of shape (n_samples,)
    protocol : Holdout, KFold or FixedValidation, default=KFold()
    refit : bool, default=False
        After scoring, fit a fresh estimator on every row (train + validation), the usual
        "select on validation, refit on train+val" final step.

    Returns
    -------
    (EvaluationResult, estimator or None)
        The scores, and the refitted estimator when ``refit``.
    """
    labels = check_labels(y, n_samples=_n_rows(X), name="y", min_classes=2)
    correct = 0
    total = 0
    scores = []
    for tr, te in protocol.splits(labels):
        est = make_estimator(estimator).fit(_take(X, tr), labels[tr])
        pred = np.asarray(est.predict(_take(X, te)))
        hit = int((pred == labels[te]).sum())
        correct += hit
        total += te.size
        scores.append(hit / te.size)
    _, counts = np.unique(labels, return_counts=True)
    lo, hi = wilson_interval(correct, total)
    result = EvaluationResult(
        accuracy=correct / total, ci_low=lo, ci_high=hi, split_scores=tuple(scores),
        std=float(np.std(scores)), n_test=total, chance=float(counts.max() / counts.sum()),
        protocol=repr(protocol) if not isinstance(protocol, FixedValidation)
        else f"FixedValidation(n_val={len(protocol.val_indices)})",
    )
    final = make_estimator(estimator).fit(X, labels) if refit else None
    return result, final


# ---------------------------------------------------------------------------------------------
# Few-shot
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FewShotResult(RecordedResult):
    """Accuracy with ``s`` labelled examples per class, over ``n_tries`` random draws.

    Attributes
    ----------
    shots : tuple of int
    mean, std, ci_low, ci_high : tuple of float
        Per shot: mean accuracy over tries, its standard deviation, and the 95% interval of
        the mean (Student t over tries, or bootstrap).
    accuracies : tuple of tuple of float
        ``accuracies[i][j]``: shot ``shots[i]``, try ``j``.
    n_test : int
        Size of the fixed test split (never sampled as a shot).
    test_indices : tuple of int
    chance : float
    ece, nll : tuple of float
        Per shot: the mean over tries of the test expected calibration error (15 bins) and
        negative log-likelihood of the estimator's ``predict_proba`` (NaN for an estimator
        without ``predict_proba``).
    """

    analysis: ClassVar[str] = "probe_few_shot"

    shots: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    accuracies: tuple[tuple[float, ...], ...]
    n_test: int
    test_indices: tuple[int, ...]
    chance: float
    ece: tuple[float, ...] = ()
    nll: tuple[float, ...] = ()

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``probe_few_shot`` record: accuracy per shot count with its interval, and the
        test ECE and NLL per shot count."""
        return [("", {
            "shots": list(self.shots), "mean": list(self.mean), "std": list(self.std),
            "ci_low": list(self.ci_low), "ci_high": list(self.ci_high), "chance": self.chance,
            "n_test": self.n_test, "ece": list(self.ece), "nll": list(self.nll)})]


def _calibration(est: Any, X_te: Any, y_te: np.ndarray) -> tuple[float, float]:
    """Test ECE and NLL of a fitted estimator's ``predict_proba`` (NaN without one)."""
    if not hasattr(est, "predict_proba"):
        return math.nan, math.nan
    from repscope._array import to_numpy
    from repscope.probe._calibration import ece, nll

    P = np.asarray(to_numpy(est.predict_proba(X_te)), dtype=np.float64)
    classes = np.asarray(getattr(est, "classes_", np.unique(y_te)))
    cols = np.searchsorted(classes, y_te)
    return ece(P, cols), nll(P, cols)


def _draw_shots(X: Any, pool: np.ndarray, s: int, rng: np.random.Generator,
                sampler: str) -> np.ndarray:
    """``s`` rows of one class's ``pool``: uniform, or a projection DPP on their features
    (seeded from ``rng``, so each try differs)."""
    if sampler == "dpp" and s > 1:
        from repscope._array import to_numpy
        from repscope.geometry import dpp_subset

        F = np.asarray(to_numpy(_take(X, pool)), dtype=np.float64).reshape(pool.size, -1)
        pick = dpp_subset(F, s, seed=int(rng.integers(2**31)), max_samples=None).indices
        return pool[np.asarray(pick)]
    return rng.choice(pool, size=s, replace=False)


def few_shot(
    estimator: EstimatorFactory,
    X: Any,
    y: Any,
    shots: Sequence[int] = (1, 2, 5, 10),
    n_tries: int = 5,
    seed: int = 0,
    *,
    test_size: float = 0.2,
    test_indices: Sequence[int] | None = None,
    ci: Literal["t", "bootstrap"] = "t",
    progress: ProgressLike = False,
    sampler: Literal["random", "dpp"] = "random",
) -> FewShotResult:
    """Few-shot accuracy: ``shots`` examples per class, ``n_tries`` draws, fixed test split.

    The test split is drawn once (stratified ``test_size``, or ``test_indices``); shots are
    sampled, per class, from the remaining pool only. Each fit sees only its shots, so any
    selection inside the estimator uses the shots alone (no validation leakage). Try ``j``
    of shot ``s`` uses the seed ``(seed, s, j)``.

    Parameters
    ----------
    estimator : estimator or callable
    X : array-like or torch.Tensor, first axis = samples
    y : array-like of shape (n_samples,)
    shots : sequence of int, default=(1, 2, 5, 10)
        Examples per class; each must be available in every class's training pool.
    n_tries : int, default=5
    seed : int, default=0
    test_size : float, default=0.2
    test_indices : sequence of int, optional
        A fixed test set instead of a random one.
    ci : {"t", "bootstrap"}, default="t"
    progress : bool or callable, default=False
        True shows a progress bar (fits done, with an ETA) on stderr; a callable
        ``advance(k)`` is called once per fit.
    sampler : {"random", "dpp"}, default="random"
        How each class's shots are drawn from its pool: uniformly, or a projection DPP on the
        class's features (:func:`repscope.geometry.dpp_subset`: diverse examples, the
        labelling budget spent on inputs that differ). Each try still uses its own seed.

    Returns
    -------
    FewShotResult
        Accuracy per shot count, and the test ECE and NLL of ``predict_proba`` (mean over
        tries).
    """
    caller = "few_shot"
    labels = check_labels(y, n_samples=_n_rows(X), name="y", min_classes=2)
    check_positive_int(n_tries, "n_tries", caller=caller)
    check_choice(ci, "ci", ("t", "bootstrap"), caller=caller)
    check_choice(sampler, "sampler", ("random", "dpp"), caller=caller)
    shots_t = tuple(check_positive_int(s, "shots", caller=caller) for s in shots)
    if not shots_t:
        raise RepscopeValueError(f"The 'shots' parameter of {caller} must not be empty.")
    if test_indices is not None:
        pool, te = FixedValidation(tuple(int(i) for i in test_indices)).splits(labels)[0]
    else:
        pool, te = Holdout(test_size, seed).splits(labels)[0]
    classes = np.unique(labels)
    by_class = {c: pool[labels[pool] == c] for c in classes}
    smallest = min(v.size for v in by_class.values())
    if max(shots_t) > smallest:
        raise RepscopeValueError(
            f"shots={max(shots_t)} per class exceeds the smallest class's training pool "
            f"({smallest} rows after holding out the test split); use fewer shots."
        )
    X_te, y_te = _take(X, te), labels[te]
    means, stds, los, his, accs, eces, nlls = [], [], [], [], [], [], []
    with progress_for(progress, "few-shot fits", len(shots_t) * n_tries,
                      prefix="probe") as advance:
        for s in shots_t:
            row, cal = [], []
            for j in range(n_tries):
                rng = np.random.default_rng([seed, s, j])
                idx = np.concatenate([_draw_shots(X, by_class[c], s, rng, sampler)
                                      for c in classes])
                est = make_estimator(estimator).fit(_take(X, idx), labels[idx])
                row.append(float(np.mean(np.asarray(est.predict(X_te)) == y_te)))
                cal.append(_calibration(est, X_te, y_te))
                advance(1)
            eces.append(float(np.mean([c[0] for c in cal])))
            nlls.append(float(np.mean([c[1] for c in cal])))
            lo, hi = mean_interval(row, method=ci, seed=seed, bounds=(0.0, 1.0))
            accs.append(tuple(row))
            means.append(float(np.mean(row)))
            stds.append(float(np.std(row, ddof=1)) if len(row) > 1 else 0.0)
            los.append(lo)
            his.append(hi)
    _, counts = np.unique(y_te, return_counts=True)
    return FewShotResult(shots=shots_t, mean=tuple(means), std=tuple(stds), ci_low=tuple(los),
                         ci_high=tuple(his), accuracies=tuple(accs), n_test=int(te.size),
                         test_indices=tuple(int(i) for i in te),
                         chance=float(counts.max() / counts.sum()), ece=tuple(eces),
                         nll=tuple(nlls))


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearningCurveResult(RecordedResult):
    """Held-out accuracy as a function of training-set size.

    Attributes
    ----------
    sizes : tuple of int
    mean, std, ci_low, ci_high : tuple of float
        Per size: accuracy over repeats and the 95% interval of the mean.
    accuracies : tuple of tuple of float
        ``accuracies[i][j]``: size ``sizes[i]``, repeat ``j``.
    asymptote_error : float
        The error the curve flattens to: observed (mean error at the largest size) or fitted
        (the constant ``a`` of ``err(n) = a + b n^{-c}``), see ``asymptote``.
    asymptote_fitted : float
        The fitted ``a`` (NaN when the power law could not be fitted).
    reached_at : int
        Smallest size whose mean error is within ``tol`` of ``asymptote_error`` (and stays
        within it for every larger size).
    tol : float
    n_test : int
    """

    analysis: ClassVar[str] = "probe_learning_curve"

    sizes: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    accuracies: tuple[tuple[float, ...], ...]
    asymptote_error: float
    asymptote_fitted: float
    reached_at: int
    tol: float
    n_test: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``probe_learning_curve`` record: accuracy by training size, where it flattens."""
        return [("", {
            "sizes": list(self.sizes), "mean": list(self.mean), "ci_low": list(self.ci_low),
            "ci_high": list(self.ci_high), "reached_at": self.reached_at,
            "asymptote_error": self.asymptote_error, "tol": self.tol})]


def _fit_power_law(sizes: np.ndarray, err: np.ndarray) -> float:
    """``a`` of ``err = a + b n^-c`` (least squares, c in (0, 3]); NaN when it fails."""
    if sizes.size < 4:
        return math.nan
    from scipy.optimize import curve_fit

    def f(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a + b * np.power(n, -c)

    try:
        p, _ = curve_fit(f, sizes.astype(float), err, p0=(float(err.min()), 1.0, 0.5),
                         bounds=([0.0, 0.0, 1e-3], [1.0, np.inf, 3.0]), maxfev=5000)
    except (RuntimeError, ValueError):
        return math.nan
    return float(p[0])


def _subsample(by_class: dict[Any, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows, stratified: at least one per class, the rest proportional to the pool."""
    classes = list(by_class)
    pool = np.concatenate([by_class[c] for c in classes])
    first = np.array([rng.choice(by_class[c]) for c in classes])
    rest = np.setdiff1d(pool, first)
    extra = rng.choice(rest, size=n - len(classes), replace=False) if n > len(classes) else \
        np.array([], dtype=np.int64)
    return np.concatenate([first, extra]).astype(np.int64)


def learning_curve(
    estimator: EstimatorFactory,
    X: Any,
    y: Any,
    sizes: Sequence[int] | None = None,
    n_repeats: int = 5,
    seed: int = 0,
    *,
    test_size: float = 0.25,
    tol: float = 0.01,
    asymptote: Literal["observed", "fitted"] = "observed",
    progress: ProgressLike = False,
) -> LearningCurveResult:
    """Accuracy against training-set size, with intervals and where the curve flattens.

    A fixed stratified test split is held out; for each size, ``n_repeats`` stratified
    subsamples (at least one row per class) of the remaining pool are fitted and scored on it.
    Generative probes (naive Bayes) typically flatten at far fewer samples than
    discriminative ones (logistic regression) but at a higher error: compare ``reached_at``
    and ``asymptote_error``.

    Parameters
    ----------
    estimator : estimator or callable
    X : array-like or torch.Tensor, first axis = samples
    y : array-like of shape (n_samples,)
    sizes : sequence of int, optional
        Training sizes (each between n_classes and the pool size). Default: 8 sizes spaced
        geometrically from ``2 * n_classes`` to the whole pool.
    n_repeats : int, default=5
    seed : int, default=0
    test_size : float, default=0.25
    tol : float, default=0.01
        Absolute error tolerance for ``reached_at``.
    asymptote : {"observed", "fitted"}, default="observed"
        Which asymptote ``reached_at`` refers to; ``"fitted"`` falls back to observed when the
        power law cannot be fitted.
    progress : bool or callable, default=False
        True shows a progress bar (fits done, with an ETA) on stderr; a callable
        ``advance(k)`` is called once per fit.

    Returns
    -------
    LearningCurveResult
    """
    caller = "learning_curve"
    labels = check_labels(y, n_samples=_n_rows(X), name="y", min_classes=2)
    check_positive_int(n_repeats, "n_repeats", caller=caller)
    check_scalar(tol, "tol", caller=caller, min_value=0)
    check_choice(asymptote, "asymptote", ("observed", "fitted"), caller=caller)
    pool, te = Holdout(test_size, seed).splits(labels)[0]
    classes = np.unique(labels)
    by_class = {c: pool[labels[pool] == c] for c in classes}
    k = len(classes)
    if sizes is None:
        first = min(2 * k, pool.size)
        sizes_t = tuple(sorted({int(v) for v in np.geomspace(first, pool.size, 8).round()}))
    else:
        sizes_t = tuple(sorted({check_positive_int(s, "sizes", caller=caller) for s in sizes}))
    if sizes_t[0] < k or sizes_t[-1] > pool.size:
        raise RepscopeValueError(
            f"sizes must lie in [{k}, {pool.size}] (n_classes to the training pool after the "
            f"test split); got {sizes_t[0]}..{sizes_t[-1]}."
        )
    X_te, y_te = _take(X, te), labels[te]
    means, stds, los, his, accs = [], [], [], [], []
    n_fits = sum(1 if n == pool.size else n_repeats for n in sizes_t)
    with progress_for(progress, "learning-curve fits", n_fits, prefix="probe") as advance:
        for n in sizes_t:
            row = []
            reps = 1 if n == pool.size else n_repeats
            for j in range(reps):
                rng = np.random.default_rng([seed, n, j])
                idx = _subsample(by_class, n, rng)
                est = make_estimator(estimator).fit(_take(X, idx), labels[idx])
                row.append(float(np.mean(np.asarray(est.predict(X_te)) == y_te)))
                advance(1)
            lo, hi = mean_interval(row, bounds=(0.0, 1.0))
            accs.append(tuple(row))
            means.append(float(np.mean(row)))
            stds.append(float(np.std(row, ddof=1)) if len(row) > 1 else 0.0)
            los.append(lo)
            his.append(hi)
    err = 1.0 - np.asarray(means)
    fitted = _fit_power_law(np.asarray(sizes_t), err)
    target = fitted if asymptote == "fitted" and math.isfinite(fitted) else float(err[-1])
    within = err <= target + tol
    reached = sizes_t[-1]
    for i in range(len(sizes_t)):
        if within[i:].all():
            reached = sizes_t[i]
            break
    return LearningCurveResult(
        sizes=sizes_t, mean=tuple(means), std=tuple(stds), ci_low=tuple(los),
        ci_high=tuple(his), accuracies=tuple(accs), asymptote_error=target,
        asymptote_fitted=fitted, reached_at=int(reached), tol=float(tol), n_test=int(te.size))
