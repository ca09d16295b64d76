"""Probe regularization paths against their anchors: CPU time, peak extra memory, accuracy.

Inputs are built once and saved as ``.npy`` files under ``/tmp/repscope-probe-bench`` so that
every subprocess memory-maps the same data:

* ``synthetic``: n = 50,000 train + 10,000 test, d = 768, 100 classes (class means plus
  correlated, anisotropic Gaussian noise), float32;
* ``lite0``: real EfficientNet-Lite0 features of 1,000 MNIST images (``_bn1``, 1,280-d, via
  ``tests/_realdata.py``; skipped with a message when the model or data is missing),
  800 train / 200 test;
* ``digits``: scikit-learn digits (1,797 x 64), 1,437 train / 360 test;
* ``wide1000`` / ``wide600``: fewer samples than features, as when probing LLM features
  with a few labelled examples: the synthetic recipe at n = 1,000, d = 4,096 and n = 600,
  d = 3,000, 10 classes, 1,000 test rows, float32 (built only when a selected case names
  them).

Cases come from every ``benchmarks/_probe_cases_*.py`` module present. Each exposes

* ``CASES: dict[str, callable(data_paths) -> dict(accuracy=float, extra=str)]`` — a case
  imports what it needs, loads its arrays with :func:`load_array` (cached memory maps that the
  harness has already paged in, so the data do not count as extra memory), fits, and reports
  the selected model's test accuracy;
* ``COMPARISONS: list[(label, repscope_case, anchor_case, target_ratio)]`` — the table shows
  ``cpu(anchor) / cpu(repscope)`` against ``target_ratio``;
* optionally ``RUNS: dict[case, int]`` (fewer runs for very slow anchors), ``PYTHON:
  dict[case, str]`` (an interpreter of another venv, e.g. himalaya's) and ``PRELOAD:
  dict[case, list[str]]`` (modules imported before the clock starts).

Each run is its own process (this script with ``--child``, through ``benchmarks/_harness.py``),
run one after another under ``prlimit --as`` (a run that exceeds it prints "out of memory").
CPU time is the child's ``time.process_time`` around the case call (all threads); peak extra
memory is the child's ``ru_maxrss`` minus its resident size just before the call. Medians over
``--runs``.

Usage::

    python benchmarks/probe_path.py [--only closed] [--runs 3] [--device cuda]
        [--threads 2] [--mem-limit-gb 12] [--n 50000]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = Path("/tmp/repscope-probe-bench")
_CACHE: dict[str, np.ndarray] = {}


def load_array(path: str) -> np.ndarray:
    """The memory-mapped array at ``path`` (cached per process)."""
    if path not in _CACHE:
        _CACHE[path] = np.load(path, mmap_mode="r")
    return _CACHE[path]


# --------------------------------------------------------------------------- data
def _save(name: str, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    out = {}
    for key, arr in arrays.items():
        p = ROOT / f"{name}_{key}.npy"
        tmp = p.with_name(p.stem + ".partial.npy")
        np.save(tmp, arr)
        tmp.replace(p)
        out[key] = str(p)
    return out


def _have(name: str, keys: tuple[str, ...]) -> dict[str, str] | None:
    paths = {k: str(ROOT / f"{name}_{k}.npy") for k in keys}
    return paths if all(Path(p).exists() for p in paths.values()) else None


KEYS = ("X_train", "y_train", "X_test", "y_test")
#: n < d data sets: name -> (n_train, d, classes); a case whose name holds the key uses it
WIDE = {"wide1000": (1_000, 4_096, 10), "wide600": (600, 3_000, 10)}


def make_synthetic(n: int, d: int, k: int, n_test: int, seed: int = 0) -> dict[str, str]:
    name = f"synthetic_v2_n{n}_d{d}_k{k}"
    got = _have(name, KEYS)
    if got:
        return got
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.logspace(0.3, -1.0, d)  # anisotropic noise: correlated features
    mix = (q * scales).T
    means = rng.standard_normal((k, d)) * 0.03  # LDA ~65% test accuracy at n=20,000
    arrays = {}
    for part, m in (("train", n), ("test", n_test)):
        y = rng.integers(0, k, m)
        X = np.empty((m, d), dtype=np.float32)
        for a in range(0, m, 10_000):
            b = min(a + 10_000, m)
            X[a:b] = means[y[a:b]] + rng.standard_normal((b - a, d)) @ mix + 0.5
        arrays[f"X_{part}"], arrays[f"y_{part}"] = X, y
    return _save(name, arrays)


def make_digits() -> dict[str, str]:
    got = _have("digits", KEYS)
    if got:
        return got
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:1437], perm[1437:]
    return _save("digits", {"X_train": X[tr], "y_train": y[tr], "X_test": X[te],
                            "y_test": y[te]})


def make_lite0() -> dict[str, str] | None:
    got = _have("lite0", KEYS)
    if got:
        return got
    sys.path.insert(0, str(HERE.parent / "tests"))
    try:
        import _realdata

        feats = _realdata.lite0_mnist(ROOT / "lite0-extract")
    except Exception as err:  # missing model or data: skip these cases with a message
        print(f"real features lite0_mnist unavailable ({type(err).__name__}: {err}); skipping.")
        return None
    X = np.asarray(feats.X["_bn1"], dtype=np.float32)
    y = np.asarray(feats.y)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:800], perm[800:]
    return _save("lite0", {"X_train": X[tr], "y_train": y[tr], "X_test": X[te],
                           "y_test": y[te]})


# --------------------------------------------------------------------------- cases
def case_modules(only: str | None) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    mods = {}
    for path in sorted(HERE.glob("_probe_cases_*.py")):
        short = path.stem.removeprefix("_probe_cases_")
        if only and only not in short:
            continue
        mods[short] = importlib.import_module(path.stem)
    return mods


def child(module: str, case: str, data_file: str) -> None:
    """One timed run in this process; prints one JSON line."""
    sys.path.insert(0, str(HERE))
    data = json.loads(Path(data_file).read_text())
    mod = importlib.import_module(module)
    for name in getattr(mod, "PRELOAD", {}).get(case, []):
        importlib.import_module(name)
    import probe_path  # the module the cases import (this file runs as __main__)

    for paths in data.values():  # page the data in before the clock and the baseline
        if isinstance(paths, dict):
            for p in paths.values():
                float(np.asarray(probe_path.load_array(p)).sum(dtype=np.float64))
    fn: Callable[[dict[str, Any]], dict[str, Any]] = mod.CASES[case]
    out, t = _harness.timed(fn, data)
    _harness.emit({"cpu": t["cpu"], "wall": t["wall"],
                   "extra_mb": max(t["peak"] - t["base"], 0) / 2**20,
                   "accuracy": float(out.get("accuracy", float("nan"))),
                   "extra": str(out.get("extra", ""))})


def run_case(module: str, case: str, data_file: str, python: str, limit_gb: float,
             threads: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, **_harness.thread_env(threads), "PYTHONPATH": str(HERE.parent / "src")}
    cmd = [python, str(Path(__file__).resolve()), "--child", f"{module}:{case}", "--data",
           data_file]
    run = _harness.run_child(cmd, env=env, timeout=timeout,
                             mem_bytes=int(limit_gb * 2**30) if limit_gb > 0 else None)
    return dict(run.result) if run.ok else {"error": run.status}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="substring of the case-module suffix")
    ap.add_argument("--cases", default=None, help="comma-separated case names to run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-limit-gb", type=float, default=12.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        module, case = args.child.split(":")
        child(module, case, args.data)
        return

    ROOT.mkdir(parents=True, exist_ok=True)
    mods = case_modules(args.only)
    if not mods:
        sys.exit(f"no benchmarks/_probe_cases_*.py module matches --only={args.only!r}")
    data: dict[str, Any] = {
        "synthetic": make_synthetic(args.n, args.d, args.classes, n_test=10_000),
        "digits": make_digits(),
    }
    lite0 = make_lite0()
    if lite0:
        data["lite0"] = lite0
    wanted = set(args.cases.split(",")) if args.cases else None
    selected = [c for mod in mods.values() for c in mod.CASES if not wanted or c in wanted]
    for name, (n, d, k) in WIDE.items():
        if any(name in c for c in selected):
            data[name] = make_synthetic(n, d, k, n_test=1_000)
    data_file = ROOT / f"data_{args.device}_{os.getpid()}.json"  # one per harness run
    data_file.write_text(json.dumps({**data, "device": args.device}))
    print(f"device={args.device} threads={args.threads} runs={args.runs} "
          f"as-limit={args.mem_limit_gb} GB; synthetic n={args.n} d={args.d} "
          f"classes={args.classes}; X_train {args.n * args.d * 4 / 2**20:.0f} MB (float32)")
    results: dict[str, dict[str, Any]] = {}
    for mod in mods.values():
        for case in mod.CASES:
            if wanted and case not in wanted:
                continue
            if "lite0" in case and "lite0" not in data:
                continue
            python = getattr(mod, "PYTHON", {}).get(case, sys.executable)
            if not Path(python).exists():
                results[case] = {"error": f"interpreter {python} missing"}
                print(f"{case:34s} skipped: {python} missing", flush=True)
                continue
            n_runs = min(args.runs, getattr(mod, "RUNS", {}).get(case, args.runs))
            runs = [run_case(mod.__name__, case, str(data_file), python, args.mem_limit_gb,
                             args.threads, args.timeout) for _ in range(n_runs)]
            ok = [r for r in runs if "error" not in r]
            if not ok:
                results[case] = runs[0]
                print(f"{case:34s} {runs[0]['error']}", flush=True)
                continue
            res: dict[str, Any] = _harness.medians(ok, ("cpu", "wall", "extra_mb"))
            res.update(accuracy=ok[0]["accuracy"], extra=ok[0]["extra"], runs=len(ok))
            results[case] = res
            print(f"{case:34s} runs={len(ok)} cpu={res['cpu']:8.2f}s wall={res['wall']:8.2f}s "
                  f"extra={res['extra_mb']:8.1f}MB acc={res['accuracy']:.4f} {res['extra']}",
                  flush=True)
    print()
    print(f"| {'case':34s} | runs | CPU s | wall s | peak extra MB | accuracy | notes |")
    print("|---|---|---|---|---|---|---|")
    for case, r in results.items():
        if "error" in r:
            print(f"| {case:34s} | - | - | - | - | - | {r['error']} |")
        else:
            print(f"| {case:34s} | {r['runs']} | {r['cpu']:.3f} | {r['wall']:.3f} | "
                  f"{r['extra_mb']:.1f} | {r['accuracy']:.4f} | {r['extra']} |")
    print()
    print("| comparison | repscope CPU s | anchor CPU s | speed-up | target | met | "
          "accuracy diff (points) | extra MB (repscope / anchor) |")
    print("|---|---|---|---|---|---|---|---|")
    for mod in mods.values():
        for label, ours, anchor, target in getattr(mod, "COMPARISONS", []):
            a, b = results.get(ours), results.get(anchor)
            if not a or not b or "error" in a or "error" in b:
                why = (a or {}).get("error") or (b or {}).get("error") or "not run"
                print(f"| {label} | - | - | - | {target} | - | - | {why} |")
                continue
            ratio = b["cpu"] / max(a["cpu"], 1e-9)
            print(f"| {label} | {a['cpu']:.3f} | {b['cpu']:.3f} | {ratio:.2f}x | >= {target:.2f}x | "
                  f"{'yes' if ratio >= target else 'NO'} | "
                  f"{100 * (a['accuracy'] - b['accuracy']):+.2f} | "
                  f"{a['extra_mb']:.0f} / {b['extra_mb']:.0f} |")


if __name__ == "__main__":
    main()
