"""Benchmark: weight matching on a ViT-B-sized MLP stack, repscope vs the PyPI ``rebasin``.

The model: an input Linear(768, 768), 12 residual MLP blocks ``x + fc2(gelu(fc1(x)))`` with
fc1 = Linear(768, 3072) and fc2 = Linear(3072, 768) (ViT-B's MLP sizes, no attention, no
LayerNorm), and a head Linear(768, 1000). Its permutation spec: one residual permutation
(768 units: the input Linear's rows, every fc1's columns, every fc2's rows, the head's columns)
and 12 hidden permutations (3,072 units each). 17.2 M parameters.

Two pairs, both built from torch seeds in each child (the same weights in every venv):

* ``random``: two independent random initialisations (PyTorch's default Linear init).
* ``permuted``: one initialisation and a copy with every hidden and the residual units randomly
  permuted plus Gaussian noise of 0.1 x each tensor's standard deviation; a correct matcher
  brings the copy back (distance ratio about the noise's share of the distance).

repscope runs twice: git-re-basin's random visiting order (``first_sweep="random"``, the
default) and ``first_sweep="anchored"`` (the residual permutation, anchored by the input Linear
and the head, is solved first; see ``weight_matching``).

Each implementation runs in its own process (``benchmarks/_harness.py``) with ``--threads``
threads (default 2, the target's "2 cores"): repscope's ``weight_matching`` from ``src/`` under
this interpreter, and ``rebasin`` 0.0.47's ``PermutationCoordinateDescent`` (traces the model
with torchview, then its coordinate descent) in its own venv, run as its README shows: with its
defaults (``max_iterations=100``) and with the same iteration cap as repscope's
``--cap`` row. Reported: the child's CPU-seconds and wall seconds of the timed call (model
tracing and spec included, imports and model construction excluded), its peak RSS, the distance
ratio ``||a - pi(b)|| / ||a - b||`` over all tensors, and whether the aligned model computes
the same outputs as b (max |difference| on 16 random inputs, relative to the output scale).

The anchor's venv (the CPU torch wheel from the local wheel folder; the PyTorch index is not
reachable here)::

    python3 -m venv /tmp/venv-rebasin
    /tmp/venv-rebasin/bin/pip install -c constraints.txt rebasin torch==2.13.0

    python benchmarks/weight_matching.py [--pairs random,permuted] [--cap 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import _harness

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
D, H, BLOCKS, OUT = 768, 3072, 12, 1000


# --------------------------------------------------------------------------- model (children)
def make_model(seed: int):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(D, H)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(H, D)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(self.act(self.fc1(x)))

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(D, D)
            self.blocks = nn.Sequential(*[Block() for _ in range(BLOCKS)])
            self.head = nn.Linear(D, OUT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.embed(x)))

    torch.manual_seed(seed)
    return Stack().eval()


def spec_dict() -> dict:  # type: ignore[type-arg]
    """``{perm: {key: axis}}`` of the stack, for ``PermutationSpec.from_dict``."""
    res: dict[str, object] = {"embed.weight": 0, "embed.bias": 0, "head.weight": 1}
    spec: dict[str, dict[str, object]] = {"res": res}
    for i in range(BLOCKS):
        p = f"blocks.{i}"
        res.update({f"{p}.fc1.weight": 1, f"{p}.fc2.weight": 0, f"{p}.fc2.bias": 0})
        spec[f"h{i}"] = {f"{p}.fc1.weight": 0, f"{p}.fc1.bias": 0, f"{p}.fc2.weight": 1}
    return spec


def make_pair(pair: str):  # type: ignore[no-untyped-def]
    """Models a and b of ``pair`` (b is a fresh module either way)."""
    import numpy as np
    import torch

    a = make_model(0)
    b = make_model(1)
    if pair == "random":
        return a, b
    rng = np.random.default_rng(0)
    perm = {n: rng.permutation(H if n != "res" else D) for n in ["res"] + [f"h{i}" for i in
                                                                          range(BLOCKS)]}
    sa = a.state_dict()
    axes: dict[str, list[str | None]] = {}
    for n, entries in spec_dict().items():
        for key, ax in entries.items():
            axes.setdefault(key, [None] * sa[key].ndim)[int(ax)] = n  # type: ignore[call-overload]
    gen = torch.Generator().manual_seed(1)
    new = {}
    for key, t in sa.items():
        for ax, n in enumerate(axes.get(key, [])):
            if n is not None:
                t = t.index_select(ax, torch.as_tensor(perm[n]))
        new[key] = t + 0.1 * float(t.std()) * torch.randn(t.shape, generator=gen)
    b.load_state_dict(new)
    return a, b


def distance(sa, sb) -> float:  # type: ignore[no-untyped-def]
    import torch

    return sum(float(torch.sum((sa[k].double() - sb[k].double()) ** 2)) for k in sa) ** 0.5


def child(impl: str, pair: str, cap: int, threads: int) -> None:
    import torch

    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(threads)
    torch.set_num_threads(threads)
    a, b = make_pair(pair)
    sa = {k: v.clone() for k, v in a.state_dict().items()}
    sb = {k: v.clone() for k, v in b.state_dict().items()}
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out_b = b(x)
    if impl.startswith("repscope"):
        from repscope.weights._matching import weight_matching
        from repscope.weights._spec import PermutationSpec

        def run():  # type: ignore[no-untyped-def]
            spec = PermutationSpec.from_dict(spec_dict(), sa)
            return weight_matching(spec, sa, sb, max_iter=cap, progress=False,
                                   first_sweep="anchored" if impl.endswith("anchored")
                                   else "random")

        result, stats = _harness.timed(run)
        aligned = result.aligned
        extra = {"n_iter": result.n_iter, "converged": result.converged}
    else:
        from rebasin import PermutationCoordinateDescent

        def run() -> None:
            pcd = PermutationCoordinateDescent(a, b, torch.randn(1, D))
            pcd.rebasin(max_iterations=cap) if cap != 100 else pcd.rebasin()

        _, stats = _harness.timed(run)
        aligned = {k: v.detach().clone() for k, v in b.state_dict().items()}
        extra = {}
    b.load_state_dict(aligned)
    with torch.no_grad():
        out_aligned = b(x)
    rel = float((out_aligned - out_b).abs().max() / out_b.abs().max())
    _harness.emit({**stats, **extra, "ratio": distance(sa, aligned) / distance(sa, sb),
                   "fn_rel_diff": rel})


# --------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="random,permuted")
    ap.add_argument("--cap", type=int, default=5, help="the equal-settings iteration cap")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rebasin-python", default="/tmp/venv-rebasin/bin/python")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "PAIR", "CAP"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), a.threads)
        return
    env = {**os.environ, **_harness.thread_env(a.threads), "PYTHONPATH": str(ROOT / "src")}
    rows = []
    for pair in a.pairs.split(","):
        for impl, python, cap in (("repscope", sys.executable, 100),
                                  ("repscope-anchored", sys.executable, 100),
                                  ("rebasin", a.rebasin_python, 100),
                                  ("repscope", sys.executable, a.cap),
                                  ("rebasin", a.rebasin_python, a.cap)):
            run = _harness.run_child([python, str(Path(__file__).resolve()), "--threads",
                                      str(a.threads), "--child", impl, pair, str(cap)],
                                     env=env, timeout=a.timeout)
            label = f"{impl}, max_iter {cap}" + (" (default)" if cap == 100 else "")
            row = {"pair": pair, "impl": label, "cap": cap}
            if run.ok:
                r = run.result
                row.update(cpu=r["cpu"], wall=r["wall"], peak_mb=r["peak"] / 2**20,
                           ratio=r["ratio"], fn=r["fn_rel_diff"],
                           iters=(f"{r['n_iter']}" + (" (conv.)" if r["converged"] else ""))
                           if "n_iter" in r else "-")
            else:
                row["error"] = run.status
            rows.append(row)
            print(f"{pair:9s} {label:32s} {run.status:10s} "
                  + (f"cpu {row['cpu']:.1f} s, wall {row['wall']:.1f} s, ratio "
                     f"{row['ratio']:.4f}" if run.ok else ""), file=sys.stderr, flush=True)
    base = {(r["pair"], r["cap"]): r for r in rows if r["impl"].startswith("repscope,")}
    cols = [_harness.Column("pair", "pair"), _harness.Column("implementation", "impl"),
            _harness.Column("CPU s", "cpu", ".1f"), _harness.Column("wall s", "wall", ".1f"),
            _harness.Ratio("CPU vs repscope", "cpu"),
            _harness.Column("peak MiB", "peak_mb", ".0f"),
            _harness.Column("iterations", "iters"),
            _harness.Column("distance ratio", "ratio", ".4f"),
            _harness.Column("same function (rel. diff)", "fn", ".1e")]
    print(f"\nweight matching, ViT-B-sized MLP stack ({BLOCKS} blocks, {D} residual, {H} hidden), "
          f"{a.threads} threads\n")
    _harness.print_table(rows, cols, markdown=True,
                         baseline=lambda row: base.get((row["pair"], row["cap"])))


if __name__ == "__main__":
    main()
