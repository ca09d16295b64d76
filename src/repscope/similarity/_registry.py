"""The similarity-measure registry: every measure is a pure function with metadata.

Metadata (read by the generated invariance tests, ``compare`` and the report):

``direction``
    ``"similarity"`` (higher = more alike) or ``"distance"`` (0 = identical).
``higher_is_better``
    Whether larger values mean more alike.
``is_metric``
    The value is a metric on representations modulo the declared invariances (identity,
    symmetry, triangle inequality hold).
``invariances``
    Transforms of the **features** (applied to X and to Y, independently) that leave the value
    unchanged, a subset of ``{"orthogonal", "isotropic_scale", "translation", "permutation",
    "invertible_linear"}``, for the measure's default options.
``symmetric``
    ``m(X, Y) == m(Y, X)``.
``identity``
    The value of ``m(X, X)`` (1 for normalised similarities, 0 for distances), or ``None`` when
    it depends on the data.
``paired``, ``requires_fit``
    Rows of X and Y are the same inputs; the measure fits something (a held-out score).
``estimator``
    A short name of the estimator, carried into :class:`~repscope.results.Score`.
``streaming``
    Whether :class:`~repscope.similarity.StreamingSimilarity` can accumulate it exactly.

Names are matched ignoring case, spaces, ``-`` and ``_`` (``Linear-CKA`` is ``linear_cka``),
and the common names of the literature are aliases (:data:`MEASURE_ALIASES`: ``cka`` is
``linear_cka``, ``kernel_cka`` is ``rbf_cka``, ...), resolved here, in the registry, so every
caller records the registered name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from repscope._validation import check_paired
from repscope.exceptions import RepscopeValueError
from repscope.registry import Registry
from repscope.results import Score

__all__ = [
    "INVARIANCES",
    "MEASURE_ALIASES",
    "MeasureFn",
    "compare",
    "get_measure",
    "list_measures",
    "measure_aliases",
    "measure_info",
    "measures_with",
    "register_measure",
    "resolve_measure",
]

#: The transform classes a measure can declare invariance to.
INVARIANCES = frozenset(
    {"orthogonal", "isotropic_scale", "translation", "permutation", "invertible_linear"}
)

MeasureFn = Callable[..., float]



def _fold(name: str) -> str:
    """``"Linear-CKA"``, ``"linear cka"`` and ``"linear_cka"`` are one name."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


_MEASURES: Registry[MeasureFn] = Registry("measure", fold=_fold)

#: Common names of the literature -> the registered measure they mean.
MEASURE_ALIASES: Mapping[str, str] = {
    "cka": "linear_cka",
    "debiased_cka": "linear_cka_debiased",
    "unbiased_cka": "linear_cka_debiased",
    "kernel_cka": "rbf_cka",
    "gaussian_cka": "rbf_cka",
    "mean_cca": "cca",
    "procrustes_distance": "procrustes",
    "orthogonal_procrustes": "procrustes",
    "shape": "shape_angular",
    "shape_metric": "shape_angular",
    "angular_shape": "shape_angular",
    "rdm": "rsa",
    "r2": "linear_r2",
    "linear_regression": "linear_r2",
    "ridge": "ridge_predictivity",
    "predictivity": "ridge_predictivity",
    "mknn": "mutual_knn",
    "jaccard": "knn_jaccard",
    "projection_weighted_cca": "pwcca",
}


