"""Throughput of ``repscope.extract`` against sentence-transformers ``encode`` on MiniLM-L6.

Both run the same model (zoo ``minilm-l6-st``) over the same 1,000 Austen paragraphs (or, if
the Debian data is missing, 1,000 synthetic sentences, with a message) with batch size 32 and
truncation at 256 tokens:

* ``st``: ``SentenceTransformer.encode`` (mean pooling of the last layer, normalised);
* ``repscope``: ``repscope.extract`` capturing all 7 layers (embeddings + 6 encoder layers,
  ``layers="blocks"``) with mean pooling, in memory.

Each timed run is its own process (this script with ``--impl``, through
``benchmarks/_harness.py``), after one warm-up batch in that process; runs alternate between
the two implementations. The table reports medians over the runs of CPU seconds
(``time.process_time`` in the child: all its threads) and wall seconds, and throughput in
paragraphs per CPU second. Target: repscope / st >= 0.9.

Usage::

    python benchmarks/extract_throughput.py [--n 1000] [--runs 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _harness

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MAX_LENGTH = 256
IMPLS = ("st", "repscope")


def load_texts(n: int) -> tuple[list[str], str]:
    """``n`` Austen paragraphs, or synthetic sentences when the data is missing."""
    from repscope.exceptions import DataNotFoundError
    from repscope.zoo import load_dataset

    try:
        return list(load_dataset("austen", n=n, seed=0).inputs), f"{n} Austen paragraphs"
    except DataNotFoundError as err:
        print(f"Austen data missing ({err}); using {n} synthetic sentences instead.")
    sentence = ("the representation of each layer is linearly decodable from a probe trained on "
                "sufficient statistics of the features")
    words = sentence.split(" ")
    texts = [" ".join(words[(i * 7 + k) % len(words)] for k in range(8 + i % 40)) for i in range(n)]
    return texts, f"{n} synthetic sentences"


def child(impl: str, texts_file: str, batch_size: int) -> None:
    """One timed run in this process; prints a JSON line."""
    import numpy as np

    from repscope.extract import extract
    from repscope.zoo import load_model

    texts = json.loads(Path(texts_file).read_text())
    st = load_model("minilm-l6-st").model
    st.max_seq_length = MAX_LENGTH

    def run(batch: list[str]) -> int:
        if impl == "st":
            out = st.encode(batch, batch_size=batch_size, convert_to_numpy=True,
                            show_progress_bar=False)
            return int(np.asarray(out).shape[0])
        feats = extract(st, batch, "blocks", "mean", batch_size=batch_size,
                        max_length=MAX_LENGTH, progress=False)
        assert len(feats) == 7
        return int(next(iter(feats.values())).shape[0])

    run(texts[:batch_size])  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    n = run(texts)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    _harness.emit({"impl": impl, "n": n, "cpu": cpu, "wall": wall})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.impl:
        child(args.impl, args.texts, args.batch_size)
        return

    texts, label = load_texts(args.n)
    results: dict[str, list[dict[str, float]]] = {i: [] for i in IMPLS}
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        for r in range(args.runs):
            for impl in IMPLS:
                run = _harness.run_child(
                    [sys.executable, __file__, "--impl", impl, "--texts", str(texts_file),
                     "--batch-size", str(args.batch_size)],
                )
                if not run.ok:
                    sys.exit(f"{impl} run failed:\n{run.stderr}")
                rec = dict(run.result)
                rec["process_cpu"] = run.cpu
                results[impl].append(rec)
                print(f"run {r + 1} {impl:>8}: cpu {rec['cpu']:.2f} s, wall {rec['wall']:.2f} s "
                      f"(whole process incl. loading: {rec['process_cpu']:.2f} CPU s)",
                      file=sys.stderr)

    med = {i: _harness.medians(results[i], ("cpu", "wall", "n")) for i in IMPLS}
    print(f"\nMiniLM-L6 over {label}, batch {args.batch_size}, max_length {MAX_LENGTH}, "
          f"median of {args.runs} runs (one process per run)")
    names = {
        "st": "sentence-transformers encode (last layer)",
        "repscope": "repscope.extract (7 layers, mean)",
    }
    rows = [{"name": names[i], **med[i], "per_cpu": med[i]["n"] / med[i]["cpu"],
             "per_s": med[i]["n"] / med[i]["wall"]} for i in IMPLS]
    _harness.print_table(rows, [
        _harness.Column("implementation", "name", "s", 44),
        _harness.Column("CPU s", "cpu", ".2f", 7),
        _harness.Column("wall s", "wall", ".2f", 7),
        _harness.Column("para/CPU-s", "per_cpu", ".1f", 11),
        _harness.Column("para/s", "per_s", ".1f", 8),
    ])
    ratio = med["st"]["cpu"] / med["repscope"]["cpu"]
    wall_ratio = med["st"]["wall"] / med["repscope"]["wall"]
    print(f"throughput ratio repscope / st: {ratio:.3f} per CPU second, {wall_ratio:.3f} wall "
          f"(target >= 0.9)")


if __name__ == "__main__":
    main()
