"""``repscope analyze ...``: analyses on features from disk (.npy, .safetensors, a FeatureStore).

Every command records its results in the results database (``--db``) under one run and prints
them; ``repscope report`` renders them.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    layers_option,
    model_name,
    print_table,
    rank_aware,
    settings,
)


@click.group()
def analyze() -> None:
    """Analyses on features you already have (.npy, .safetensors or a FeatureStore)."""


def _retired(name: str, replacement: str) -> click.Command:
    """A command that was retired: it names what replaces it in one line (exit code 1)."""

    @click.command(name=name, hidden=True, context_settings={
        "ignore_unknown_options": True, "allow_extra_args": True})
    def retired() -> None:
        raise click.ClickException(
            f"'repscope analyze {name}' was retired; use: {replacement}")

    retired.help = f"Retired: use {replacement}."
    return retired


@analyze.command()
@rank_aware
@features_argument()
@layers_option()
@dataset_option
@json_option
def spectrum(features: str, layers: tuple[str, ...], dataset: str, as_json: bool) -> None:
    """PCA spectrum and effective rank of each layer of FEATURES.

    Streamed from the file in row batches (the d x d covariance in float64); under torchrun
    each rank reads its share of the rows and the moments are all-reduced."""
    from repscope.distributed import context
    from repscope.stats import layer_spectrum
    from repscope.store import open_layers

    path = check_exists(features, "features")
    src = open_layers(path, layers or None)
    model = model_name(path)
    if src.n_samples == 0 and src.layers:
        from repscope.exceptions import RepscopeValueError

        raise RepscopeValueError(
            f"features in {path} have no samples (0 rows) in layer(s) {', '.join(src.layers)}; "
            "a spectrum needs at least one input. Check that the file holds the features."
        )
    # every layer is analysed (and every rank's moments added up) before the run opens, so
    # bad input, or a rank that stops, records nothing
    dist = context()
    spectra = {layer: layer_spectrum(src, layer, dist=dist) for layer in src.layers}
    out = []
    with settings().db() as db, db.run("analyze spectrum", {"features": str(path)}, model=model,
                                       dataset=dataset) as run_id:
        for layer, s in spectra.items():
            db.add_many(s.to_records(model=model, dataset=dataset, layer=layer, run_id=run_id))
            out.append({"layer": layer, "effective_rank": s.effective_rank,
                        "participation_ratio": s.participation_ratio,
                        "n_components_90": s.n_components_90})
    if as_json:
        echo_json(out)
    else:
        print_table([(o["layer"], o["effective_rank"], o["participation_ratio"], o["n_components_90"])
                     for o in out], ["layer", "effective rank", "participation ratio", "PCs for 90%"],
                    title=f"PCA spectrum: {model}")


@analyze.command(name="import")
@click.argument("arrays", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="FeatureStore directory to create.")
@click.option("--model-id", default="", help="Name of the model the features came from.")
@click.option("--labels", default=None, help="Labels (.npy or text file) stored as metadata 'label'.")
def import_(arrays: tuple[str, ...], out: str, model_id: str, labels: str | None) -> None:
    """Copy .npy/.safetensors ARRAYS (one layer each, or one per tensor) into a FeatureStore."""
    from repscope.cli._errors import check_labels_file
    from repscope.exceptions import RepscopeValueError
    from repscope.store import FeatureStore, load_features, load_labels
    from repscope.store._manifest import MANIFEST

    if (Path(out) / MANIFEST).is_file():  # the library's refusal names its Python argument
        raise RepscopeValueError(
            f"--out {out} already holds a FeatureStore; import into a new --out (or delete "
            "that folder first)."
        )
    feats: dict[str, np.ndarray] = {}
    for a in arrays:
        feats.update(load_features(check_exists(a, "array file")))
    n = {k: v.shape[0] for k, v in feats.items()}
    if len(set(n.values())) != 1:
        raise RepscopeValueError(f"all arrays must have the same number of rows; got {n}.")
    meta = None
    if labels is not None:
        check_labels_file(labels)
        meta = {"label": load_labels(labels, n_samples=next(iter(n.values()))).tolist()}
    store = FeatureStore.create(out, model_id=model_id or "imported")
    store.append(feats, meta)
    click.echo(f"wrote {store.n_samples} samples x {len(feats)} layers to {out}")


from repscope.report._legacy import RETIRED  # noqa: E402  (the one list of replacements)

for _name, _replacement in RETIRED.items():
    analyze.add_command(_retired(_name, _replacement))

COMMANDS = [analyze]