def register_measure(
    name: str,
    *,
    higher_is_better: bool,
    is_metric: bool,
    invariances: set[str] | frozenset[str],
    paired: bool = True,
    requires_fit: bool = False,
    symmetric: bool = True,
    direction: Literal["similarity", "distance"] = "similarity",
    identity: float | None = None,
    estimator: str = "",
    streaming: bool = False,
    defaults: Mapping[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> Callable[[MeasureFn], MeasureFn]:
    """Decorator registering a measure function ``f(X, Y, **opts) -> float`` under ``name``.

    ``defaults`` are keyword options bound when the measure is fetched by name (so one function
    can be registered twice, e.g. the shape metric at ``alpha=1`` and ``alpha=0``).
    ``aliases`` are other names that look it up (listed by ``repscope similarity --list``).

    Raises
    ------
    RepscopeValueError
        Unknown invariance names, or an inconsistent direction / ``higher_is_better``.
    """
    bad = set(invariances) - INVARIANCES
    if bad:
        raise RepscopeValueError(
            f"invariances of measure {name!r} must be among {sorted(INVARIANCES)}; got unknown "
            f"{sorted(bad)}."
        )
    if (direction == "distance") == higher_is_better:
        raise RepscopeValueError(
            f"measure {name!r}: a distance has higher_is_better=False and a similarity "
            f"higher_is_better=True; got direction={direction!r}, higher_is_better="
            f"{higher_is_better}."
        )
    if direction not in ("similarity", "distance"):
        raise RepscopeValueError(
            f"direction of measure {name!r} must be 'similarity' or 'distance'; got {direction!r}."
        )

    def deco(fn: MeasureFn) -> MeasureFn:
        bound = fn
        if defaults:
            opts = dict(defaults)

            def bound(X: Any, Y: Any, **kw: Any) -> float:
                return fn(X, Y, **{**opts, **kw})

            bound.__name__ = f"{fn.__name__}[{name}]"
            bound.__doc__ = fn.__doc__
        _MEASURES.add(
            name,
            bound,
            higher_is_better=higher_is_better,
            is_metric=is_metric,
            invariances=frozenset(invariances),
            paired=paired,
            requires_fit=requires_fit,
            symmetric=symmetric,
            direction=direction,
            identity=identity,
            estimator=estimator,
            streaming=streaming,
            function=fn,
            defaults=dict(defaults or {}),
        )
        for alias in aliases:
            _MEASURES.alias(alias, name)
        return fn

    return deco


def _ensure_loaded() -> None:
    from repscope.similarity._measures import load_all

    load_all()
    known = _MEASURES.aliases()
    for alias, name in MEASURE_ALIASES.items():
        if alias not in known and name in _MEASURES:
            _MEASURES.alias(alias, name)


def resolve_measure(name: str) -> str:
    """The registered measure name that ``name`` (a name, an alias, any case, ``-`` for
    ``_``) stands for.

    Raises
    ------
    UnknownNameError
        For an unknown name; the message lists the known ones and the closest match.

    Examples
    --------
    >>> resolve_measure("cka"), resolve_measure("Kernel-CKA")
    ('linear_cka', 'rbf_cka')
    """
    _ensure_loaded()
    return _MEASURES.canonical(name)


def measure_aliases() -> dict[str, str]:
    """Every alias and the registered measure it stands for, sorted by alias."""
    _ensure_loaded()
    return _MEASURES.aliases()


def get_measure(name: str) -> MeasureFn:
    """The function registered under ``name`` (with its registered default options bound).

    Raises
    ------
    UnknownNameError
        For an unknown name; the message lists the known ones and the closest match.
    """
    _ensure_loaded()
    return _MEASURES.get(name)


def measure_info(name: str) -> Mapping[str, Any]:
    """The metadata registered with ``name`` (see the module docstring)."""
    _ensure_loaded()
    return _MEASURES.meta(name)


def list_measures(**where: Any) -> list[str]:
    """Registered measure names, sorted; keyword filters match metadata (e.g.
    ``list_measures(is_metric=True)``, ``list_measures(direction="distance")``)."""
    _ensure_loaded()
    return _MEASURES.names(**where)


def measures_with(invariance: str) -> list[str]:
    """Names of the measures declared invariant to ``invariance``.

    Raises
    ------
    RepscopeValueError
        If ``invariance`` is not one of :data:`INVARIANCES`.
    """
    if invariance not in INVARIANCES:
        raise RepscopeValueError(
            f"invariance must be one of {sorted(INVARIANCES)}; got {invariance!r}."
        )
    return list_measures(invariances=invariance)


def compare(X: Any, Y: Any, measure: str = "linear_cka", **opts: Any) -> Score:
    """Compute a registered measure and return a :class:`~repscope.results.Score` record.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Representations of the same inputs.
    measure : str
        A name from :func:`list_measures` or an alias (recorded under the registered name).
    **opts
        Options of the measure function.

    Returns
    -------
    Score
        ``value``, ``measure``, ``direction``, ``estimator``, ``n_samples``, ``n_features``
        and ``details`` (the options passed).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 4))
    >>> s = compare(X, 2 * X, "linear_cka")
    >>> round(s.value, 12), s.direction
    (1.0, 'similarity')
    """
    measure = resolve_measure(measure)
    fn = get_measure(measure)
    meta = measure_info(measure)
    X, Y = check_paired(X, Y, min_samples=3)
    value = fn(X, Y, **opts)
    return Score(
        value=float(value),
        measure=measure,
        direction=meta["direction"],
        estimator=meta["estimator"],
        n_samples=int(X.shape[0]),
        n_features=(int(X.shape[1]), int(Y.shape[1])),
        details={**meta["defaults"], **opts},
    )
