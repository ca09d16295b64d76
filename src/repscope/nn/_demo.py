"""The ``repscope.nn`` step of ``repscope demo``: angular margins of the ArcFace probe."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_margins_step"]


def demo_margins_step(ctx: DemoContext) -> list[Record]:
    """ArcFace vs softmax probe on the last layer of the first model: held-out accuracy and
    angular margins (analysis ``probe_margins``)."""
    from repscope._threads import single_thread
    from repscope.db import Record
    from repscope.probe._margin import compare_margins

    model = next(iter(ctx.stores))
    layer = ctx.layers[model][-1]
    y = np.asarray(ctx.labels)
    X = np.asarray(ctx.stores[model].read(layer), dtype=np.float64).reshape(y.size, -1)
    with single_thread():
        out = compare_margins(X, y, "arcface", test_size=0.3, seed=ctx.seed)
    heads = out["heads"]
    ctx.log(f"[demo] {model} {layer}: ArcFace mean angular margin "
            f"{heads['arcface']['margin_mean']:.1f} deg (accuracy "
            f"{heads['arcface']['accuracy']:.3f}) vs softmax "
            f"{heads['softmax']['margin_mean']:.1f} deg ({heads['softmax']['accuracy']:.3f})")
    return [Record("probe_margins", out, model=model, dataset=ctx.dataset, layer=layer,
                   params={"probe": "arcface", "test_size": 0.3, "seed": ctx.seed},
                   run_id=ctx.run_id)]
