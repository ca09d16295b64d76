"""``repscope nn lowrank|tucker``: the low-rank structure of a model's weights and the Tucker
structure of its activations.

``lowrank`` records ``low_rank_spectrum`` per weight matrix of a zoo model (linear and
convolution layers; Eckart–Young error at every rank, effective and stable rank); ``tucker``
records ``tucker`` for a token layer (samples x tokens x channels) or a spatial map (samples x
channels x height x width) of a FeatureStore. Both render in ``repscope report``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    json_option,
    model_name,
    parse_ints,
    print_table,
    settings,
)


@click.group(name="nn")
def nn() -> None:
    """Structure of layers: low-rank spectra of weights, Tucker of activations."""


def _weight_layers(module: Any, pattern: str | None) -> list[tuple[str, Any]]:
    """``(name, layer)`` of every linear and convolution layer of a torch module whose name
    matches the glob ``pattern``, in module order."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, kinds) and (pattern is None or fnmatch.fnmatch(name, pattern))]


@nn.command(name="lowrank")
@click.argument("model")
@click.option("--layer", "pattern", default=None,
              help="Only layers whose module name matches this glob (e.g. '*_project_conv').")
@click.option("--min-size", default=16, show_default=True,
              help="Skip weight matrices whose smaller side is below this (biases, tiny "
                   "depthwise kernels).")
@json_option
def lowrank(model: str, pattern: str | None, min_size: int, as_json: bool) -> None:
    """Singular-value spectrum of every linear and convolution weight of a zoo MODEL: energy
    kept at each rank (Eckart–Young), effective rank, stable rank, rank for 90% energy."""
    from repscope.exceptions import RepscopeTypeError, RepscopeValueError
    from repscope.nn._maestro import low_rank_spectrum
    from repscope.zoo import load_model

    loaded = load_model(model)
    module = getattr(loaded, "model", loaded)
    if not hasattr(module, "named_modules"):
        raise RepscopeTypeError(
            f"repscope nn lowrank reads the weights of torch models; {model} is "
            f"{type(module).__name__} (an ONNX graph?). Pick a torch model from "
            "`repscope models`.")
    from repscope._threads import single_thread

    layers = _weight_layers(module, pattern)
    results = []
    with single_thread():  # many small SVDs: a contended thread pool only spins
        for name, layer in layers:
            res = low_rank_spectrum(layer)
            if min(res.shape) >= min_size:
                results.append((name, res))
    if not results:
        raise RepscopeValueError(
            f"no linear or convolution weight of {model} matches --layer {pattern or '*'} with "
            f"both sides >= --min-size {min_size}.")
    with settings().db() as db, db.run("nn lowrank", {"pattern": pattern,
                                                      "min_size": min_size},
                                       model=model) as run_id:
        for name, res in results:
            db.add_many(res.to_records(model=model, layer=name, run_id=run_id,
                                       params={"min_size": min_size}))
    rows = [(name, f"{res.shape[0]}x{res.shape[1]}", res.effective_rank, res.stable_rank,
             res.n_components_90, min(res.shape)) for name, res in results]
    if as_json:
        echo_json([{"layer": r[0], "shape": list(res.shape), "effective_rank": r[2],
                    "stable_rank": r[3], "n_components_90": r[4]}
                   for r, (_, res) in zip(rows, results)])
        return
    print_table(rows, ["layer", "matrix", "effective rank", "stable rank", "rank for 90%",
                       "full rank"], title=f"Low-rank spectra: {model}")


@nn.command(name="tucker")
@click.argument("features")
@click.option("--layer", required=True, help="A token layer or a spatial map of FEATURES.")
@click.option("--ranks", default="8,8,16", show_default=True,
              help="Ranks per mode: samples,tokens,channels (token layers) or "
                   "samples,channels,height,width (maps).")
@click.option("--center", is_flag=True,
              help="Subtract the mean token (token layers) before decomposing.")
@click.option("--max-samples", default=500, show_default=True,
              help="Use the first N samples (the tensor is held in memory).")
@click.option("--n-iter", default=20, show_default=True,
              help="HOOI sweeps at most (each sweep can only raise the fit; it stops earlier "
                   "once the fit changes by less than 1e-10).")
@dataset_option
@json_option
def tucker(features: str, layer: str, ranks: str, center: bool, max_samples: int, n_iter: int,
           dataset: str, as_json: bool) -> None:
    """Tucker decomposition (HOOI) of a layer's activations: energy kept per mode and the fit
    of a rank-(r1, r2, ...) core."""
    import numpy as np

    from repscope.exceptions import RepscopeValueError
    from repscope.nn._tucker import tucker as tucker_fn
    from repscope.nn._tucker import tucker_of_tokens
    from repscope.store import FeatureStore

    path = check_exists(features, "features")
    store = FeatureStore.open(path)
    if layer not in store.layers:
        raise RepscopeValueError(
            f"--layer {layer!r} is not a layer of {path}; it has: {', '.join(store.layers)}.")
    r = parse_ints(ranks, "--ranks", example="8,8,16")
    n = min(store.n_samples, int(max_samples))
    info = store.layer_info(layer)
    from repscope._threads import single_thread

    if info.ragged:
        rows = store.read_ragged(layer, np.arange(n))
        with single_thread():  # mode Grams of a few hundred columns: one thread is fastest
            res = tucker_of_tokens(rows, r, center=center, n_iter=n_iter)
        kind = "tokens"
    elif len(info.shape_tail) >= 2:
        if center:
            raise RepscopeValueError("--center applies to token layers; this layer is a map.")
        with single_thread():
            res = tucker_fn(np.asarray(store.read(layer, np.arange(n)), dtype=np.float64), r,
                            n_iter=n_iter)
        kind = "map"
    else:
        raise RepscopeValueError(
            f"--layer {layer!r} holds one vector per sample (shape {info.shape_tail}); Tucker "
            "needs a token layer (--pooling tokens) or a spatial map (--pooling none).")
    model = model_name(path)
    params = {"ranks": list(res.ranks), "center": center, "n_samples": n, "kind": kind,
              "n_iter": n_iter}
    with settings().db() as db, db.run("nn tucker", {"features": str(path), **params},
                                       model=model, dataset=dataset) as run_id:
        db.add_many(res.to_records(model=model, dataset=dataset, layer=layer, run_id=run_id,
                                   params=params))
    if as_json:
        echo_json({"layer": layer, "shape": list(res.shape), "ranks": list(res.ranks),
                   "mode_energy": res.mode_energy, "fit": res.fit})
        return
    names = (["samples", "tokens", "channels"] if kind == "tokens" else
             ["samples", "channels"] + [f"spatial {i + 1}" for i in range(len(res.shape) - 2)])
    print_table([(nm, size, rank, e) for nm, size, rank, e in
                 zip(names, res.shape, res.ranks, res.mode_energy)],
                ["mode", "size", "rank", "energy kept by this mode alone"],
                title=f"Tucker of {model} {layer}: fit {res.fit:.3f} "
                      f"(relative error {res.relative_error:.3f})")


COMMANDS = [nn]
