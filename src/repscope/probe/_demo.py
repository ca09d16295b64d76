"""The probing step of ``repscope demo``: per-layer probes and one learning curve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["demo_probe_step"]


def demo_probe_step(
    stores: dict[str, Any],
    layers_of: dict[str, list[str]],
    labels: np.ndarray,
    db: Any,
    run_id: str,
    dataset: str,
    seed: int,
    log: Callable[[str], None],
) -> None:
    """Probe every layer of every model and draw a learning curve at the best layer.

    Per layer: the closed-form ridge probe (every alpha from one eigendecomposition, GCV
    selection) and the DINO kNN probe, both under one stratified 3-fold split; records
    ``probe`` (accuracy + 95% interval). At the best ridge layer over all models: learning
    curves of Gaussian naive Bayes and the ridge probe (analysis ``probe_learning_curve``), the
    generative-vs-discriminative contrast, and a few-shot curve (``probe_few_shot``).

    Parameters
    ----------
    stores : dict of model name to FeatureStore
    layers_of : dict of model name to the layers to probe
    labels : ndarray of shape (n_samples,)
    db : ResultsDB
    run_id : str
    dataset : str
    seed : int
    log : callable
        Progress messages.
    """
    from repscope.db import Record
    from repscope.probe._generative import GaussianNBProbe
    from repscope.probe._knn import KNNProbe
    from repscope.probe._layerwise import probe_layers
    from repscope.probe._protocols import KFold, few_shot, learning_curve
    from repscope.probe._ridge import RidgeProbe

    y = np.asarray(labels)
    protocol = KFold(3, seed)
    probes = {"ridge": RidgeProbe(random_state=seed), "knn": KNNProbe(k=10)}
    log("[demo] per-layer probes (closed-form ridge, kNN) with 95% intervals")
    best: tuple[float, str, str] = (-1.0, "", "")
    records = []
    for model, store in stores.items():
        layers = layers_of[model]
        for name, probe in probes.items():
            res = probe_layers(store, y, probe=probe, protocol=protocol, layers=layers)
            params = {"probe": name, "n_folds": protocol.k, "seed": seed}
            for i, layer in enumerate(res.layers):
                records.append(Record("probe", {
                    "accuracy": res.accuracy[i], "ci_low": res.ci_low[i],
                    "ci_high": res.ci_high[i], "accuracy_std": res.std[i],
                    "chance": res.chance, "n_features": res.n_features[i]},
                    model=model, dataset=dataset, layer=layer, params=params, run_id=run_id))
            if name == "ridge":
                i = int(np.nanargmax(res.accuracy))
                if res.accuracy[i] > best[0]:
                    best = (res.accuracy[i], model, res.layers[i])
    db.add_many(records)
    _, model, layer = best
    log(f"[demo] learning curves and few-shot accuracy at {model} {layer}")
    X = np.asarray(stores[model].read(layer), dtype=np.float64).reshape(y.size, -1)
    n_classes = len(np.unique(y))
    pool = round(0.75 * y.size)
    sizes = sorted({int(v) for v in np.geomspace(2 * n_classes, pool, 7).round()})
    for name, probe in (("nb", GaussianNBProbe()), ("ridge", RidgeProbe(random_state=seed))):
        lc = learning_curve(probe, X, y, sizes, n_repeats=3, seed=seed)
        db.add(Record("probe_learning_curve", {
            "sizes": list(lc.sizes), "mean": list(lc.mean), "ci_low": list(lc.ci_low),
            "ci_high": list(lc.ci_high), "reached_at": lc.reached_at,
            "asymptote_error": lc.asymptote_error, "tol": lc.tol},
            model=model, dataset=dataset, layer=layer,
            params={"probe": name, "n_repeats": 3, "seed": seed}, run_id=run_id))
    # shots the smallest class can supply once 20% is held out for testing (small demos)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    shots = tuple(s for s in (1, 2, 5, 10) if s <= int(smallest * 0.8) - 1) or (1,)
    fs = few_shot(RidgeProbe(random_state=seed), X, y, shots=shots, n_tries=5, seed=seed)
    db.add(Record("probe_few_shot", {
        "shots": list(fs.shots), "mean": list(fs.mean), "std": list(fs.std),
        "ci_low": list(fs.ci_low), "ci_high": list(fs.ci_high), "chance": fs.chance,
        "n_test": fs.n_test}, model=model, dataset=dataset, layer=layer,
        params={"probe": "ridge", "n_tries": 5, "seed": seed}, run_id=run_id))
