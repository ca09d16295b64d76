"""The concepts step of ``repscope demo``: a concept direction and its erasure in the deepest
layer of at most 512 features of the demo's first vision model (the digit parity of MNIST), and attention metrics of
MiniLM-L6 on Austen paragraphs (skipped when the novels are not installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_concepts_step"]

#: Widest layer the demo erases a concept from.
MAX_WIDTH = 512
#: Austen paragraphs the attention metrics run on.
ATTENTION_TEXTS = 16


def demo_concepts_step(ctx: DemoContext) -> list[Record]:
    """Directions (difference of means, probe, CAV with its p-value) and erasure (LEACE, INLP)
    of "the digit is even" in the first model's deepest layer of at most :data:`MAX_WIDTH`
    features; attention metrics of MiniLM-L6 on Austen paragraphs.

    Parameters
    ----------
    ctx : DemoContext

    Returns
    -------
    list of Record
    """
    from repscope._threads import single_thread

    with single_thread():  # small arrays and probes
        return _step(ctx)


def _step(ctx: DemoContext) -> list[Record]:
    from repscope.concepts._directions import concept_directions
    from repscope.concepts._erasure import erasure

    y = np.asarray(ctx.labels)
    model = next(iter(ctx.stores))
    store = ctx.stores[model]
    layer = _deepest_narrow_layer(store, ctx.layers[model])
    X = np.asarray(store.read(layer), dtype=np.float64).reshape(y.size, -1)
    parity = np.where(y.astype(int) % 2 == 0, "even", "odd")
    ctx.log(f"[demo] concepts: 'even digit' direction and erasure in {model} [{layer}]")
    params = {"seed": ctx.seed, "concept": "digit parity"}
    kw = {"model": model, "layer": layer, "params": params, **ctx.record_context()}
    records = concept_directions(X, parity, positive="even", n_random=10,
                                 n_random_directions=200, random_state=ctx.seed).to_records(**kw)
    res = erasure(X, parity, random_state=ctx.seed)
    records += res.to_records(**kw)
    for r in records[1:]:
        v = r.values
        ctx.log(f"[demo] concepts: {v['method']}: probe accuracy {v['accuracy_before']:.3f} -> "
                f"{v['accuracy_after']:.3f} (chance {v['chance']:.3f}), relative distance "
                f"moved {v['relative_distance']:.3f}")
    records += _attention_records(ctx)
    return records


def _deepest_narrow_layer(store: object, layers: list[str]) -> str:
    """The deepest layer with at most :data:`MAX_WIDTH` features (INLP's probes stay quick);
    the last layer when none is that narrow."""
    import math

    def width(layer: str) -> int:
        info = getattr(store, "layer_info", None)
        if info is not None:  # a FeatureStore: from the manifest
            return math.prod(info(layer).shape_tail)
        shape = getattr(store, "shape", None)  # a LayerSource
        return math.prod(shape(layer)) if shape is not None else 0

    for layer in reversed(layers):
        if width(layer) <= MAX_WIDTH:
            return layer
    return layers[-1]


def _attention_records(ctx: DemoContext) -> list[Record]:
    import repscope.zoo
    from repscope.concepts._attention import model_attention_metrics
    from repscope.exceptions import DataNotFoundError

    try:
        texts = [str(t) for t in repscope.zoo.load_dataset("austen",
                                                           n=ATTENTION_TEXTS).inputs]
        loaded = repscope.zoo.load_model("minilm-l6")
    except DataNotFoundError as exc:
        ctx.log(f"[demo] concepts: attention metrics skipped ({exc})")
        return []
    res = model_attention_metrics(loaded, texts, max_length=64)
    ctx.log(f"[demo] concepts: attention metrics of minilm-l6 on {len(texts)} Austen paragraphs")
    return res.to_records(model="minilm-l6", dataset="austen", run_id=ctx.run_id,
                          params={"n_texts": len(texts), "max_length": 64, "groups": "halves"})
