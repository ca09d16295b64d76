"""``repscope similarity``: layer x layer similarity between two sets of features (or one).

Any registered measure (``repscope similarity --list``), with permutation p-values and
bootstrap intervals for the best-matching layer pairs. Records ``similarity_matrix`` results.
"""

from __future__ import annotations

from collections.abc import Callable
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
    layers_option,
    model_name,
    pair_by_option,
    paired_features,
    print_table,
    progress_option,
    rank_aware,
    settings,
    show_progress,
)


def _list_measures(ctx: click.Context, _param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from repscope.similarity import list_measures, measure_info
    from repscope.similarity._registry import measure_aliases

    also: dict[str, list[str]] = {}
    for alias, name in measure_aliases().items():
        also.setdefault(name, []).append(alias)
    rows = []
    for name in list_measures():
        info = measure_info(name)
        rows.append((name, ", ".join(also.get(name, [])) or "—", info.get("direction", ""),
                     "yes" if info.get("is_metric") else "no",
                     ", ".join(sorted(info.get("invariances", ())))))
    print_table(rows, ["measure", "also accepted as", "direction", "metric", "invariant to"],
                title="Measures")
    click.echo("Names ignore case, spaces and - vs _ (RBF-CKA is rbf_cka).")
    ctx.exit(0)


def _pair_stats(X: np.ndarray, Y: np.ndarray, measure: str, permutations: int, bootstrap: int,
                seed: int, advance: Callable[[int], None]) -> dict[str, Any]:
    from repscope.similarity._stats import bootstrap_ci, permutation_test

    out: dict[str, Any] = {}
    if permutations:
        p = permutation_test(X, Y, measure, n_permutations=permutations, seed=seed,
                             progress=advance)
        out.update(p_value=p.p_value, null_mean=p.null_mean, null_std=p.null_std,
                   z_score=p.z_score, n_permutations=permutations)
    if bootstrap:
        b = bootstrap_ci(X, Y, measure, n_resamples=bootstrap, seed=seed, progress=advance)
        out.update(ci_low=b.ci_low, ci_high=b.ci_high, std_error=b.std_error,
                   confidence=b.confidence, n_bootstrap=bootstrap)
    return out


def _refuse_on_ranks(measures: tuple[str, ...], permutations: int, bootstrap: int,
                     world_size: int) -> None:
    """Under torchrun only sums over rows run: linear CKA without permutations or bootstrap."""
    from repscope.exceptions import RepscopeValueError

    what = [f"--measure {m}" for m in measures if m != "linear_cka"]
    what += [opt for opt, k in (("--permutations", permutations), ("--bootstrap", bootstrap)) if k]
    if what:
        raise RepscopeValueError(
            f"repscope similarity: {' and '.join(what)} needs every row at once and runs on one "
            f"process; launch without torchrun. On {world_size} ranks only --measure linear_cka "
            "runs (without --permutations or --bootstrap), from sums over each rank's rows.")


def _streamed_matrix(pa_: Path, pb_: Path | None, layers_a: tuple[str, ...],
                     layers_b: tuple[str, ...], pair_by: str) -> Any:
    """The linear-CKA matrix streamed from the files, each rank over its share of the paired
    rows (B is never read whole, even when it is reordered by id)."""
    from repscope.distributed import context
    from repscope.similarity._layers import compare_layers
    from repscope.store import open_layers
    from repscope.store._layers import pairing_order

    dist = context()
    caller = "repscope similarity"
    a = open_layers(pa_, layers_a or None, name=f"FEATURES_A ({pa_})")
    b = None
    if pb_ is not None:
        b = open_layers(pb_, layers_b or None, name=f"FEATURES_B ({pb_})")
        _, note = pairing_order(a, b, by=pair_by, caller=caller)  # type: ignore[arg-type]
        if note and dist.is_writer:
            click.echo(f"{caller}: {note}", err=True)
    elif layers_b:
        b = open_layers(pa_, layers_b, name=f"FEATURES_B ({pa_})")
    return compare_layers(a, b, "linear_cka", pair_by=pair_by, dist=dist)  # type: ignore[arg-type]


@click.command()
@rank_aware
@features_argument("features_a")
@features_argument("features_b", required=False)
@click.option("--measure", "measures", multiple=True,
              help="Registered measure or alias, e.g. cka (repeatable; default linear_cka). "
                   "See --list.")
@layers_option("Layers of A (repeatable; default all).", flag="--layer-a", dest="layers_a")
@layers_option("Layers of B (repeatable; default all).", flag="--layer-b", dest="layers_b")
@click.option("--permutations", type=int, default=0, show_default=True,
              help="Permutation-test p-values for each best-matching pair (0: none).")
@click.option("--bootstrap", type=int, default=0, show_default=True,
              help="Bootstrap resamples for a 95% interval of each best-matching pair (0: none).")
@dataset_option
@pair_by_option
@click.option("--list", "list_", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_measures, help="List the registered measures and exit.")
@progress_option
@json_option
def similarity(features_a: str, features_b: str | None, measures: tuple[str, ...],
               layers_a: tuple[str, ...], layers_b: tuple[str, ...], permutations: int,
               bootstrap: int, dataset: str, pair_by: str, as_json: bool) -> None:
    """Similarity of every layer of FEATURES_A with every layer of FEATURES_B (.npy,
    .safetensors or a FeatureStore; samples paired by id when both have ids, see --pair-by).
    Without FEATURES_B, A's layers are compared with each other.

    Under torchrun (``torchrun --nproc-per-node N -m repscope similarity ...``) linear CKA
    runs on every rank over its share of the rows, from float64 sums added across ranks (the
    same matrix as one process); the other measures, --permutations and --bootstrap need
    every row at once and run on one process."""
    from repscope._progress import progress_bar
    from repscope._validation import check_scalar
    from repscope.distributed import context
    from repscope.similarity._layers import compare_layers
    from repscope.similarity._registry import resolve_measure
    from repscope.store import load_features

    check_scalar(permutations, "--permutations", caller="repscope similarity", kind=int, min_value=0)
    check_scalar(bootstrap, "--bootstrap", caller="repscope similarity", kind=int, min_value=0)
    # aliases (cka) become the registered names (linear_cka) that are recorded; unknown names
    # fail before any work, with the closest match
    measures = tuple(dict.fromkeys(resolve_measure(m) for m in measures or ("linear_cka",)))
    dist = context()
    if dist.is_distributed:
        _refuse_on_ranks(measures, permutations, bootstrap, dist.world_size)
    pa_ = check_exists(features_a, "features")
    pb_ = None if features_b is None else check_exists(features_b, "features")
    ma = model_name(pa_)
    mb = ma if pb_ is None else model_name(pb_)
    fa: dict[str, Any] = {}
    fb: dict[str, Any] | None = None
    streamed: dict[str, Any] = {}
    if measures == ("linear_cka",) and not permutations and not bootstrap:
        # a sum over rows: streamed from the files (and shared by the ranks under torchrun),
        # before the run opens, so a failed rank records nothing
        streamed["linear_cka"] = _streamed_matrix(pa_, pb_, layers_a, layers_b, pair_by)
    elif pb_ is None:
        fa = load_features(pa_, layers_a or None)
        if layers_b:
            fb = {k: v for k, v in load_features(pa_, layers_b).items()}
    else:
        fa, fb = paired_features(pa_, pb_, layers_a, layers_b, pair_by, "repscope similarity")
    seed = settings().seed
    model = ma if features_b is None else f"{ma} vs {mb}"
    out: list[dict[str, Any]] = []
    with settings().db() as db, db.run(
        "similarity", {"a": str(pa_), "b": str(pb_) if pb_ else "", "measures": list(measures),
                       "permutations": permutations, "bootstrap": bootstrap,
                       "pair_by": pair_by},
        model=model, dataset=dataset,
    ) as run_id:
        for measure in measures:
            lm = (streamed[measure] if measure in streamed else
                  compare_layers(fa, fb, measure, pair_by="position"))  # paired above
            src_b = fa if fb is None else fb
            stats = []
            if permutations or bootstrap:
                what = " and ".join(w for w, k in (("permutations", permutations),
                                                   ("bootstrap", bootstrap)) if k)
                total = len(lm.best_matches) * (permutations + bootstrap)
                with progress_bar(f"{measure} {what}", total, enabled=show_progress(),
                                  prefix="similarity") as advance:
                    for row, col, _ in lm.best_matches:
                        stats.append({"row": row, "col": col,
                                      **_pair_stats(fa[row], src_b[col], measure, permutations,
                                                    bootstrap, seed, advance)})
            records = lm.to_records(model=model, dataset=dataset, run_id=run_id,
                                    model_a=ma, model_b=mb, stats=stats,
                                    params={"permutations": permutations, "bootstrap": bootstrap})
            db.add_many(records)
            values = dict(records[0].values)
            out.append(values)
    if as_json:
        echo_json(out if len(out) > 1 else out[0])
        return
    for values in out:
        by_pair = {(s["row"], s["col"]): s for s in values["stats"]}
        rows = []
        for r, c, v in values["best_matches"]:
            s = by_pair.get((r, c), {})
            rows.append((r, c, v, s.get("p_value", "—"),
                         f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}]" if "ci_low" in s else "—"))
        print_table(rows, [f"layer of {ma}", f"best layer of {mb}", values["measure"], "p",
                           "95% CI"], title=f"{values['measure']}: {model}")


COMMANDS = [similarity]
