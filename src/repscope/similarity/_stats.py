"""Statistics for similarity measures: permutation tests, null calibration, bootstrap, jackknife.

* :func:`permutation_test` -- p-value of ``m(X, Y)`` against ``m(X, Y[perm])``. For linear CKA
  only the cross term is recomputed: permuting the rows of ``Y`` leaves ``X~^T X~`` and
  ``Y~^T Y~`` unchanged and turns ``X~^T Y~`` into ``X~^T P Y~``; both inputs are first reduced
  to ``min(n, d)`` columns (``Z Z^T = X~ X~^T``) and a batch of permutations is one batched
  matrix product, so each permutation costs ``O(n r_x r_y)``.
* :func:`null_calibrated` -- ``(value - mean(null)) / std(null)``: how many null standard
  deviations a value sits above chance, so that width/sample-size confounds (raw CKA between
  independent representations grows with ``d / n``) do not masquerade as similarity.
* :func:`bootstrap_ci` -- percentile interval over rows resampled with replacement.
* :func:`jackknife` -- leave-one-out bias and standard error; linear CKA uses exact rank-one
  downdates of the scatter matrices (``O(n d^2)`` for all ``n`` leave-outs).

Permutation ``b`` is the ``b``-th ``rng.permutation(n)`` of ``np.random.default_rng(seed)``
(bootstrap: the ``b``-th ``rng.integers(0, n, n)``), so results are reproducible and can be
checked against a plain loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_choice, check_paired, check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.results import Result, Score
from repscope.similarity._measures._common import pow2_exponent

__all__ = [
    "BootstrapResult",
    "JackknifeResult",
    "PermutationTestResult",
    "bootstrap_ci",
    "jackknife",
    "null_calibrated",
    "permutation_test",
]

MeasureLike = str | Callable[..., float]
Alternative = Literal["greater", "less", "two-sided"]


# --------------------------------------------------------------------------- measure lookup
def _resolve(measure: MeasureLike, caller: str) -> tuple[str, Callable[..., float], bool]:
    """Return ``(name, function, higher_is_better)`` for a registered name or a callable."""
    if callable(measure):
        name = getattr(measure, "__name__", "measure")
        return name, measure, bool(getattr(measure, "higher_is_better", True))
    if not isinstance(measure, str):
        raise RepscopeValueError(
            f"The 'measure' parameter of {caller} must be a registered measure name or a "
            f"callable m(X, Y) -> float. Got {measure!r} instead."
        )
    import repscope.similarity._knn_measures  # noqa: F401  (registers the kNN measures)
    from repscope.similarity._registry import get_measure, measure_info, resolve_measure

    measure = resolve_measure(measure)  # an alias (cka) is recorded as its measure (linear_cka)
    fn = get_measure(measure)
    return measure, fn, bool(measure_info(measure)["higher_is_better"])


def _is_symmetric(measure: MeasureLike) -> bool:
    """Registry metadata ``symmetric`` for a name; a callable's ``symmetric`` attribute."""
    if callable(measure):
        return bool(getattr(measure, "symmetric", False))
    from repscope.similarity._registry import measure_info

    return bool(measure_info(measure).get("symmetric", False))


def _alternative(alternative: Alternative | None, hib: bool, caller: str) -> str:
    if alternative is None:
        return "greater" if hib else "less"
    return check_choice(alternative, "alternative", ("greater", "less", "two-sided"),
                        caller=caller)


# --------------------------------------------------------------------------- linear CKA pieces
def _reduce(Xc: np.ndarray) -> np.ndarray:
    """``Z`` with ``Z Z^T = Xc Xc^T`` and ``min(n, d)`` columns (QR of ``Xc^T`` when d > n)."""
    n, d = Xc.shape
    if d <= n:
        return Xc
    r: np.ndarray = np.linalg.qr(Xc.T, mode="r")  # type: ignore[assignment]
    return np.ascontiguousarray(r.T)


def _centred(X: Any) -> np.ndarray:
    """Column-centred float64 copy, times an exact power of two when its magnitude is extreme
    (linear CKA is scale invariant; this keeps its products finite and non-zero)."""
    A = as_float64_numpy(X)
    Ac = A - A.mean(axis=0)
    e = pow2_exponent(Ac)
    return Ac if e == 0 else np.ldexp(Ac, -e, out=Ac)


