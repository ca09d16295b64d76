"""Benchmark: LEACE fit, repscope vs EleutherAI's concept-erasure (``LeaceFitter``).

Data: ``--n`` (100,000) x ``--d`` (576, SmolLM2's width) float32 Gaussian features with a
random correlation and a planted concept (``--classes`` classes, a class-mean shift), written
once to a temporary folder by this driver, seeded.

Cases (each run in its own process through ``benchmarks/_harness.py``, one BLAS/OpenMP and one
torch thread, medians of ``--runs``):

* ``repscope fit_leace``: :func:`repscope.concepts._erasure.fit_leace` on the float32 array
  (moments accumulated in float64 in 4,096-row blocks, the eraser in float64 numpy);
* ``concept-erasure float32``: ``LeaceFitter.fit(torch.from_numpy(X), one_hot)`` and its
  ``eraser`` (float32 statistics, the library's natural use);
* ``concept-erasure float64``: the same on a float64 copy (the copy is made before timing).

The timed call is fit + eraser (imports and loading excluded, a small warm-up first); the
table gives its CPU-seconds and wall seconds, the child's peak RSS (loading the 220 MB array
included) and the largest difference of the erased first 2,000 rows from repscope's.
concept-erasure is a test dependency of repscope, so every child runs with this interpreter::

    .venv/bin/pip install -c constraints.txt concept-erasure
    python benchmarks/leace.py [--runs 3] [--n 100000] [--d 576] [--classes 2]

Measured on the shared 2-core machine (load average ~9, so wall > CPU), defaults, 3 runs:

| case | fit CPU s | fit wall s | peak RSS MiB | max abs diff vs repscope |
|---|---|---|---|---|
| repscope fit_leace | 0.92 | 2.42 | 491 | 0 |
| concept-erasure float32 | 0.67 | 2.04 | 904 | 2.4e-05 |
| concept-erasure float64 | 1.36 | 2.70 | 1786 | 2.0e-13 |
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = ("repscope fit_leace", "concept-erasure float32", "concept-erasure float64")
N_CHECK = 2000


def make_data(folder: Path, n: int, d: int, k: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    A = (np.eye(d) + 0.2 * rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32) @ A
    X += (np.eye(k, dtype=np.float32)[y] @ rng.standard_normal((k, d)).astype(np.float32)) * 0.5
    np.save(folder / "X.npy", X.astype(np.float32))
    np.save(folder / "y.npy", y)


def child(case: str, folder: str, out: str) -> None:
    import numpy as np

    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    _harness.set_torch_threads(1)
    f = Path(folder)
    X, y = np.load(f / "X.npy"), np.load(f / "y.npy")
    if case == "repscope fit_leace":
        from repscope.concepts._erasure import fit_leace

        fit_leace(X[:500, :20], y[:500])  # warm-up: imports
        eraser, stats = _harness.timed(fit_leace, X, y)
        erased = eraser(X[:N_CHECK])
    else:
        import torch
        from concept_erasure import LeaceFitter

        z = np.eye(int(y.max()) + 1)[y]
        dtype = torch.float32 if case.endswith("float32") else torch.float64
        xt = torch.from_numpy(X).to(dtype)
        zt = torch.from_numpy(z).to(dtype)

        def fit(a, b):  # type: ignore[no-untyped-def]
            fitter = LeaceFitter.fit(a, b)
            return fitter.eraser

        fit(xt[:500, :20], zt[:500])
        eraser, stats = _harness.timed(fit, xt, zt)
        erased = eraser(xt[:N_CHECK]).double().numpy()
    np.save(out, np.asarray(erased, dtype=np.float64))
    _harness.emit(stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--child", nargs=3, metavar=("CASE", "FOLDER", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="leace-bench-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        make_data(folder, args.n, args.d, args.classes)
        print(f"data ({args.n} x {args.d} float32, {args.classes} classes) written in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        env = {**os.environ, **_harness.thread_env(1), "PYTHONPATH": str(ROOT / "src")}
        rows: list[dict[str, object]] = []
        ref = None
        for case in CASES:
            runs = []
            status = "ok"
            for i in range(args.runs):
                out = folder / f"erased-{CASES.index(case)}-{i}.npy"
                r = _harness.run_child([sys.executable, str(Path(__file__)), "--child", case, tmp,
                                        str(out)], env=env, timeout=args.timeout)
                if not r.ok:
                    status = r.status
                    break
                runs.append({**r.result, "peak_mb": r.peak_mb, "out": str(out)})
            if not runs:
                rows.append({"case": case, "error": status})
                print(json.dumps(rows[-1]), flush=True)
                continue
            med = _harness.median_run(runs)
            erased = np.load(str(med["out"]))
            if ref is None:
                ref = erased
            rows.append({"case": case, "cpu": med["cpu"], "wall": med["wall"],
                         "peak_mb": med["peak_mb"],
                         "max_abs_diff": float(np.abs(erased - ref).max()), "runs": len(runs)})
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    C = _harness.Column
    _harness.print_table(rows, [C("case", "case", "s"), C("fit CPU s", "cpu", ".2f"),
                                C("fit wall s", "wall", ".2f"), C("peak RSS MiB", "peak_mb", ".0f"),
                                C("max abs diff vs repscope", "max_abs_diff", ".2e"),
                                C("runs", "runs", "d")], markdown=True)


if __name__ == "__main__":
    main()
