"""The similarity / alignment benchmark harness.

Builds the shared inputs once as ``.npy`` under ``$REPSCOPE_SIM_BENCH_DIR`` (default
``/tmp/repscope-sim-bench``) -- correlated synthetic pairs of the issue's shapes:

* ``10k``: n=10,000 x (768, 1024)
* ``50k``: n=50,000 x (384, 384)
* ``wide``: n=1,000 x (16,384, 16,384)

then imports every ``benchmarks/_sim_cases_*.py`` module (contract: ``CASES`` name ->
``case(data) -> {"value": float, "extra": dict}``; optional ``PREPARE`` name -> untimed
``prep(data)``; optional ``PYTHON`` name -> interpreter (anchors in their own venvs); optional
``setup()`` run once, untimed; ``COMPARISONS`` of ``(label, repscope_case, other_case,
target)``) and runs each case in its own subprocess (``benchmarks/_harness.py``), one after
another, with one thread (``OMP/MKL/OPENBLAS`` threads = 1, ``torch.set_num_threads(1)``), under
``prlimit --as=<--mem-gb>`` so that a case needing tens of GB reports "out of memory" instead
of taking the machine down.

Per case: CPU-seconds of the computation (``time.process_time`` in the child around the case;
imports and input loading excluded), the child's total CPU (user + sys from ``wait4``:
imports included) and its peak RSS (``ru_maxrss``) plus the peak over the inputs.
Medians of ``--runs`` (3) runs; a case whose first run takes more than ``--slow`` (20) CPU-s
runs once, and the table says so (``runs`` column).

Targets (``target`` dict of a comparison): ``cpu`` -- other / repscope CPU at least this;
``cpu_max`` -- repscope / other CPU at most this; ``seconds`` -- repscope CPU-s at most this;
``mem`` -- other / repscope extra memory at least this; ``abs_mem_mb`` -- repscope peak at most
this many MB.

Usage::

    python benchmarks/similarity.py [--runs 3] [--only SUBSTR] [--modules align,measures]
                                    [--mem-gb 10] [--timeout 600]
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import _harness
import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("REPSCOPE_SIM_BENCH_DIR", "/tmp/repscope-sim-bench"))
SHAPES = {"10k": (10_000, 768, 1024), "50k": (50_000, 384, 384), "wide": (1_000, 16_384, 16_384)}


# --------------------------------------------------------------------------- inputs
def build_inputs(shapes: list[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """Write the seeded float32 input pairs (once) and return their paths.

    ``Y`` is a noisy nonlinear function of a 256-dimensional latent that also drives ``X``
    (un-centred, like real activations): the pair is correlated but not linearly identical.
    """
    out = {}
    for shape in shapes or list(SHAPES):
        n, dx, dy = SHAPES[shape]
        px, py = CACHE / f"{shape}_X.npy", CACHE / f"{shape}_Y.npy"
        if not (px.exists() and py.exists()):
            CACHE.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            r = min(256, dx)
            Z = rng.standard_normal((n, r), dtype=np.float32)
            X = Z @ rng.standard_normal((r, dx), dtype=np.float32) / np.sqrt(r)
            X += 0.5 * rng.standard_normal((n, dx), dtype=np.float32)
            Y = np.tanh(Z @ rng.standard_normal((r, dy), dtype=np.float32) / np.sqrt(r))
            Y += 0.5 * rng.standard_normal((n, dy), dtype=np.float32)
            np.save(px.with_suffix(".tmp.npy"), (X + 1.0).astype(np.float32))
            np.save(py.with_suffix(".tmp.npy"), Y.astype(np.float32))
            px.with_suffix(".tmp.npy").rename(px)
            py.with_suffix(".tmp.npy").rename(py)
        out[shape] = (px, py)
    return out


# --------------------------------------------------------------------------- child process
def run_case(module: Any, name: str, mem_bytes: int, timeout: float) -> dict[str, Any]:
    """One run of ``name`` in a fresh process: ``{"status": "ok" | "out of memory" | ...}``."""
    python = getattr(module, "PYTHON", {}).get(name, sys.executable)
    run = _harness.run_case(module.__name__, name, python=python,
                            env={"REPSCOPE_SIM_BENCH_DIR": str(CACHE)}, mem_bytes=mem_bytes,
                            timeout=timeout)
    if not run.ok:
        return {"status": run.status}
    r = run.result
    return {"status": "ok", "total_cpu": run.cpu, "value": r["value"], "cpu": r["cpu"],
            "peak": r["peak"], "base": r["base"]}


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rs if r["status"] == "ok"]
    if not ok:
        return {**rs[0], "runs": 0}
    return _harness.median_run(ok, "cpu")


# --------------------------------------------------------------------------- driver
def discover(selected: list[str] | None) -> list[Any]:
    """The ``_sim_cases_*`` modules (all, or those whose suffix is in ``selected``)."""
    sys.path.insert(0, str(HERE))
    found = {p.stem.removeprefix("_sim_cases_"): p.stem for p in sorted(HERE.glob("_sim_cases_*.py"))}
    order = [s for s in selected if s in found] if selected else list(found)
    return [importlib.import_module(found[s]) for s in order]


def _fmt_row(name: str, r: dict[str, Any], slow: float) -> str:
    if r["status"] != "ok":
        return f"{name:46s} {r['status']}"
    note = " (1 run: slow)" if r["runs"] == 1 and r["cpu"] > slow else ""
    return (f"{name:46s} {r['cpu']:9.2f} {r['total_cpu']:9.2f} {r['peak'] / 2**20:9.0f} "
            f"{(r['peak'] - r['base']) / 2**20:9.0f}  {r['value']:.6g}  runs={r['runs']}{note}")


def _comparison(label: str, ro: dict[str, Any] | None, rt: dict[str, Any] | None,
                target: dict[str, float]) -> str:
    if ro is None or ro["status"] != "ok":
        return f"{label:52s} repscope: {ro['status'] if ro else 'not run'}"
    if "seconds" in target:
        met = ro["cpu"] <= target["seconds"]
        return (f"{label:52s} {ro['cpu']:9.2f} {'':>9s} {'':>8s}  cpu <= {target['seconds']} s"
                f"  {'MET' if met else 'MISSED'}")
    if "abs_mem_mb" in target:
        mb = ro["peak"] / 2**20
        met = mb <= target["abs_mem_mb"]
        other = f"{rt['cpu']:9.2f}" if rt and rt["status"] == "ok" else \
            f"{(rt or {}).get('status', 'not run'):>9s}"
        return (f"{label:52s} {ro['cpu']:9.2f} {other} {'':>8s}  peak {mb:.0f} MB <= "
                f"{target['abs_mem_mb']:.0f} MB  {'MET' if met else 'MISSED'}")
    if rt is None or rt["status"] != "ok":
        status = rt["status"] if rt else "not run"
        return f"{label:52s} {ro['cpu']:9.2f} {status:>18s}  (other could not run)"
    parts, mets = [], []
    if "cpu" in target:
        ratio = rt["cpu"] / ro["cpu"]
        parts.append(f"{ratio:8.2f}x  cpu >= {target['cpu']:.2f}x")
        mets.append(ratio >= target["cpu"])
    if "cpu_max" in target:
        ratio = ro["cpu"] / rt["cpu"]
        parts.append(f"{ratio:8.2f}x  repscope/other cpu <= {target['cpu_max']}x")
        mets.append(ratio <= target["cpu_max"])
    if "mem" in target:
        mo = max(ro["peak"] - ro["base"], 2**20)
        mt = max(rt["peak"] - rt["base"], 2**20)
        parts.append(f"mem {mt / mo:6.1f}x (>= {target['mem']}x)")
        mets.append(mt / mo >= target["mem"])
    return (f"{label:52s} {ro['cpu']:9.2f} {rt['cpu']:9.2f} " + "; ".join(parts)
            + f"  {'MET' if all(mets) else 'MISSED'}")


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="run cases whose name contains this")
    ap.add_argument("--modules", default="", help="comma-separated _sim_cases_ suffixes")
    ap.add_argument("--mem-gb", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--slow", type=float, default=20.0, help="CPU-s above which a case runs once")
    ap.add_argument("--results", default=str(CACHE / "results.json"),
                    help="JSON file the per-case results are saved to after every case")
    ap.add_argument("--table-only", action="store_true",
                    help="print the tables from --results without running anything")
    a = ap.parse_args(argv)
    saved = Path(a.results)
    if a.table_only:
        results = json.loads(saved.read_text())
        for name, r in results.items():
            print(_fmt_row(name, r, a.slow))
        _print_comparisons(discover(None), results)
        return
    print(f"inputs: {', '.join(f'{k}={v[0].parent}' for k, v in build_inputs().items())}")
    mods = discover([s for s in a.modules.split(",") if s] or None)
    mem = int(a.mem_gb * 2**30)
    results: dict[str, dict[str, Any]] = {}
    print(f"{'case':46s} {'CPU-s':>9s} {'total':>9s} {'peak MB':>9s} {'+MB':>9s}  value")
    for mod in mods:
        names = [n for n in mod.CASES if a.only in n]
        if not names:
            continue
        if hasattr(mod, "setup"):
            mod.setup()
        for name in names:
            first = run_case(mod, name, mem, a.timeout)
            rs = [first]
            if first["status"] == "ok" and first["cpu"] <= a.slow:
                rs += [run_case(mod, name, mem, a.timeout) for _ in range(a.runs - 1)]
            results[name] = _median(rs)
            print(_fmt_row(name, results[name], a.slow), flush=True)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(results, indent=1))
    _print_comparisons(mods, results)


def _print_comparisons(mods: list[Any], results: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'comparison':52s} {'repscope':>9s} {'other':>9s} ratio / target")
    for mod in mods:
        for label, ours, other, target in getattr(mod, "COMPARISONS", []):
            if ours not in results and other not in results:
                continue
            print(_comparison(label, results.get(ours), results.get(other), target))


if __name__ == "__main__":
    main(sys.argv[1:])
