"""``repscope extract``: a zoo model's activations on a dataset (or your inputs) into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import check_exists, db_option, progress_option, settings, show_progress


def _inputs_from_file(path: Path) -> Any:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


@click.command()
@click.argument("model")
@click.option("--dataset", default=None, help="A zoo dataset (see `repscope datasets`).")
@click.option("--inputs", "inputs_path", default=None, type=click.Path(),
              help="Your inputs instead: a text file (one text per line) or a .npy array.")
@click.option("--n", "n", default=None, type=int, help="Use the first N samples of the dataset.")
@click.option("--layer", "layers", multiple=True,
              help="Layer (module path; repeatable). Default: the model's blocks. See `repscope layers MODEL`.")
@click.option("--pooling", default=None,
              help="mean, cls, last, tokens (token models); avg or none (spatial maps).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--resolution", default=None, type=int, help="Image resolution for vision models.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="FeatureStore directory (re-running resumes after the last complete chunk).")
@progress_option
@db_option
def extract(model: str, dataset: str | None, inputs_path: str | None, n: int | None,
            layers: tuple[str, ...], pooling: str | None, batch_size: int, resolution: int | None,
            out: str) -> None:
    """Extract activations of a zoo MODEL into a FeatureStore at --out."""
    import time

    from repscope.exceptions import RepscopeValueError
    from repscope.extract import ExtractionResult, extract_to_store
    from repscope.zoo import load_dataset, load_model

    if (dataset is None) == (inputs_path is None):
        raise RepscopeValueError("pass exactly one of --dataset NAME or --inputs FILE.")
    s = settings()
    metadata = None
    if dataset is not None:
        data = load_dataset(dataset, n=n, seed=s.seed)
        inputs: Any = data.inputs
        metadata = {"label": np.asarray(data.labels).tolist(), "id": list(data.ids)}
    else:
        inputs = _inputs_from_file(check_exists(inputs_path or "", "inputs file"))
        if n is not None:
            inputs = inputs[:n]
    kwargs: dict[str, Any] = {"device": s.device} if s.device != "cpu" else {}
    if resolution is not None:
        kwargs["resolution"] = resolution
    loaded = load_model(model, **kwargs)
    t = time.perf_counter()
    extra = {"pooling": pooling} if pooling else {}
    store = extract_to_store(loaded, inputs, out, layers=list(layers) or None,
                             pooling=pooling or "mean", batch_size=batch_size,
                             metadata=metadata, progress=show_progress())
    secs = time.perf_counter() - t
    with s.db() as db, db.run("extract", {"out": out, "layers": store.layers, **extra},
                              model=model, dataset=dataset or str(inputs_path)) as run_id:
        summary = ExtractionResult.from_store(store, secs)
        db.add_many(summary.to_records(model=model, dataset=dataset or str(inputs_path),
                                       run_id=run_id))
    click.echo(f"wrote {store.n_samples} samples x {len(store.layers)} layers to {out}")


COMMANDS = [extract]
