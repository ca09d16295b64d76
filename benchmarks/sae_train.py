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

With ``--time-to-fvu`` the script prints a second table, on real activations: SmolLM2-135M's
layer-14 residual stream over 1,200 Austen paragraphs (the first token of each paragraph
dropped; extracted once by :func:`make_smollm_data` into ``/tmp/repscope-sae-bench/``), the last
120 paragraphs held out (their first ``--fvu-eval`` tokens score FVU). Each library trains at
its defaults (learning rate, optimiser, initialisation; only width, k and batch are set) for
``--fvu-steps`` steps per expansion, evaluated every ``--eval-every`` steps with the CPU clock
paused (see ``benchmarks/_sae_fvu_cases.py``). The target FVU is the one sparsify's defaults
reach at step ``--target-step`` (400: where they plateau); the table gives, per library and
expansion, the training CPU-seconds to reach it (medians over ``--repeats``), the FVU at the
last step, the CPU-seconds per step and their ratio to the floor of one dense encoder product
plus top-k on a batch.

Usage::

    python benchmarks/sae_train.py [--steps 60] [--warmup 5] [--expansions 8 32]
        [--repeats 3] [--device cpu] [--only repscope,sparsify]
    python benchmarks/sae_train.py --time-to-fvu [--fvu-steps 500] [--expansions 8 32]
        [--repeats 2] [--only repscope,sparsify]
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


SMOL_TOKENS = ROOT / "smollm2_l14_austen1200_tokens.npy"
SMOL_OFFSETS = ROOT / "smollm2_l14_austen1200_offsets.npy"
SMOL_PARAGRAPHS, SMOL_HELD_OUT = 1200, 120


