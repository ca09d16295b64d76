"""``repscope subset``: choose a diverse subset of a store's samples (projection DPP, volume
sampling, leverage or uniform sampling on one layer's features) and write the chosen ids."""

from __future__ import annotations

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    model_name,
    settings,
)


@click.command(name="subset")
@features_argument()
@click.option("--layer", required=True, help="The layer whose features define diversity.")
@click.option("-k", "--k", "k", type=int, required=True, help="Samples to choose.")
@click.option("--method", type=click.Choice(["dpp", "volume", "leverage", "uniform"]),
              default="dpp", show_default=True, help="How to sample.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the chosen sample ids here, one per line (default: print them).")
@dataset_option
@json_option
def subset(features: str, layer: str, k: int, method: str, out: str | None, dataset: str,
           as_json: bool) -> None:
    """Choose K diverse samples of FEATURES by their --layer features (ids, one per line)."""
    from pathlib import Path

    import numpy as np

    from repscope.geometry._sampling import dpp_subset
    from repscope.store import open_layers

    path = check_exists(features, "features")
    src = open_layers(path, [layer])
    X = np.asarray(src.read(layer))
    X = X.reshape(X.shape[0], -1)
    ids = src.ids
    seed = settings().seed
    res = dpp_subset(X, k, method=method,  # type: ignore[arg-type]
                     ids=None if ids is None else [str(i) for i in ids], seed=seed)
    model = model_name(path)
    params = {"method": method, "k": k, "seed": seed}
    with settings().db() as db, db.run("subset", {"features": str(path), **params},
                                       model=model, dataset=dataset) as run_id:
        db.add_many(res.to_records(model=model, dataset=dataset, layer=layer, run_id=run_id,
                                   params=params))
    if out:
        Path(out).write_text("".join(f"{i}\n" for i in res.ids))
    if as_json:
        echo_json({"model": model, "layer": layer, "method": method, "ids": list(res.ids),
                   "indices": res.indices.tolist(), "log_volume": res.log_volume,
                   "rank": res.rank, "out": out})
        return
    if out:
        click.echo(f"{len(res.ids)} of {res.n_samples} samples ({method}, log volume "
                   f"{res.log_volume:.3g}) written to {out}")
    else:
        click.echo("\n".join(res.ids))


COMMANDS = [subset]
