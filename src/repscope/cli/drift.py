"""``repscope drift``: how far each layer's features moved between two checkpoints of one model.

FEATURES_A and FEATURES_B hold the same inputs extracted from two checkpoints (before and after
fine-tuning, LP-FT vs FT). Per layer: per-sample cosine and relative L2 distance, linear CKA and
the change of the head kernel ``H Hᵀ``. Records ``feature_drift`` results for ``repscope
report``.
"""

from __future__ import annotations

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    layers_option,
    model_name,
    pair_by_option,
    print_table,
    settings,
)


@click.command(name="drift")
@features_argument("features_a")
@features_argument("features_b")
@layers_option("Layer present in both checkpoints (repeatable; default: every layer).")
@dataset_option
@pair_by_option
@json_option
def drift(features_a: str, features_b: str, layers: tuple[str, ...], dataset: str, pair_by: str,
          as_json: bool) -> None:
    """Feature drift of every layer from checkpoint A (FEATURES_A) to checkpoint B (FEATURES_B)
    of the same architecture, on the same inputs: per-sample cosine, relative L2, linear CKA
    and head-kernel change (LP-FT diagnostics)."""
    from repscope.probe._drift import CheckpointMismatchError, feature_drift
    from repscope.store import open_layers, pair_sources

    caller = "repscope drift"
    pa, pb = check_exists(features_a, "features"), check_exists(features_b, "features")
    a = open_layers(pa, name=f"FEATURES_A ({pa})")
    b = open_layers(pb, name=f"FEATURES_B ({pb})")
    if set(a.layers) != set(b.layers):
        only_a = sorted(set(a.layers) - set(b.layers))
        only_b = sorted(set(b.layers) - set(a.layers))
        raise CheckpointMismatchError(
            "FEATURES_A and FEATURES_B must be two checkpoints of one architecture (the same "
            f"layers); layers only in A: {', '.join(only_a) or 'none'}; only in B: "
            f"{', '.join(only_b) or 'none'}.")
    names = list(layers) or list(a.layers)
    missing = [n for n in names if n not in a.layers]
    if missing:
        raise CheckpointMismatchError(
            f"--layer {missing[0]!r} is not a layer of the two checkpoints; they have: "
            f"{', '.join(a.layers)}.")
    for name in names:
        sa, sb = a.shape(name), b.shape(name)
        if tuple(sa) != tuple(sb):
            raise CheckpointMismatchError(
                f"layer {name!r} holds {tuple(sa)} per sample in FEATURES_A but {tuple(sb)} in "
                "FEATURES_B; expected two checkpoints of one architecture (the same widths).")
    a, b, note = pair_sources(a, b, by=pair_by, caller=caller)  # type: ignore[arg-type]
    if note:
        click.echo(f"{caller}: {note}", err=True)
    ma, mb = model_name(pa), model_name(pb)
    model = ma if ma == mb else f"{ma} vs {mb}"
    results = []
    with settings().db() as db, db.run(
        "drift", {"a": str(pa), "b": str(pb), "pair_by": pair_by}, model=model, dataset=dataset,
    ) as run_id:
        for name in names:
            res = feature_drift(a.read(name), b.read(name), layer=name)
            records = res.to_records(model=model, dataset=dataset, run_id=run_id,
                                     params={"a": str(pa), "b": str(pb)})
            db.add_many(records)
            results.append({"layer": name, **dict(records[0].values)})
    if as_json:
        echo_json(results)
        return
    rows = [(r["layer"], r["width"], r["cosine_mean"], r["cosine_median"], r["relative_l2"],
             r["linear_cka"], r["head_kernel_change"]) for r in results]
    print_table(rows, ["layer", "width", "cosine mean", "cosine median", "relative L2",
                       "linear CKA", "head-kernel change"],
                title=f"Feature drift from A = {pa.name} to B = {pb.name} on "
                      f"{results[0]['n_samples']} inputs")


COMMANDS = [drift]
