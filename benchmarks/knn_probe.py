"""Benchmark: exact cosine kNN search and the kNN probe vs scikit-learn and a dense torch search.

Each implementation runs in its own subprocess (``benchmarks/_harness.py``; one thread:
``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``); we report the child's CPU-seconds of the
timed call only (``time.process_time`` around it; input generation and imports are excluded),
the child's peak RSS (``ru_maxrss``) and the accuracy of the kNN classifier (k=20), medians of
``--runs``.

Data: synthetic, seeded: an index of ``N`` x ``D`` float32 vectors in 100 Gaussian classes and
``Q`` queries from the same classes.

    python benchmarks/knn_probe.py [--runs 3] [--n 20000] [--q 5000] [--d 384]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _harness

K = 20


def _data(n: int, q: int, d: int) -> tuple:
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((100, d), dtype=np.float32)
    y = rng.integers(0, 100, n + q)
    X = (centres[y] + 2.0 * rng.standard_normal((n + q, d), dtype=np.float32)).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def _child(case: str, n: int, q: int, d: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    X, y, Q, yq = _data(n, q, d)
    if case == "repscope knn_search":
        from repscope._kernels.knn import knn_search

        t = time.process_time()
        r = knn_search(Q, X, K, metric="cosine")
        pred = np.array([np.bincount(row, minlength=100).argmax() for row in y[r.indices]])
        cpu = time.process_time() - t
    elif case == "repscope KNNProbe (k=10,20; dino)":
        from repscope.probe._knn import KNNProbe

        t = time.process_time()
        p = KNNProbe(k=(10, 20)).fit(X, y)
        p.score(Q, yq)
        cpu = time.process_time() - t
        pred = p.predict_all(Q)[20]
    elif case == "sklearn KNeighborsClassifier (cosine, brute)":
        from sklearn.neighbors import KNeighborsClassifier

        t = time.process_time()
        pred = KNeighborsClassifier(K, metric="cosine", algorithm="brute").fit(X, y).predict(Q)
        cpu = time.process_time() - t
    elif case == "dense torch (full matrix + topk)":
        t = time.process_time()
        xt = torch.nn.functional.normalize(torch.as_tensor(X), dim=1)
        qt = torch.nn.functional.normalize(torch.as_tensor(Q), dim=1)
        idx = torch.topk(qt @ xt.T, K, dim=1).indices.numpy()
        pred = np.array([np.bincount(row, minlength=100).argmax() for row in y[idx]])
        cpu = time.process_time() - t
    else:
        raise SystemExit(f"unknown case {case}")
    peak_mb = _harness.peak_rss_bytes() / 2**20
    _harness.emit({"cpu": cpu, "mem": peak_mb, "acc": float(np.mean(pred == yq))})


CASES = ["repscope knn_search", "repscope KNNProbe (k=10,20; dino)",
         "sklearn KNeighborsClassifier (cosine, brute)", "dense torch (full matrix + topk)"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--q", type=int, default=5_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.n, a.q, a.d)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    for case in CASES:
        res = []
        for _ in range(a.runs):
            run = _harness.run_child([sys.executable, __file__, "--child", case, "--n", str(a.n),
                                      "--q", str(a.q), "--d", str(a.d)], env=env)
            if not run.ok:
                res = []
                print(f"{case}: failed: {run.status}")
                break
            res.append(run.result)
        if res:
            rows.append({"case": case, **_harness.medians(res, ("cpu", "mem")),
                         "acc": res[0]["acc"]})
    print(f"\nkNN search, index {a.n} x {a.d}, {a.q} queries, k={K}, cosine; "
          f"median of {a.runs} runs, one thread")
    _harness.print_table(rows, [
        _harness.Column("implementation", "case", "s", 48),
        _harness.Column("CPU-s", "cpu", ".2f", 8),
        _harness.Ratio("x repscope", "cpu", ".2f", suffix="", width=10),
        _harness.Column("peak MB", "mem", ".0f", 8),
        _harness.Column("acc@20", "acc", ".3f", 7),
    ], baseline=rows[0] if rows else None)


if __name__ == "__main__":
    main()
