"""Scale: Moments over a 10M x 384 float16 store on disk, 2 ranks vs 1, extraction on 2 ranks.

Three parts (``--parts a,b,c``), each implementation in its own process through
``benchmarks/_harness.py`` (``prlimit --as`` caps, CPU-seconds from the child):

* **(a) out of core.** ``Moments.from_store`` over the first ``--rows`` rows (1,000,000 and
  10,000,000 by default) of one float16 store of 384 features on disk (about 7.7 GB at 10M
  rows; chunks of 32,768 rows, a ``label`` column of 10 classes), against the same BLAS work on
  data already in memory: the rows read into one float16 array first (untimed), then
  ``c = X[a:b].astype(float64); G += c.T @ c`` over 4,096-row chunks (the block size Moments
  uses). Rows: the baseline; ``Moments.from_store`` with the prefetching reader (2 batches
  ahead, the default), without it (``prefetch=0``), and with it on a store opened with
  ``verify="none"`` (no SHA-256 of each shard on its first read); the ridge path (``Moments``
  with labels and ``class_cov="none"``: the class sums ridge needs, without Gaussian NB's
  per-class variances; then ``RidgeProbe(alphas=12 values).fit_moments``: GCV over the path). Unless
  named, the store is opened as the CLI opens it (``verify="lazy"``: each shard's SHA-256 is
  checked on its first read, in the reading thread). "main-thread CPU" is the CPU time of
  the thread that computes (the reading thread's excluded): the wall time a streamed pass
  tends to when a core is free for the reading thread. Peak RSS is the whole child process's
  (imports included; the baseline holds the rows). Target: Moments' peak RSS independent of n
  and under 1 GB; its wall time within 1.25x of the baseline's.
* **(b) 2 processes vs 1.** The same ``Moments.from_store`` pass over the largest ``--rows``:
  one process with one BLAS thread, one process with two, and ``torchrun --standalone
  --nproc-per-node 2`` (gloo) where each rank reads its half of the rows
  (``DistContext.share``) with one BLAS thread and ``Moments.all_reduce`` combines them. Wall
  time is rank 0's from a barrier before the pass to the end of the all-reduce; CPU is the sum
  over ranks; "max rel. diff" compares the covariance with the one-process one.
* **(c) extraction.** ``repscope extract minilm-l6 --dataset austen --n-samples N`` (mean
  pooled blocks, ``--batch-size 32 --chunk-size 128``: each rank takes a contiguous run of
  whole chunks, so the chunks must be several per rank) in one process (one thread, two
  threads) and under ``torchrun --standalone --nproc-per-node 2 -m repscope extract ...``
  (one thread per rank).
  Throughput is samples per second of the extraction proper (the ``seconds`` of the run's
  ``extraction`` record: rank 0's wall time from the start of extraction to the joined
  manifest) and of the whole command (start-up and model loading included).

The 2-core machine this was written on is shared: CPU-seconds are the steadier numbers; the
load average is printed with each table.

The store is made once under ``--cache`` (default ``$REPSCOPE_HOME/bench/scale-10m``, never
inside the repository) and reused; an interrupted build resumes (every chunk is a pure
function of its index).

Usage::

    python benchmarks/scale.py [--parts a,b,c] [--rows 1000000,10000000] [--runs 3]
        [--large-runs 1] [--cache DIR] [--extract-n 1024] [--mem-limit-gb 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness
import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
LAYER = "h"
D = 384
N_MAX = 10_000_000
CHUNK = 32_768
BLOCK = 4096  # rows per baseline chunk and per Moments batch
CLASSES = 10
RECIPE = {"recipe": "scale-v1", "d": D, "chunk": CHUNK, "classes": CLASSES}
EXTRACT_CHUNK = 128  # (c): ranks split whole chunks, so several per rank
ALPHAS = [float(a) for a in np.logspace(-3, 4, 12)]


# --------------------------------------------------------------------------- data
def default_cache() -> Path:
    from repscope.zoo._paths import repscope_home

    return repscope_home() / "bench" / "scale-10m"


def _chunk(ci: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``ci``: class means plus correlated noise (a rank-64 mix plus isotropic), float16."""
    mix = np.random.default_rng(0).standard_normal((64, D)).astype(np.float32) / 8
    means = np.random.default_rng(1).standard_normal((CLASSES, D)).astype(np.float32) / 4
    rng = np.random.default_rng([2, ci])
    y = rng.integers(0, CLASSES, rows)
    x = means[y] + rng.standard_normal((rows, 64), dtype=np.float32) @ mix
    x += rng.standard_normal((rows, D), dtype=np.float32) * 0.5
    return x.astype(np.float16), y


