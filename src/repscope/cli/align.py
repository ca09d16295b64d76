"""``repscope align``: fit a map from one space onto another and score it on held-out pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    model_name,
    pair_by_option,
    paired_features,
    print_table,
    rank_aware,
    settings,
)


def _parse_ints(text: str, option: str) -> list[int]:
    from repscope.exceptions import RepscopeValueError

    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise RepscopeValueError(
            f"{option} must be comma-separated integers (e.g. 1,5,10); got {text!r}."
        ) from None


def _refuse_on_ranks(map_kind: str, anchors: str, sweep: str, retrieval: bool,
                     world_size: int) -> None:
    """Under torchrun only the maps and metrics that are sums over the pairs run."""
    from repscope.exceptions import RepscopeValueError

    what = [opt for opt, bad in (("--map subspace", map_kind == "subspace"),
                                 ("--anchors dpp", anchors == "dpp"), ("--sweep", bool(sweep)),
                                 ("top-k retrieval and matching (--top)", retrieval)) if bad]
    if what:
        raise RepscopeValueError(
            f"repscope align: {' and '.join(what)} needs every pair at once and runs on one "
            f"process; launch without torchrun, or on {world_size} ranks use --map orthogonal "
            "or linear with --anchors random and --no-retrieval (the other held-out metrics "
            "are sums over each rank's pairs).")


def _align_on_ranks(pa_: Path, pb_: Path, layer_a: str | None, layer_b: str | None,
                    pair_by: str, **kwargs: Any) -> tuple[Any, str, str]:
    """Each rank reads its share of the paired rows (B row by row when reordered by id) and
    runs :func:`repscope.align.evaluate_alignment_ranks`."""
    from repscope.align import evaluate_alignment_ranks
    from repscope.distributed import context
    from repscope.store import open_layers
    from repscope.store._layers import pairing_order

    dist = context()
    a = open_layers(pa_, [layer_a] if layer_a else None, name=f"FEATURES_A ({pa_})")
    b = open_layers(pb_, [layer_b] if layer_b else None, name=f"FEATURES_B ({pb_})")
    order, note = pairing_order(a, b, by=pair_by, caller="repscope align")  # type: ignore[arg-type]
    if note and dist.is_writer:
        click.echo(f"repscope align: {note}", err=True)
    la, lb = layer_a or a.layers[-1], layer_b or b.layers[-1]
    start, stop = dist.share(a.n_samples)

    def rows(src: Any, layer: str, idx: Any) -> np.ndarray:
        if idx is not None:
            return np.asarray(src.read_rows(layer, idx[start:stop]))
        parts = list(src.iter_batches(layer, 4096, start=start, stop=stop))
        return np.concatenate(parts) if parts else np.zeros((0, src.width(layer)))

    X, Y = rows(a, la, None), rows(b, lb, order)
    ev = evaluate_alignment_ranks(X, Y, n_samples=a.n_samples, start=start, dist=dist, **kwargs)
    return ev, la, lb


@click.command()
@rank_aware
@features_argument("features_a")
@features_argument("features_b")
@click.option("--layer-a", default=None, help="Layer of A to map (default: its last layer).")
@click.option("--layer-b", default=None, help="Layer of B to map onto (default: its last layer).")
@click.option("--map", "map_kind", type=click.Choice(["orthogonal", "linear", "subspace"]),
              default="orthogonal", show_default=True,
              help="orthogonal: Procrustes + mean shift; linear: ridge (GCV); subspace: top-k "
                   "CCA/PCA then orthogonal.")
@click.option("--n-train", type=int, default=None,
              help="Training (anchor) pairs (default half). The rest are held out.")
@click.option("--anchors", type=click.Choice(["random", "dpp"]), default="random",
              show_default=True,
              help="How the anchor pairs are chosen: at random, or diverse inputs of A by a "
                   "projection DPP (see `repscope subset`).")
@click.option("--scale", is_flag=True, help="Fit an isotropic scale with the orthogonal map.")
@click.option("--k", "n_components", type=int, default=32, show_default=True,
              help="Subspace size for --map subspace.")
@click.option("--method", type=click.Choice(["cca", "pca"]), default="cca", show_default=True,
              help="Subspace directions (--map subspace and the k sweep).")
@click.option("--sweep", "sweep", default="",
              help="Comma-separated subspace sizes to sweep (e.g. 8,32,128), or 'auto'.")
@click.option("--top", "tops", default="1,5,10", show_default=True,
              help="Retrieval cut-offs, comma-separated.")
@click.option("--no-retrieval", "no_retrieval", is_flag=True,
              help="Skip top-k retrieval and matching accuracy (they compare every held-out "
                   "pair with all the others); needed under torchrun.")
@dataset_option
@pair_by_option
@json_option
def align(features_a: str, features_b: str, layer_a: str | None, layer_b: str | None,
          map_kind: str, n_train: int | None, anchors: str, scale: bool, n_components: int,
          method: str, sweep: str, tops: str, no_retrieval: bool, dataset: str, pair_by: str,
          as_json: bool) -> None:
    """Map FEATURES_A onto FEATURES_B (samples paired by id when both have ids, see
    --pair-by) and score it held out.

    Reports top-k retrieval of each input's partner (mapped vs unmapped), paired cosine,
    R^2, matching accuracy, kernel agreement and the orthogonality gap (orthogonal vs general
    linear residual); optionally a sweep over subspace sizes. Records an ``alignment`` result.

    Under torchrun (``torchrun --nproc-per-node N -m repscope align ... --no-retrieval``) each
    rank reads its share of the pairs; the orthogonal or linear map is fitted from the
    all-reduced moments of the training pairs and every other held-out metric is a sum over
    the pairs (the same values as one process).
    """
    from repscope.align import evaluate_alignment
    from repscope.distributed import context

    dist = context()
    if dist.is_distributed:
        _refuse_on_ranks(map_kind, anchors, sweep, not no_retrieval, dist.world_size)
    pa_, pb_ = check_exists(features_a, "features"), check_exists(features_b, "features")
    seed = settings().seed
    if dist.is_distributed:
        ev, la, lb = _align_on_ranks(pa_, pb_, layer_a, layer_b, pair_by, map=map_kind,
                                     n_train=n_train, seed=seed, scale=scale,
                                     n_components=n_components, method=method)
    else:
        fa, fb = paired_features(pa_, pb_, [layer_a] if layer_a else None,
                                 [layer_b] if layer_b else None, pair_by, "repscope align")
        la, lb = layer_a or list(fa)[-1], layer_b or list(fb)[-1]
        X, Y = fa[la], fb[lb]
        sweep_ks: list[int] | None = [] if not sweep else (
            None if sweep == "auto" else _parse_ints(sweep, "--sweep"))
        ev = evaluate_alignment(X, Y, map=map_kind, n_train=n_train, seed=seed,  # type: ignore[arg-type]
                                n_components=n_components, method=method,  # type: ignore[arg-type]
                                scale=scale, retrieval_ks=_parse_ints(tops, "--top"),
                                sweep_ks=sweep_ks, anchors=anchors,  # type: ignore[arg-type]
                                retrieval=not no_retrieval)
    ma, mb = model_name(pa_), model_name(pb_)
    model = f"{ma} vs {mb}"
    with settings().db() as db, db.run("align", {"a": str(pa_), "b": str(pb_), **ev.params},
                                       model=model, dataset=dataset) as run_id:
        records = ev.to_records(model_a=ma, model_b=mb, layer_a=la, layer_b=lb,
                                dataset=dataset, run_id=run_id)
        db.add_many(records)
    values = dict(records[0].values)
    if as_json:
        echo_json(values)
        return
    rows = [(f"top-{k}", v, ev.retrieval_unmapped.get(k, float("nan")))
            for k, v in ev.retrieval.items()]
    rows += [("paired cosine", ev.cosine, ev.cosine_unmapped), ("R^2", ev.r2, float("nan")),
             ("matching accuracy", ev.matching, float("nan")),
             ("kernel agreement (CKA)", ev.kernel_agreement, float("nan")),
             ("orthogonality gap", float(ev.orthogonality_gap["gap"]), float("nan"))]
    print_table(rows, ["held-out metric", f"{map_kind} map", "unmapped"],
                title=f"Alignment {ma}[{la}] -> {mb}[{lb}] ({ev.n_train} train / {ev.n_test} test)")
    if ev.sweep:
        first = next(iter(ev.sweep["retrieval"]))
        print_table([(k, v) for k, v in zip(ev.sweep["ks"], ev.sweep["retrieval"][first])],
                    ["k", f"top-{first} retrieval"], title=f"Subspace sweep ({method})")


COMMANDS = [align]
