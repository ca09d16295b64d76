"""The demo's spectra step: the PCA spectrum and effective rank of every extracted layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_spectra_step"]


def demo_spectra_step(ctx: DemoContext) -> list[Record]:
    """One ``pca_spectrum`` record per layer of every model, from Moments streamed over the
    store (memory O(batch + d^2))."""
    from repscope.stats import Moments, pca_spectrum

    records: list[Record] = []
    for model, store in ctx.stores.items():
        for layer in ctx.layers[model]:
            spec = pca_spectrum(Moments.from_store(store, layer))
            records += spec.to_records(model=model, layer=layer, **ctx.record_context())
    return records