def _fro2(a: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", a, a))


def _cka_perm_null(
    X: Any, Y: Any, perms: np.ndarray, batch_size: int,
    advance: Callable[[int], None] = lambda k: None,
) -> tuple[float, np.ndarray]:
    Zx, Zy = _reduce(_centred(X)), _reduce(_centred(Y))
    den = np.sqrt(_fro2(Zx.T @ Zx) * _fro2(Zy.T @ Zy))
    if den <= 0:
        raise RepscopeValueError(
            "linear CKA is undefined when X or Y is constant (zero variance in every feature)."
        )
    value = _fro2(Zx.T @ Zy) / den
    n, ry = Zy.shape
    step = batch_size if batch_size > 0 else max(1, (1 << 24) // max(n * ry, 1))
    ZxT = np.ascontiguousarray(Zx.T)
    null = np.empty(perms.shape[0])
    for a in range(0, perms.shape[0], step):
        Zp = Zy[perms[a:a + step]]  # (b, n, r_y)
        cross = np.matmul(ZxT[None], Zp)  # (b, r_x, r_y)
        null[a:a + step] = np.einsum("bij,bij->b", cross, cross) / den
        advance(min(step, perms.shape[0] - a))
    return value, null


# --------------------------------------------------------------------------- permutation test
@dataclass(frozen=True)
class PermutationTestResult(Result):
    """Outcome of a permutation test of ``m(X, Y)``.

    Attributes
    ----------
    value : float
        The measure on the paired data.
    p_value : float
        ``(1 + #{null at least as extreme}) / (1 + n_permutations)``.
    null_mean, null_std : float
        Mean and standard deviation (ddof=1) of the permutation null.
    n_permutations : int
    measure : str
    alternative : {"greater", "less", "two-sided"}
    null : ndarray of shape (n_permutations,)
        The null values.
    """

    value: float
    p_value: float
    null_mean: float
    null_std: float
    n_permutations: int
    measure: str
    alternative: str
    null: np.ndarray = field(repr=False)

    @property
    def z_score(self) -> float:
        """Null-calibrated value ``(value - null_mean) / null_std``."""
        return _z(self.value, self.null_mean, self.null_std)


def _z(value: float, mean: float, std: float) -> float:
    if std > 0:
        return float((value - mean) / std)
    return 0.0 if value == mean else float(np.sign(value - mean) * np.inf)


def _permutations(n: int, n_permutations: int, seed: int | None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(n_permutations)])


def permutation_test(
    X: Any,
    Y: Any,
    measure: MeasureLike = "linear_cka",
    *,
    n_permutations: int = 1000,
    alternative: Alternative | None = None,
    seed: int | None = 0,
    batch_size: int = 0,
    progress: ProgressLike = False,
    **measure_opts: Any,
) -> PermutationTestResult:
    r"""Permutation test of the dependence of paired representations.

    The null pairs ``X`` with randomly row-permuted ``Y`` (pairing destroyed, marginals kept).

    .. math:: p = \frac{1 + \#\{b : m(X, P_b Y) \ge m(X, Y)\}}{1 + B}

    (``<=`` for ``alternative="less"``; ``|m - mean(null)|`` for two-sided).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    measure : str or callable, default="linear_cka"
        A registered measure name or ``m(X, Y, **opts) -> float``. ``"linear_cka"`` (with no
        options) takes the batched cross-term path; anything else is recomputed per
        permutation.
    n_permutations : int, default=1000
    alternative : {"greater", "less", "two-sided"}, optional
        Default: "greater" for similarities, "less" for distances.
    seed : int or None, default=0
    batch_size : int, default=0
        Permutations per batched product in the CKA path (0 = as many as fit in ~128 MB).
    progress : bool or callable, default=False
        True shows a progress bar with an ETA on stderr; a callable ``advance(k)`` is called
        with the permutations done (one bar over several tests).
    **measure_opts
        Passed to the measure.

    Returns
    -------
    PermutationTestResult

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 5))
    >>> permutation_test(X, X @ np.ones((5, 2)), n_permutations=99).p_value
    0.01
    """
    caller = "permutation_test"
    B = check_positive_int(n_permutations, "n_permutations", caller=caller)
    X, Y = check_paired(X, Y, min_samples=3)
    name, fn, hib = _resolve(measure, caller)
    alt = _alternative(alternative, hib, caller)
    perms = _permutations(int(X.shape[0]), B, seed)
    with progress_for(progress, f"{name} permutations", B) as advance:
        if name == "linear_cka" and not measure_opts and not callable(measure):
            value, null = _cka_perm_null(X, Y, perms, int(batch_size), advance)
        else:
            value = float(fn(X, Y, **measure_opts))
            null = np.empty(B)
            for b, p in enumerate(perms):
                null[b] = float(fn(X, Y[p], **measure_opts))
                advance(1)
    return _finish(value, null, name, alt)


def _finish(value: float, null: np.ndarray, name: str, alt: str) -> PermutationTestResult:
    mean = float(null.mean())
    std = float(null.std(ddof=1)) if null.size > 1 else 0.0
    # a relative tolerance so float rounding of an identical statistic counts as a tie
    tol = 1e-12 * max(1.0, abs(value))
    if alt == "greater":
        hits = int(np.sum(null >= value - tol))
    elif alt == "less":
        hits = int(np.sum(null <= value + tol))
    else:
        hits = int(np.sum(np.abs(null - mean) >= abs(value - mean) - tol))
    p = (1 + hits) / (1 + null.size)
    return PermutationTestResult(
        value=float(value), p_value=float(p), null_mean=mean, null_std=std,
        n_permutations=int(null.size), measure=name, alternative=alt, null=null,
    )


def null_calibrated(
    X: Any,
    Y: Any,
    measure: MeasureLike = "linear_cka",
    *,
    n_permutations: int = 200,
    seed: int | None = 0,
    **measure_opts: Any,
) -> Score:
    r"""Null-calibrated similarity: the value in permutation-null standard deviations.

    .. math:: z = \frac{m(X, Y) - \operatorname{mean}_b m(X, P_b Y)}
        {\operatorname{std}_b m(X, P_b Y)}

    Two independent representations score ``z ~ 0`` whatever their widths and ``n``, whereas
    raw linear CKA between them grows like ``d / n``.

    Parameters
    ----------
    X, Y, measure, n_permutations, seed, **measure_opts
        As in :func:`permutation_test`.

    Returns
    -------
    Score
        ``value`` = z; ``details`` holds the raw value, null mean/std, p-value and
        ``n_permutations``. For a distance, z is negative when the pair is closer than chance.
    """
    res = permutation_test(X, Y, measure, n_permutations=n_permutations, seed=seed,
                           **measure_opts)
    return Score(
        value=res.z_score,
        measure=res.measure,
        direction="score",
        estimator="permutation-null z",
        n_samples=int(np.shape(X)[0]),
        n_features=(int(np.shape(X)[1]), int(np.shape(Y)[1])),
        details={"raw_value": res.value, "null_mean": res.null_mean, "null_std": res.null_std,
                 "p_value": res.p_value, "n_permutations": res.n_permutations},
    )


# --------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class BootstrapResult(Result):
    """Percentile bootstrap interval of a measure.

    Attributes
    ----------
    value : float
        The measure on the full data.
    ci_low, ci_high : float
        The ``confidence`` percentile interval of the bootstrap values.
    std_error : float
        Standard deviation of the bootstrap values.
    confidence : float
    n_resamples : int
    measure : str
    values : ndarray of shape (n_resamples,)
    """

    value: float
    ci_low: float
    ci_high: float
    std_error: float
    confidence: float
    n_resamples: int
    measure: str
    values: np.ndarray = field(repr=False)


def bootstrap_ci(
    X: Any,
    Y: Any,
    measure: MeasureLike = "linear_cka",
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
    progress: ProgressLike = False,
    **measure_opts: Any,
) -> BootstrapResult:
    """Percentile bootstrap confidence interval over samples (rows drawn with replacement).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    measure : str or callable, default="linear_cka"
    n_resamples : int, default=1000
    confidence : float in (0, 1), default=0.95
    seed : int or None, default=0
    progress : bool or callable, default=False
        True shows a progress bar with an ETA on stderr; a callable ``advance(k)`` is called
        with the resamples done.
    **measure_opts
        Passed to the measure.

    Returns
    -------
    BootstrapResult

    Notes
    -----
    Resampling duplicates rows, which biases kernel measures that are not U-statistics (biased
    CKA) slightly upwards; the percentile interval inherits that bias. Use ``jackknife`` for a
    bias estimate.
    """
    caller = "bootstrap_ci"
    B = check_positive_int(n_resamples, "n_resamples", caller=caller)
    conf = float(check_scalar(confidence, "confidence", caller=caller, min_value=0.0,
                              max_value=1.0, include_min=False, include_max=False))
    X, Y = check_paired(X, Y, min_samples=3)
    name, fn, _ = _resolve(measure, caller)
    n = int(X.shape[0])
    value = float(fn(X, Y, **measure_opts))
    rng = np.random.default_rng(seed)
    vals = np.empty(B)
    with progress_for(progress, f"{name} bootstrap", B) as advance:
        for b in range(B):
            idx = rng.integers(0, n, n)
            vals[b] = float(fn(X[idx], Y[idx], **measure_opts))
            advance(1)
    lo, hi = np.quantile(vals, [(1 - conf) / 2, (1 + conf) / 2])
    return BootstrapResult(
        value=value, ci_low=float(lo), ci_high=float(hi),
        std_error=float(vals.std(ddof=1)) if B > 1 else 0.0, confidence=conf,
        n_resamples=B, measure=name, values=vals,
    )


# --------------------------------------------------------------------------- jackknife
@dataclass(frozen=True)
class JackknifeResult(Result):
    r"""Jackknife (leave-one-out) bias, standard error and normal interval.

    With leave-one-out values :math:`\theta_{(i)}` and their mean :math:`\bar\theta`:
    ``bias = (n - 1)(theta_bar - value)``, ``estimate = value - bias``,
    ``std_error = sqrt((n - 1)/n * sum (theta_(i) - theta_bar)^2)``,
    interval ``estimate -+ z_{(1+confidence)/2} std_error``.

    Attributes
    ----------
    value, estimate, bias, std_error, ci_low, ci_high, confidence : float
    measure : str
    values : ndarray of shape (n_samples,)
        The leave-one-out values.
    """

    value: float
    estimate: float
    bias: float
    std_error: float
    ci_low: float
    ci_high: float
    confidence: float
    measure: str
    values: np.ndarray = field(repr=False)


def _cka_leave_one_out(X: Any, Y: Any) -> tuple[float, np.ndarray]:
    """Exact leave-one-out linear CKA values by rank-one downdates.

    Removing sample ``i`` turns every scatter ``S_ab`` into ``S_ab - c a_i b_i^T`` with
    ``c = n / (n - 1)`` (centred rows), so
    ``||S'_ab||^2 = ||S_ab||^2 - 2c a_i^T S_ab b_i + c^2 |a_i|^2 |b_i|^2``.
    """
    Xc, Yc = _centred(X), _centred(Y)
    n = Xc.shape[0]
    c = n / (n - 1)
    sxx, syy, sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    ax, ay = np.einsum("ij,ij->i", Xc, Xc), np.einsum("ij,ij->i", Yc, Yc)
    fxy, fxx, fyy = _fro2(sxy), _fro2(sxx), _fro2(syy)
    if fxx <= 0 or fyy <= 0:
        raise RepscopeValueError(
            "linear CKA is undefined when X or Y is constant (zero variance in every feature)."
        )
    qxy = np.einsum("ij,ij->i", Xc @ sxy, Yc)
    qxx = np.einsum("ij,ij->i", Xc @ sxx, Xc)
    qyy = np.einsum("ij,ij->i", Yc @ syy, Yc)
    num = fxy - 2 * c * qxy + c * c * ax * ay
    dx = fxx - 2 * c * qxx + c * c * ax * ax
    dy = fyy - 2 * c * qyy + c * c * ay * ay
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = np.clip(num / np.sqrt(np.maximum(dx, 0) * np.maximum(dy, 0)), 0.0, 1.0)
    return float(np.clip(fxy / np.sqrt(fxx * fyy), 0.0, 1.0)), loo


def jackknife(
    X: Any,
    Y: Any,
    measure: MeasureLike = "linear_cka",
    *,
    confidence: float = 0.95,
    **measure_opts: Any,
) -> JackknifeResult:
    """Jackknife bias-corrected estimate, standard error and normal confidence interval.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    measure : str or callable, default="linear_cka"
        ``"linear_cka"`` uses exact rank-one downdates (all leave-outs in ``O(n d^2)``); other
        measures are recomputed ``n`` times.
    confidence : float in (0, 1), default=0.95
    **measure_opts
        Passed to the measure.

    Returns
    -------
    JackknifeResult
    """
    from scipy.stats import norm

    caller = "jackknife"
    conf = float(check_scalar(confidence, "confidence", caller=caller, min_value=0.0,
                              max_value=1.0, include_min=False, include_max=False))
    X, Y = check_paired(X, Y, min_samples=3)
    name, fn, _ = _resolve(measure, caller)
    n = int(X.shape[0])
    if name == "linear_cka" and not measure_opts and not callable(measure):
        value, loo = _cka_leave_one_out(X, Y)
    else:
        value = float(fn(X, Y, **measure_opts))
        keep = np.ones(n, dtype=bool)
        loo = np.empty(n)
        for i in range(n):
            keep[i] = False
            loo[i] = float(fn(X[keep], Y[keep], **measure_opts))
            keep[i] = True
    mean = float(loo.mean())
    bias = (n - 1) * (mean - value)
    se = float(np.sqrt((n - 1) / n * np.sum((loo - mean) ** 2)))
    est = value - bias
    zq = float(norm.ppf((1 + conf) / 2))
    return JackknifeResult(
        value=value, estimate=est, bias=bias, std_error=se, ci_low=est - zq * se,
        ci_high=est + zq * se, confidence=conf, measure=name, values=loo,
    )
