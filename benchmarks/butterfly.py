"""Benchmark: applying the DFT as butterfly factors vs a dense matmul vs ``torch.fft.fft``.

Data: a batch of ``--batch`` (64) random complex64 rows of size N for N = 2^4 .. 2^``--max-log``
(2^14), seeded.

Cases (each run in its own process through ``benchmarks/_harness.py``, one BLAS/OpenMP and one
torch thread, medians of ``--runs``; one process times every N of its case):

* ``butterfly``: :func:`repscope.nn._butterfly.dft_butterfly` (complex64) applied to the batch,
  log2 N factors of N/2 2x2 blocks, never forming the N x N matrix: O(N log N) per row;
* ``dense``: ``x @ F.T`` with the complex64 DFT matrix formed beforehand (untimed): O(N^2) per
  row; skipped above N = 2^``--max-dense-log`` (2^12: the matrix alone is 128 MiB there);
* ``torch.fft``: ``torch.fft.fft(x)`` (pocketfft, mixed radix): O(N log N) per row.

Each timed value is the CPU-seconds of one application to the whole batch (the median call of
repeated calls, repeated until ~0.2 s per N; forward only, no autograd). The table gives them in
milliseconds, the ratios, the butterfly's nanoseconds per row per N log2 N (flat when the cost is
O(N log N)) and its largest absolute error against ``torch.fft.fft`` relative to the largest
output entry::

    python benchmarks/butterfly.py [--runs 3] [--batch 64] [--max-log 14] [--max-dense-log 12]

Measured on the shared 2-core machine (load average ~7), defaults, 3 runs (CPU ms per batch of
64 complex64 rows):

| N | butterfly ms | dense ms | torch.fft ms | butterfly / fft | dense / butterfly | butterfly ns per row per N log2 N | butterfly rel. error |
|---|---|---|---|---|---|---|---|
| 16 | 0.190 | 0.004 | 0.004 | 49.7 | 0.0 | 46.32 | 9.2e-08 |
| 32 | 0.247 | 0.006 | 0.005 | 53.6 | 0.0 | 24.14 | 9.8e-08 |
| 64 | 0.339 | 0.013 | 0.005 | 71.4 | 0.0 | 13.78 | 1.2e-07 |
| 128 | 0.472 | 0.042 | 0.006 | 78.7 | 0.1 | 8.23 | 1.2e-07 |
| 256 | 0.732 | 0.156 | 0.015 | 48.2 | 0.2 | 5.59 | 1.2e-07 |
| 512 | 1.246 | 0.662 | 0.027 | 46.9 | 0.5 | 4.23 | 1.4e-07 |
| 1024 | 2.492 | 2.639 | 0.059 | 41.9 | 1.1 | 3.80 | 1.6e-07 |
| 2048 | 5.610 | 10.524 | 0.159 | 35.3 | 1.9 | 3.89 | 1.6e-07 |
| 4096 | 12.946 | 47.479 | 0.366 | 35.4 | 3.7 | 4.12 | 1.6e-07 |
| 8192 | 28.216 | - | 0.863 | 32.7 | - | 4.14 | 1.7e-07 |
| 16384 | 62.553 | - | 1.548 | 40.4 | - | 4.26 | 1.7e-07 |

The butterfly's cost per row per N log2 N is flat (about 4 ns from N = 512 on; Python overhead
of the log2 N factor loop dominates below), so it applies in O(N log N): it overtakes the dense
matmul at N = 1024 and is 3.7x faster at N = 4096 (the gap doubles with every doubling of N).
pocketfft's hand-written FFT stays 33-50x faster than the generic 2x2-block product.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _harness

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = ("butterfly", "dense", "torch.fft")


def child(case: str, batch: int, max_log: int, max_dense_log: int) -> None:
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    import numpy as np
    import torch

    from repscope.nn._butterfly import dft_butterfly

    torch.set_num_threads(1)
    out: dict[str, dict[str, float]] = {}
    for m in range(4, max_log + 1):
        n = 1 << m
        if case == "dense" and m > max_dense_log:
            continue
        g = torch.Generator().manual_seed(m)
        x = torch.complex(torch.randn(batch, n, generator=g), torch.randn(batch, n, generator=g))
        if case == "butterfly":
            layer = dft_butterfly(n, dtype=torch.complex64)

            def fn(a: torch.Tensor, layer=layer) -> torch.Tensor:  # type: ignore[no-untyped-def]
                return layer(a)
        elif case == "dense":
            j = np.arange(n)
            F = torch.from_numpy(np.exp(-2j * np.pi * (np.outer(j, j) % n) / n)).to(
                torch.complex64)

            def fn(a: torch.Tensor, F=F) -> torch.Tensor:  # type: ignore[no-untyped-def]
                return a @ F.T
        else:
            def fn(a: torch.Tensor) -> torch.Tensor:
                return torch.fft.fft(a)

        with torch.inference_mode():
            y = fn(x)  # warm-up
            ref = torch.fft.fft(x.to(torch.complex128))
            err = float((y.to(torch.complex128) - ref).abs().max() / ref.abs().max())
            times: list[float] = []
            spent = 0.0
            while spent < 0.2 or len(times) < 3:
                _, st = _harness.timed(fn, x)
                times.append(st["cpu"])
                spent += st["cpu"]
                if len(times) >= 200:
                    break
        out[str(n)] = {"cpu": sorted(times)[len(times) // 2], "err": err, "calls": len(times)}
    _harness.emit(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-log", type=int, default=14)
    ap.add_argument("--max-dense-log", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--child", nargs=4, metavar=("CASE", "BATCH", "MAX_LOG", "MAX_DENSE_LOG"))
    args = ap.parse_args()
    if args.child:
        case, b, ml, md = args.child
        child(case, int(b), int(ml), int(md))
        return
    env = {**os.environ, **_harness.thread_env(1), "PYTHONPATH": str(ROOT / "src")}
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    status: dict[str, str] = {}
    for case in CASES:
        runs = []
        for _ in range(args.runs):
            t = time.perf_counter()
            r = _harness.run_child([sys.executable, str(Path(__file__)), "--child", case,
                                    str(args.batch), str(args.max_log),
                                    str(args.max_dense_log)], env=env, timeout=args.timeout)
            if not r.ok:
                status[case] = r.status
                break
            runs.append(r.result)
            print(f"{case}: run in {time.perf_counter() - t:.1f} s", flush=True)
        if runs:
            per_case[case] = {n: {"cpu": _harness.medians([run[n] for run in runs], ["cpu"])["cpu"],
                                  "err": runs[0][n]["err"]} for n in runs[0]}
    rows: list[dict[str, object]] = []
    for m in range(4, args.max_log + 1):
        n = 1 << m
        row: dict[str, object] = {"n": n}
        for case, key in zip(CASES, ("bf", "dense", "fft")):
            if case in status:
                row["error"] = f"{case}: {status[case]}"
            got = per_case.get(case, {}).get(str(n))
            if got is not None:
                row[key] = got["cpu"] * 1e3
                if case == "butterfly":
                    row["bf_err"] = got["err"]
                    row["ns"] = got["cpu"] * 1e9 / (args.batch * n * m)
        if row.get("bf") is not None and row.get("fft") is not None:
            row["bf_fft"] = row["bf"] / row["fft"]  # type: ignore[operator]
        if row.get("bf") is not None and row.get("dense") is not None:
            row["dense_bf"] = row["dense"] / row["bf"]  # type: ignore[operator]
        rows.append(row)
        print(json.dumps(row), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    C = _harness.Column
    _harness.print_table(rows, [
        C("N", "n", "d"), C("butterfly ms", "bf", ".3f"), C("dense ms", "dense", ".3f"),
        C("torch.fft ms", "fft", ".3f"), C("butterfly / fft", "bf_fft", ".1f"),
        C("dense / butterfly", "dense_bf", ".1f"),
        C("butterfly ns per row per N log2 N", "ns", ".2f"),
        C("butterfly rel. error", "bf_err", ".1e")], markdown=True)


if __name__ == "__main__":
    main()