def make_store(path: Path, n: int) -> Path:
    """The ``n`` x 384 float16 store at ``path`` (made, or resumed, once)."""
    from repscope.store import FeatureStore

    have = 0
    if (path / "manifest.json").exists():
        old = FeatureStore.open(path, verify="none")
        if old.attrs != RECIPE:
            sys.exit(f"{path} holds another store ({old.attrs}); pass another --cache.")
        have = old.n_samples
        if have >= n:
            return path
    probe = path.parent if path.parent.exists() else Path.home()
    free, need = shutil.disk_usage(probe).free, (n - have) * D * 2
    if free < need + 2**30:
        sys.exit(f"making the {n:,}-row store at {path} needs {need / 2**30:.1f} GiB more; "
                 f"{free / 2**30:.1f} GiB are free. Pass --cache on a larger disk.")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with FeatureStore.create(path, "scale-bench", attrs=RECIPE, exist_ok=True) as store:
        while store.n_samples < n:
            ci = store.n_samples // CHUNK
            x, y = _chunk(ci, min(CHUNK, N_MAX - ci * CHUNK))
            store.append({LAYER: x}, metadata={"label": y})
            if ci % 20 == 0:
                print(f"  store: {store.n_samples:,} / {n:,} rows "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


# --------------------------------------------------------------------------- children
def _open(path: str, verify: str = "lazy") -> Any:
    from repscope.store import FeatureStore

    return FeatureStore.open(path, verify=verify)  # type: ignore[arg-type]


def _main_thread(fn: Any) -> Any:
    """``fn`` returning ``(its result, CPU-seconds of the calling thread alone)``: with a free
    core for the reading thread, the wall time of a streamed pass tends to this."""

    def run() -> tuple[Any, float]:
        c0 = time.thread_time()
        out = fn()
        return out, time.thread_time() - c0

    return run


def child_gram(path: str, rows: int) -> None:
    """The baseline: the rows in memory (float16), then chunked float64 ``X.T @ X``."""
    X = np.empty((rows, D), dtype=np.float16)  # untimed: "data already in memory"
    pos = 0
    for batch in _open(path).iter_batches(LAYER, 65_536, stop=rows):
        X[pos:pos + len(batch)] = batch
        pos += len(batch)

    def gram() -> np.ndarray:
        G = np.zeros((D, D))
        for a in range(0, rows, BLOCK):
            c = X[a:a + BLOCK].astype(np.float64)
            G += c.T @ c
        return G

    G, t = _harness.timed(_main_thread(gram))
    _harness.emit({**t, "main_cpu": G[1], "check": float(np.trace(G[0]))})


def child_moments(path: str, rows: int, prefetch: int, labels: bool, verify: str) -> None:
    """``Moments.from_store`` over ``rows`` rows (with labels: then the ridge path by GCV)."""
    from repscope.probe import RidgeProbe
    from repscope.stats import Moments

    store = _open(path, verify)

    def run() -> Any:
        # the ridge path needs the class sums, not the per-class variances (Gaussian NB's)
        m = Moments.from_store(store, LAYER, labels="label" if labels else None,
                               batch_size=BLOCK, rows=(0, rows), prefetch=prefetch,
                               class_cov="none" if labels else "diag")
        if labels:
            return m, RidgeProbe(alphas=ALPHAS).fit_moments(m)
        return m, None

    ((m, probe), main_cpu), t = _harness.timed(_main_thread(run))
    extra = {"check": float(m.n), "main_cpu": main_cpu}
    if probe is not None:
        extra["alpha"] = float(probe.alpha_)
    _harness.emit({**t, **extra})


def child_dist(path: str, rows: int, prefetch: int, out: str) -> None:
    """One rank of (b): its share of ``rows``, all-reduced; rank 0 saves the covariance."""
    import torch

    from repscope import distributed
    from repscope.stats import Moments

    torch.set_num_threads(1)
    ctx = distributed.launch("cpu")
    store = _open(path)
    ctx.barrier("starting")
    c0, w0 = time.process_time(), time.perf_counter()
    a, b = ctx.share(rows)
    m = Moments.from_store(store, LAYER, batch_size=BLOCK, rows=(a, b), prefetch=prefetch)
    if ctx.is_distributed:
        m.all_reduce()
    wall = time.perf_counter() - w0
    cpus = ctx.all_gather(time.process_time() - c0) if ctx.is_distributed else [
        time.process_time() - c0]
    if ctx.is_writer:
        np.save(out, m.covariance())
        _harness.emit({"wall": wall, "cpu": float(sum(cpus)), "ranks": ctx.world_size,
                       "peak": _harness.peak_rss_bytes()})
    distributed.shutdown()


# --------------------------------------------------------------------------- parent
def _env(threads: int, **extra: str) -> dict[str, str]:
    return {**os.environ, **_harness.thread_env(threads), "PYTHONPATH": str(SRC),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "REPSCOPE_NO_PROGRESS": "1",
            **extra}


def _me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _gb(n_bytes: float) -> float:
    return n_bytes / 2**30


def part_a(path: Path, rows_list: list[int], runs: int, large_runs: int, mem_gb: float,
           timeout: float) -> list[dict[str, Any]]:
    impls = [
        ("numpy X.T @ X, in memory", ["gram"], None),
        ("Moments.from_store, prefetch 2", ["moments", "--prefetch", "2"], mem_gb),
        ("Moments.from_store, no prefetch", ["moments", "--prefetch", "0"], mem_gb),
        ("Moments.from_store, prefetch 2, verify none",
         ["moments", "--prefetch", "2", "--verify", "none"], mem_gb),
        ("ridge path (labels: class sums, GCV, 12 alphas)", ["ridge", "--prefetch", "2"], mem_gb),
    ]
    out = []
    for rows in rows_list:
        n_runs = runs if rows <= 1_000_000 else large_runs
        base_cap = rows * D * 2 + mem_gb * 2**30
        got: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in impls}
        errors: dict[str, str] = {}
        for _ in range(n_runs):  # implementations alternate within each round
            for name, args, cap in impls:
                if name in errors:
                    continue
                run = _harness.run_child(
                    _me(*args, "--store", str(path), "--rows", str(rows)), env=_env(1),
                    mem_bytes=int(base_cap if cap is None else cap * 2**30), timeout=timeout)
                if not run.ok:
                    errors[name] = run.status
                    continue
                got[name].append({**run.result, "peak_gb": _gb(run.peak_mb * 2**20)})
        base = None
        for name, _, _ in impls:
            row: dict[str, Any] = {"impl": name, "rows": f"{rows:,}"}
            if name in errors:
                row["error"] = errors[name]
            else:
                row.update(_harness.median_run(got[name], key="wall"))
                row["peak_gb"] = max(r["peak_gb"] for r in got[name])
            if base is None:
                base = row
            row["_base"] = base
            out.append(row)
        print(f"  (a) {rows:,} rows done, load {_load()}", flush=True)
    return out


