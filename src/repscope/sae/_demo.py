"""The demo's SAE step: TopK SAEs on EfficientNet-Lite0's last block, over MNIST images.

The demo has already extracted every block of EfficientNet-Lite0 (average-pooled) into a
FeatureStore. A sweep of three TopK SAEs (k = 4, 8, 16, four times as wide as the features)
is trained in one pass over 80 % of the images, each is evaluated on the held-out 20 %, and
the k = 8 SAE's most active latents are illustrated by their top-activating held-out digits
(PNG thumbnails inside the record). One ``sae`` record per SAE goes into the results database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_sae_step"]

MODEL = "efficientnet-lite0"
KS = (4, 8, 16)
EXPANSION = 4
N_STEPS = 200
OPTIMIZER: Final = "adam"  # LR is Adam's for these small SAEs (the default is sign-based)
LR = 2e-3
BATCH_SIZE = 256
HOLDOUT = 0.2
SHOW_K = 8
N_LATENTS, TOP = 8, 6


def _last_block(layers: list[str]) -> str:
    """The last MBConv block (``..._blocks.N`` with the largest N), else the last layer."""
    blocks = []
    for name in layers:
        m = re.search(r"blocks\.(\d+)$", name)
        if m:
            blocks.append((int(m.group(1)), name))
    return max(blocks)[1] if blocks else layers[-1]


def _thumbnail(image: Any) -> str:
    """Base64 PNG of one image: uint8 kept, other dtypes min-max scaled; channels last."""
    from repscope.sae.evaluation._inspect import png_base64

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.round(255 * (a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    return png_base64(a)


def demo_sae_step(ctx: DemoContext) -> list[Record]:
    """TopK SAEs on EfficientNet-Lite0's last block: one ``sae`` record per SAE.

    Parameters
    ----------
    ctx : DemoContext
        The demo's stores, layers, images (for the thumbnails, in store order), dataset, seed
        (train/held-out split, SAE initialisation and batch order) and log.

    Returns
    -------
    list of Record

    Notes
    -----
    About 13 CPU-seconds for the demo's 1,000 images (measured on a loaded 2-core machine:
    SAEs of width 1,280 on 320 features, 200 steps of 256 vectors, on one torch thread). Without
    EfficientNet-Lite0 among the demo's models the step logs why and records nothing.
    """
    if MODEL not in ctx.stores or not ctx.layers.get(MODEL):
        ctx.log(f"[demo] SAE step skipped: {MODEL} is not among the demo's models")
        return []
    from repscope._threads import single_thread

    # The matrices are small: one thread is as fast, and avoids OpenMP threads spin-waiting
    # for each other on a busy machine (several times the CPU time on 2 shared cores).
    with single_thread(blas=False):
        return _run(
            ctx.stores[MODEL],
            _last_block(list(ctx.layers[MODEL])),
            ctx.inputs,
            ctx.run_id,
            ctx.dataset,
            ctx.seed,
            ctx.log,
        )


def _run(
    store: Any,
    layer: str,
    images: Any,
    run_id: str,
    dataset: str,
    seed: int,
    log: Callable[[str], None],
) -> list[Record]:
    import torch

    from repscope.sae import TopKConfig, TopKSAE, TrainSettings, sweep
    from repscope.sae._records import SAERunResult
    from repscope.sae.evaluation._inspect import top_activations, top_latents_values
    from repscope.sae.metrics import evaluate

    t0 = time.perf_counter()
    X = np.asarray(store.read(layer), dtype=np.float32).reshape(store.n_samples, -1)
    n, d = X.shape
    order = np.random.default_rng(seed).permutation(n)
    n_eval = max(1, round(HOLDOUT * n))
    train_idx, eval_idx = np.sort(order[n_eval:]), np.sort(order[:n_eval])
    X_train, X_eval = torch.from_numpy(X[train_idx]), torch.from_numpy(X[eval_idx])
    width = EXPANSION * d
    saes = [TopKSAE(TopKConfig(d_in=d, d_sae=width, k=min(k, width), seed=seed)) for k in KS]
    log(
        f"[demo] SAEs: TopK k={', '.join(map(str, KS))} (width {width}) on {MODEL} [{layer}], "
        f"{len(train_idx)} training / {n_eval} held-out images"
    )
    results = sweep(
        X_train,
        saes,
        TrainSettings(
            n_steps=N_STEPS,
            batch_size=min(BATCH_SIZE, len(train_idx)),
            optimizer=OPTIMIZER,
            lr=LR,
            seed=seed,
            log_every=10,
            check_every=50,
        ),
    )
    t_train = time.perf_counter() - t0
    pixels = np.asarray(images)
    records: list[Record] = []
    for sae, res in zip(saes, results):
        ev = evaluate(sae, X_eval)
        tops = None
        if sae.cfg.k == min(SHOW_K, width):
            top = top_activations(sae, X_eval, n_latents=N_LATENTS, top=TOP, seed=seed)

            def describe(row: int) -> dict[str, Any]:
                i = int(eval_idx[row])
                return {"index": i, "image_png": _thumbnail(pixels[i])}

            tops = top_latents_values(top, describe)
        run = SAERunResult(
            sae, ev, training=res, top_latents=tops,
            extra={"n_train": len(train_idx),
                   "n_eval": n_eval, "n_train_samples": len(train_idx),
                   "n_eval_samples": n_eval, "eval_on": "held-out", "n_steps": res.n_steps,
                   "seconds": res.seconds})
        records += run.to_records(
            model=MODEL, dataset=dataset, layer=layer, run_id=run_id,
            params={"architecture": "topk", "d_sae": width, "k": sae.cfg.k, "n_steps": N_STEPS,
                    "batch_size": BATCH_SIZE, "optimizer": OPTIMIZER, "lr": LR,
                    "holdout": HOLDOUT, "seed": seed})
    fvus = ", ".join(f"k={r.values['k']}: {r.values['fvu']:.3f}" for r in records)
    log(
        f"[demo] SAEs: held-out FVU {fvus} (train {t_train:.1f} s, total "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return records
