"""Benchmark cases: mutual kNN / CKNNA at scale and 12 x 12 layer matrices.

Contract shared with ``benchmarks/similarity.py``:

* ``CASES: dict[str, callable(data: dict) -> dict(value=..., extra=...)]``
* ``COMPARISONS: list[(label, repscope_case, anchor_case, target)]`` -- ``target`` is a dict of
  minimum ratios anchor / repscope (``cpu``: CPU-seconds, ``mem``: peak memory).
* ``PREPARE: dict[str, callable(data: dict) -> None]`` fills ``data`` with the case's inputs
  (seeded), so input generation is not timed.

The anchor for mutual kNN / CKNNA is a faithful re-implementation, in this file, of the
``platonic-rep`` metrics (Huh et al. 2024; the package is not on PyPI and its code is not
vendored): L2-normalise, the dense ``n x n`` similarity matrix, a full ``argsort`` per row (kNN)
or ``topk`` (CKNNA), dense ``n x n`` masks, and dense unbiased HSIC. The anchor for the layer
matrix is 144 calls of ``repscope.similarity.linear_cka``.

Run standalone (a tiny driver on ``benchmarks/_harness.py``: every case in its own subprocess,
one thread, CPU-seconds and peak RSS of the child, medians over runs)::

    python benchmarks/_sim_cases_knn_layers.py [--runs 3] [--only SUBSTR]

(the n=50,000 cases run once: about 80 CPU-s each.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import _harness
import numpy as np

N_KNN, D_KNN, K = 10_000, 768, 10
N_BIG = 50_000
N_CKNNA = 5_000
N_LAYERS, N_LAYER_ROWS, D_LAYER = 12, 10_000, 384


# --------------------------------------------------------------------------- inputs
def _pair(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    # a related representation: a random linear map of X plus noise, through a nonlinearity
    W = (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    Y = np.tanh(X @ W) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return X, Y.astype(np.float32)


def _layers(n: int, d: int, L: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d), dtype=np.float32)
    out = {}
    for i in range(L):
        W = (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
        h = np.tanh(h @ W) + 0.3 * rng.standard_normal((n, d), dtype=np.float32)
        out[f"layer{i}"] = h.astype(np.float32)
    return out


def _prep_knn(n: int) -> Callable[[dict[str, Any]], None]:
    def prep(data: dict[str, Any]) -> None:
        data["X"], data["Y"] = _pair(n, D_KNN, int(data.get("seed", 0)))
    return prep


def _prep_layers(cross: bool) -> Callable[[dict[str, Any]], None]:
    def prep(data: dict[str, Any]) -> None:
        s = int(data.get("seed", 0))
        data["A"] = _layers(N_LAYER_ROWS, D_LAYER, N_LAYERS, s)
        data["B"] = _layers(N_LAYER_ROWS, D_LAYER, N_LAYERS, s + 1) if cross else None
    return prep


# --------------------------------------------------------------------------- platonic-rep style
def _platonic_knn(feats: Any, topk: int) -> Any:
    return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def _platonic_mutual_knn(X: np.ndarray, Y: np.ndarray, topk: int) -> float:
    import torch
    import torch.nn.functional as F

    a = F.normalize(torch.from_numpy(X), dim=-1)
    b = F.normalize(torch.from_numpy(Y), dim=-1)
    knn_a, knn_b = _platonic_knn(a, topk), _platonic_knn(b, topk)
    n = knn_a.shape[0]
    rng_t = torch.arange(n).unsqueeze(1)
    mask_a, mask_b = torch.zeros(n, n), torch.zeros(n, n)
    mask_a[rng_t, knn_a] = 1.0
    mask_b[rng_t, knn_b] = 1.0
    return float(((mask_a * mask_b).sum(dim=1) / topk).mean().item())


def _platonic_hsic_unbiased(K: Any, L: Any) -> Any:
    import torch

    m = K.shape[0]
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    v = (torch.sum(Kt * Lt.T) + torch.sum(Kt) * torch.sum(Lt) / ((m - 1) * (m - 2))
         - 2 * torch.sum(torch.mm(Kt, Lt)) / (m - 2))
    return v / (m * (m - 3))


def _platonic_cknna(X: np.ndarray, Y: np.ndarray, topk: int) -> float:
    import torch
    import torch.nn.functional as F

    a = F.normalize(torch.from_numpy(X), dim=-1)
    b = F.normalize(torch.from_numpy(Y), dim=-1)
    n = a.shape[0]
    K, L = a @ a.T, b @ b.T

    def sim(K: Any, L: Any) -> Any:
        Kh, Lh = K.clone().fill_diagonal_(float("-inf")), L.clone().fill_diagonal_(float("-inf"))
        _, ik = torch.topk(Kh, topk, dim=1)
        _, il = torch.topk(Lh, topk, dim=1)
        mk = torch.zeros(n, n).scatter_(1, ik, 1)
        ml = torch.zeros(n, n).scatter_(1, il, 1)
        mask = mk * ml
        return _platonic_hsic_unbiased(mask * K, mask * L)

    return float(sim(K, L).item() / (torch.sqrt(sim(K, K) * sim(L, L)) + 1e-6).item())


# --------------------------------------------------------------------------- cases
def _repscope_mutual_knn(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity._knn_measures import mutual_knn

    return {"value": mutual_knn(data["X"], data["Y"], k=K), "extra": {}}


def _anchor_mutual_knn(data: dict[str, Any]) -> dict[str, Any]:
    return {"value": _platonic_mutual_knn(data["X"], data["Y"], K), "extra": {}}


def _repscope_cknna(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity._knn_measures import cknna

    return {"value": cknna(data["X"], data["Y"], k=K), "extra": {}}


def _anchor_cknna(data: dict[str, Any]) -> dict[str, Any]:
    return {"value": _platonic_cknna(data["X"], data["Y"], K), "extra": {}}


def _repscope_layers(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity._layers import compare_layers

    m = compare_layers(data["A"], data["B"])
    return {"value": float(m.values.sum()), "extra": {"shape": list(m.values.shape)}}


def _repscope_layers_f32(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity._layers import compare_layers

    m = compare_layers(data["A"], data["B"], products="float32")
    return {"value": float(m.values.sum()), "extra": {"shape": list(m.values.shape)}}


def _naive_layers(data: dict[str, Any]) -> dict[str, Any]:
    from repscope.similarity import linear_cka

    A = data["A"]
    B = A if data["B"] is None else data["B"]
    v = np.array([[linear_cka(a, b) for b in B.values()] for a in A.values()])
    return {"value": float(v.sum()), "extra": {"calls": int(v.size)}}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "mutual_knn/n10k_d768/repscope": _repscope_mutual_knn,
    "mutual_knn/n10k_d768/platonic_dense": _anchor_mutual_knn,
    "mutual_knn/n50k_d768/repscope": _repscope_mutual_knn,
    "mutual_knn/n50k_d768/platonic_dense": _anchor_mutual_knn,
    "cknna/n5k_d768/repscope": _repscope_cknna,
    "cknna/n5k_d768/platonic_dense": _anchor_cknna,
    "layers12x12_self/n10k_d384/repscope": _repscope_layers,
    "layers12x12_self/n10k_d384/naive144": _naive_layers,
    "layers12x12_self/n10k_d384/repscope_f32": _repscope_layers_f32,
    "layers12x12_cross/n10k_d384/repscope": _repscope_layers,
    "layers12x12_cross/n10k_d384/repscope_f32": _repscope_layers_f32,
    "layers12x12_cross/n10k_d384/naive144": _naive_layers,
}

PREPARE: dict[str, Callable[[dict[str, Any]], None]] = {
    "mutual_knn/n10k_d768/repscope": _prep_knn(N_KNN),
    "mutual_knn/n10k_d768/platonic_dense": _prep_knn(N_KNN),
    "mutual_knn/n50k_d768/repscope": _prep_knn(N_BIG),
    "mutual_knn/n50k_d768/platonic_dense": _prep_knn(N_BIG),
    "cknna/n5k_d768/repscope": _prep_knn(N_CKNNA),
    "cknna/n5k_d768/platonic_dense": _prep_knn(N_CKNNA),
    "layers12x12_self/n10k_d384/repscope": _prep_layers(False),
    "layers12x12_self/n10k_d384/naive144": _prep_layers(False),
    "layers12x12_self/n10k_d384/repscope_f32": _prep_layers(False),
    "layers12x12_cross/n10k_d384/repscope_f32": _prep_layers(True),
    "layers12x12_cross/n10k_d384/repscope": _prep_layers(True),
    "layers12x12_cross/n10k_d384/naive144": _prep_layers(True),
}

COMPARISONS: list[tuple[str, str, str, dict[str, float]]] = [
    ("mutual kNN n=10k d=768 k=10", "mutual_knn/n10k_d768/repscope",
     "mutual_knn/n10k_d768/platonic_dense", {"cpu": 3.0, "mem": 10.0}),
    ("mutual kNN n=50k d=768 k=10", "mutual_knn/n50k_d768/repscope",
     "mutual_knn/n50k_d768/platonic_dense", {"abs_mem_mb": 1024.0}),
    ("CKNNA n=5k d=768 k=10", "cknna/n5k_d768/repscope", "cknna/n5k_d768/platonic_dense",
     {"cpu": 3.0}),
    ("12x12 linear-CKA layer matrix, A vs A", "layers12x12_self/n10k_d384/repscope",
     "layers12x12_self/n10k_d384/naive144", {"cpu": 5.0}),
    ("12x12 linear-CKA layer matrix, A vs B", "layers12x12_cross/n10k_d384/repscope",
     "layers12x12_cross/n10k_d384/naive144", {"cpu": 5.0}),
    ("12x12 layer matrix A vs A, float32 products", "layers12x12_self/n10k_d384/repscope_f32",
     "layers12x12_self/n10k_d384/naive144", {"cpu": 5.0}),
    ("12x12 layer matrix A vs B, float32 products", "layers12x12_cross/n10k_d384/repscope_f32",
     "layers12x12_cross/n10k_d384/naive144", {"cpu": 5.0}),
]


# --------------------------------------------------------------------------- local driver
def _run_child(name: str, mem_limit: int) -> dict[str, Any] | None:
    run = _harness.run_case("_sim_cases_knn_layers", name, mem_bytes=mem_limit)
    if not run.ok:
        print(f"  {name}: failed ({run.status})")
        return None
    r = run.result
    return {"cpu": r["cpu"], "peak_mb": r["peak"] / 2**20,
            "extra_mb": (r["peak"] - r["peak_before"]) / 2**20, "value": r["value"]}


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--mem-limit", type=int, default=14 * 2**30)
    args = ap.parse_args(argv)
    results: dict[str, dict[str, float] | None] = {}
    for label, ours, anchor, _target in COMPARISONS:
        if args.only and args.only not in label:
            continue
        for name in (ours, anchor):
            n_runs = 1 if "n50k" in name else args.runs  # ~160 CPU-s per run: one run only
            # the dense anchor needs >= 10 GB (n x n float32) at n=50k: cap it at 4 GB so it
            # fails fast instead of starving the shared machine
            limit = min(args.mem_limit, 4 * 2**30) if "n50k" in name and name != ours else (
                args.mem_limit)
            runs = [r for r in (_run_child(name, limit) for _ in range(n_runs)) if r]
            if not runs:
                results[name] = None
                continue
            results[name] = _harness.medians(runs, ("cpu", "peak_mb", "extra_mb", "value"))
            r = results[name]
            assert r is not None
            print(f"  {name}: {r['cpu']:.2f} CPU-s, peak {r['peak_mb']:.0f} MB "
                  f"(+{r['extra_mb']:.0f} MB), value {r['value']:.6f}, runs={len(runs)}")
    print()
    print(f"{'comparison':40s} {'repscope CPU-s':>14s} {'anchor CPU-s':>12s} {'ratio':>6s} "
          f"{'rep MB(+)':>10s} {'anc MB(+)':>10s} {'mem ratio':>9s}  target")
    for label, ours, anchor, target in COMPARISONS:
        a, b = results.get(ours), results.get(anchor)
        if ours not in results:
            continue
        if a is None:
            print(f"{label:40s} repscope failed")
            continue
        if b is None:
            print(f"{label:40s} {a['cpu']:14.2f} {'OOM/fail':>12s} {'-':>6s} "
                  f"{a['peak_mb']:6.0f}({a['extra_mb']:.0f}) {'-':>10s} {'-':>9s}  {target}")
            continue
        print(f"{label:40s} {a['cpu']:14.2f} {b['cpu']:12.2f} {b['cpu'] / a['cpu']:6.1f} "
              f"{a['peak_mb']:5.0f}({a['extra_mb']:4.0f}) {b['peak_mb']:5.0f}({b['extra_mb']:4.0f}) "
              f"{b['extra_mb'] / max(a['extra_mb'], 1):9.1f}  {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
