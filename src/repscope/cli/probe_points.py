"""``repscope probe-points``: per-point probes on spatial feature maps (Masked Scene Modeling).

Every spatial layer of FEATURES (a store extracted with ``--pooling none``; ViT patch
tokens are laid out as their square grid first) is sampled
bilinearly at each point of ``--points`` (an ``.npz`` with ``points`` (n_images, n_points, 2)
as (row, col), ``labels`` (n_images, n_points) and optionally ``image_size`` (height, width)
when the points are in pixels); per-point ridge and kNN probes are scored by mIoU on held-out
images, layer by layer and on all layers concatenated. Records ``probe_points`` results.
"""

from __future__ import annotations

from pathlib import Path
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

_PROBES = ("linear", "knn")


def _read_points(path: Path) -> tuple[Any, Any, tuple[int, int] | None]:
    import numpy as np

    from repscope.exceptions import RepscopeValueError

    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # not an npz at all
        raise RepscopeValueError(
            f"--points {path} must be an .npz file with arrays 'points' and 'labels'; it could "
            f"not be read ({type(err).__name__}).") from None
    if not hasattr(data, "files") or not {"points", "labels"} <= set(data.files):
        have = ", ".join(getattr(data, "files", [])) or "a single array"
        raise RepscopeValueError(
            f"--points {path} must hold arrays 'points' and 'labels'; it holds {have}.")
    size = None
    if "image_size" in data.files:
        s = np.asarray(data["image_size"]).ravel()
        if s.size != 2:
            raise RepscopeValueError(
                f"--points {path}: 'image_size' must be (height, width); got {s.size} values.")
        size = (int(s[0]), int(s[1]))
    return data["points"], data["labels"], size


@click.command(name="probe-points")
@features_argument()
@click.option("--points", "points_path", required=True, type=click.Path(),
              help="An .npz with 'points' (n_images, n_points, 2: row, col), 'labels' "
              "(n_images, n_points) and optionally 'image_size' (height, width; without it the "
              "points are normalised to [0, 1]).")
@layers_option("Spatial layer to sample (repeatable; default: every spatial layer, in order).")
@click.option("--probe", "probes", multiple=True, type=click.Choice(_PROBES),
              help="Per-point probe (repeatable; default: both). linear: closed-form ridge; "
              "knn: DINO-weighted cosine kNN.")
@click.option("--k", "k", default=20, show_default=True, help="Neighbours of the kNN probe.")
@click.option("--test-fraction", default=0.33, show_default=True,
              help="Fraction of the images held out for testing (split by image).")
@click.option("--seed", default=0, show_default=True, help="Seed of the image split.")
@click.option("--prefix-tokens", type=int, default=None,
              help="Tokens before the patch grid (CLS, registers) of token layers "
                   "(default: those above the largest square).")
@dataset_option
@progress_option
@json_option
def probe_points(features: str, points_path: str, layers: tuple[str, ...],
                 probes: tuple[str, ...], k: int, test_fraction: float, seed: int,
                 prefix_tokens: int | None, dataset: str, as_json: bool) -> None:
    """Per-point probes on every spatial (or patch-token) layer of FEATURES and on all of them
    concatenated (bilinear sampling per level at each point), scored by mIoU on held-out
    images."""
    from repscope._validation import check_scalar
    from repscope.exceptions import RepscopeValueError
    from repscope.probe._dense import (
        PointLabelShapeError,
        PointOutOfRangeError,
        default_point_probes,
    )
    from repscope.probe._dense import (
        probe_points as run_probe_points,
    )
    from repscope.similarity._dense import patch_grid
    from repscope.store import open_layers

    caller = "repscope probe-points"
    check_scalar(k, "--k", caller=caller, kind=int, min_value=1)
    if prefix_tokens is not None:
        check_scalar(prefix_tokens, "--prefix-tokens", caller=caller, kind=int, min_value=0)
    if not 0.0 < test_fraction < 1.0:
        raise RepscopeValueError(f"--test-fraction must be in (0, 1); got {test_fraction:g}.")
    path = check_exists(features, "features")
    ppath = check_exists(points_path, "--points file")
    pts, labels, size = _read_points(ppath)
    src = open_layers(path, layers or None, name=f"FEATURES ({path})")
    names = list(layers) or [n for n in src.layers if len(src.shape(n)) in (2, 3)]
    for n in names:
        if len(src.shape(n)) not in (2, 3):
            raise RepscopeValueError(
                f"--layer {n!r} of {path} holds {src.shape(n)} per sample; expected a spatial "
                "map (channels, height, width) or patch tokens (tokens, d). Extract it with "
                "--pooling none.")
    if not names:
        raise RepscopeValueError(
            f"FEATURES ({path}) has no spatial or token layer; extract with --pooling none.")
    maps = {}
    for n in names:
        x = src.read(n)
        x = x.reshape(x.shape[0], *src.shape(n))
        if x.ndim == 3:  # ViT tokens: the trailing square of patches as a (d, h, w) map
            x = patch_grid(x, prefix_tokens=prefix_tokens,
                           name=f"layer {n!r} of FEATURES").transpose(0, 3, 1, 2)
        maps[n] = x
    chosen = probes or _PROBES
    every = default_point_probes(k)
    params = {"points": str(ppath), "probes": list(chosen), "k": k,
              "test_fraction": test_fraction, "seed": seed, "prefix_tokens": prefix_tokens,
              "image_size": list(size) if size else None}
    try:
        res = run_probe_points(maps, pts, labels, layers=names,
                               probes={p: every[p] for p in chosen}, image_size=size,
                               test=test_fraction, seed=seed, progress=show_progress())
    except (PointOutOfRangeError, PointLabelShapeError) as err:
        raise type(err)(f"--points {ppath}: {err}") from None
    model = model_name(path)
    with settings().db() as db, db.run("probe-points", {"features": str(path), **params},
                                       model=model, dataset=dataset) as run_id:
        records = res.to_records(model=model, dataset=dataset, run_id=run_id, params=params)
        db.add_many(records)
    if as_json:
        echo_json([{"layer": r.layer, **r.values} for r in records])
        return
    rows = [(row, "+".join(res.row_layers[i]) if row == "multi-level" else "",
             res.n_features[i], *res.miou[i])
            for i, row in enumerate(res.rows)]
    print_table(rows, ["layer", "levels", "width", *(f"mIoU {p}" for p in res.probes)],
                title=f"Per-point probes on {model}: {res.n_train_points} training and "
                      f"{res.n_test_points} test points, {res.n_classes} classes")


COMMANDS = [probe_points]