def make_smollm_data() -> tuple[Path, Path]:
    """SmolLM2-135M layer-14 residual stream (the output of decoder layer 14) over the first
    1,200 Austen paragraphs, each paragraph's first token dropped: (tokens.npy of shape
    (n_tokens, 576) float32, offsets.npy of the paragraphs' first rows), cached. The model runs
    truncated after layer 14, two threads, paragraphs batched by length."""
    if SMOL_TOKENS.exists() and SMOL_OFFSETS.exists():
        return SMOL_TOKENS, SMOL_OFFSETS
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repscope.zoo import load_dataset, repscope_home

    torch.set_num_threads(2)
    path = Path(repscope_home()) / "models" / "smollm2-135m"  # the zoo's copy
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.model.layers = model.model.layers[:15]
    texts = load_dataset("austen", n=SMOL_PARAGRAPHS, seed=0).inputs
    got: dict[str, Any] = {}

    def hook(module: Any, inputs: Any, output: Any) -> None:
        got["h"] = output[0] if isinstance(output, tuple) else output

    handle = model.model.layers[14].register_forward_hook(hook)
    ids = [tok(t)["input_ids"] for t in texts]
    order = np.argsort([len(x) for x in ids])
    out: list[Any] = [None] * len(ids)
    with torch.no_grad():
        for a in range(0, len(order), 16):
            idx = order[a : a + 16]
            width = max(len(ids[i]) for i in idx)
            inp = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                inp[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            model.model(input_ids=inp, attention_mask=mask)
            for r, i in enumerate(idx):
                out[i] = got["h"][r, 1 : len(ids[i])].float().numpy()
    handle.remove()
    ROOT.mkdir(parents=True, exist_ok=True)
    lens = np.array([len(o) for o in out])
    np.save(SMOL_OFFSETS, np.concatenate([[0], np.cumsum(lens)]))
    np.save(SMOL_TOKENS, np.concatenate(out).astype(np.float32))
    return SMOL_TOKENS, SMOL_OFFSETS


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


def child_fvu(case: str, spec_json: str) -> None:
    """All repeats of one time-to-FVU case in this process; prints one RESULT line."""
    sys.path.insert(0, str(HERE))
    import _sae_fvu_cases as cases
    import torch

    torch.set_num_threads(1)
    spec = json.loads(spec_json)
    runs = [cases.CASES[case](spec) for _ in range(spec["repeats"])]
    floor = cases.floor_seconds(spec) if case == "repscope" else None
    _harness.emit({"runs": runs, "floor": floor})


def run_child(
    case: str, spec: dict[str, Any], python: str, timeout: float, flag: str = "--child"
) -> Any:
    env = {
        **os.environ,
        **_harness.thread_env(1),
        "PYTHONPATH": str(HERE.parent / "src"),
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "SPARSIFY_DISABLE_TRITON": "1",
    }
    cmd = [python, str(Path(__file__).resolve()), flag, case, "--spec", json.dumps(spec)]
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
    ap.add_argument("--time-to-fvu", action="store_true", help="the time-to-FVU table instead")
    ap.add_argument("--fvu-steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--fvu-eval", type=int, default=8192, help="held-out tokens scored")
    ap.add_argument("--target-step", type=int, default=400)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-fvu", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.spec)
        return
    if args.child_fvu:
        child_fvu(args.child_fvu, args.spec)
        return
    if args.time_to_fvu:
        time_to_fvu(args)
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


# --------------------------------------------------------------------------- time to FVU
def _time_to(curve: list[list[float]], target: float) -> float:
    """Training CPU-s at the first evaluation with FVU <= target (NaN if never)."""
    for _step, cpu, fvu in curve:
        if fvu <= target:
            return cpu
    return float("nan")


def _fvu_at(curve: list[list[float]], step: int) -> float:
    for s, _cpu, fvu in curve:
        if s >= step:
            return fvu
    return curve[-1][2]


def time_to_fvu(args: argparse.Namespace) -> None:
    """The time-to-FVU table (see the module docstring)."""
    sys.path.insert(0, str(HERE))
    import _sae_fvu_cases as cases

    tokens, offsets_path = make_smollm_data()
    offsets = np.load(offsets_path)
    n_train = int(offsets[SMOL_PARAGRAPHS - SMOL_HELD_OUT])
    n_eval = min(args.fvu_eval, int(offsets[-1]) - n_train)
    d = int(np.load(tokens, mmap_mode="r").shape[1])
    wanted = args.only.split(",") if args.only else list(cases.CASES)
    print(
        f"data {tokens} ({n_train} training tokens, {n_eval} held-out tokens of the last "
        f"{SMOL_HELD_OUT} paragraphs, d={d}); k={args.k} batch={args.batch} "
        f"steps={args.fvu_steps} eval every {args.eval_every} repeats={args.repeats}; "
        "1 torch thread per run; each library at its defaults",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for expansion in args.expansions:
        spec = {
            "data": str(tokens),
            "n_train": n_train,
            "n_eval": n_eval,
            "d": d,
            "expansion": expansion,
            "k": args.k,
            "batch": args.batch,
            "steps": args.fvu_steps,
            "eval_every": args.eval_every,
            "seed": 0,
            "repeats": args.repeats,
        }
        got: dict[str, Any] = {}
        for case in ["sparsify", *[c for c in wanted if c != "sparsify"]]:
            if case not in wanted and case != "sparsify":
                continue
            python = (
                getattr(args, f"python_{case}", None) or cases.PYTHON.get(case) or sys.executable
            )
            if not Path(python).exists():
                got[case] = {"error": f"not installed ({python} missing)"}
                continue
            got[case] = run_child(case, spec, python, args.timeout, flag="--child-fvu")
            print(f"{case:16s} {expansion:3d}x  done", flush=True)
        ref = got.get("sparsify", {})
        ref_runs = ref.get("runs", []) if isinstance(ref, dict) else []
        target = (
            statistics.median(_fvu_at(r["curve"], args.target_step) for r in ref_runs)
            if ref_runs
            else float("nan")
        )
        floor = next(
            (g.get("floor") for g in got.values() if isinstance(g, dict) and g.get("floor")),
            None,
        )
        for case, g in got.items():
            row: dict[str, Any] = {"case": case, "expansion": expansion, "target": target}
            runs = g.get("runs") if isinstance(g, dict) else None
            if not runs:
                row["error"] = g.get("error", "no result") if isinstance(g, dict) else str(g)
                rows.append(row)
                continue
            per_step = [r["curve"][-1][1] / r["curve"][-1][0] for r in runs]
            row.update(
                time_to_target=statistics.median(_time_to(r["curve"], target) for r in runs),
                final_fvu=statistics.median(r["curve"][-1][2] for r in runs),
                fvu_at_target_step=statistics.median(
                    _fvu_at(r["curve"], args.target_step) for r in runs
                ),
                per_step=statistics.median(per_step),
                vs_floor=statistics.median(per_step) / floor if floor else float("nan"),
                version=runs[0].get("version", "?"),
                runs=len(runs),
            )
            rows.append(row)
            curve = runs[0]["curve"]
            print(
                f"  {case} {expansion}x curve (step, cpu-s, fvu): "
                + " ".join(
                    f"({s},{c:.1f},{f:.4f})" for s, c, f in curve[:: max(1, len(curve) // 8)]
                ),
                flush=True,
            )
    print()
    ref_rows = {r["expansion"]: r for r in rows if r["case"] == "sparsify" and "error" not in r}
    _harness.print_table(
        rows,
        [
            _harness.Column("library", "case", "s"),
            _harness.Column("version", "version", "s"),
            _harness.Column("expansion", "expansion", lambda v: f"{v}x"),
            _harness.Column("target FVU", "target", ".4f"),
            _harness.Column("CPU-s to target", "time_to_target", ".1f"),
            _harness.Ratio("speed-up vs sparsify", "time_to_target", inverse=True),
            _harness.Column(f"FVU @ {args.target_step}", "fvu_at_target_step", ".4f"),
            _harness.Column(f"FVU @ {args.fvu_steps}", "final_fvu", ".4f"),
            _harness.Column("CPU-s / step", "per_step", ".3f"),
            _harness.Column("vs floor", "vs_floor", ".2f"),
        ],
        baseline=lambda r: ref_rows.get(r["expansion"]),
        markdown=True,
    )


if __name__ == "__main__":
    main()
