"""``repscope analyze ...``: analyses on features from disk (.npy, .safetensors, a FeatureStore).

Every command records its results in the results database (``--db``) under one run and prints
them; ``repscope report`` renders them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import check_exists, echo_json, json_option, print_table, settings


def _model_name(path: Path) -> str:
    if path.is_dir():
        from repscope.store import FeatureStore

        return FeatureStore.open(path, verify="none").model_id or path.name
    return path.stem


def _store_or_none(path: Path) -> Any:
    if path.is_dir():
        from repscope.store import FeatureStore

        return FeatureStore.open(path)
    return None


features_arg = click.argument("features", type=click.Path())
layers_opt = click.option(
    "--layer", "layers", multiple=True, help="Layer to analyse (repeatable; default: all)."
)
dataset_opt = click.option("--dataset", default="", help="Dataset name to record with the results.")


@click.group()
def analyze() -> None:
    """Analyses on features you already have (.npy, .safetensors or a FeatureStore)."""


@analyze.command()
@features_arg
@click.option("--labels", required=True,
              help="Labels: a .npy or text file (one per line), or a metadata column of the store.")
@layers_opt
@dataset_opt
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds.")
@click.option("--C", "C", default=1.0, show_default=True, help="Inverse L2 strength (scikit-learn C).")
@json_option
def separability(features: str, labels: str, layers: tuple[str, ...], dataset: str, folds: int,
                 C: float, as_json: bool) -> None:
    """Cross-validated logistic-regression accuracy of LABELS from each layer of FEATURES."""
    from repscope.db import Record
    from repscope.io import load_features, load_labels
    from repscope.separability import logistic_separability

    path = check_exists(features, "features")
    feats = load_features(path, layers or None)
    n = next(iter(feats.values())).shape[0]
    y = load_labels(labels, store=_store_or_none(path), n_samples=n)
    model = _model_name(path)
    out = []
    with settings().db() as db, db.run("analyze separability", {"features": str(path), "folds": folds, "C": C},
                                       model=model, dataset=dataset) as run_id:
        for layer, X in feats.items():
            r = logistic_separability(X, y, n_folds=folds, C=C, seed=settings().seed)
            db.add(Record("separability", {"accuracy": r.accuracy, "accuracy_std": r.accuracy_std,
                                           "chance": r.chance, "converged": r.converged},
                          model=model, dataset=dataset, layer=layer,
                          params={"n_folds": folds, "C": C}, run_id=run_id))
            out.append({"layer": layer, **r.to_dict()})
    if as_json:
        echo_json(out)
    else:
        print_table([(o["layer"], o["accuracy"], o["accuracy_std"], o["chance"]) for o in out],
                    ["layer", "accuracy", "std", "chance"], title=f"Separability: {model}")


@analyze.command()
@features_arg
@layers_opt
@dataset_opt
@json_option
def spectrum(features: str, layers: tuple[str, ...], dataset: str, as_json: bool) -> None:
    """PCA spectrum and effective rank of each layer of FEATURES."""
    from repscope.db import Record
    from repscope.io import load_features
    from repscope.stats import pca_spectrum

    path = check_exists(features, "features")
    feats = load_features(path, layers or None)
    model = _model_name(path)
    out = []
    with settings().db() as db, db.run("analyze spectrum", {"features": str(path)}, model=model,
                                       dataset=dataset) as run_id:
        for layer, X in feats.items():
            s = pca_spectrum(X)
            db.add(Record("pca_spectrum", {"explained_variance_ratio": s.explained_variance_ratio,
                                           "effective_rank": s.effective_rank,
                                           "participation_ratio": s.participation_ratio,
                                           "n_components_90": s.n_components_90},
                          model=model, dataset=dataset, layer=layer, run_id=run_id))
            out.append({"layer": layer, "effective_rank": s.effective_rank,
                        "participation_ratio": s.participation_ratio,
                        "n_components_90": s.n_components_90})
    if as_json:
        echo_json(out)
    else:
        print_table([(o["layer"], o["effective_rank"], o["participation_ratio"], o["n_components_90"])
                     for o in out], ["layer", "effective rank", "participation ratio", "PCs for 90%"],
                    title=f"PCA spectrum: {model}")


@analyze.command()
@click.argument("features_a", type=click.Path())
@click.argument("features_b", type=click.Path())
@click.option("--layer-a", "layers_a", multiple=True, help="Layers of A (repeatable; default all).")
@click.option("--layer-b", "layers_b", multiple=True, help="Layers of B (repeatable; default all).")
@dataset_opt
@json_option
def cka(features_a: str, features_b: str, layers_a: tuple[str, ...], layers_b: tuple[str, ...],
        dataset: str, as_json: bool) -> None:
    """Layer x layer linear CKA between FEATURES_A and FEATURES_B (same inputs, same order)."""
    from repscope.db import Record
    from repscope.exceptions import RepscopeValueError
    from repscope.io import load_features
    from repscope.similarity import linear_cka_matrix

    pa_, pb_ = check_exists(features_a, "features"), check_exists(features_b, "features")
    fa, fb = load_features(pa_, layers_a or None), load_features(pb_, layers_b or None)
    na, nb = next(iter(fa.values())).shape[0], next(iter(fb.values())).shape[0]
    if na != nb:
        raise RepscopeValueError(
            f"FEATURES_A and FEATURES_B must hold the same inputs; got {na} and {nb} samples."
        )
    ma, mb = _model_name(pa_), _model_name(pb_)
    M = linear_cka_matrix(list(fa.values()), list(fb.values()))
    with settings().db() as db, db.run("analyze cka", {"a": str(pa_), "b": str(pb_)},
                                       model=f"{ma} vs {mb}", dataset=dataset) as run_id:
        db.add(Record("cka", {"matrix": M, "rows": list(fa), "cols": list(fb),
                              "model_a": ma, "model_b": mb, "estimator": "linear, biased"},
                      model=f"{ma} vs {mb}", dataset=dataset, run_id=run_id))
    if as_json:
        echo_json({"rows": list(fa), "cols": list(fb), "matrix": M})
    else:
        best = M.argmax(axis=1)
        print_table([(r, list(fb)[int(j)], float(M[i, j])) for i, (r, j) in enumerate(zip(fa, best))],
                    [f"layer of {ma}", f"best layer of {mb}", "linear CKA"], title="Linear CKA")


@analyze.command(name="import")
@click.argument("arrays", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="FeatureStore directory to create.")
@click.option("--model-id", default="", help="Name of the model the features came from.")
@click.option("--labels", default=None, help="Labels (.npy or text file) stored as metadata 'label'.")
def import_(arrays: tuple[str, ...], out: str, model_id: str, labels: str | None) -> None:
    """Copy .npy/.safetensors ARRAYS (one layer each, or one per tensor) into a FeatureStore."""
    from repscope.io import load_features, load_labels
    from repscope.store import FeatureStore

    feats: dict[str, np.ndarray] = {}
    for a in arrays:
        feats.update(load_features(check_exists(a, "array file")))
    n = {k: v.shape[0] for k, v in feats.items()}
    if len(set(n.values())) != 1:
        from repscope.exceptions import RepscopeValueError

        raise RepscopeValueError(f"all arrays must have the same number of rows; got {n}.")
    meta = None
    if labels is not None:
        meta = {"label": load_labels(labels, n_samples=next(iter(n.values()))).tolist()}
    store = FeatureStore.create(out, model_id=model_id or "imported")
    store.append(feats, meta)
    click.echo(f"wrote {store.n_samples} samples x {len(feats)} layers to {out}")


COMMANDS = [analyze]
