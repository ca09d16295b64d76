"""The demo's similarity step: layer x layer linear CKA between the two vision models."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_similarity_step"]


def demo_similarity_step(ctx: DemoContext) -> list[Record]:
    """One ``similarity_matrix`` record: biased linear CKA of every layer of the first model
    against every layer of the second, streamed from their stores by
    :func:`~repscope.similarity.compare_layers` (the same path as ``repscope similarity``).
    Nothing when the demo has fewer than two models."""
    from repscope.similarity import compare_layers

    models = list(ctx.stores)
    if len(models) < 2:
        ctx.log("[demo] similarity needs two models; skipped")
        return []
    a, b = models[0], models[1]
    lm = compare_layers(ctx.stores[a], ctx.stores[b], "linear_cka",
                        layers_a=ctx.layers[a], layers_b=ctx.layers[b])
    return lm.to_records(model_a=a, model_b=b, **ctx.record_context())
