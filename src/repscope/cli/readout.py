"""``repscope readout``: a cross-attention readout (learned queries, one per target) from one
token layer to continuous targets, beside per-target ridge on pooled and on flattened tokens.

Records a ``readout`` result (held-out R^2 of the three, and where each target's query
attends) for ``repscope report``.
"""

from __future__ import annotations

from typing import Any

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    layers_option,
    model_name,
    print_table,
    progress_option,
    settings,
    show_progress,
)


def _parse_grid(text: str | None) -> tuple[int, int] | None:
    from repscope.exceptions import RepscopeValueError

    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[-1])
    raise RepscopeValueError(
        f"--target-grid must be SIDE or ROWSxCOLUMNS (e.g. 7 or 7x7); got {text!r}.")


def _load_targets(path: str, n: int) -> Any:
    import numpy as np

    from repscope.exceptions import RepscopeValueError

    p = check_exists(path, "--targets file")
    try:
        y = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, delimiter=",",
                                                                              ndmin=2)
    except ValueError as err:
        raise RepscopeValueError(
            f"--targets {str(p)!r} must be a .npy array or a numeric CSV of shape (samples, "
            f"targets); reading it failed: {err}") from None
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[0] != n:
        raise RepscopeValueError(
            f"--targets {str(p)!r} must have one row per sample ({n}) and one column per "
            f"target; got shape {y.shape}.")
    return y


@click.command(name="readout")
@features_argument()
@layers_option("Token layer to read out (default: the last token layer).", multiple=False)
@click.option("--targets", "targets", required=True,
              help="Targets per sample: a .npy array or numeric CSV (samples x targets), "
                   "rows in the store's order.")
@click.option("--target-grid", default=None,
              help="The targets are the cells of a ROWSxCOLUMNS grid over the image (row-major): "
                   "also report each target's attention mass within one patch of its cell.")
@click.option("--test-size", default=0.25, show_default=True,
              help="Share of samples held out for R^2.")
@click.option("--dim", default=32, show_default=True, help="Width of queries, keys and values.")
@click.option("--components", "n_components", default=64, show_default=True,
              help="Principal components of the tokens the readout sees.")
@click.option("--max-iter", default=300, show_default=True, help="AdamW steps (minibatch 64).")
@click.option("--prefix-tokens", type=int, default=None,
              help="Tokens before the patch grid (CLS, registers) to drop "
                   "(default: those above the largest square).")
@click.option("--seed", default=0, show_default=True, help="Seeds the split and the readout.")
@dataset_option
@progress_option
@json_option
def readout(features: str, layers: str | None, targets: str, target_grid: str | None,
            test_size: float, dim: int, n_components: int, max_iter: int,
            prefix_tokens: int | None, seed: int, dataset: str, as_json: bool) -> None:
    """Cross-attention readout (brain encoders): one learned query per target attends to the
    patch tokens of FEATURES (a store extracted with --pooling none); held-out R^2 beside ridge
    on mean-pooled and on flattened tokens, and where each query attends."""
    from repscope._validation import check_scalar
    from repscope.exceptions import RepscopeValueError
    from repscope.probe._readout import readout_comparison
    from repscope.similarity._dense import patch_grid
    from repscope.store import open_layers

    caller = "repscope readout"
    if not 0.0 < test_size < 1.0:
        raise RepscopeValueError(f"--test-size must be between 0 and 1; got {test_size:g}.")
    for name, value in (("--dim", dim), ("--components", n_components), ("--max-iter", max_iter)):
        check_scalar(value, name, caller=caller, kind=int, min_value=1)
    if prefix_tokens is not None:
        check_scalar(prefix_tokens, "--prefix-tokens", caller=caller, kind=int, min_value=0)
    grid = _parse_grid(target_grid)
    path = check_exists(features, "features")
    src = open_layers(path, [layers] if layers else None, name=f"FEATURES ({path})")
    tokens = [n for n in src.layers if len(src.shape(n)) == 2]
    if layers and layers not in tokens:
        raise RepscopeValueError(
            f"--layer {layers!r} of {path} holds {src.shape(layers)} per sample; expected "
            "tokens (tokens, d). Extract it with --pooling none.")
    if not tokens:
        raise RepscopeValueError(f"FEATURES ({path}) has no token layer; extract with --pooling none.")
    layer = layers or tokens[-1]
    x = src.read(layer)
    x = x.reshape(x.shape[0], *src.shape(layer))
    g = patch_grid(x, prefix_tokens=prefix_tokens, name=f"layer {layer!r} of FEATURES")
    x = g.reshape(g.shape[0], -1, g.shape[-1])
    y = _load_targets(targets, x.shape[0])
    if grid is not None and grid[0] * grid[1] != y.shape[1]:
        raise RepscopeValueError(
            f"--target-grid {grid[0]}x{grid[1]} needs {grid[0] * grid[1]} targets; --targets "
            f"has {y.shape[1]} columns.")
    params = {"layer": layer, "targets": str(targets), "target_grid": list(grid) if grid else None,
              "test_size": test_size, "dim": dim, "n_components": n_components,
              "max_iter": max_iter, "prefix_tokens": prefix_tokens, "seed": seed}
    model = model_name(path)
    res = readout_comparison(x, y, test_size=test_size, target_grid=grid, random_state=seed,
                             dim=dim, n_components=n_components, max_iter=max_iter,
                             progress=show_progress())
    with settings().db() as db, db.run("readout", {"features": str(path), **params}, model=model,
                                       dataset=dataset) as run_id:
        records = res.to_records(model=model, dataset=dataset, layer=layer, run_id=run_id,
                                 params=params)
        db.add_many(records)
    values = dict(records[0].values)
    if as_json:
        echo_json({"layer": layer, **values})
        return
    row: list[Any] = [layer, values["n_train"], values["n_test"], values["n_targets"],
                      *(values[f"r2_{m}_weighted"] for m in ("readout", "ridge_pooled",
                                                            "ridge_flat"))]
    headers = ["layer", "train", "test", "targets", "R2 readout", "R2 ridge pooled",
               "R2 ridge flat"]
    if values["region_mass"] is not None:
        mass = values["region_mass"]
        row += [min(mass), sum(m >= 0.5 for m in mass)]
        headers += ["min mass near cell", "cells >= 0.5"]
    print_table([row], headers, title=f"Cross-attention readout of {model}: held-out R^2 of all "
                                      "targets together (variance-weighted; --json also gives "
                                      "the mean over targets)")


COMMANDS = [readout]
