"""``repscope align``: fit a map from one space onto another and score it on held-out pairs."""

from __future__ import annotations

import click

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


@click.command()
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
@dataset_option
@pair_by_option
@json_option
def align(features_a: str, features_b: str, layer_a: str | None, layer_b: str | None,
          map_kind: str, n_train: int | None, anchors: str, scale: bool, n_components: int,
          method: str, sweep: str, tops: str, dataset: str, pair_by: str,
          as_json: bool) -> None:
    """Map FEATURES_A onto FEATURES_B (samples paired by id when both have ids, see
    --pair-by) and score it held out.

    Reports top-k retrieval of each input's partner (mapped vs unmapped), paired cosine,
    R^2, matching accuracy, kernel agreement and the orthogonality gap (orthogonal vs general
    linear residual); optionally a sweep over subspace sizes. Records an ``alignment`` result.
    """
    from repscope.align import evaluate_alignment

    pa_, pb_ = check_exists(features_a, "features"), check_exists(features_b, "features")
    fa, fb = paired_features(pa_, pb_, [layer_a] if layer_a else None,
                             [layer_b] if layer_b else None, pair_by, "repscope align")
    la, lb = layer_a or list(fa)[-1], layer_b or list(fb)[-1]
    X, Y = fa[la], fb[lb]
    sweep_ks: list[int] | None = [] if not sweep else (
        None if sweep == "auto" else _parse_ints(sweep, "--sweep"))
    seed = settings().seed
    ev = evaluate_alignment(X, Y, map=map_kind, n_train=n_train, seed=seed,  # type: ignore[arg-type]
                            n_components=n_components, method=method,  # type: ignore[arg-type]
                            scale=scale, retrieval_ks=_parse_ints(tops, "--top"),
                            sweep_ks=sweep_ks, anchors=anchors)  # type: ignore[arg-type]
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
