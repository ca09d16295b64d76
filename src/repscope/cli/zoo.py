"""``repscope models``, ``repscope datasets``, ``repscope layers``: the offline zoo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from repscope.cli._common import echo_json, json_option, print_table

#: Longest "why not" shown in a table cell; longer reasons are printed once below the table.
_CELL = 70


def _status(available: bool, missing: str) -> str:
    """One short table cell: "yes", or "no: " and the first clause of why not."""
    if available:
        return "yes"
    first = missing.split(";", 1)[0].strip()
    return f"no: {first}" if first and len(first) <= _CELL else "no: see below"


def _print_missing(infos: Sequence[Any]) -> None:
    """The full reason and fix of each unavailable entry, once, below its table."""
    for i in infos:
        if not i.available and i.missing:
            click.echo(f"{i.name}: {i.missing}")


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the offline models repscope can load, and whether each is installed."""
    from repscope.zoo import list_models

    infos = list_models()
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    rows = [(i.name, i.kind, _status(i.available, i.missing), i.description) for i in infos]
    print_table(rows, ["model", "kind", "available", "description"], title="Models")
    _print_missing(infos)


@click.command()
@json_option
def datasets(as_json: bool) -> None:
    """List the offline datasets and whether their files are present."""
    from repscope.zoo import list_datasets

    infos = list_datasets()
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    rows = [(i.name, i.modality, _status(i.available, i.missing), i.description) for i in infos]
    print_table(rows, ["dataset", "modality", "available", "description"], title="Datasets")
    _print_missing(infos)


def _layer_shapes(loaded: Any, names: list[str]) -> dict[str, list[Any]]:
    """Per-sample shape of each layer from one forward pass on one small input (a sentence
    or a blank image); a token axis is shown as "tokens"."""
    import numpy as np

    from repscope.extract import extract
    from repscope.store import RaggedArray

    if loaded.info.modality == "text":
        probe: Any = ["A short sentence."]
    else:
        probe = np.zeros((1, 32, 32), np.uint8)  # resized by the model's preprocess
    out = extract(loaded, probe, names, "none", batch_size=1, progress=False)
    shapes: dict[str, list[Any]] = {}
    for name, arr in out.items():
        if isinstance(arr, RaggedArray):
            shapes[name] = ["tokens", *arr.sample(0).shape[1:]]
        else:
            shapes[name] = list(arr.shape[1:])
    return shapes


def _shape_text(shape: list[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@click.command()
@click.argument("model")
@click.option("--all", "all_", is_flag=True,
              help="Every name extract accepts (module paths or graph tensors), not only the "
                   "meaningful layers.")
@json_option
def layers(model: str, all_: bool, as_json: bool) -> None:
    """List the meaningful layers of a zoo MODEL (embeddings, blocks, pooled output) with
    their per-sample shapes; these names work in `extract --layer` and every analysis."""
    from repscope.extract import list_layers
    from repscope.zoo import load_model

    loaded = load_model(model)
    if all_:
        names = list_layers(loaded)
        if as_json:
            echo_json(names)
            return
        for n in names:
            click.echo(n)
        return
    info = loaded.info
    meaningful = list(dict.fromkeys([*info.layers, *info.extra_layers]))
    shapes = _layer_shapes(loaded, meaningful)
    if as_json:
        echo_json([{"layer": n, "block": n in info.layers, "shape": shapes[n]}
                   for n in meaningful])
        return
    resolution = info.extra.get("resolution") or (info.input_size if info.modality == "image"
                                                  else None)
    at = f" at {resolution} px" if resolution else ""
    rows = [(n, _shape_text(shapes[n])) for n in meaningful]
    extras = [n for n in meaningful if n not in info.layers]
    then = f", then {', '.join(extras)}" if extras else ""
    print_table(rows, ["layer", f"shape per sample{at}"],
                title=f"{model}: {len(info.layers)} blocks (extract's default){then}")
    click.echo(f"Every module or graph tensor: repscope layers {model} --all")


COMMANDS = [models, datasets, layers]
