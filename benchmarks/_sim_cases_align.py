"""Benchmark cases: exact streaming over a FeatureStore, and the alignment maps at scale.

Contract shared with ``benchmarks/similarity.py`` (see ``_sim_cases_measures.py``):
``CASES`` (name -> ``case(data) -> {"value", "extra"}``), ``PREPARE`` (name -> untimed
``prep(data)``), ``COMPARISONS`` (label, repscope case, reference case, target).

* ``stream_cka@50k``: linear CKA of n=50,000 x (384, 384) streamed from a FeatureStore (written
  once in 25 chunks of 2,000 rows, read 4,096 rows at a time, one float64 ``Moments``), against
  ``inmem_cka@50k``: the same arrays held in memory. Target: streaming <= 2x the in-memory cost.
  The store is never read whole: only one batch is in memory at a time.
* ``stream_orthogonal@50k`` / ``inmem_orthogonal@50k``: ``OrthogonalMap.fit_moments`` on the
  streamed moments vs ``OrthogonalMap.fit`` on arrays (same target).
* ``retrieval_blocked@10k`` vs ``retrieval_dense@10k``: top-1/5/10 retrieval of 10,000 mapped
  rows of width 768 with the blocked kNN kernel vs a dense ``n x n`` similarity + argsort.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("REPSCOPE_SIM_BENCH_DIR", "/tmp/repscope-sim-bench"))
N_BIG, D_BIG = 50_000, 384
CHUNK, BATCH = 2_000, 4_096
N_RET, D_RET = 10_000, 768


def _pair_50k() -> tuple[np.ndarray, np.ndarray]:
    """The harness's n=50,000 x (384, 384) inputs (written by ``similarity.py`` when present,
    else generated here with the same recipe)."""
    px, py = CACHE / "50k_X.npy", CACHE / "50k_Y.npy"
    if not (px.exists() and py.exists()):
        sys.path.insert(0, str(HERE))
        from similarity import build_inputs

        build_inputs(["50k"])
    return np.load(px), np.load(py)


def store_path() -> Path:
    """A FeatureStore with layers ``X`` and ``Y`` (the 50k pair), written once in chunks."""
    path = CACHE / "store_50k"
    if (path / "manifest.json").exists():
        return path
    from repscope.store import FeatureStore

    X, Y = _pair_50k()
    tmp = CACHE / "store_50k.partial"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    store = FeatureStore.create(tmp, model_id="bench-50k")
    for s in range(0, N_BIG, CHUNK):
        store.append({"X": X[s:s + CHUNK], "Y": Y[s:s + CHUNK]})
    tmp.rename(path)
    return path


def _imports() -> None:
    """Import what the cases use, so import time (scikit-learn, pyarrow) is not timed."""
    import repscope.align
    import repscope.similarity
    import repscope.store  # noqa: F401


def _prep_store(data: dict[str, Any]) -> None:
    _imports()
    data["store"] = store_path()


def _prep_arrays(data: dict[str, Any]) -> None:
    _imports()
    data["X"], data["Y"] = _pair_50k()


def _streamed_moments(path: Path) -> Any:
    from repscope.align import paired_moments
    from repscope.store import FeatureStore

    store = FeatureStore.open(path, verify="none")
    return paired_moments(zip(store.iter_batches("X", BATCH), store.iter_batches("Y", BATCH)))


def _stream_cka(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity import cka_from_moments

    m = _streamed_moments(data["store"])
    return {"value": cka_from_moments(m), "extra": {"n": m.n}}


def _inmem_cka(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity import linear_cka

    return {"value": float(linear_cka(data["X"], data["Y"])), "extra": {}}


def _stream_orthogonal(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.align import OrthogonalMap

    m = OrthogonalMap().fit_moments(_streamed_moments(data["store"]))
    return {"value": float(m.singular_values_.sum()), "extra": {}}


def _inmem_orthogonal(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.align import OrthogonalMap

    m = OrthogonalMap().fit(data["X"], data["Y"])
    return {"value": float(m.singular_values_.sum()), "extra": {}}


def _prep_retrieval(data: dict[str, Any]) -> None:
    _imports()
    import torch  # noqa: F401  (the kNN kernel's backend)

    rng = np.random.default_rng(0)
    A = rng.standard_normal((N_RET, D_RET), dtype=np.float32)
    data["A"] = A
    data["B"] = A + 8.0 * rng.standard_normal((N_RET, D_RET), dtype=np.float32)


def _retrieval_blocked(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.align import retrieval_topk

    r = retrieval_topk(data["A"], data["B"], ks=(1, 5, 10))
    return {"value": r.topk[1], "extra": {"top5": r.topk[5]}}


def _retrieval_dense(data: dict[str, Any]) -> dict[str, Any]:
    a = data["A"] / np.linalg.norm(data["A"], axis=1, keepdims=True)
    b = data["B"] / np.linalg.norm(data["B"], axis=1, keepdims=True)
    S = a @ b.T
    order = np.argsort(-S, axis=1)
    rank = np.argmax(order == np.arange(len(a))[:, None], axis=1)
    return {"value": float((rank < 1).mean()), "extra": {"top5": float((rank < 5).mean())}}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "align.stream_cka@50k": _stream_cka,
    "align.inmem_cka@50k": _inmem_cka,
    "align.stream_orthogonal@50k": _stream_orthogonal,
    "align.inmem_orthogonal@50k": _inmem_orthogonal,
    "align.retrieval_blocked@10k": _retrieval_blocked,
    "align.retrieval_dense@10k": _retrieval_dense,
}

PREPARE: dict[str, Callable[[dict[str, Any]], None]] = {
    "align.stream_cka@50k": _prep_store,
    "align.inmem_cka@50k": _prep_arrays,
    "align.stream_orthogonal@50k": _prep_store,
    "align.inmem_orthogonal@50k": _prep_arrays,
    "align.retrieval_blocked@10k": _prep_retrieval,
    "align.retrieval_dense@10k": _prep_retrieval,
}

COMPARISONS: list[tuple[str, str, str, dict[str, float]]] = [
    ("streaming CKA from a store vs in memory (50k)", "align.stream_cka@50k",
     "align.inmem_cka@50k", {"cpu_max": 2.0}),
    ("streaming OrthogonalMap vs in memory (50k)", "align.stream_orthogonal@50k",
     "align.inmem_orthogonal@50k", {"cpu_max": 2.0}),
    ("retrieval top-k blocked vs dense n x n (10k x 768)", "align.retrieval_blocked@10k",
     "align.retrieval_dense@10k", {"mem": 3.0}),
]


def setup() -> None:
    """Untimed, once, before any case of this module runs: write the chunked store."""
    store_path()
