"""The ``repscope.nn`` steps of ``repscope demo``: angular margins of the ArcFace probe and the
low-rank spectra of the demo models' weights; Tucker of MiniLM token activations on Austen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_margins_step", "demo_tucker_step"]

TUCKER_MODEL, TUCKER_LAYER = "minilm-l6", "encoder.layer.5"
TUCKER_TEXTS, TUCKER_LENGTH, TUCKER_RANKS = 200, 64, (8, 8, 16)


def demo_margins_step(ctx: DemoContext) -> list[Record]:
    """ArcFace vs softmax probe on the last layer of the first model: held-out accuracy and
    angular margins (analysis ``probe_margins``); and the low-rank spectrum of every linear and
    convolution weight of each demo model (``low_rank_spectrum``)."""
    from repscope._threads import single_thread
    from repscope.cli.nn import _weight_layers
    from repscope.nn._maestro import low_rank_spectrum
    from repscope.probe._margin import compare_margins
    from repscope.zoo import load_model

    model = next(iter(ctx.stores))
    layer = ctx.layers[model][-1]
    y = np.asarray(ctx.labels)
    X = np.asarray(ctx.stores[model].read(layer), dtype=np.float64).reshape(y.size, -1)
    with single_thread():
        out = compare_margins(X, y, "arcface", test_size=0.3, seed=ctx.seed)
    heads = out.heads
    ctx.log(f"[demo] {model} {layer}: ArcFace mean angular margin "
            f"{heads['arcface']['margin_mean']:.1f} deg (accuracy "
            f"{heads['arcface']['accuracy']:.3f}) vs softmax "
            f"{heads['softmax']['margin_mean']:.1f} deg ({heads['softmax']['accuracy']:.3f})")
    records = out.to_records(model=model, layer=layer, **ctx.record_context(),
                             params={"probe": "arcface", "test_size": 0.3, "seed": ctx.seed})
    for name in ctx.stores:
        module = getattr(load_model(name), "model", None)
        if not hasattr(module, "named_modules"):
            continue
        with single_thread():
            spectra = [(n, low_rank_spectrum(w)) for n, w in _weight_layers(module, None)]
        for layer_name, res in spectra:
            if min(res.shape) >= 16:
                records += res.to_records(model=name, layer=layer_name, run_id=ctx.run_id,
                                          params={"min_size": 16})
    return records


def demo_tucker_step(ctx: DemoContext) -> list[Record]:
    """Tucker (HOOI) of MiniLM-L6's last-layer token activations on Austen paragraphs
    (``tucker``). Raises DataNotFoundError without the Austen novels (the step is optional)."""
    from repscope._threads import single_thread
    from repscope.extract import extract
    from repscope.nn._tucker import tucker_of_tokens
    from repscope.zoo import load_dataset, load_model

    data = load_dataset("austen", n=TUCKER_TEXTS, seed=ctx.seed)
    ctx.log(f"[demo] Tucker: {TUCKER_MODEL} {TUCKER_LAYER} tokens of {TUCKER_TEXTS} Austen "
            f"paragraphs (at most {TUCKER_LENGTH} tokens)")
    with single_thread(blas=False):
        out = extract(load_model(TUCKER_MODEL), list(data.inputs), layers=[TUCKER_LAYER],
                      pooling="tokens", batch_size=32, progress=False,
                      max_length=TUCKER_LENGTH)
    with single_thread():
        res = tucker_of_tokens(out[TUCKER_LAYER], TUCKER_RANKS, n_iter=20)
    ctx.log(f"[demo] Tucker {TUCKER_RANKS}: fit {res.fit:.3f}; energy per mode (samples, "
            f"tokens, channels) {', '.join(f'{e:.2f}' for e in res.mode_energy)}")
    return res.to_records(model=TUCKER_MODEL, dataset="austen", layer=TUCKER_LAYER,
                          run_id=ctx.run_id,
                          params={"ranks": list(res.ranks), "center": False, "kind": "tokens",
                                  "n_samples": TUCKER_TEXTS, "n_iter": 20})