def part_b(path: Path, rows: int, runs: int, mem_gb: float, timeout: float,
           tmp: Path) -> list[dict[str, Any]]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2"]
    impls = [
        ("1 process, 1 BLAS thread", [sys.executable], 1),
        ("1 process, 2 BLAS threads", [sys.executable], 2),
        ("2 ranks (torchrun, gloo), 1 thread each", torchrun, 1),
    ]
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in impls}
    errors: dict[str, str] = {}
    for r in range(runs):
        for i, (name, launcher, threads) in enumerate(impls):
            if name in errors:
                continue
            cov = tmp / f"cov-{i}-{r}.npy"
            cmd = [*launcher, str(Path(__file__).resolve()), "--child", "dist", "--store",
                   str(path), "--rows", str(rows), "--prefetch", "2", "--out", str(cov)]
            run = _harness.run_child(cmd, env=_env(threads), timeout=timeout,
                                     mem_bytes=int(mem_gb * 2 * 2**30))
            if not run.ok:
                errors[name] = run.status
                continue
            got[name].append({**run.result, "peak_gb": _gb(run.result["peak"]),
                              "cov": str(cov)})
    out: list[dict[str, Any]] = []
    ref = None
    for name, _, _ in impls:
        row: dict[str, Any] = {"impl": name, "rows": f"{rows:,}"}
        if name in errors:
            row["error"] = errors[name]
            out.append(row)
            continue
        row.update(_harness.median_run(got[name], key="wall"))
        cov = np.load(row["cov"])
        ref = cov if ref is None else ref
        row["rel_diff"] = float(np.abs(cov - ref).max() / np.abs(ref).max())
        row["_base"] = out[0] if out else row
        out.append(row)
    print(f"  (b) done, load {_load()}", flush=True)
    return out


