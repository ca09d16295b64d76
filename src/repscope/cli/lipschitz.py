"""``repscope lipschitz``: empirical Lipschitz ratio and per-layer translation sensitivity of a
zoo image model (or of the wavelet-scattering baseline) on a few images, recorded as
``geometry_lipschitz`` for ``repscope report``."""

from __future__ import annotations

import click

from repscope.cli._common import echo_json, json_option, parse_ints, print_table, settings


@click.command(name="lipschitz")
@click.argument("model")
@click.option("--dataset", default="mnist", show_default=True, help="Zoo image dataset.")
@click.option("-n", "--n", "n", type=int, default=8, show_default=True, help="Images used.")
@click.option("--layer", "layers", multiple=True,
              help="Module path to measure (repeatable; default: the model's blocks).")
@click.option("--shifts", default="1,2,4", show_default=True,
              help="Translations in pixels, comma-separated.")
@json_option
def lipschitz(model: str, dataset: str, n: int, layers: tuple[str, ...], shifts: str,
              as_json: bool) -> None:
    """Lipschitz ratio and translation sensitivity of MODEL (a zoo image model, or
    'scattering' for the wavelet baseline) per layer."""
    import numpy as np

    from repscope.exceptions import RepscopeValueError
    from repscope.extract._diagnostics import extractor_diagnostics
    from repscope.zoo import load_dataset, load_model

    if n < 2:
        raise RepscopeValueError(f"-n must be at least 2 (pairs of images); got {n}.")
    data = load_dataset(dataset, n=n, seed=settings().seed)
    images = np.asarray(data.inputs)
    if model == "scattering":
        from repscope._kernels.scattering import Scattering2D

        target: object = Scattering2D((int(images.shape[1]), int(images.shape[2])))
    else:
        target = load_model(model, device=settings().device)
    res = extractor_diagnostics(target, images, layers=list(layers) or None,
                                shifts=parse_ints(shifts, "--shifts", example="1,2,4"),
                                seed=settings().seed)
    params = {"n": n, "shifts": list(res.shifts)}
    with settings().db() as db, db.run("lipschitz", params, model=model,
                                       dataset=dataset) as run_id:
        db.add_many(res.to_records(model=model, dataset=dataset, run_id=run_id, params=params))
    if as_json:
        echo_json(res.to_dict())
        return
    print_table([(layer, res.lipschitz_max[i], res.local_lipschitz_max[i],
                  *res.translation_sensitivity[i]) for i, layer in enumerate(res.layers)],
                ["layer", "Lipschitz (max)", "local (max)",
                 *(f"shift {t}px" for t in res.shifts)],
                title=f"{model} on {n} {dataset} images")


COMMANDS = [lipschitz]
