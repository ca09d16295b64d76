"""The demo's alignment step: MiniLM-L6 onto MiniLM-L3 (ONNX) on Austen paragraphs.

Both sentence encoders embed the same ~400 paragraphs (mean-pooled last layer); an
:class:`~repscope.align.OrthogonalMap` fitted on a train split is scored on the rest (retrieval
top-1/5 against the unmapped baseline, paired cosine, matching, the orthogonality gap) and a
CCA subspace sweep over k is added. One ``alignment`` record goes into the results database.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["demo_alignment_step", "fixed_sentences"]

MODEL_A, LAYER_A = "minilm-l6", "encoder.layer.5"
MODEL_B, LAYER_B = "minilm-l3-onnx", "sentence_embedding"  # its mean-pooled output
N_TEXTS, MAX_LENGTH, N_TRAIN = 400, 64, 250
SWEEP_KS = (4, 8, 16, 32, 64, 128, 384)


def fixed_sentences(n: int = N_TEXTS) -> list[str]:
    """``n`` distinct, deterministic English sentences (the fallback when the Austen novels
    are not installed): subject x verb x object x place templates in a fixed order."""
    subjects = ["The old sailor", "A young teacher", "My neighbour", "The tired doctor",
                "Her brother", "The quiet child", "A famous painter", "The night guard"]
    verbs = ["quietly repaired", "happily painted", "carefully studied", "slowly carried",
             "proudly showed", "angrily threw", "gently washed"]
    objects = ["a wooden boat", "the broken clock", "an ancient map", "the red bicycle",
               "a basket of apples", "the silver key", "a pile of letters", "the garden gate"]
    places = ["near the harbour", "in the kitchen", "before dawn", "after the storm",
              "behind the church", "at the market", "on the hill", "during the festival"]
    combos = itertools.product(subjects, verbs, objects, places)
    picked = list(itertools.islice(combos, 0, None, 5))[:n]
    return [f"{s} {v} {o} {p}." for s, v, o, p in picked]


def _texts(seed: int, log: Callable[[str], None]) -> tuple[list[str], str, str]:
    from repscope.exceptions import DataNotFoundError
    from repscope.zoo import load_dataset

    try:
        data = load_dataset("austen", n=N_TEXTS, seed=seed)
        return list(data.inputs), "austen", ""
    except DataNotFoundError:
        note = (f"The Austen novels (Debian package r-cran-janeaustenr) are not installed; the "
                f"alignment ran on {N_TEXTS} fixed template sentences instead.")
        log(f"[demo] {note}")
        return fixed_sentences(N_TEXTS), "fixed sentences", note


def demo_alignment_step(ctx: DemoContext) -> list[Record]:
    """The MiniLM-L6 -> MiniLM-L3 alignment of a demo run: one ``alignment`` record.

    Parameters
    ----------
    ctx : DemoContext
        The demo's seed (paragraph sample and train/test split) and log.

    Returns
    -------
    list of Record

    Raises
    ------
    DataNotFoundError
        A model is not installed (the demo then skips this optional step with one line).

    Notes
    -----
    About 40 CPU-seconds (measured 39 on a loaded 2-core machine), nearly all of it loading
    the two models and extracting 400 texts at 64 tokens; the alignment itself is under 2 s.
    """
    from repscope.align._evaluate import evaluate_alignment
    from repscope.extract import extract
    from repscope.zoo import load_model

    seed, log = ctx.seed, ctx.log
    t0 = time.perf_counter()
    texts, dataset, note = _texts(seed, log)
    log(f"[demo] alignment: embedding {len(texts)} texts ({dataset}) with {MODEL_A} and {MODEL_B}")
    layer_b = LAYER_B
    feats = {}
    for name in (MODEL_A, MODEL_B):
        loaded = load_model(name)
        layer = LAYER_A if name == MODEL_A else LAYER_B
        out = extract(loaded, texts, layers=[layer], pooling="mean",
                      batch_size=32, progress=False, max_length=MAX_LENGTH)
        feats[name] = np.asarray(out[layer], dtype=np.float64)
    t_extract = time.perf_counter() - t0
    width = min(feats[MODEL_A].shape[1], feats[MODEL_B].shape[1])
    ks = sorted({*(k for k in SWEEP_KS if k < width), width})
    ev = evaluate_alignment(feats[MODEL_A], feats[MODEL_B], map="orthogonal", n_train=N_TRAIN,
                            seed=seed, retrieval_ks=(1, 5), sweep_ks=ks, method="cca")
    records = ev.to_records(
        model_a=MODEL_A, model_b=MODEL_B, layer_a=LAYER_A, layer_b=layer_b, dataset=dataset,
        run_id=ctx.run_id, params={"n_texts": len(texts), "max_length": MAX_LENGTH},
        extra={"note": note, "seconds": time.perf_counter() - t0, "seconds_extract": t_extract})
    log(f"[demo] alignment: held-out top-1 retrieval {ev.retrieval[1]:.3f} mapped vs "
        f"{ev.retrieval_unmapped.get(1, float('nan')):.3f} unmapped; orthogonality gap "
        f"{ev.orthogonality_gap['gap']:.3f} ({time.perf_counter() - t0:.1f} s)")
    return records
