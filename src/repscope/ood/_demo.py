"""The OOD step of ``repscope demo``: digits 0-4 as ID, 5-9 as OOD, on the demo's features."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["DEMO_DETECTORS", "DEMO_LAYERS", "demo_ood_step"]

#: Detectors the demo runs: boundary-based (on a linear probe), class statistics, instances.
DEMO_DETECTORS = ("msp", "energy", "maxlogit", "mahalanobis", "knn")

#: Layers the demo evaluates: evenly spaced over the depth, the last always included.
DEMO_LAYERS = 5


def demo_ood_step(ctx: DemoContext) -> list[Record]:
    """Fit OOD detectors on digits 0-4 of every layer of the first model and score held-out
    digits 0-4 against digits 5-9 ("near" OOD: same kind of image, unseen classes).

    Uses the first model's store (the demo's Lite0 features), :data:`DEMO_LAYERS` layers
    spread over its depth (the last included), the registered detectors of
    :data:`DEMO_DETECTORS` that exist, and records analyses ``ood`` and ``ood_diagnostics``.

    Parameters
    ----------
    ctx : DemoContext

    Returns
    -------
    list of Record
    """
    from repscope.ood._evaluate import evaluate_detectors
    from repscope.ood._registry import list_detectors

    y = np.asarray(ctx.labels)
    model = next(iter(ctx.stores))
    store, every = ctx.stores[model], ctx.layers[model]
    pick = np.unique(np.linspace(0, len(every) - 1, min(DEMO_LAYERS, len(every))).round())
    layers = [every[int(i)] for i in pick]
    classes = np.unique(y)
    id_classes = classes[: max(1, classes.size // 2)]
    is_id = np.isin(y, id_classes)
    feats = {layer: np.asarray(store.read(layer), dtype=np.float32).reshape(y.size, -1)
             for layer in layers}
    known = set(list_detectors())
    dets = [d for d in DEMO_DETECTORS if d in known]
    ctx.log(f"[demo] OOD on {model}: classes {id_classes.tolist()} as ID, the rest as OOD, "
            f"{len(dets)} detectors x {len(layers)} layers")
    res = evaluate_detectors({k: v[is_id] for k, v in feats.items()},
                             {k: v[~is_id] for k, v in feats.items()}, labels=y[is_id],
                             detectors=dets, seed=ctx.seed, folds=3)
    split = f"ID classes {id_classes.min()}-{id_classes.max()}"
    return res.all_records(model=model, params={"seed": ctx.seed, "split": split, "tpr": 0.95,
                                               "positive": "ood"}, **ctx.record_context())
