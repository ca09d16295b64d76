"""The weight-space step of ``repscope demo``: two digits MLPs from two seeds, their loss
barrier before and after weight matching, layer-wise barriers, alignment diagnostics, a
task-vector merge and the redundancy of one model's units.

Everything is trained here, in seconds (no package ships two checkpoints of one
architecture): MLPs ``64-128-128-10`` on the scikit-learn digits (:mod:`repscope.weights._toy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repscope.capability import DemoContext
    from repscope.db import Record

__all__ = ["DEMO_WIDTHS", "demo_weights_step", "run_weights_demo"]

#: The demo's MLP (the recipe's 64-512-512-10 at a quarter of the width, for time).
DEMO_WIDTHS = (64, 128, 128, 10)
#: Model and dataset names the records carry.
DEMO_MODEL = "digits-mlp-128"
DEMO_DATASET = "sklearn-digits"


def run_weights_demo(*, seed: int = 0, log: Any = print, progress: bool = False,
                     widths: tuple[int, ...] = DEMO_WIDTHS) -> dict[str, list[Any]]:
    """Run the demo's analyses and return their results by kind (no database involved).

    Returns
    -------
    dict
        ``"barrier"``, ``"layer_barrier"``, ``"alignment"``, ``"task_vectors"``, ``"merge"``,
        ``"atlas"``, ``"redundancy"``: lists of results.
    """
    import torch

    from repscope.weights._barrier import barrier_curve, layerwise_barriers
    from repscope.weights._diagnostics import alignment_diagnostics
    from repscope.weights._matching import weight_matching
    from repscope.weights._redundancy import merge_equivalent_units
    from repscope.weights._spec import mlp_spec
    from repscope.weights._taskvec import diagnose_task_vectors, evaluate_merges
    from repscope.weights._toy import digits_data, evaluate, make_mlp, train_mlp
    from repscope.weights._toytasks import finetune, make_task_setup

    data = digits_data(seed=seed)
    X_test, y_test = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)

    def loss_fn(model: Any) -> tuple[float, float]:
        return evaluate(model, X_test, y_test)

    log(f"[demo] weights: training two {'-'.join(map(str, widths))} MLPs on digits "
        f"(seeds {seed + 1}, {seed + 2})")
    a = train_mlp(widths, seed=seed + 1, data=data)
    b = train_mlp(widths, seed=seed + 2, data=data)
    arch = make_mlp(widths)
    spec = mlp_spec(a)
    wm = weight_matching(spec, a, b, seed=seed, progress=progress)
    log(f"[demo] weights: weight matching converged={wm.converged} after {wm.n_iter} "
        "iterations")
    out: dict[str, list[Any]] = {k: [] for k in ("barrier", "layer_barrier", "alignment",
                                                 "task_vectors", "merge", "atlas", "redundancy")}
    for label, other in (("naive", b.state_dict()), ("weight matching", wm.aligned)):
        curve = barrier_curve(arch, a, other, loss_fn, alphas=11, label=label,
                              progress=progress)
        out["barrier"].append(curve)
        out["layer_barrier"].append(layerwise_barriers(arch, a, other, loss_fn, alphas=5,
                                                       label=label, progress=progress))
        log(f"[demo] weights: {label}: loss barrier {curve.barrier:.3f}, accuracy barrier "
            f"{curve.accuracy_barrier:.3f}")
    out["alignment"].append(alignment_diagnostics(spec, a, b, wm.aligned, model=arch,
                                                  batches=X_test, progress=progress))

    setup = make_task_setup(widths, seed=seed, data=data)
    tunes = {f"digits {s[0]}-{s[-1]}": finetune(setup, k, seed=seed)
             for k, s in enumerate(setup.subsets)}
    out["task_vectors"].append(diagnose_task_vectors(tunes, setup.base, progress=progress))
    tasks = {}
    for k, name in enumerate(tunes):
        keep = torch.isin(y_test, torch.as_tensor(setup.subsets[k]))
        tasks[name] = (X_test[keep], y_test[keep])
    out["merge"].append(evaluate_merges(arch, list(tunes.values()), tasks,
                                        ["linear", "task_arithmetic", "ties", "dare_ties"],
                                        base=setup.base, progress=progress))
    from repscope.weights._atlas import learn_blockwise_coefficients
    from repscope.weights._taskvec import task_vector

    vectors = {name: task_vector(m, setup.base) for name, m in tunes.items()}
    out["atlas"].append(learn_blockwise_coefficients(
        arch, setup.base, vectors, setup.validation(50, seed=seed), steps=300, lr=1e-2,
        seed=seed, eval_data=(X_test, y_test), progress=progress))
    red = merge_equivalent_units(a, 0.9, data=(X_test, y_test),
                                 curve=(0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2), progress=progress)
    out["redundancy"].append(red)
    log(f"[demo] weights: unit merging at beta 0.9 removed {red.fraction_removed:.0%} of the "
        f"hidden units; accuracy {red.accuracy_before:.3f} -> {red.accuracy_after:.3f}")
    return out


def demo_weights_step(ctx: DemoContext) -> list[Record]:
    """Barrier before/after weight matching of two digits MLPs, layer-wise barriers, alignment
    diagnostics, task vectors and merges of two fine-tunes, unit redundancy (about 10 s).

    Parameters
    ----------
    ctx : DemoContext

    Returns
    -------
    list of Record
    """
    from repscope._threads import single_thread

    with single_thread(blas=False):  # tiny models
        results = run_weights_demo(seed=ctx.seed, log=ctx.log)
    params = {"seed": ctx.seed, "widths": list(DEMO_WIDTHS)}
    records: list[Record] = []
    for kind, items in results.items():
        model = f"{DEMO_MODEL} (seeds {ctx.seed + 1} vs {ctx.seed + 2})" if kind in (
            "barrier", "layer_barrier", "alignment") else DEMO_MODEL
        for res in items:
            records.extend(res.to_records(model=model, dataset=DEMO_DATASET,
                                          run_id=ctx.run_id, params=params))
    return records