def child_extract(world: int, n: int, out: str, db: str) -> None:
    """Run one ``repscope extract`` launch (``world`` ranks) and report its timings."""
    args = ["extract", "minilm-l6", "--dataset", "austen", "--n-samples", str(n),
            "--batch-size", "32", "--chunk-size", str(EXTRACT_CHUNK), "--out", out,
            "--no-progress", "--db", db]
    cmd = ([sys.executable, "-m", "repscope", *args] if world == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={world}", "-m", "repscope", *args])
    w0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - w0
    if proc.returncode != 0:
        sys.exit(f"repscope extract failed: {proc.stderr.strip().splitlines()[-1:]}")
    from repscope.db import ResultsDB
    from repscope.store import FeatureStore

    with ResultsDB(db) as results:
        rec = results.query(analysis="extraction", newest_first=True, limit=1)[0]
    store = FeatureStore.open(out)
    _harness.emit({"wall": wall, "seconds": float(rec.values["seconds"]),
                   "n": int(store.n_samples), "layers": len(store.layers)})


def part_c(n: int, runs: int, timeout: float, tmp: Path) -> list[dict[str, Any]]:
    impls = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
             ("2 ranks (torchrun, gloo), 1 thread each", 2, 1)]
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in impls}
    errors: dict[str, str] = {}
    k = 0
    for _ in range(runs):
        for name, world, threads in impls:
            if name in errors:
                continue
            k += 1
            run = _harness.run_child(
                _me("extract", "--world", str(world), "--rows", str(n), "--out",
                    str(tmp / f"x{k}"), "--db", str(tmp / f"x{k}.db")),
                env=_env(threads), timeout=timeout)
            if not run.ok:
                errors[name] = run.status
                continue
            r = run.result
            got[name].append({**r, "cpu": run.cpu, "peak_gb": _gb(run.peak_mb * 2**20),
                              "sps": r["n"] / r["seconds"], "sps_all": r["n"] / r["wall"]})
    out: list[dict[str, Any]] = []
    for name, _, _ in impls:
        row: dict[str, Any] = {"impl": name, "rows": f"{n:,}"}
        if name in errors:
            row["error"] = errors[name]
        else:
            row.update(_harness.median_run(got[name], key="seconds"))
        row["_base"] = out[0] if out else row
        out.append(row)
    print(f"  (c) done, load {_load()}", flush=True)
    return out


