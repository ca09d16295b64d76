"""Experiment: the two task-arithmetic claims cluster-c proposed but did not run, at full size.

Setup (``repscope.weights._toytasks``): a digits MLP ``64-w-w-10`` pretrained on half of the
training split (all classes, 5 epochs of SGD), fine-tuned from that shared init on the other
half restricted to digits 0-4 (task A) and to 5-9 (task B), 5 epochs each; held-out = the
digits test split (540 images, all classes). Seeds 0..S-1 (the seed sets the split halves, the
init and the batch order).

* **OrthoReg** (§5): fine-tunes with ``CE + lambda * orthoreg_penalty(model, base)`` (W4's
  penalty, plain Frobenius norm as the official code), lambda in {0, 0.1, 1}: the task vectors'
  cosine (flattened over every tensor), the accuracy of each fine-tune, and the task-addition
  accuracy of ``theta0 + alpha (tau_A + tau_B)`` for alpha in {0.3, 0.5, 1}. The claim:
  OrthoReg lowers |cos| and raises the task-addition accuracy.
* **aTLAS** (§4): block-wise lambda (one per task and tensor) learned with AdamW on 50 labelled
  examples of the fine-tuning half (lr 1e-2, 500 steps, weight decay 0.1), vs the learned
  isotropic lambda (one per task) and vs the best single lambda of a grid (0, 0.1, ..., 2)
  chosen on the same 50; all on held-out data. The claim: block-wise matches or beats the best
  isotropic lambda.

Everything runs in this process on one torch thread (a few seconds per seed and width).

    python benchmarks/orthoreg_atlas.py [--seeds 5] [--widths 128 512]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np


def _acc(model, data) -> tuple[float, float]:
    from repscope.weights._toy import evaluate

    return evaluate(model, data.X_test, data.y_test)


def _with(base, sd):
    m = copy.deepcopy(base)
    m.load_state_dict(sd)
    return m


def orthoreg_rows(widths, seeds, lams=(0.0, 0.1, 1.0), alphas=(0.3, 0.5, 1.0)):
    from repscope.weights._atlas import compose
    from repscope.weights._taskvec import orthoreg_penalty, task_vector, task_vector_cosines
    from repscope.weights._toytasks import finetune, make_task_setup

    rows = []
    for w in widths:
        for seed in seeds:
            setup = make_task_setup((64, w, w, 10), seed=seed)
            base_sd = {k: v.clone() for k, v in setup.base.state_dict().items()}
            for lam in lams:
                extra = None if lam == 0 else (
                    lambda m, lam=lam, ref=base_sd: lam * orthoreg_penalty(m, ref))
                fts = [finetune(setup, k, seed=seed, extra_loss=extra) for k in range(2)]
                tvs = [task_vector(m, setup.base) for m in fts]
                cos = float(task_vector_cosines(tvs)[0, 1])
                add = [_acc(_with(setup.base, compose(setup.base, tvs, a)), setup.data)[1]
                       for a in alphas]
                rows.append({
                    "width": w, "seed": seed, "lambda": lam, "cos": cos,
                    "penalty": float(np.mean([float(orthoreg_penalty(t)) for t in tvs])),
                    "ft_acc": [_acc(m, setup.data)[1] for m in fts], "add_acc": add})
    return rows


def atlas_rows(widths, seeds):
    from repscope.weights._atlas import learn_blockwise_coefficients
    from repscope.weights._taskvec import task_vector
    from repscope.weights._toytasks import finetune, make_task_setup

    rows = []
    for w in widths:
        for seed in seeds:
            setup = make_task_setup((64, w, w, 10), seed=seed)
            tvs = [task_vector(finetune(setup, k, seed=seed), setup.base) for k in range(2)]
            d = setup.data
            out = {}
            for mode in ("tensor", "isotropic"):
                out[mode] = learn_blockwise_coefficients(
                    setup.base, setup.base, tvs, setup.validation(50, seed=seed), blocks=mode,
                    steps=500, lr=1e-2, eval_data=(d.X_test, d.y_test), progress=False)
            r = out["tensor"]
            rows.append({"width": w, "seed": seed, "base": (r.base_loss, r.base_acc),
                         "blockwise": (r.learned_loss, r.learned_acc),
                         "isotropic_learned": (out["isotropic"].learned_loss,
                                               out["isotropic"].learned_acc),
                         "grid": (r.isotropic_loss, r.isotropic_acc),
                         "grid_lambda": r.isotropic_lambda})
    return rows


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    orows = orthoreg_rows(args.widths, seeds)
    print(f"## OrthoReg (mean ± sd over {len(seeds)} seeds; accuracy on 540 held-out digits)\n")
    print("| width | lambda | cos(tau_A, tau_B) | |cos| | penalty | fine-tune acc (A, B) "
          "| add acc a=0.3 | a=0.5 | a=1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w in args.widths:
        for lam in (0.0, 0.1, 1.0):
            rs = [r for r in orows if r["width"] == w and r["lambda"] == lam]
            ft = np.asarray([r["ft_acc"] for r in rs])
            add = np.asarray([r["add_acc"] for r in rs])
            print(f"| {w} | {lam} | {_ms([r['cos'] for r in rs])} | "
                  f"{_ms([abs(r['cos']) for r in rs])} | {_ms([r['penalty'] for r in rs])} | "
                  f"{ft[:, 0].mean():.3f}, {ft[:, 1].mean():.3f} | {_ms(add[:, 0])} | "
                  f"{_ms(add[:, 1])} | {_ms(add[:, 2])} |")
    arows = atlas_rows(args.widths, seeds)
    print(f"\n## aTLAS (held-out; mean ± sd over {len(seeds)} seeds; 50 labelled examples)\n")
    print("| width | base acc | block-wise acc | isotropic learned acc | best single lambda "
          "(grid) acc | block-wise loss | grid loss | block-wise >= grid (acc) |")
    print("|---|---|---|---|---|---|---|---|")
    for w in args.widths:
        rs = [r for r in arows if r["width"] == w]
        wins = sum(r["blockwise"][1] >= r["grid"][1] for r in rs)
        print(f"| {w} | {_ms([r['base'][1] for r in rs])} | "
              f"{_ms([r['blockwise'][1] for r in rs])} | "
              f"{_ms([r['isotropic_learned'][1] for r in rs])} | "
              f"{_ms([r['grid'][1] for r in rs])} | {_ms([r['blockwise'][0] for r in rs])} | "
              f"{_ms([r['grid'][0] for r in rs])} | {wins}/{len(rs)} |")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
