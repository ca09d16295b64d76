"""``repscope leakage``: the cross-probe matrix of feature groups (column blocks of a layer, or
whole layers) against attributes, recorded as ``geometry_leakage`` for ``repscope report``."""

from __future__ import annotations

from typing import Any

import click

from repscope.cli._common import (
    KindChoice,
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    model_name,
    print_table,
    progress_option,
    settings,
    show_progress,
)


def _parse_group(spec: str) -> tuple[str, str, tuple[int, int] | None]:
    """``NAME=LAYER`` or ``NAME=LAYER:START-STOP`` (columns START..STOP-1)."""
    from repscope.exceptions import RepscopeValueError

    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise RepscopeValueError(
            f"--group must be NAME=LAYER or NAME=LAYER:START-STOP (e.g. salient=blocks.5:0-64); "
            f"got {spec!r}.")
    layer, colon, cols = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not colon:
        return name, rest, None
    lo, dash, hi = cols.partition("-")
    if not (dash and lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
        raise RepscopeValueError(
            f"--group columns must be START-STOP with START < STOP (e.g. 0-64); got {cols!r} in "
            f"{spec!r}.")
    return name, layer, (int(lo), int(hi))


@click.command(name="leakage")
@features_argument()
@click.option("--group", "groups", multiple=True, required=True,
              help="A feature group NAME=LAYER or NAME=LAYER:START-STOP (repeatable).")
@click.option("--attribute", "attributes", multiple=True, required=True,
              help="An attribute NAME or NAME=LABELS (a .npy/text file or a metadata column; "
                   "default: the column NAME) (repeatable).")
@click.option("--probe", "probe_name", type=KindChoice("probe"), default="ridge",
              show_default=True, help="Which probe.")
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds.")
@click.option("--dependence", is_flag=True, help="Also k-JEM between the groups.")
@dataset_option
@progress_option
@json_option
def leakage(features: str, groups: tuple[str, ...], attributes: tuple[str, ...],
            probe_name: str, folds: int, dependence: bool, dataset: str, as_json: bool) -> None:
    """Probe every --attribute from every --group of FEATURES (leakage between sub-spaces)."""
    import numpy as np

    from repscope.exceptions import RepscopeValueError
    from repscope.geometry._leakage import cross_probe
    from repscope.probe._kinds import make_probe
    from repscope.probe._protocols import KFold
    from repscope.store import load_features, load_labels

    path = check_exists(features, "features")
    specs = [_parse_group(g) for g in groups]
    feats = load_features(path, sorted({layer for _, layer, _ in specs}))
    store = None
    if path.is_dir():
        from repscope.store import FeatureStore

        try:
            store = FeatureStore.open(path)
        except Exception:
            store = None
    group_arrays: dict[str, Any] = {}
    for name, layer, cols in specs:
        X = np.asarray(feats[layer])
        X = X.reshape(X.shape[0], -1)
        if cols is not None:
            if cols[1] > X.shape[1]:
                raise RepscopeValueError(
                    f"--group {name}: layer {layer!r} has {X.shape[1]} columns; got columns "
                    f"{cols[0]}-{cols[1]}.")
            X = X[:, cols[0]:cols[1]]
        group_arrays[name] = X
    n = next(iter(group_arrays.values())).shape[0]
    attrs = {}
    for spec in attributes:
        name, _, source = spec.partition("=")
        attrs[name] = load_labels(source or name, store=store, n_samples=n)
    seed = settings().seed
    res = cross_probe(group_arrays, attrs, probe=make_probe(probe_name, seed=seed),
                      protocol=KFold(folds, seed), dependence=dependence,
                      progress=show_progress())
    model = model_name(path)
    params = {"probe": probe_name, "n_folds": folds, "seed": seed,
              "groups": list(groups)}
    with settings().db() as db, db.run("leakage", {"features": str(path), **params},
                                       model=model, dataset=dataset) as run_id:
        db.add_many(res.to_records(model=model, dataset=dataset, run_id=run_id, params=params))
    if as_json:
        echo_json({"model": model, **res.to_dict()})
        return
    rows = [(g, a, float(res.accuracy[i, j]), f"[{res.ci_low[i, j]:.3f}, {res.ci_high[i, j]:.3f}]",
             float(res.chance[j]), "yes" if res.above_chance[i, j] else "no")
            for i, g in enumerate(res.groups) for j, a in enumerate(res.attributes)]
    print_table(rows, ["group", "attribute", "accuracy", "95% interval", "chance",
                       "above chance"], title=f"Cross-probe matrix: {model} ({probe_name})")


COMMANDS = [leakage]
