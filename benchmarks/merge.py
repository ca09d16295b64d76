"""repscope's streamed merges against mergekit 0.1.5 on SmolLM2-135M checkpoints.

Inputs (written once to ``--workdir``, default ``/tmp/repscope-merge-bench``): the cached
SmolLM2-135M safetensors (``repscope.zoo._text.smollm2_cache_dir()``, float32) as the base and
two fine-tunes made by adding seeded Gaussian noise (0.01 x each tensor's standard deviation).
For each method, mergekit runs through its own command line (``mergekit-yaml``, in its venv,
called in-process by this file's child mode so the harness can time it) and repscope through
``weights._stream.merge_files``; each run is a separate process (``benchmarks/_harness.py``:
CPU-seconds, wall seconds, peak RSS), one BLAS/torch thread each. Every output tensor is then
compared: max |ours - mergekit|.

DARE draws random masks. mergekit seeds torch's global generator once (``--random-seed``) and
draws masks in its executor's order; repscope seeds one generator per (tensor, model), so the
two never draw the same masks (a documented difference, ``weights._merge``). For the DARE rows
the table therefore also gives the kept fraction of each side's merged delta (both should be
about ``density``) and the relative L2 distance between the two merged deltas.

mergekit pulls peft, accelerate and datasets, so it lives in its own venv::

    python3 -m venv /tmp/venv-mergekit
    /tmp/venv-mergekit/bin/pip install -c constraints.txt mergekit==0.1.5 psutil

    python benchmarks/merge.py [--methods linear,ties] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import Column, Ratio, emit, format_table, run_child, thread_env  # noqa: E402

MERGEKIT_PY = "/tmp/venv-mergekit/bin/python"
NOISE = 0.01
SEED = 0

#: method -> (parameters shared by both tools, per-model weights, per-model density)
CASES: dict[str, dict[str, Any]] = {
    "linear": {"weights": [0.6, 0.4], "base": False, "shared": {"normalize": True}},
    "task_arithmetic": {"weights": [0.6, 0.4], "base": True, "shared": {"lambda": 0.8}},
    "ties": {"weights": [0.6, 0.4], "density": [0.5, 0.3], "base": True,
             "shared": {"normalize": True, "lambda": 1.0}},
    "dare_ties": {"weights": [0.6, 0.4], "density": [0.5, 0.5], "base": True,
                  "shared": {"normalize": False, "lambda": 1.0}},
    "dare_linear": {"weights": [0.6, 0.4], "density": [0.5, 0.5], "base": True,
                    "shared": {"normalize": False, "lambda": 1.0}},
}


# --------------------------------------------------------------------------- inputs
def prepare(work: Path) -> dict[str, Path]:
    """Base and two noisy fine-tunes of SmolLM2-135M under ``work`` (reused when present)."""
    import shutil

    paths = {name: work / name for name in ("base", "ft1", "ft2")}
    if all((p / "model.safetensors").exists() for p in paths.values()):
        return paths
    import torch
    from safetensors.torch import load_file, save_file

    from repscope.zoo._text import smollm2_cache_dir

    src = Path(smollm2_cache_dir())
    if not (src / "model.safetensors").exists():
        from repscope.zoo import load_model  # the first load fills the cache

        load_model("smollm2-135m")
    base = load_file(str(src / "model.safetensors"))
    for name, p in paths.items():
        p.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json"):
            if (src / f).exists():
                shutil.copyfile(src / f, p / f)
        if name == "base":
            out = {k: v.float().contiguous() for k, v in base.items()}
        else:
            gen = torch.Generator().manual_seed(SEED + (1 if name == "ft1" else 2))
            out = {}
            for k, v in base.items():
                v = v.float()
                scale = float(v.std()) if v.numel() > 1 else 1.0
                out[k] = (v + NOISE * scale * torch.randn(v.shape, generator=gen)).contiguous()
        save_file(out, str(p / "model.safetensors"), metadata={"format": "pt"})
    return paths


def mergekit_config(method: str, paths: dict[str, Path]) -> str:
    case = CASES[method]
    lines = [f"merge_method: {method}", "dtype: float32"]
    if case["base"]:
        lines.append(f"base_model: {paths['base']}")
    lines.append("models:")
    for i, name in enumerate(("ft1", "ft2")):
        params = {"weight": case["weights"][i]}
        if "density" in case:
            params["density"] = case["density"][i]
        lines += [f"  - model: {paths[name]}", f"    parameters: {json.dumps(params)}"]
    lines.append(f"parameters: {json.dumps(case['shared'])}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- children
def child_ours(method: str, work: Path, out: Path) -> None:
    from _harness import timed

    from repscope.weights._stream import merge_files

    case = CASES[method]
    paths = {n: work / n for n in ("base", "ft1", "ft2")}
    params: dict[str, Any] = {"weights": case["weights"], **case["shared"]}
    if "density" in case:
        params["density"] = case["density"]
    if method.startswith("dare"):
        params["seed"] = SEED
    _, stats = timed(merge_files, method, [paths["ft1"], paths["ft2"]], out,
                     base=paths["base"] if case["base"] else None, progress=False, **params)
    emit(stats)


def child_mergekit(method: str, work: Path, out: Path) -> None:
    from _harness import timed
    from mergekit.scripts.run_yaml import main as mergekit_yaml

    paths = {n: work / n for n in ("base", "ft1", "ft2")}
    cfg = work / f"{method}.yml"
    cfg.write_text(mergekit_config(method, paths))

    def run() -> None:
        mergekit_yaml([str(cfg), str(out), "--random-seed", str(SEED)], standalone_mode=False)

    _, stats = timed(run)
    emit(stats)


# --------------------------------------------------------------------------- comparison
def compare(method: str, work: Path, ours: Path, theirs: Path) -> dict[str, Any]:
    from repscope.weights._state import as_state_dict

    a, b = as_state_dict(ours), as_state_dict(theirs)
    base = as_state_dict(work / "base")
    common = [k for k in a if k in b]
    only = sorted(set(a) ^ set(b))
    worst = 0.0
    diff_sq = ref_sq = 0.0
    kept_a = kept_b = total = 0
    for k in common:
        ta, tb = a[k].double(), b[k].double()
        worst = max(worst, float((ta - tb).abs().max()))
        if method.startswith("dare"):
            bk = base[k].double()
            da, db = ta - bk, tb - bk
            diff_sq += float(((da - db) ** 2).sum())
            ref_sq += float((db ** 2).sum())
            # an entry dropped by both fine-tunes leaves the merged delta ~0
            kept_a += int((da.abs() > 1e-12).sum())
            kept_b += int((db.abs() > 1e-12).sum())
            total += da.numel()
    row: dict[str, Any] = {"max_abs_diff": worst, "tensors": len(common),
                           "key_mismatch": len(only)}
    if total:
        row["kept_ours"] = kept_a / total
        row["kept_mergekit"] = kept_b / total
        row["rel_l2"] = (diff_sq / ref_sq) ** 0.5 if ref_sq else float("nan")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("TOOL", "METHOD", "OUT"))
    ap.add_argument("--workdir", default="/tmp/repscope-merge-bench")
    ap.add_argument("--methods", default=",".join(CASES))
    ap.add_argument("--mergekit-python", default=MERGEKIT_PY)
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args()
    work = Path(a.workdir)
    if a.child:
        tool, method, out = a.child
        (child_ours if tool == "ours" else child_mergekit)(method, work, Path(out))
        return
    paths = prepare(work)
    del paths
    env = {**os.environ, **thread_env(1), "PYTHONPATH": str(HERE.parent / "src"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows = []
    for method in a.methods.split(","):
        outs = {t: work / f"out-{t}-{method}" for t in ("ours", "mergekit")}
        runs = {}
        for tool, py in (("mergekit", a.mergekit_python), ("ours", sys.executable)):
            runs[tool] = run_child([py, str(Path(__file__).resolve()), "--child", tool, method,
                                    str(outs[tool]), "--workdir", str(work)],
                                   env=env, timeout=a.timeout)
            r = runs[tool]
            print(f"{method} {tool}: {r.status} cpu {r.cpu:.1f} s wall {r.wall:.1f} s "
                  f"peak {r.peak_mb:.0f} MiB", file=sys.stderr)
            if not r.ok and r.stderr:
                print(r.stderr[-3000:], file=sys.stderr)
        cmp = (compare(method, work, outs["ours"], outs["mergekit"])
               if runs["ours"].ok and runs["mergekit"].ok else {})
        for tool in ("mergekit", "ours"):
            r = runs[tool]
            if not r.ok:
                rows.append({"method": method, "tool": tool, "error": r.status})
                continue
            rows.append({"method": method, "tool": tool, "status": r.status, "cpu": r.cpu,
                         "wall": r.wall, "peak_mb": r.peak_mb,
                         **({k: v for k, v in cmp.items()} if tool == "ours" else {})})
    base_of = {r["method"]: r for r in rows if r["tool"] == "mergekit"}
    cols = [Column("method", "method"), Column("tool", "tool"), Column("status", "status"),
            Column("CPU s", "cpu", ".1f"), Column("wall s", "wall", ".1f"),
            Column("peak RSS MiB", "peak_mb", ".0f"),
            Ratio("CPU vs mergekit", "cpu", baseline=lambda r: base_of.get(r["method"])),
            Ratio("peak vs mergekit", "peak_mb", baseline=lambda r: base_of.get(r["method"])),
            Column("max |ours - mergekit|", "max_abs_diff", ".2e"),
            Column("kept ours", "kept_ours",
                   lambda v: f"{v:.3f}"),
            Column("kept mergekit", "kept_mergekit", lambda v: f"{v:.3f}"),
            Column("rel L2 of deltas", "rel_l2", ".3f")]
    print("\n".join(format_table(rows, cols, markdown=True)))


if __name__ == "__main__":
    main()
