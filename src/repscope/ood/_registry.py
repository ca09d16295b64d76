"""The registry of OOD detectors and feature transforms: names, papers, what each needs.

Detectors (:func:`get_detector`)
    ``msp``, ``maxlogit``, ``energy``, ``entropy``, ``gen`` (logit-based: ``needs`` holds
    ``"logits"``; logits are passed as ``logits=`` or computed from ``head=``, a fitted linear
    probe, a pair ``(W, b)`` or ``"probe"`` to fit a :class:`~repscope.probe.LinearProbe` on
    the labelled training features); ``mahalanobis``, ``relative_mahalanobis``,
    ``multilayer_mahalanobis``, ``gmm`` (class statistics: ``"labels"``); ``vim`` (``"head"``:
    the head's weights, not just its logits); ``knn`` (nothing beyond the features;
    ``metric="whitened"`` also needs labels).

Feature transforms (:func:`get_transform`)
    ``react``, ``ash``, ``scale`` rescale or clip post-ReLU features before a linear head; they
    compose with the logit-based detectors through their ``feature_transform=`` parameter, e.g.
    ``get_detector("energy", head=probe, feature_transform="react")`` or
    ``feature_transform=ReAct(percentile=95)``. They need non-negative features and refuse signed
    ones with :class:`~repscope.ood.SignedFeaturesError`.

Metadata of every detector (:func:`detector_info`): ``paper``, ``needs`` (a frozenset of
``"labels"``, ``"logits"``, ``"head"``, ``"nonnegative"``), ``level`` (``"class"``: scores
from class statistics or a decision boundary; ``"instance"``: from individual training
samples), ``transforms`` (whether ``feature_transform=`` is accepted) and a one-line ``summary``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repscope.registry import Registry

__all__ = [
    "DetectorInfo",
    "detector_info",
    "get_detector",
    "get_transform",
    "list_detectors",
    "list_transforms",
    "register_detector",
    "register_transform",
]

_MODULES = (
    "repscope.ood._logit",
    "repscope.ood._mahalanobis",
    "repscope.ood._vim",
    "repscope.ood._knn",
    "repscope.ood._gmm",
    "repscope.ood._transforms",
)

_NEEDS = frozenset({"labels", "logits", "head", "nonnegative"})


def _fold(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


DETECTORS: Registry[type] = Registry("OOD detector", fold=_fold)
TRANSFORMS: Registry[type] = Registry("feature transform", fold=_fold)


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


@dataclass(frozen=True)
class DetectorInfo:
    """What :func:`detector_info` says about one registered detector."""

    name: str
    cls: type
    paper: str
    needs: frozenset[str]
    level: str
    transforms: bool
    summary: str


def register_detector(
    name: str,
    *,
    paper: str,
    needs: frozenset[str] | set[str] = frozenset(),
    level: str = "class",
    transforms: bool = False,
    summary: str = "",
) -> Callable[[type], type]:
    """Class decorator registering an :class:`~repscope.ood.OODDetector` under ``name``.

    Sets the class's ``detector_name`` and ``needs`` from the arguments, so the class and the
    registry say the same thing.
    """
    needs = frozenset(needs)
    unknown = needs - _NEEDS
    if unknown:
        from repscope.exceptions import RepscopeValueError

        raise RepscopeValueError(
            f"needs must be a subset of {sorted(_NEEDS)}; got unknown {sorted(unknown)}."
        )

    def deco(cls: type) -> type:
        cls.detector_name = name  # type: ignore[attr-defined]
        cls.needs = needs  # type: ignore[attr-defined]
        DETECTORS.add(name, cls, paper=paper, needs=needs, level=level,
                      transforms=transforms, summary=summary)
        return cls

    return deco


def register_transform(name: str, *, paper: str, summary: str = "") -> Callable[[type], type]:
    """Class decorator registering a feature transform (ReAct, ASH, SCALE) under ``name``."""

    def deco(cls: type) -> type:
        cls.transform_name = name  # type: ignore[attr-defined]
        TRANSFORMS.add(name, cls, paper=paper, summary=summary)
        return cls

    return deco


def get_detector(name: str, **params: Any) -> Any:
    """A new, unfitted detector registered as ``name``, constructed with ``params``.

    Raises
    ------
    UnknownNameError
        No such detector; the message lists the known names and the closest one.

    Examples
    --------
    >>> get_detector("knn", k=5).k
    5
    """
    _load()
    return DETECTORS.get(name)(**params)


def list_detectors(**where: Any) -> list[str]:
    """Registered detector names, sorted; keyword filters match the metadata, e.g.
    ``list_detectors(level="instance")`` or ``list_detectors(needs="logits")`` (membership).

    Examples
    --------
    >>> list_detectors(needs="head")
    ['vim']
    """
    _load()
    return DETECTORS.names(**where)


def detector_info(name: str) -> DetectorInfo:
    """The registered metadata of detector ``name`` (see the module docstring)."""
    _load()
    canonical = DETECTORS.canonical(name)
    meta = DETECTORS.meta(canonical)
    return DetectorInfo(
        name=canonical, cls=DETECTORS.get(canonical), paper=meta["paper"],
        needs=meta["needs"], level=meta["level"], transforms=meta["transforms"],
        summary=meta["summary"],
    )


def get_transform(name: str, **params: Any) -> Any:
    """A new, unfitted feature transform (``"react"``, ``"ash"``, ``"scale"``)."""
    _load()
    return TRANSFORMS.get(name)(**params)


def list_transforms() -> list[str]:
    """Registered feature-transform names, sorted."""
    _load()
    return TRANSFORMS.names()
