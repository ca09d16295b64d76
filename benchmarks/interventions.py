"""A steering sweep on SmolLM2-135M: repscope vs TransformerLens vs nnsight.

The same work for every tool, each in its own process on one thread: for each of the 30 decoder
layers, one clean forward, one forward per steering coefficient with ``c * v`` added to the
layer's residual output at every position, and one forward with ``v`` projected out (ablation);
the target token's log-probability at the last position is read from each. ``v`` is a fixed
random vector; the prompts are short Austen openings cut to the same number of tokens (no
padding), so every tool sees identical token ids.

- repscope: ``concepts._steering.steering_effect(..., baseline=None)`` per layer (its own
  clean and ablation forwards are the per-layer clean and ablation above), through
  ``extract.intervene``.
- TransformerLens (4.x; ``HookedTransformer`` was removed in 4.0):
  ``TransformerBridge.boot_transformers`` on the same checkpoint and transformers model (raw
  weights, no LayerNorm folding, so the residual basis is the checkpoint's; it forces eager
  attention) and ``run_with_hooks`` on ``blocks.{L}.hook_resid_post``.
- nnsight: ``LanguageModel`` wrapping the same transformers model, the layer output edited
  inside ``trace``.

Each anchor loads SmolLM2 offline from the cached safetensors folder
(``repscope.zoo._text.smollm2_cache_dir()``); one that cannot gets its exact error in the
table. The table gives the sweep's CPU-seconds and wall seconds (``timed``), the whole child's
CPU-seconds and peak RSS (imports and loading included), and the largest difference of the
target log-probabilities from repscope's over all layer x coefficient cells (and the spread of
the tool's own cells, max - min, which shows that the edits took effect).

Anchors live in their own venvs::

    python3 -m venv /tmp/venv-transformer-lens
    /tmp/venv-transformer-lens/bin/pip install torch==2.13.0 transformer-lens psutil
    python3 -m venv /tmp/venv-nnsight
    /tmp/venv-nnsight/bin/pip install torch==2.13.0 nnsight psutil

    python benchmarks/interventions.py [--layers 30] [--prompts 4] [--tokens 8] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import (  # noqa: E402
    Column,
    Ratio,
    emit,
    format_table,
    median_run,
    run_child,
    thread_env,
)

COEFS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
TARGET = " she"
PYTHONS = {"repscope": sys.executable,
           "transformer-lens": "/tmp/venv-transformer-lens/bin/python",
           "nnsight": "/tmp/venv-nnsight/bin/python"}


# --------------------------------------------------------------------------- inputs
def prepare(path: Path, n_layers: int, n_prompts: int, n_tokens: int) -> None:
    """Token ids, the direction and the checkpoint folder, written to ``path`` as JSON."""
    import numpy as np

    from repscope.zoo import load_dataset
    from repscope.zoo._text import smollm2_cache_dir

    from transformers import AutoTokenizer  # isort: skip

    folder = smollm2_cache_dir()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids: list[list[int]] = []
    for text in load_dataset("austen", n=200, seed=0).inputs:
        t = tok(str(text), add_special_tokens=False)["input_ids"]
        if len(t) >= n_tokens:
            ids.append([int(i) for i in t[:n_tokens]])
        if len(ids) == n_prompts:
            break
    rng = np.random.default_rng(0)
    v = rng.standard_normal(576)
    v /= np.linalg.norm(v)
    target = tok(TARGET, add_special_tokens=False)["input_ids"]
    path.write_text(json.dumps({
        "model_dir": str(folder), "ids": ids, "direction": v.tolist(), "coefs": list(COEFS),
        "n_layers": n_layers, "target": int(target[0])}))


# --------------------------------------------------------------------------- children
def _hf_model(spec: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    return model.eval()


def child_repscope(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _harness import timed

    from repscope.concepts._steering import steering_effect
    from repscope.zoo import load_model

    (model), load = timed(load_model, "smollm2-135m")
    ids = torch.tensor(spec["ids"])
    d = torch.tensor(spec["direction"], dtype=torch.float32)

    def sweep() -> list[list[float]]:
        out = []
        for layer in range(spec["n_layers"]):
            res = steering_effect(model, {"input_ids": ids}, f"model.layers.{layer}", d,
                                  spec["coefs"], target_token=spec["target"], baseline=None,
                                  progress=False)
            out.append(list(res.target_logprob))
        return out

    lp, stats = timed(sweep)
    return {"logprob": lp, "load_cpu": load["cpu"], **stats}


def _target_lp(logits: Any, target: int) -> float:
    import torch

    return float(torch.log_softmax(logits[:, -1].double(), -1)[:, target].mean())


def child_transformer_lens(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _harness import timed
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    def load() -> Any:
        hf = _hf_model(spec)
        tok = AutoTokenizer.from_pretrained(spec["model_dir"])
        return TransformerBridge.boot_transformers(
            spec["model_dir"], hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32)

    model, load_stats = timed(load)
    ids = torch.tensor(spec["ids"])
    d = torch.tensor(spec["direction"], dtype=torch.float32)
    u = d / d.norm()

    def sweep() -> list[list[float]]:
        out = []
        with torch.inference_mode():
            for layer in range(spec["n_layers"]):
                name = f"blocks.{layer}.hook_resid_post"
                model(ids)  # clean
                row = []
                for c in spec["coefs"]:
                    def add(act: Any, hook: Any, c: float = c) -> Any:
                        return act + c * d
                    row.append(_target_lp(model.run_with_hooks(ids, fwd_hooks=[(name, add)]),
                                          spec["target"]))

                def ablate(act: Any, hook: Any) -> Any:
                    return act - (act @ u)[..., None] * u
                model.run_with_hooks(ids, fwd_hooks=[(name, ablate)])
                out.append(row)
        return out

    lp, stats = timed(sweep)
    return {"logprob": lp, "load_cpu": load_stats["cpu"], **stats}


def child_nnsight(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _harness import timed
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    def load() -> Any:
        return LanguageModel(_hf_model(spec), tokenizer=AutoTokenizer.from_pretrained(
            spec["model_dir"]))

    lm, load_stats = timed(load)
    ids = torch.tensor(spec["ids"])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    d = torch.tensor(spec["direction"], dtype=torch.float32)
    u = d / d.norm()

    def run(layer: int, edit: Any) -> Any:
        with lm.trace(inputs):
            block = lm.model.layers[layer]
            if edit is not None:
                block.output = edit(block.output)
            logits = lm.lm_head.output.save()
        return logits

    def sweep() -> list[list[float]]:
        out = []
        with torch.inference_mode():
            for layer in range(spec["n_layers"]):
                run(layer, None)  # clean
                row = [_target_lp(run(layer, lambda h, c=c: h + c * d), spec["target"])
                       for c in spec["coefs"]]
                run(layer, lambda h: h - (h @ u)[..., None] * u)
                out.append(row)
        return out

    lp, stats = timed(sweep)
    return {"logprob": lp, "load_cpu": load_stats["cpu"], **stats}


CHILDREN = {"repscope": child_repscope, "transformer-lens": child_transformer_lens,
            "nnsight": child_nnsight}


# --------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "SPEC"))
    ap.add_argument("--tools", default="repscope,transformer-lens,nnsight")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args(argv)
    if args.child:
        tool, spec_path = args.child
        import torch

        torch.set_num_threads(1)
        os.environ["HF_HUB_OFFLINE"] = "1"
        emit(CHILDREN[tool](json.loads(Path(spec_path).read_text())))
        return
    env = {**os.environ, **thread_env(1), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "REPSCOPE_NO_PROGRESS": "1"}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="repscope-interventions-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        prepare(spec_path, args.layers, args.prompts, args.tokens)
        ref = None
        for tool in args.tools.split(","):
            runs = [run_child([PYTHONS[tool], str(Path(__file__).resolve()), "--child", tool,
                               str(spec_path)], env=env, timeout=args.timeout)
                    for _ in range(args.runs)]
            ok = [r for r in runs if r.ok]
            if not ok:
                err = runs[0].status
                rows.append({"tool": tool, "status": err})
                continue
            m = median_run([{**r.result, "proc_cpu": r.cpu, "peak_mb": r.peak_mb} for r in ok],
                           key="cpu")
            row = {"tool": tool, "status": "ok", **m}
            if tool == "repscope":
                ref = m["logprob"]
            cells = [x for r in m["logprob"] for x in r]
            row["spread"] = max(cells) - min(cells)
            if ref is not None:
                row["max_diff"] = max(abs(a - b) for ra, rb in zip(m["logprob"], ref)
                                      for a, b in zip(ra, rb))
            rows.append(row)
    n_fwd = args.layers * (len(COEFS) + 2)
    print(f"\nSteering sweep on SmolLM2-135M: {args.layers} layers x {len(COEFS)} coefficients "
          f"(+ clean and ablation per layer = {n_fwd} forwards) on {args.prompts} prompts x "
          f"{args.tokens} tokens, one thread, median of {args.runs} run(s).\n")
    base = next((r for r in rows if r["tool"] == "repscope" and r["status"] == "ok"), None)
    cols = [Column("tool", "tool"), Column("status", "status", lambda s: str(s)[:160]),
            Column("sweep CPU s", "cpu", ".1f"), Column("sweep wall s", "wall", ".1f"),
            Ratio("CPU vs repscope", "cpu", baseline=lambda _r: base),
            Column("process CPU s", "proc_cpu", ".1f"), Column("load CPU s", "load_cpu", ".1f"),
            Column("peak RSS MiB", "peak_mb", ".0f"),
            Column("log-prob spread", "spread", ".2f"),
            Column("max |Δ log-prob| vs repscope", "max_diff", ".1e")]
    print("\n".join(format_table(rows, cols, markdown=True)))


if __name__ == "__main__":
    main()
