"""``repscope dense``: DiveUp's dense relational measures between two models' patch features.

For every pair of layers: the agreement of the two local centre-of-mass (COM) fields on a
common grid, beside a mismatched-image baseline and the linear CKA of the features, and the
high-norm (artifact) tokens of each side. Records ``dense_com`` results for ``repscope report``.
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
    pair_by_option,
    print_table,
    settings,
)


def _spatial_layers(source: Any, chosen: tuple[str, ...], side: str, path: Any) -> list[str]:
    """The layers to compare: those given, else every layer with a per-sample grid."""
    from repscope.exceptions import RepscopeValueError

    names = list(chosen) or [name for name in source.layers if len(source.shape(name)) in (2, 3)]
    for name in names:
        if len(source.shape(name)) not in (2, 3):
            raise RepscopeValueError(
                f"--layer-{side} {name!r} of {path} holds {source.shape(name)} per sample; "
                "expected tokens (tokens, d) or a spatial map (c, h, w). Extract it with "
                "--pooling none.")
    if not names:
        raise RepscopeValueError(
            f"FEATURES_{side.upper()} ({path}) has no token or spatial layer; extract with "
            "--pooling none.")
    return names


def _parse_size(text: str | None) -> tuple[int, int] | None:
    from repscope.exceptions import RepscopeValueError

    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        h = int(parts[0])
        return h, int(parts[-1])
    raise RepscopeValueError(f"--grid must be SIDE or HEIGHTxWIDTH (e.g. 14 or 14x14); got {text!r}.")


@click.command(name="dense")
@features_argument("features_a")
@features_argument("features_b")
@layers_option("Layer of A (repeatable; default: every token or spatial layer).",
               flag="--layer-a", dest="layers_a")
@layers_option("Layer of B (repeatable; default: every token or spatial layer).",
               flag="--layer-b", dest="layers_b")
@click.option("--grid", "grid", default=None,
              help="Common grid, SIDE or HEIGHTxWIDTH (default: the smaller of the two).")
@click.option("--window", default=5, show_default=True,
              help="Odd side of the COM window, in grid cells.")
@click.option("--tau", default=0.1, show_default=True, help="Softmax temperature on cosines.")
@click.option("--artifact-threshold", default=2.0, show_default=True,
              help="Flag tokens whose norm exceeds this multiple of their window's median.")
@click.option("--prefix-tokens", type=int, default=None,
              help="Tokens before the patch grid (CLS, registers) of token layers "
                   "(default: those above the largest square).")
@dataset_option
@pair_by_option
@json_option
def dense(features_a: str, features_b: str, layers_a: tuple[str, ...], layers_b: tuple[str, ...],
          grid: str | None, window: int, tau: float, artifact_threshold: float,
          prefix_tokens: int | None, dataset: str, pair_by: str, as_json: bool) -> None:
    """COM-field agreement (DiveUp) of every token or spatial layer of FEATURES_A with every one
    of FEATURES_B, on the same images (stores extracted with --pooling none), beside their
    linear CKA and high-norm artifact tokens."""
    from repscope._validation import check_scalar
    from repscope.exceptions import RepscopeValueError
    from repscope.similarity._dense import compare_dense, patch_grid
    from repscope.store import open_layers, pair_sources

    caller = "repscope dense"
    for name, value, lo in (("--tau", tau, 0.0), ("--artifact-threshold", artifact_threshold, 1.0)):
        if not value > lo:
            raise RepscopeValueError(f"{name} must be greater than {lo:g}; got {value:g}.")
    if window < 1 or window % 2 == 0:
        raise RepscopeValueError(f"--window must be an odd positive integer (3, 5, ...); got {window}.")
    if prefix_tokens is not None:
        check_scalar(prefix_tokens, "--prefix-tokens", caller=caller, kind=int, min_value=0)
    size = _parse_size(grid)
    if size is not None and min(size) <= 2 * (window // 2):
        raise RepscopeValueError(
            f"--grid {size[0]}x{size[1]} leaves no interior for --window {window}; pass a grid "
            f"with both sides above {2 * (window // 2)} or a smaller --window.")
    pa, pb = check_exists(features_a, "features"), check_exists(features_b, "features")
    a = open_layers(pa, layers_a or None, name=f"FEATURES_A ({pa})")
    b = open_layers(pb, layers_b or None, name=f"FEATURES_B ({pb})")
    names_a, names_b = _spatial_layers(a, layers_a, "a", pa), _spatial_layers(b, layers_b, "b", pb)
    shapes = {("a", n): a.shape(n) for n in names_a} | {("b", n): b.shape(n) for n in names_b}
    a, b, note = pair_sources(a, b, by=pair_by, caller=caller)  # type: ignore[arg-type]
    if note:
        click.echo(f"{caller}: {note}", err=True)

    def grid_of(side: str, src: Any, name: str) -> Any:
        x = src.read(name)
        return patch_grid(x.reshape(x.shape[0], *shapes[(side, name)]),
                          prefix_tokens=prefix_tokens, name=f"layer {name!r} of FEATURES_"
                          f"{side.upper()}")

    ga = {n: grid_of("a", a, n) for n in names_a}
    gb = {n: grid_of("b", b, n) for n in names_b}
    ma, mb = model_name(pa), model_name(pb)
    model = f"{ma} vs {mb}"
    params = {"window": window, "tau": tau, "artifact_threshold": artifact_threshold,
              "grid": list(size) if size else None, "prefix_tokens": prefix_tokens}
    results = []
    with settings().db() as db, db.run(
        "dense", {"a": str(pa), "b": str(pb), "pair_by": pair_by, **params},
        model=model, dataset=dataset,
    ) as run_id:
        for la in names_a:
            for lb in names_b:
                res = compare_dense(ga[la], gb[lb], size=size, window=window, tau=tau,
                                    artifact_threshold=artifact_threshold, layer_a=la, layer_b=lb)
                records = res.to_records(model=model, dataset=dataset, layer=f"{la} | {lb}",
                                         run_id=run_id, params=params)
                db.add_many(records)
                results.append(dict(records[0].values))
    if as_json:
        echo_json(results)
        return
    rows = [(r["layer_a"], r["layer_b"], "x".join(map(str, r["grid"])), r["com_agreement"],
             r["com_agreement_shuffled"], r["linear_cka"], r["linear_cka_shuffled"],
             r["artifacts_a"], r["artifacts_b"])
            for r in results]
    print_table(rows, ["layer A", "layer B", "grid", "COM", "COM shuffled", "CKA",
                       "CKA shuffled", "high-norm A", "high-norm B"],
                title=f"COM-field agreement (DiveUp) and linear CKA: A = {ma}, B = {mb}; window "
                      f"{window}, tau {tau:g}; shuffled: image i of A vs image i+1 of B")


COMMANDS = [dense]
