"""Benchmark: attention time against sequence length N: softmax (quadratic) vs ReLU kernel
linear attention and NaLaFormer's norm-aware linear attention (linear).

Each implementation runs in its own subprocess per run (``benchmarks/_harness.py``; one thread:
``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``); inside it, one forward pass of a single
head (q, k of width ``--d``, v of width ``--d``, batch 1, float32, no grad) is timed at each N
(``time.process_time``; the median of ``--reps`` calls after one warm-up; inputs and imports
excluded). We report the median over ``--runs`` processes of those CPU-seconds and the growth
factor from the previous N (2x tokens: about 2x for linear, about 4x for quadratic).

    python benchmarks/linear_attention.py [--runs 3] [--reps 3] [--d 64] [--max-n 8192]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import _harness

CASES = {
    "softmax (explicit N x N)": "softmax_attention",
    "ReLU linear attention": "relu_linear_attention",
    "NaLa linear attention": "norm_aware_linear_attention",
}


def _child(case: str, ns: list[int], d: int, reps: int) -> None:
    import torch

    from repscope.nn import _linear_attention as la

    torch.set_num_threads(1)
    fn = getattr(la, CASES[case])
    out = {}
    with torch.no_grad():
        for n in ns:
            g = torch.Generator().manual_seed(n)
            q, k, v = (torch.randn(1, n, d, generator=g) for _ in range(3))
            fn(q, k, v)  # warm-up
            times = []
            for _ in range(reps):
                t = time.process_time()
                fn(q, k, v)
                times.append(time.process_time() - t)
            out[str(n)] = statistics.median(times)
    _harness.emit({"cpu": out, "mem": _harness.peak_rss_bytes() / 2**20})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--min-n", type=int, default=256)
    ap.add_argument("--max-n", type=int, default=8192)
    ap.add_argument("--child", default=None)
    ap.add_argument("--ns", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    ns = []
    n = a.min_n
    while n <= a.max_n:
        ns.append(n)
        n *= 2
    if a.child:
        _child(a.child, [int(x) for x in a.ns.split(",")], a.d, a.reps)
        return
    env = {**os.environ, **_harness.thread_env(1)}
    rows = []
    for case in CASES:
        runs = []
        for _ in range(a.runs):
            run = _harness.run_child([sys.executable, __file__, "--child", case, "--d",
                                      str(a.d), "--reps", str(a.reps), "--ns",
                                      ",".join(map(str, ns))], env=env, timeout=1200)
            if not run.ok:
                print(f"{case}: failed: {run.status}")
                runs = []
                break
            runs.append(run.result)
        prev = None
        for n in ns:
            cpu = statistics.median(r["cpu"][str(n)] for r in runs) if runs else None
            row = {"case": case, "n": n, "cpu": cpu, "ms": None if cpu is None else 1e3 * cpu,
                   "growth": None if prev is None or cpu is None else cpu / prev}
            if not runs:
                row["error"] = "failed"
            rows.append(row)
            prev = cpu
    base = {r["n"]: r for r in rows if r["case"] == next(iter(CASES))}
    print(f"\nAttention forward, one head, d={a.d}, batch 1, float32, one thread; CPU-ms, "
          f"median of {a.runs} processes x {a.reps} calls")
    _harness.print_table(rows, [
        _harness.Column("implementation", "case", "s", 26),
        _harness.Column("N", "n", "d", 6),
        _harness.Column("CPU-ms", "ms", ".2f", 10),
        _harness.Column("x prev N", "growth", ".2f", 9),
        _harness.Ratio("x softmax", "cpu", ".3f", suffix="", width=10),
    ], baseline=lambda row: base.get(row["n"]), markdown=True)
    print(f"\nlog-log slope of CPU time against N over N >= {min(1024, ns[-1])} "
          "(1 = linear, 2 = quadratic):")
    for case in CASES:
        pts = [(math.log(r["n"]), math.log(r["cpu"])) for r in rows
               if r["case"] == case and r["cpu"] and r["n"] >= min(1024, ns[-1])]
        if len(pts) >= 2:
            mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
            slope = (sum((x - mx) * (y - my) for x, y in pts)
                     / sum((x - mx) ** 2 for x, _ in pts))
            print(f"  {case}: {slope:.2f}")


if __name__ == "__main__":
    main()
