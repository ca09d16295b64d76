"""The geometry-measure registry: every per-layer geometry measure with its direction metadata.

A registered measure is ``f(X, y=None, **opts) -> float`` on one layer's features ``X`` of shape
``(n_samples, n_features)`` (and labels ``y`` when it needs them). The metadata is what the CLI,
the report and the per-layer driver read:

``higher_is``
    What a larger value means, in a few words ("more separable", "more compressed",
    "more uniform", "higher dimension", ...).
``higher_is_better``
    True/False where "better" is conventional (separability: larger is better), ``None`` where
    it is a descriptive quantity (intrinsic dimension).
``labels``
    ``"required"``, ``"optional"`` or ``"none"`` (label-free).
``cost``
    ``"moments"`` (streams from :class:`~repscope.stats.Moments`, all-reduces, O(d^2) memory),
    ``"n log n"`` or ``"n^2"`` (time; always O(n) memory: such measures say so and refuse
    ``n > max_samples`` with a message suggesting a subsample).
``range``
    ``(low, high)`` of the value where known (``None`` for an unbounded end).
``reference``
    The paper or library the formula follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from repscope.exceptions import RepscopeValueError
from repscope.registry import Registry

__all__ = [
    "GeometryFn",
    "geometry_info",
    "get_geometry_measure",
    "list_geometry_measures",
    "register_geometry_measure",
]

GeometryFn = Callable[..., float]

_MEASURES: Registry[GeometryFn] = Registry("geometry measure")

_LOADED = False


def register_geometry_measure(
    name: str,
    *,
    higher_is: str,
    higher_is_better: bool | None,
    labels: Literal["required", "optional", "none"],
    cost: Literal["moments", "n log n", "n^2"],
    range: tuple[float | None, float | None] = (None, None),
    reference: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[GeometryFn], GeometryFn]:
    """Decorator registering ``f(X, y=None, **opts) -> float`` under ``name``.

    Raises
    ------
    RepscopeValueError
        An unknown ``labels`` or ``cost`` value.
    """
    if labels not in ("required", "optional", "none"):
        raise RepscopeValueError(
            f"labels of geometry measure {name!r} must be 'required', 'optional' or 'none'; "
            f"got {labels!r}.")
    if cost not in ("moments", "n log n", "n^2"):
        raise RepscopeValueError(
            f"cost of geometry measure {name!r} must be 'moments', 'n log n' or 'n^2'; "
            f"got {cost!r}.")

    def deco(fn: GeometryFn) -> GeometryFn:
        bound = fn
        if defaults:
            opts = dict(defaults)

            def bound(X: Any, y: Any = None, **kw: Any) -> float:
                return fn(X, y, **{**opts, **kw})

            bound.__name__ = f"{fn.__name__}[{name}]"
            bound.__doc__ = fn.__doc__
        _MEASURES.add(name, bound, higher_is=higher_is, higher_is_better=higher_is_better,
                      labels=labels, cost=cost, range=range, reference=reference,
                      function=fn, defaults=dict(defaults or {}))
        return fn

    return deco


def _ensure_loaded() -> None:
    """Import every module of this package that registers measures (found by reading the
    sources, so a new module registers itself by using the decorator; no list to edit)."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    from pathlib import Path

    here = Path(__file__).parent
    for path in sorted(here.glob("*.py")):
        if path.stem != "_registry" and "@register_geometry_measure(" in path.read_text():
            importlib.import_module(f"{__package__}.{path.stem}")
    _LOADED = True


def get_geometry_measure(name: str) -> GeometryFn:
    """The function registered under ``name`` (with its default options bound)."""
    _ensure_loaded()
    return _MEASURES.get(name)


def geometry_info(name: str) -> Mapping[str, Any]:
    """The metadata registered with ``name`` (see the module docstring)."""
    _ensure_loaded()
    return _MEASURES.meta(name)


def list_geometry_measures(**where: Any) -> list[str]:
    """Registered names, sorted; keyword filters match metadata (``labels="none"``)."""
    _ensure_loaded()
    return _MEASURES.names(**where)
