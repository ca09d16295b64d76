"""The probing step of ``repscope demo``: per-layer probes and one learning curve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_probe_step"]


def demo_probe_step(ctx: DemoContext) -> list[Record]:
    """Probe every layer of every model and draw a learning curve at the best layer.

    Per layer: the closed-form ridge probe (every alpha from one eigendecomposition, GCV
    selection) and the DINO kNN probe, both under one stratified 3-fold split (analysis
    ``probe``: accuracy + 95% interval). At the best ridge layer over all models: learning
    curves of Gaussian naive Bayes and the ridge probe (``probe_learning_curve``), the
    generative-vs-discriminative contrast, and a few-shot curve (``probe_few_shot``).

    Parameters
    ----------
    ctx : DemoContext
        The demo's stores, layers, labels, seed and log.

    Returns
    -------
    list of Record
    """
    from repscope.probe._generative import GaussianNBProbe
    from repscope.probe._knn import KNNProbe
    from repscope.probe._layerwise import probe_layers
    from repscope.probe._protocols import KFold, few_shot, learning_curve
    from repscope.probe._ridge import RidgeProbe

    y, seed, rc = np.asarray(ctx.labels), ctx.seed, ctx.record_context()
    protocol = KFold(3, seed)
    probes = {"ridge": RidgeProbe(random_state=seed), "knn": KNNProbe(k=10)}
    best: tuple[float, str, str] = (-1.0, "", "")
    records: list[Record] = []
    for model, store in ctx.stores.items():
        layers = ctx.layers[model]
        for name, probe in probes.items():
            res = probe_layers(store, y, probe=probe, protocol=protocol, layers=layers)
            params = {"probe": name, "n_folds": protocol.k, "seed": seed}
            records += res.to_records(model=model, params=params, **rc)
            if name == "ridge":
                i = int(np.nanargmax(res.accuracy))
                if res.accuracy[i] > best[0]:
                    best = (res.accuracy[i], model, res.layers[i])
    _, model, layer = best
    ctx.log(f"[demo] learning curves and few-shot accuracy at {model} {layer}")
    X = np.asarray(ctx.stores[model].read(layer), dtype=np.float64).reshape(y.size, -1)
    n_classes = len(np.unique(y))
    pool = round(0.75 * y.size)
    sizes = sorted({int(v) for v in np.geomspace(2 * n_classes, pool, 7).round()})
    for name, probe in (("nb", GaussianNBProbe()), ("ridge", RidgeProbe(random_state=seed))):
        lc = learning_curve(probe, X, y, sizes, n_repeats=3, seed=seed)
        records += lc.to_records(model=model, layer=layer,
                                 params={"probe": name, "n_repeats": 3, "seed": seed}, **rc)
    # shots the smallest class can supply once 20% is held out for testing (small demos)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    shots = tuple(s for s in (1, 2, 5, 10) if s <= int(smallest * 0.8) - 1) or (1,)
    fs = few_shot(RidgeProbe(random_state=seed), X, y, shots=shots, n_tries=5, seed=seed)
    records += fs.to_records(model=model, layer=layer,
                             params={"probe": "ridge", "n_tries": 5, "seed": seed}, **rc)
    return records
