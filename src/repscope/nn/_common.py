"""Checks shared by the ``repscope.nn`` layers."""

from __future__ import annotations

from torch import Tensor

from repscope.exceptions import RepscopeValueError

__all__ = ["check_last_axis"]


def check_last_axis(x: Tensor, in_features: int, owner: str) -> None:
    """Refuse an input whose last axis is not ``in_features`` long, naming the layer."""
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise RepscopeValueError(
            f"{owner} expected an input whose last axis has in_features={in_features} "
            f"entries; got shape {tuple(x.shape)}.")
