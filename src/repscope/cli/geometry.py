"""``repscope geometry``: separability, persistence, coding rate and every other registered
geometry measure at each layer of features on disk (.npy, .safetensors, a FeatureStore).

Records ``geometry`` (one per layer: every measure), and with ``--persistence`` /
``--coding-rate`` also ``geometry_persistence`` (barcodes) and ``geometry_coding_rate``
(coding-rate tables), rendered by ``repscope report``.
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
    rank_aware,
    settings,
    show_progress,
)


def _list_measures(ctx: click.Context, _param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from repscope.geometry import geometry_info, list_geometry_measures
    from repscope.geometry._layers import measure_family

    rows = []
    for name in list_geometry_measures():
        info = geometry_info(name)
        better = info.get("higher_is_better")
        rows.append((name, measure_family(name), f"higher: {info.get('higher_is', '')}",
                     {True: "higher", False: "lower", None: "—"}[better], info["labels"],
                     info["cost"]))
    print_table(rows, ["measure", "family", "direction", "better", "labels", "cost"],
                title="Geometry measures")
    click.echo("labels: required / optional / none (label-free). cost: moments (streams, "
               "O(d^2) memory); n^2 (O(n^2) time, O(n) memory, at most 50,000 samples unless "
               "--max-samples subsamples).")
    ctx.exit(0)


#: ``--labels`` is optional here: without it only the label-free measures run.
_labels_option = click.option(
    "--labels", default=None,
    help="Labels: a .npy or text file (one per line), or a metadata column of the store "
    "(./NAME: the file, column:NAME: the column, when a name could be both). Without labels "
    "only the label-free measures run.")


@click.command(name="geometry")
@rank_aware
@features_argument(required=False)
@_labels_option
@click.option("--measure", "measures", multiple=True,
              help="Registered geometry measure (repeatable; default: every measure the inputs "
              "allow). See --list.")
@layers_option("Layer to measure (repeatable; default: all).")
@click.option("--max-samples", "max_samples", type=int, default=None,
              help="Run the O(n^2)-time measures (MST, kNN, silhouette, ...) on a random "
              "subsample of this many samples (moments-based measures use all).")
@click.option("--persistence", "do_persistence", is_flag=True,
              help="Also record each layer's H0 persistence barcode (label-free).")
@click.option("--coding-rate", "do_coding_rate", is_flag=True,
              help="Also record each layer's coding-rate table (needs --labels).")
@click.option("--eps2", type=float, default=0.5, show_default=True,
              help="Precision eps^2 of the coding-rate table.")
@click.option("--list", "list_", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_measures, help="List the registered measures and exit.")
@dataset_option
@progress_option
@json_option
def geometry(features: str | None, labels: str | None, measures: tuple[str, ...],
             layers: tuple[str, ...], max_samples: int | None, do_persistence: bool,
             do_coding_rate: bool, eps2: float, dataset: str, as_json: bool) -> None:
    """Geometry measures of each layer of FEATURES: supervised separability (with --labels),
    label-free persistence, coding rate, and every other registered measure.

    Under torchrun (``torchrun --nproc-per-node N -m repscope geometry ... --measure
    fisher_ratio ...``) each rank reads its share of the rows and the measures that are sums
    over the rows (class moments, covariance, class Grams) are all-reduced; the measures that
    need every row at once (kNN, MST, silhouette, persistence) run on one process."""
    from repscope._validation import check_scalar
    from repscope.distributed import context
    from repscope.exceptions import RepscopeValueError
    from repscope.geometry._layers import geometry_layers
    from repscope.store import load_labels, open_layers

    if features is None:
        raise click.UsageError("Missing argument 'FEATURES' (or use --list).")
    if max_samples is not None:
        check_scalar(max_samples, "--max-samples", caller="repscope geometry", kind=int,
                     min_value=2)
    check_scalar(eps2, "--eps2", caller="repscope geometry", kind=float, min_value=0.0,
                 include_min=False)
    if do_coding_rate and labels is None:
        raise RepscopeValueError("--coding-rate needs --labels (per-class coding rates).")
    dist = context()
    if dist.is_distributed:
        from repscope.geometry._ranks import check_rank_measures

        check_rank_measures(measures, persistence=do_persistence, world_size=dist.world_size)
    path = check_exists(features, "features")
    src = open_layers(path, layers or None)
    y = None
    if labels is not None:
        from repscope.cli._errors import check_labels_file

        check_labels_file(labels)
        y = load_labels(labels, store=src, n_samples=src.n_samples)
    seed = settings().seed
    model = model_name(path)
    # every layer is measured (and every rank's sums added up) before the run opens, so bad
    # input, or a rank that stops, records nothing
    if dist.is_distributed:
        from repscope.geometry._ranks import geometry_layers_ranks

        res = geometry_layers_ranks(src, y, list(measures), coding_rate=do_coding_rate,
                                    eps2=eps2, seed=seed, dist=dist, progress=show_progress())
    else:
        res = geometry_layers(src, y, list(measures) or None, max_samples=max_samples,
                              persistence=do_persistence, coding_rate=do_coding_rate,
                              eps2=eps2, seed=seed, progress=show_progress())
    params = {"measures": list(res.measures), "labels": labels or "",
              "max_samples": max_samples, "eps2": eps2, "seed": seed}
    with settings().db() as db, db.run("geometry", {"features": str(path), **params},
                                       model=model, dataset=dataset) as run_id:
        db.add_many(res.to_records(model=model, dataset=dataset, run_id=run_id, params=params))
    if as_json:
        out = res.to_dict()
        if res.persistence is not None:  # the barcodes' summaries, not every bar
            out["persistence"] = [{k: v for k, v in p.to_dict().items() if k != "deaths"}
                                  for p in res.persistence]
        echo_json({"model": model, **out})
        return
    title = (f"Geometry: {model} ({res.n_samples} samples"
             + (f"; O(n^2) measures on {res.n_pairwise}" if res.n_pairwise < res.n_samples
                else "") + ")")
    if len(res.layers) <= 6:  # one row per measure, a column per layer
        print_table([(m, *(row[j] for row in res.values)) for j, m in enumerate(res.measures)],
                    ["measure", *res.layers], title=title)
    else:
        print_table([(layer, m, v) for layer, row in zip(res.layers, res.values)
                     for m, v in zip(res.measures, row)], ["layer", "measure", "value"],
                    title=title)
    if res.persistence is not None:
        print_table([(layer, p.entropy, p.max_ratio, p.top_ratio, p.median)
                     for layer, p in zip(res.layers, res.persistence)],
                    ["layer", "entropy", "max/median bar", "top-(K-1)/median", "median bar"],
                    title="H0 persistence (L2-normalised rows)")
    if res.coding_rates is not None:
        print_table([(layer, c.rate, c.compressed_rate, c.rate_reduction,
                      c.rate_reduction_shuffled) for layer, c in zip(res.layers,
                                                                     res.coding_rates)],
                    ["layer", "R", "R_c", "Delta R", "Delta R (shuffled)"],
                    title=f"Coding rate (eps^2 = {eps2:g}, unit rows)")


COMMANDS = [geometry]
