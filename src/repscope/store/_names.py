"""The one error for an unknown layer name, shared by the FeatureStore and every layer source."""

from __future__ import annotations

from collections.abc import Sequence

from repscope.exceptions import UnknownNameError
from repscope.registry import closest_names

__all__ = ["unknown_layer_error"]


def unknown_layer_error(
    layer: object, known: Sequence[str], where: str, *, empty: str = "(none)"
) -> UnknownNameError:
    """``unknown layer 'x' in <where>. Did you mean 'y'? Known layers: a, b.``

    Parameters
    ----------
    layer : object
        The name asked for.
    known : sequence of str
        The layers that exist, in their order.
    where : str
        What was searched (``"the FeatureStore at /path"``, a file path, an argument name).
    empty : str, default="(none)"
        The listing when ``known`` is empty.
    """
    known = tuple(known)
    close = closest_names(str(layer), known)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else empty
    return UnknownNameError(
        f"unknown layer {layer!r} in {where}.{hint} Known layers: {listing}.",
        name=str(layer),
        known=known,
    )
