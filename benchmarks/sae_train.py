"""TopK SAE training against its anchors: CPU seconds per 1,000 vectors, peak memory, FVU.

Every library trains the same TopK SAE (``k=32`` active latents, ``d_sae = expansion * 384``,
batch 1,024, Adam at one shared constant learning rate, ``2e-4 * sqrt(16384 / d_sae)`` unless
``--lr`` says otherwise) for ``--warmup`` + ``--steps`` steps on the same data, the way its users
would (see ``benchmarks/_sae_anchor_cases.py``): repscope (``repscope.sae.fit``), sparsify
(``eai-sparsify``), SAELens (``sae-lens``), dictionary_learning and overcomplete, each from its
own venv (``--python-<name>``, default ``/tmp/venv-<name>/bin/python``; a missing interpreter
gives a "not installed" row).

Data (written once to ``/tmp/repscope-sae-bench/``, memory-mapped by every run): a synthetic
stand-in for MiniLM sentence features, 65,536 x 384 float32, with the structure that makes SAE
training hard on real features:

- un-centred: a fixed mean vector whose norm is about 1.5 times the RMS spread around it;
- sparse: each vector is a sum of on average ~16 of 4,096 ground-truth directions, chosen with
  power-law frequencies (a few common, many rare), with exponential magnitudes;
- anisotropic: the directions and the dense Gaussian noise both follow a power-law spectrum
  (eigenvalues ``~ i^-1``), so a few axes carry most of the variance.

The first 57,344 rows train, the last 8,192 are held out for FVU
(``sum ||x - x_hat||^2 / sum ||x - mean||^2``) and for the dead fraction (latents that never
fire on them).

Each library runs in its own process (this script with ``--child`` under that library's
interpreter, through ``benchmarks/_harness.py``), one after another; the process trains
``--repeats`` fresh SAEs in turn (starting a process per repeat would spend most of the time
budget importing transformers-sized dependency trees). CPU time is ``time.process_time`` over the last ``--steps`` steps (all
threads; every child sets ``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=1``), so the
warm-up steps and the data-dependent initialisation are not timed; medians over the repeats.
Peak memory is the child's ``ru_maxrss`` when training ends, before evaluation (the whole
process: interpreter, library, touched data pages); "train MB" is that peak minus the resident
size just before the first run (after the imports and with the data paged in).

Usage::

    python benchmarks/sae_train.py [--steps 60] [--warmup 5] [--expansions 8 32]
        [--repeats 3] [--device cpu] [--only repscope,sparsify]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import _harness
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = Path("/tmp/repscope-sae-bench")
N_ROWS, N_EVAL, D = 65_536, 8_192, 384


# --------------------------------------------------------------------------- data
def make_data(n: int = N_ROWS, d: int = D, seed: int = 0) -> Path:
    """The synthetic feature matrix (see the module docstring), cached as a .npy file."""
    path = ROOT / f"minilm_like_v1_n{n}_d{d}_s{seed}.npy"
    if path.exists():
        return path
    ROOT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_atoms, mean_active = 4096, 16.0
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = 1.0 / np.sqrt(np.arange(1, d + 1))  # std per axis: eigenvalues ~ 1/i
    atoms = rng.standard_normal((n_atoms, d)) * spectrum @ q.T
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    freq = 1.0 / np.arange(10, n_atoms + 10) ** 0.8
    freq *= mean_active / freq.sum()  # expected active atoms per row
    noise_mix = (q * spectrum).T * 0.15
    out = np.lib.format.open_memmap(
        path.with_suffix(".partial.npy"), mode="w+", dtype=np.float32, shape=(n, d)
    )
    chunk = 4096
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        active = rng.random((b - a, n_atoms)) < freq
        mags = rng.exponential(1.0, (b - a, n_atoms)) * active
        out[a:b] = mags @ atoms + rng.standard_normal((b - a, d)) @ noise_mix
    spread = float(np.sqrt(((out[:8192] - out[:8192].mean(0)) ** 2).sum(1).mean()))
    mean_dir = rng.standard_normal(d)
    mean_vec = 1.5 * spread * mean_dir / np.linalg.norm(mean_dir)
    for a in range(0, n, chunk):
        out[a : a + chunk] += mean_vec.astype(np.float32)
    out.flush()
    del out
    path.with_suffix(".partial.npy").replace(path)
    return path


# --------------------------------------------------------------------------- child
def child(case: str, spec_json: str) -> None:
    """All repeats of one case in this process; prints one RESULT line (a list of runs)."""
    sys.path.insert(0, str(HERE))
    import _sae_anchor_cases as cases
    import torch

    torch.set_num_threads(1)
    spec = json.loads(spec_json)
    x = np.load(spec["data"], mmap_mode="r")
    for a in range(0, len(x), 8192):  # page the data in before the baseline
        float(x[a : a + 8192].sum())
    cases.PRELOAD[case]()
    base = _harness.rss_bytes() / 2**20
    runs = []
    for _ in range(spec["repeats"]):
        out = cases.CASES[case](spec)
        out["train_mb"] = max(out["peak_mb"] - base, 0.0)
        runs.append(out)
    _harness.emit(runs)


def run_child(case: str, spec: dict[str, Any], python: str, timeout: float) -> Any:
    env = {
        **os.environ,
        **_harness.thread_env(1),
        "PYTHONPATH": str(HERE.parent / "src"),
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "SPARSIFY_DISABLE_TRITON": "1",
    }
    cmd = [python, str(Path(__file__).resolve()), "--child", case, "--spec", json.dumps(spec)]
    run = _harness.run_child(cmd, env=env, timeout=timeout)
    return run.result if run.ok else {"error": run.status}


# --------------------------------------------------------------------------- main
def main() -> None:
    sys.path.insert(0, str(HERE))
    import _sae_anchor_cases as cases

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--expansions", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate for all (default 2e-4 * sqrt(16384 / d_sae))",
    )
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--timeout", type=float, default=900.0)
    for name, default in cases.PYTHON.items():
        ap.add_argument(
            f"--python-{name.replace('_', '-')}",
            default=default,
            help=f"interpreter with {name} installed",
        )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.spec)
        return

    data = make_data()
    wanted = args.only.split(",") if args.only else list(cases.CASES)
    print(
        f"data {data} ({N_ROWS} x {D} float32, {N_ROWS - N_EVAL} train / {N_EVAL} held out); "
        f"k={args.k} batch={args.batch} steps={args.steps} (+{args.warmup} untimed) "
        f"repeats={args.repeats} device={args.device}; 1 torch thread per run",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for expansion in args.expansions:
        d_sae = expansion * D
        lr = args.lr if args.lr is not None else 2e-4 * (16384 / d_sae) ** 0.5
        spec = {
            "data": str(data),
            "n_train": N_ROWS - N_EVAL,
            "n_eval": N_EVAL,
            "d": D,
            "expansion": expansion,
            "k": args.k,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "lr": lr,
            "device": args.device,
            "seed": 0,
        }
        for case in wanted:
            python = getattr(args, f"python_{case}") or sys.executable
            row: dict[str, Any] = {"case": case, "expansion": expansion, "lr": lr}
            if not Path(python).exists():
                row["error"] = f"not installed ({python} missing)"
                print(f"{case:20s} {expansion:3d}x  {row['error']}", flush=True)
                rows.append(row)
                continue
            got = run_child(case, {**spec, "repeats": args.repeats}, python, args.timeout)
            ok = got if isinstance(got, list) else []
            if not ok:
                row["error"] = got["error"]
                print(f"{case:20s} {expansion:3d}x  {row['error']}", flush=True)
                rows.append(row)
                continue
            per_k = 1000.0 / (args.steps * args.batch)
            row.update(
                runs=len(ok),
                cpu_per_1k=statistics.median(r["cpu"] for r in ok) * per_k,
                wall_per_1k=statistics.median(r["wall"] for r in ok) * per_k,
                # the first run's: later runs' peaks include the first run's evaluation
                peak_mb=ok[0]["peak_mb"],
                train_mb=ok[0]["train_mb"],
                fvu=statistics.median(r["fvu"] for r in ok),
                dead=statistics.median(r["dead"] for r in ok),
                l0=statistics.median(r["l0"] for r in ok),
                version=ok[0].get("version", "?"),
            )
            rows.append(row)
            print(
                f"{case:20s} {expansion:3d}x  cpu/1k={row['cpu_per_1k']:.3f}s "
                f"peak={row['peak_mb']:.0f}MB train={row['train_mb']:.0f}MB "
                f"fvu={row['fvu']:.4f} dead={100 * row['dead']:.1f}% l0={row['l0']:.1f} "
                f"({row['runs']} runs, {row['version']})",
                flush=True,
            )
    print()
    ours = {r["expansion"]: r for r in rows if r["case"] == "repscope" and "error" not in r}
    _harness.print_table(
        rows,
        [
            _harness.Column("library", "case", "s"),
            _harness.Column("version", "version", "s"),
            _harness.Column("expansion", "expansion", lambda v: f"{v}x"),
            _harness.Column("CPU-s / 1k vectors", "cpu_per_1k", ".3f"),
            _harness.Ratio("vs repscope", "cpu_per_1k"),
            _harness.Column("wall-s / 1k", "wall_per_1k", ".3f"),
            _harness.Column("peak RSS MB", "peak_mb", ".0f"),
            _harness.Column("train MB", "train_mb", ".0f"),
            _harness.Column("FVU (held out)", "fvu", ".4f"),
            _harness.Column("dead %", "dead", lambda v: f"{100 * v:.1f}"),
            _harness.Column("L0", "l0", ".1f"),
        ],
        baseline=lambda r: ours.get(r["expansion"]),
        markdown=True,
    )


if __name__ == "__main__":
    main()
