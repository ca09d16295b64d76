"""Geometry and separability of representations: how separable, compressed, uniform and
shortcut-prone a layer is, with and without labels.

Every per-layer scalar measure is registered with its direction metadata
(:func:`list_geometry_measures`, :func:`geometry_info`); measures built on
:class:`~repscope.stats.Moments` stream from a store and all-reduce, the O(n^2)-time ones run
in O(n) memory and say so.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.geometry._registry import (
        geometry_info,
        get_geometry_measure,
        list_geometry_measures,
        register_geometry_measure,
    )

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "geometry_info",
    "get_geometry_measure",
    "list_geometry_measures",
    "register_geometry_measure",
]
