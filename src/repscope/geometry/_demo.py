"""The geometry step of ``repscope demo``: Fisher ratio, coding rate, persistence and
intrinsic dimension at every layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["DEMO_MEASURES", "demo_geometry_step"]

#: Measures of the demo (those registered; ``twonn`` once the dimension module is there).
DEMO_MEASURES = ("fisher_ratio", "coding_rate", "persistence_entropy", "persistence_max_ratio",
                 "twonn")

#: Samples the O(n^2)-time measures (MST, TwoNN) use in the demo (a seeded subsample).
DEMO_PAIRWISE = 500


def demo_geometry_step(ctx: DemoContext) -> list[Record]:
    """Per layer of every model: the Fisher ratio and coding rate (streamed Moments), the H0
    persistence summary and barcode (one MST per layer) and the TwoNN intrinsic dimension;
    the coding-rate table of every layer (rate reduction with its shuffled-label baseline).
    The MST and TwoNN run on a seeded subsample of :data:`DEMO_PAIRWISE` images.

    Parameters
    ----------
    ctx : DemoContext

    Returns
    -------
    list of Record
    """
    from repscope.geometry._layers import geometry_layers
    from repscope.geometry._registry import list_geometry_measures

    known = set(list_geometry_measures())
    measures = [m for m in DEMO_MEASURES if m in known]
    y = np.asarray(ctx.labels)
    records: list[Record] = []
    for model, store in ctx.stores.items():
        res = geometry_layers(store, y, measures, layers=ctx.layers[model], persistence=True,
                              coding_rate=True, max_samples=DEMO_PAIRWISE, seed=ctx.seed)
        params = {"measures": measures, "max_samples": DEMO_PAIRWISE, "seed": ctx.seed}
        records += res.to_records(model=model, params=params, **ctx.record_context())
    return records