def _table(title: str, rows: list[dict[str, Any]], columns: list[Any]) -> list[str]:
    lines = ["", f"### {title}", ""]
    lines += _harness.format_table(rows, columns, baseline=lambda r: r.get("_base"),
                                   markdown=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="a,b,c", help="comma-separated: a, b, c")
    ap.add_argument("--rows", default="1000000,10000000", help="row counts for (a); (b) "
                    "uses the largest")
    ap.add_argument("--runs", type=int, default=3, help="runs per implementation (up to 1M "
                    "rows; the median is shown)")
    ap.add_argument("--large-runs", type=int, default=1, help="runs above 1M rows and in (b)")
    ap.add_argument("--cache", default=None, help="directory of the store (default "
                    "$REPSCOPE_HOME/bench/scale-10m)")
    ap.add_argument("--extract-n", type=int, default=1024, help="samples for (c)")
    ap.add_argument("--extract-runs", type=int, default=1)
    ap.add_argument("--mem-limit-gb", type=float, default=4.0,
                    help="address-space cap of a streaming child (prlimit --as); the "
                    "in-memory baseline gets its data's size on top")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prefetch", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--verify", default="lazy", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--db", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        rows = int(a.rows)
        if a.child == "gram":
            child_gram(a.store, rows)
        elif a.child in ("moments", "ridge"):
            child_moments(a.store, rows, a.prefetch, labels=a.child == "ridge",
                          verify=a.verify)
        elif a.child == "dist":
            child_dist(a.store, rows, a.prefetch, a.out)
        elif a.child == "extract":
            child_extract(a.world, rows, a.out, a.db)
        return

    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    rows_list = sorted(int(r) for r in a.rows.split(","))
    if rows_list[-1] > N_MAX:
        sys.exit(f"--rows: at most {N_MAX:,} (the store's size); got {rows_list[-1]:,}.")
    lines = [f"scale.py on {os.cpu_count()} CPUs; load average at start {_load()}"]
    print(lines[0], flush=True)
    path = Path(a.cache) if a.cache else default_cache()
    if parts & {"a", "b"}:
        make_store(path, rows_list[-1])
    common = [_harness.Column("implementation", "impl"), _harness.Column("rows", "rows")]
    with tempfile.TemporaryDirectory(prefix="repscope-scale-") as tmp:
        if "a" in parts:
            res = part_a(path, rows_list, a.runs, a.large_runs, a.mem_limit_gb, a.timeout)
            lines += _table(
                f"(a) Moments over a {D}-feature float16 store on disk vs chunked float64 "
                f"X.T @ X in memory (median of {a.runs} runs at 1M rows, {a.large_runs} above;"
                f" load now {_load()})", res,
                [*common, _harness.Column("wall s", "wall", ".2f"),
                 _harness.Ratio("wall ratio", "wall"),
                 _harness.Column("CPU s", "cpu", ".2f"), _harness.Ratio("CPU ratio", "cpu"),
                 _harness.Column("main-thread CPU s", "main_cpu", ".2f"),
                 _harness.Ratio("main-thread ratio", "main_cpu"),
                 _harness.Column("peak RSS GiB", "peak_gb", ".2f")])
        if "b" in parts:
            res = part_b(path, rows_list[-1], a.large_runs, a.mem_limit_gb, a.timeout,
                         Path(tmp))
            lines += _table(
                f"(b) Moments.from_store on 2 processes vs 1 (median of {a.large_runs}; "
                f"load now {_load()})", res,
                [*common, _harness.Column("wall s", "wall", ".2f"),
                 _harness.Ratio("speed-up", "wall", inverse=True),
                 _harness.Column("CPU s (all ranks)", "cpu", ".2f"),
                 _harness.Column("peak RSS GiB (a rank)", "peak_gb", ".2f"),
                 _harness.Column("max rel. diff", "rel_diff", ".1e")])
        if "c" in parts:
            res = part_c(a.extract_n, a.extract_runs, a.timeout, Path(tmp))
            lines += _table(
                f"(c) repscope extract minilm-l6 (7 mean-pooled layers, batch 32) on 2 ranks "
                f"vs 1 (median of {a.extract_runs}; load now {_load()})", res,
                [*common, _harness.Column("extract s", "seconds", ".1f"),
                 _harness.Column("samples/s", "sps", ".1f"),
                 _harness.Ratio("speed-up", "sps"),
                 _harness.Column("command s", "wall", ".1f"),
                 _harness.Column("samples/s (command)", "sps_all", ".1f"),
                 _harness.Column("CPU s (all)", "cpu", ".1f")])
    print("\n".join(lines[1:]))


if __name__ == "__main__":
    main()
