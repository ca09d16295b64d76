"""``repscope extract``: a zoo model's activations on a dataset (or your inputs) into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import (
    check_exists,
    db_option,
    progress_option,
    rank_aware,
    settings,
    show_progress,
)


def _inputs_from_file(path: Path) -> Any:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def _layers_text(k: int) -> str:
    return f"{k} layer" if k == 1 else f"{k} layers"


def _existing(out: str) -> Any:
    """The FeatureStore already at ``--out`` (None when there is none yet)."""
    from repscope.store import FeatureStore
    from repscope.store._manifest import MANIFEST

    path = Path(out)
    if not (path / MANIFEST).is_file():
        return None
    return FeatureStore.open(path)


def _check_same_run(store: Any, out: str, model: str, names: list[str], pooling: str,
                    poolings: dict[str, str], n: int | None, ids: list[str] | None) -> None:
    """Refuse, naming the CLI options, a store at --out that another run made: another
    model, layers, pooling or inputs (a resume would mix two extractions)."""
    from repscope.exceptions import RepscopeValueError
    from repscope.extract._extract import ATTRS_KEY

    if store.n_samples == 0:
        return
    again = "pass a new --out"
    if store.model_id != model:
        raise RepscopeValueError(
            f"--out {out} holds features of model {store.model_id!r}, not {model!r}; {again}."
        )
    if store.layers != names:
        raise RepscopeValueError(
            f"--out {out} was extracted with layers {', '.join(store.layers)}, not "
            f"{', '.join(names)}; pass the same --layer options to resume it, or {again}."
        )
    made = store.attrs.get(ATTRS_KEY)
    before = dict(made.get("pooling", {})) if isinstance(made, dict) else {}
    if before and before != poolings:
        old = ", ".join(sorted(set(before.values())))
        raise RepscopeValueError(
            f"--out {out} was extracted with --pooling {old}, not {pooling}; pass the same "
            f"--pooling to resume it, or {again}."
        )
    if n is not None and store.n_samples > n:
        raise RepscopeValueError(
            f"--out {out} already holds {store.n_samples} samples but the inputs have {n}; it "
            f"was made from other inputs (another --n or --dataset?); {again}."
        )
    if ids is not None and "id" in store.metadata_columns:
        held = [str(i) for i in store.metadata("id")["id"]]
        if held != ids[: len(held)]:
            raise RepscopeValueError(
                f"--out {out} holds other samples than these inputs (their ids differ: another "
                f"--n, --dataset or seed?); {again}."
            )


@click.command()
@rank_aware
@click.argument("model")
@click.option("--dataset", default=None, help="A zoo dataset (see `repscope datasets`).")
@click.option("--inputs", "inputs_path", default=None, type=click.Path(),
              help="Your inputs instead: a text file (one text per line) or a .npy array.")
@click.option("--n", "--n-samples", "n", default=None, type=int,
              help="Use the first N samples of the dataset (under torchrun write --n-samples: "
                   "torchrun takes --n for one of its own options).")
@click.option("--layer", "layers", multiple=True,
              help="Layer name (repeatable). Default: the model's blocks. See `repscope layers "
                   "MODEL`.")
@click.option("--pooling", default=None,
              help="mean, cls, last, tokens (token models); avg or none (spatial maps).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--chunk-size", default=None, type=int,
              help="Samples per chunk: the unit of resuming and, under torchrun, of the split "
                   "across ranks (each rank takes a contiguous run of whole chunks). Default: "
                   "the multiple of --batch-size closest to 1024.")
@click.option("--resolution", default=None, type=int, help="Image resolution for vision models.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="FeatureStore directory (re-running resumes after the last complete chunk; "
                   "a complete store is left as it is).")
@progress_option
@db_option
def extract(model: str, dataset: str | None, inputs_path: str | None, n: int | None,
            layers: tuple[str, ...], pooling: str | None, batch_size: int, chunk_size: int | None,
            resolution: int | None, out: str) -> None:
    """Extract activations of a zoo MODEL into a FeatureStore at --out.

    Running it again resumes an interrupted extraction (and says how many samples it added);
    on a complete store it does nothing and says so."""
    import time

    from repscope.exceptions import RepscopeValueError
    from repscope.extract import ExtractionResult, extract_to_store, make_adapter
    from repscope.extract._pooling import resolve_pooling
    from repscope.zoo import load_dataset, load_model

    if (dataset is None) == (inputs_path is None):
        raise RepscopeValueError("pass exactly one of --dataset NAME or --inputs FILE.")
    s = settings()
    metadata = None
    ids: list[str] | None = None
    if dataset is not None:
        data = load_dataset(dataset, n=n, seed=s.seed)
        inputs: Any = data.inputs
        ids = [str(i) for i in data.ids]
        metadata = {"label": np.asarray(data.labels).tolist(), "id": list(data.ids)}
    else:
        inputs = _inputs_from_file(check_exists(inputs_path or "", "inputs file"))
        if n is not None:
            inputs = inputs[:n]
    kwargs: dict[str, Any] = {"device": s.device} if s.device != "cpu" else {}
    if resolution is not None:
        kwargs["resolution"] = resolution
    loaded = load_model(model, **kwargs)
    mode = pooling or "mean"
    existing = _existing(out)
    before = 0
    if existing is not None:
        names = make_adapter(loaded).resolve_layers(list(layers) or None)
        _check_same_run(existing, out, model, names, mode, resolve_pooling(mode, names),
                        len(inputs), ids)
        before = existing.n_samples
        if before == len(inputs):
            click.echo(f"{out}: already complete, {before} samples x "
                       f"{_layers_text(len(existing.layers))}; nothing to do (use a new --out to "
                       "extract again)")
            return
    t = time.perf_counter()
    extra = {"pooling": pooling} if pooling else {}
    store = extract_to_store(loaded, inputs, out, layers=list(layers) or None,
                             pooling=mode, batch_size=batch_size, chunk_size=chunk_size,
                             metadata=metadata, progress=show_progress(),
                             dataset=dataset or str(inputs_path))
    secs = time.perf_counter() - t
    with s.db() as db, db.run("extract", {"out": out, "layers": store.layers, **extra},
                              model=model, dataset=dataset or str(inputs_path)) as run_id:
        summary = ExtractionResult.from_store(store, secs)
        db.add_many(summary.to_records(model=model, dataset=dataset or str(inputs_path),
                                       run_id=run_id))
    added = store.n_samples - before
    shape = _layers_text(len(store.layers))
    if before:
        click.echo(f"resumed {out}: added {added} samples to the {before} already there "
                   f"({store.n_samples} samples x {shape})")
    else:
        click.echo(f"wrote {store.n_samples} samples x {shape} to {out}")


COMMANDS = [extract]
