"""Benchmark: H0 persistence (Euclidean MST death times) at n = 20,000, d = 384.

Implementations, each in its own subprocess (``benchmarks/_harness.py``; one BLAS/OpenMP
thread), under an address-space cap (``prlimit --as``, default 16 GB):

* repscope ``euclidean_mst`` (Borůvka over blocked distances, O(n) memory);
* scipy ``minimum_spanning_tree`` on the dense distance matrix (``squareform(pdist(X))``);
* giotto-ph ``ripser_parallel(maxdim=0, n_threads=1)``;
* ripser.py ``ripser(maxdim=0)``.

giotto-ph and ripser run from a separate venv (default ``/tmp/bench-venv``; make it with
``python -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -c constraints.txt
giotto-ph ripser scipy numpy``); scipy runs there too. We report the child's CPU-seconds of
the timed call only (``time.process_time``; data generation and imports excluded), the
child's peak RSS, both as medians of ``--runs``, and the largest absolute difference of the
sorted finite death times from repscope's ("identical" within float32 rounding for the
ripser family, which computes in float32). A child over the cap is "out of memory".

Data: synthetic, seeded: 20 Gaussian clusters in R^384, rows L2-normalised (as sentence
embeddings are for persistence).

    python benchmarks/geometry.py [--runs 3] [--n 20000] [--d 384] [--mem 16000000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _data(n: int, d: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, d))
    y = rng.integers(0, 20, n)
    X = centres[y] + 1.5 * rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _child(case: str, n: int, d: int, out: str) -> None:
    import numpy as np

    X = _data(n, d)
    if case == "repscope euclidean_mst":
        sys.path.insert(0, str(SRC))
        from repscope._kernels.mst import euclidean_mst

        t = time.process_time()
        deaths = euclidean_mst(X).length
        cpu = time.process_time() - t
    elif case == "scipy minimum_spanning_tree (dense)":
        from scipy.sparse.csgraph import minimum_spanning_tree
        from scipy.spatial.distance import pdist, squareform

        t = time.process_time()
        deaths = minimum_spanning_tree(squareform(pdist(X))).data
        cpu = time.process_time() - t
    elif case == "giotto-ph ripser_parallel":
        from gph import ripser_parallel

        t = time.process_time()
        dgm = ripser_parallel(X, maxdim=0, n_threads=1)["dgms"][0]
        cpu = time.process_time() - t
        deaths = dgm[:, 1]
    elif case == "ripser.py":
        from ripser import ripser

        t = time.process_time()
        dgm = ripser(X, maxdim=0)["dgms"][0]
        cpu = time.process_time() - t
        deaths = dgm[:, 1]
    else:
        raise SystemExit(f"unknown case {case}")
    deaths = np.sort(np.asarray(deaths, dtype=np.float64)[np.isfinite(deaths)])
    np.save(out, deaths)
    _harness.emit({"cpu": cpu, "mem": _harness.peak_rss_bytes() / 2**20})


CASES = {
    "repscope euclidean_mst": "main",
    "scipy minimum_spanning_tree (dense)": "bench",
    "giotto-ph ripser_parallel": "bench",
    "ripser.py": "bench",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--mem", type=int, default=16_000_000_000)
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--venv", default="/tmp/bench-venv")
    ap.add_argument("--child", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.n, a.d, a.out)
        return
    import numpy as np

    env = {**os.environ, **_harness.thread_env(1)}
    pythons = {"main": sys.executable, "bench": str(Path(a.venv) / "bin" / "python")}
    rows: list[dict[str, Any]] = []
    reference = None
    with tempfile.TemporaryDirectory(prefix="repscope-geometry-bench-") as tmp:
        for case, py in CASES.items():
            out = str(Path(tmp) / f"{len(rows)}.npy")
            res, status = [], "ok"
            for _ in range(a.runs):
                run = _harness.run_child(
                    [pythons[py], __file__, "--child", case, "--n", str(a.n), "--d", str(a.d),
                     "--out", out], env=env, mem_bytes=a.mem, timeout=a.timeout)
                if not run.ok:
                    status = run.status
                    break
                res.append(run.result)
            row = {"case": case, "status": status, "cpu": float("nan"), "mem": float("nan"),
                   "diff": float("nan")}
            if res:
                row.update(_harness.medians(res, ("cpu", "mem")))
                deaths = np.load(out)
                if reference is None:
                    reference = deaths
                if deaths.shape == reference.shape:
                    row["diff"] = float(np.abs(deaths - reference).max())
            rows.append(row)
            print(f"{case}: {status} cpu={row['cpu']:.2f} mem={row['mem']:.0f} MB "
                  f"max|diff|={row['diff']:.2e}", flush=True)
    print(f"\nH0 persistence (MST death times), n={a.n}, d={a.d}, unit rows; median of "
          f"{a.runs} runs, one thread, address space capped at {a.mem / 1e9:.0f} GB")
    _harness.print_table(rows, [
        _harness.Column("implementation", "case", "s", 38),
        _harness.Column("status", "status", "s", 14),
        _harness.Column("CPU-s", "cpu", ".2f", 8),
        _harness.Ratio("x repscope", "cpu", ".2f", suffix="", width=10),
        _harness.Column("peak MB", "mem", ".0f", 8),
        _harness.Column("max |death - repscope|", "diff", ".1e", 22),
    ], baseline=rows[0] if rows and rows[0]["status"] == "ok" else None)


if __name__ == "__main__":
    main()
