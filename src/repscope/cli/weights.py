"""``repscope weights``: loss barriers, permutation alignment, merging and task-vector
diagnostics on checkpoints (``.safetensors`` files or folders; nothing is unpickled).

* ``train-digits``: small MLPs trained here on the scikit-learn digits, to try everything on.
* ``barrier A B``: the loss along the linear path from A to B, before and after aligning B.
* ``align A B --out``: permute B's hidden units to match A's (weight matching), write it.
* ``merge METHOD INPUTS... --out``: merge checkpoints tensor by tensor (streamed).
* ``diagnose INPUTS... --base``: task-vector cosines, norms and sign conflicts (streamed).
* ``redundancy MODEL``: merge functionally equivalent ReLU units.

Records go to the results database for ``repscope report``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from repscope.cli._common import (
    check_exists,
    echo_json,
    json_option,
    print_table,
    progress_option,
    settings,
    show_progress,
)

_DIGITS = "digits"


def _name(path: Path) -> str:
    return path.stem if path.suffix == ".safetensors" else path.name


def _pair_name(a: Path, b: Path) -> str:
    return f"{_name(a)} vs {_name(b)}"


def _save(state: dict[str, Any], out: Path, *, like: Path | None = None,
          meta: dict[str, str] | None = None) -> Path:
    """Write ``state`` as one safetensors file (``out`` ending in ``.safetensors``) or into a
    folder ``out/model.safetensors`` with ``like``'s config files copied."""
    import shutil

    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.as_tensor(v).detach().contiguous().clone() for k, v in state.items()}
    if out.suffix == ".safetensors":
        out.parent.mkdir(parents=True, exist_ok=True)
        target = out
    else:
        out.mkdir(parents=True, exist_ok=True)
        target = out / "model.safetensors"
        if like is not None and like.is_dir():
            for f in like.iterdir():
                if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(
                        ".safetensors.index.json"):
                    shutil.copy2(f, out / f.name)
    save_file(tensors, str(target), metadata=meta or {"format": "pt"})
    return target


def _spec_for(kind: str, a_path: Path, state: Any) -> Any:
    """The permutation spec ``--spec`` names, for checkpoint A."""
    from repscope.exceptions import RepscopeValueError
    from repscope.weights._spec import PermutationSpec, llama_spec, mlp_spec

    if kind == "mlp":
        from repscope.weights._toy import mlp_from_state_dict

        return mlp_spec(mlp_from_state_dict(state, name=f"A ({a_path})"))
    if kind == "llama":
        cfg = a_path / "config.json" if a_path.is_dir() else a_path.parent / "config.json"
        if not cfg.is_file():
            raise RepscopeValueError(
                f"--spec llama reads the model's config.json next to A; {str(cfg)!r} does not "
                "exist.")
        return llama_spec(json.loads(cfg.read_text()), state_dict_keys=list(state))
    p = Path(kind)
    if p.suffix == ".json" and p.is_file():
        return PermutationSpec.from_dict(json.loads(p.read_text()), state)
    raise RepscopeValueError(
        f"--spec must be 'mlp', 'llama' or a JSON file of a hand-written spec; got {kind!r}.")


def _mlp_data(data: str) -> tuple[Any, Any, str]:
    """Inputs, labels and a name for an MLP classifier: ``digits`` or an ``.npz`` with X, y."""
    import numpy as np
    import torch

    from repscope.exceptions import RepscopeValueError

    if data == _DIGITS:
        from repscope.weights._toy import digits_data

        d = digits_data()
        return torch.from_numpy(d.X_test), torch.from_numpy(d.y_test), "sklearn-digits (test)"
    p = check_exists(data, "--data")
    try:
        with np.load(p, allow_pickle=False) as z:
            X, y = np.asarray(z["X"], dtype=np.float32), np.asarray(z["y"])
    except (KeyError, ValueError, OSError) as exc:
        raise RepscopeValueError(
            f"--data {str(p)!r} must be an .npz file with arrays 'X' (n, d) and 'y' (n,) of "
            f"integer labels; reading it failed: {exc}") from None
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or y.dtype.kind not in "iu":
        raise RepscopeValueError(
            f"--data {str(p)!r}: expected X of shape (n, d) and integer y of shape (n,); got X "
            f"{X.shape} and y {y.shape} of dtype {y.dtype}.")
    return torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)), p.stem


def _lm_setup(a_path: Path, text: str | None, max_tokens: int) -> tuple[Any, Any, str]:
    """An architecture for a causal-LM checkpoint folder and its loss on ``text``."""
    from repscope.exceptions import RepscopeValueError

    if text is None:
        raise RepscopeValueError(
            "A and B are causal-LM folders (config.json); give --text FILE, the text the "
            "loss is measured on.")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(a_path), local_files_only=True)
    model = AutoModelForCausalLM.from_config(config).eval()
    tok = AutoTokenizer.from_pretrained(str(a_path), local_files_only=True)
    ids = tok(check_exists(text, "--text").read_text(), return_tensors="pt")["input_ids"][0]
    ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise RepscopeValueError(f"--text {text!r} holds fewer than 2 tokens.")
    chunks = [ids[i:i + 256] for i in range(0, ids.numel(), 256)]
    chunks = [c for c in chunks if c.numel() >= 2]

    def loss_fn(m: Any) -> float:
        total, n = 0.0, 0
        for c in chunks:
            out = m(input_ids=c[None], labels=c[None])
            total += float(out.loss) * (c.numel() - 1)
            n += c.numel() - 1
        return total / n

    return model, loss_fn, f"{Path(text).name} ({sum(c.numel() for c in chunks)} tokens)"


def _with_tied(model: Any, state: Any) -> dict[str, Any]:
    """``state`` with the model's tied copies filled in (a checkpoint saved with tied
    embeddings has no ``lm_head.weight``; the module's state dict has it, sharing storage)."""
    full = model.state_dict()
    out = dict(state)
    owner = {t.data_ptr(): k for k, t in full.items() if k in out}
    for k, t in full.items():
        if k not in out and t.data_ptr() in owner:
            out[k] = out[owner[t.data_ptr()]]
    return out


@click.group()
def weights() -> None:
    """Loss barriers, permutation alignment, merging and task vectors on checkpoints
    (.safetensors files or folders)."""


@weights.command(name="train-digits")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the checkpoints (created).")
@click.option("--seed", "seeds", type=int, multiple=True, default=(1, 2), show_default=True,
              help="One model per seed (repeatable).")
@click.option("--width", type=int, default=128, show_default=True,
              help="Hidden width of the MLP 64-width-width-10.")
@click.option("--epochs", type=int, default=20, show_default=True)
def train_digits(out: str, seeds: tuple[int, ...], width: int, epochs: int) -> None:
    """Train small MLPs (64-WIDTH-WIDTH-10, SGD) on the scikit-learn digits from several
    seeds and write each as OUT/digits-mlp-WIDTH-seedS.safetensors: two checkpoints of one
    architecture to try `barrier`, `align` and `redundancy` on (evaluate with --data digits)."""
    from repscope.exceptions import RepscopeValueError
    from repscope.weights._toy import digits_data, evaluate, train_mlp

    if width < 1 or epochs < 1:
        raise RepscopeValueError(f"--width and --epochs must be >= 1; got {width} and {epochs}.")
    data = digits_data()
    rows = []
    for s in seeds:
        model = train_mlp((64, width, width, 10), seed=s, data=data, epochs=epochs)
        path = _save(model.state_dict(), Path(out) / f"digits-mlp-{width}-seed{s}.safetensors",
                     meta={"format": "pt", "widths": json.dumps([64, width, width, 10]),
                           "seed": str(s)})
        loss, acc = evaluate(model, data.X_test, data.y_test)
        rows.append((str(path), s, loss, acc))
    print_table(rows, ["checkpoint", "seed", "test loss", "test accuracy"],
                title=f"Digits MLPs 64-{width}-{width}-10")


@weights.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--data", default=_DIGITS, show_default=True,
              help="For MLP checkpoints: 'digits' (the test split) or an .npz with X and y.")
@click.option("--text", default=None, help="For causal-LM folders: the text file the LM loss "
              "is measured on.")
@click.option("--max-tokens", type=int, default=2048, show_default=True,
              help="Tokens of --text used.")
@click.option("--spec", default=None, help="Permutation spec for --align: 'mlp', 'llama' or "
              "a JSON file (default: 'llama' for causal-LM folders, else 'mlp').")
@click.option("--align/--no-align", default=True, show_default=True,
              help="Also measure the barrier after weight matching B to A.")
@click.option("--alphas", type=int, default=11, show_default=True,
              help="Points on the path from A (0) to B (1).")
@click.option("--layerwise/--no-layerwise", default=True, show_default=True,
              help="Also the barrier of each block moved alone.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of weight matching's visiting order.")
@json_option
@progress_option
def barrier(a: str, b: str, data: str, text: str | None, max_tokens: int, spec: str | None,
            align: bool, alphas: int, layerwise: bool, seed: int, as_json: bool) -> None:
    """Loss barrier on the linear path from checkpoint A to checkpoint B (max over alpha of
    the loss minus the straight line between the end losses), as trained and after aligning
    B's hidden units to A's by weight matching; and layer-wise barriers.

    A and B are two checkpoints of one architecture: nn.Sequential Linear/ReLU MLPs (.safetensors
    files; loss and accuracy on --data) or causal-LM folders with config.json (LM loss on
    --text)."""
    from repscope.exceptions import RepscopeValueError
    from repscope.weights._barrier import barrier_curve, layerwise_barriers
    from repscope.weights._matching import weight_matching
    from repscope.weights._state import as_state_dict, check_compatible

    pa, pb = check_exists(a, "A"), check_exists(b, "B")
    if alphas < 3:
        raise RepscopeValueError(f"--alphas must be >= 3 (the ends and a midpoint); got {alphas}.")
    sa, sb = as_state_dict(pa, name="A"), as_state_dict(pb, name="B")
    check_compatible(sa, sb, names=("A", "B"))
    show = show_progress()
    is_lm = pa.is_dir() and (pa / "config.json").is_file()
    if is_lm:
        model, loss_fn, dataset = _lm_setup(pa, text, max_tokens)
        sa, sb = _with_tied(model, sa), _with_tied(model, sb)
        spec = spec or "llama"
    else:
        from repscope.weights._toy import evaluate, mlp_from_state_dict

        model = mlp_from_state_dict(sa, name=f"A ({pa})")
        X, y, dataset = _mlp_data(data)
        if X.shape[1] != model[0].in_features:
            raise RepscopeValueError(
                f"--data has {X.shape[1]} features per sample but the model takes "
                f"{model[0].in_features}.")

        def loss_fn(m: Any) -> tuple[float, float]:
            return evaluate(m, X, y)

        spec = spec or "mlp"
    pairs: list[tuple[str, Any]] = [("naive", sb)]
    wm = None
    if align:
        wm = weight_matching(_spec_for(spec, pa, sa), sa, sb, seed=seed, progress=show)
        pairs.append(("weight matching", wm.aligned))
    name = _pair_name(pa, pb)
    params = {"a": str(pa), "b": str(pb), "alphas": alphas, "spec": spec if align else None,
              "seed": seed}
    out: list[dict[str, Any]] = []
    with settings().db() as db, db.run("weights barrier", params, model=name,
                                       dataset=dataset) as run_id:
        for label, other in pairs:
            curve = barrier_curve(model, sa, other, loss_fn, alphas=alphas, label=label,
                                  progress=show)
            recs = curve.to_records(model=name, dataset=dataset, run_id=run_id, params=params)
            entry = {"label": label, **recs[0].values}
            if layerwise:
                lw = layerwise_barriers(model, sa, other, loss_fn, alphas=max(3, alphas // 2),
                                        label=label, progress=show)
                lrecs = lw.to_records(model=name, dataset=dataset, run_id=run_id, params=params)
                recs += lrecs
                entry["layerwise"] = {r.layer: r.values["barrier"] for r in lrecs}
            db.add_many(recs)
            out.append(entry)
    if as_json:
        echo_json({"pair": name, "dataset": dataset, "curves": out,
                   "weight_matching": None if wm is None else {
                       "n_iter": wm.n_iter, "converged": wm.converged}})
        return
    rows = [(e["label"], e["barrier"], e["barrier_alpha"], e["loss_a"], e["loss_b"],
             e.get("accuracy_barrier"),
             max(e["layerwise"].values()) if e.get("layerwise") else None) for e in out]
    print_table(rows, ["pair", "loss barrier", "at alpha", "loss A", "loss B",
                       "accuracy barrier", "max layer-wise barrier"],
                title=f"Linear path {name} on {dataset}")
    if wm is not None:
        click.echo(f"weight matching: {wm.n_iter} iterations, "
                   f"{'converged' if wm.converged else 'stopped at the iteration cap'}")


@weights.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(),
              help="Aligned B: a .safetensors file, or a folder (B's config files copied).")
@click.option("--spec", default=None, help="Permutation spec: 'mlp' (nn.Sequential Linear/ReLU), "
              "'llama' (Llama-family decoder folder) or a JSON file of a hand-written spec "
              "(default: 'llama' when A is a folder with config.json, else 'mlp').")
@click.option("--max-iter", type=int, default=100, show_default=True,
              help="Iteration cap of the coordinate descent.")
@click.option("--seed", type=int, default=0, show_default=True, help="Visiting order seed.")
@click.option("--top-k", type=int, default=10, show_default=True,
              help="Singular pairs in the singular-vector alignment.")
@json_option
@progress_option
def align(a: str, b: str, out: str, spec: str | None, max_iter: int, seed: int, top_k: int,
          as_json: bool) -> None:
    """Permute B's hidden units to match A's by weight matching (Git Re-Basin), write the
    aligned B (it computes the same function as B) and report what changed: the distance to
    A, singular values (unchanged) and the alignment of the top singular vectors."""
    from repscope.weights._diagnostics import alignment_diagnostics
    from repscope.weights._matching import weight_matching
    from repscope.weights._state import as_state_dict, check_compatible

    pa, pb = check_exists(a, "A"), check_exists(b, "B")
    sa, sb = as_state_dict(pa, name="A"), as_state_dict(pb, name="B")
    check_compatible(sa, sb, names=("A", "B"))
    kind = spec or ("llama" if pa.is_dir() and (pa / "config.json").is_file() else "mlp")
    pspec = _spec_for(kind, pa, sa)
    show = show_progress()
    wm = weight_matching(pspec, sa, sb, max_iter=max_iter, seed=seed, progress=show)
    target = _save(wm.aligned, Path(out), like=pb if pb.is_dir() else None)
    diag = alignment_diagnostics(pspec, sa, sb, wm.aligned, top_k=top_k, progress=show)
    name = _pair_name(pa, pb)
    params = {"a": str(pa), "b": str(pb), "spec": kind, "seed": seed, "max_iter": max_iter,
              "out": str(target)}
    with settings().db() as db, db.run("weights align", params, model=name) as run_id:
        recs = diag.to_records(model=name, run_id=run_id, params=params)
        db.add_many(recs)
    if as_json:
        echo_json({"out": str(target), "n_iter": wm.n_iter, "converged": wm.converged,
                   "objective": wm.objective.tolist(),
                   "diagnostics": {r.layer: r.values for r in recs}})
        return
    cols = ("distance_ratio", "max_sigma_diff_before", "max_sigma_diff_after",
            "sv_alignment_before", "sv_alignment_after")
    rows = [(r.layer, *("—" if r.values[c] is None else r.values[c] for c in cols))
            for r in recs]
    print_table(rows, ["weight", "distance ratio", "max |Δσ| before", "max |Δσ| after",
                       "SV alignment before", "SV alignment after"],
                title=f"Weight matching {name}: {wm.n_iter} iterations, "
                      f"{'converged' if wm.converged else 'iteration cap reached'}")
    click.echo(f"aligned B written to {target}")


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    from repscope.exceptions import RepscopeValueError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RepscopeValueError(f"--param must be KEY=VALUE (e.g. density=0.5); got {item!r}.")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@weights.command()
@click.argument("method")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the merged checkpoint (created).")
@click.option("--base", default=None, type=click.Path(),
              help="The base checkpoint (task arithmetic, TIES, DARE, model stock).")
@click.option("--param", "params", multiple=True,
              help="A method parameter KEY=VALUE (repeatable; JSON values: weights=[0.5,0.5]).")
@click.option("--eval", "evals", multiple=True, metavar="TASK=FILE.npz",
              help="For MLP checkpoints: evaluate the merge on a task's held-out X and y "
              "(repeatable, one per input, in order); recorded for the report.")
@json_option
@progress_option
def merge(method: str, inputs: tuple[str, ...], out: str, base: str | None,
          params: tuple[str, ...], evals: tuple[str, ...], as_json: bool) -> None:
    """Merge INPUTS (.safetensors files or folders) with METHOD, tensor by tensor (one tensor
    of each input in memory at a time), into OUT (safetensors, the first input's config
    copied, and repscope_merge.json saying how). METHOD: linear, task_arithmetic, ties, dare_linear,
    dare_ties, slerp, model_stock, fisher (an unknown name lists them)."""
    from repscope.weights._stream import merge_files

    paths = [check_exists(p, "INPUT") for p in inputs]
    pbase = check_exists(base, "--base") if base else None
    kw = _parse_params(params)
    target = merge_files(method, paths, out, base=pbase, progress=show_progress(), **kw)
    result: dict[str, Any] = {"out": str(target), "method": method, "params": kw}
    if evals:
        result["evaluation"] = _evaluate_merge(method, paths, pbase, target, evals, kw)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{method} merge of {len(paths)} checkpoints written to {target}")
    if evals:
        rows = [(r["task"], r["accuracy_before"], r["accuracy_after"], r["loss_before"],
                 r["loss_after"]) for r in result["evaluation"]]
        print_table(rows, ["task", "accuracy fine-tune", "accuracy merged", "loss fine-tune",
                           "loss merged"], title=f"{method} merge on each task")


def _evaluate_merge(method: str, paths: list[Path], base: Path | None, merged: Path,
                    evals: tuple[str, ...], kw: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the merged MLP and each input on its task; record ``weights_merge``."""
    import math

    from repscope.exceptions import RepscopeValueError
    from repscope.weights._state import as_state_dict
    from repscope.weights._taskvec import MergeResult
    from repscope.weights._toy import evaluate, mlp_from_state_dict

    if len(evals) != len(paths):
        raise RepscopeValueError(
            f"--eval must be given once per input ({len(paths)}), in the inputs' order; got "
            f"{len(evals)}.")
    merged_model = mlp_from_state_dict(as_state_dict(merged, name="merged"), name="merged")
    base_model = mlp_from_state_dict(as_state_dict(base, name="--base"), name="--base") \
        if base is not None else None
    rows = []
    for spec, path in zip(evals, paths):
        task, sep, file = spec.partition("=")
        if not sep:
            raise RepscopeValueError(f"--eval must be TASK=FILE.npz; got {spec!r}.")
        X, y, _ = _mlp_data(file)
        own = mlp_from_state_dict(as_state_dict(path, name=str(path)), name=str(path))
        lb, ab = evaluate(own, X, y)
        la, aa = evaluate(merged_model, X, y)
        l0, a0 = evaluate(base_model, X, y) if base_model is not None else (math.nan, math.nan)
        rows.append({"method": method, "task": task, "params": json.dumps(kw, sort_keys=True),
                     "loss_before": lb, "accuracy_before": ab, "loss_after": la,
                     "accuracy_after": aa, "loss_base": l0, "accuracy_base": a0})
    res = MergeResult(tuple(rows))
    name = f"{method} merge of " + ", ".join(_name(p) for p in paths)
    with settings().db() as db, db.run("weights merge", {"method": method, **kw},
                                       model=name) as run_id:
        db.add_many(res.to_records(model=name, run_id=run_id))
    return rows


@weights.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--base", required=True, type=click.Path(),
              help="The base checkpoint the INPUTS were fine-tuned from.")
@json_option
@progress_option
def diagnose(inputs: tuple[str, ...], base: str, as_json: bool) -> None:
    """Task vectors of fine-tuned INPUTS (fine-tuned minus --base): cosine matrix, norms and
    sign-conflict rate, streamed tensor by tensor (checkpoints of any size)."""
    from repscope.weights._stream import diagnose_files

    paths = [check_exists(p, "INPUT") for p in inputs]
    pbase = check_exists(base, "--base")
    res = diagnose_files(paths, pbase, names=[_name(p) for p in paths], progress=show_progress())
    name = f"fine-tunes of {_name(pbase)}"
    with settings().db() as db, db.run("weights diagnose", {"base": str(pbase),
                                                            "inputs": [str(p) for p in paths]},
                                       model=name) as run_id:
        db.add_many(res.to_records(model=name, run_id=run_id))
    if as_json:
        echo_json(res.to_dict())
        return
    rows = [(n, *[float(c) for c in res.cosines[i]], float(res.norms[i]))
            for i, n in enumerate(res.names)]
    print_table(rows, ["task vector", *res.names, "L2 norm"],
                title=f"Task-vector cosines (sign-conflict rate {res.sign_conflict_rate:.3f})")


@weights.command()
@click.argument("model", type=click.Path())
@click.option("--beta", type=float, default=0.9, show_default=True,
              help="Merge units whose normalised incoming weights are closer than this.")
@click.option("--data", default=_DIGITS, show_default=True,
              help="'digits' (the test split) or an .npz with X and y, for accuracy.")
@click.option("--out", "out", default=None, type=click.Path(),
              help="Write the smaller model here (.safetensors).")
@json_option
@progress_option
def redundancy(model: str, beta: float, data: str, out: str | None, as_json: bool) -> None:
    """Merge functionally equivalent ReLU units of an MLP checkpoint (Iterative Feature
    Merging): units whose incoming weights are positive multiples of each other (closer than
    --beta after normalising) become one; accuracy before and after, and units per layer."""
    from repscope.weights._redundancy import merge_equivalent_units
    from repscope.weights._state import as_state_dict
    from repscope.weights._toy import mlp_from_state_dict

    p = check_exists(model, "MODEL")
    net = mlp_from_state_dict(as_state_dict(p, name="MODEL"), name=f"MODEL ({p})")
    X, y, dataset = _mlp_data(data)
    betas = sorted({round(beta * f, 4) for f in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)})
    res = merge_equivalent_units(net, beta, data=(X, y), curve=betas, progress=show_progress())
    params = {"model": str(p), "beta": beta}
    with settings().db() as db, db.run("weights redundancy", params, model=_name(p),
                                       dataset=dataset) as run_id:
        recs = res.to_records(model=_name(p), dataset=dataset, run_id=run_id, params=params)
        db.add_many(recs)
    written = None
    if out:
        written = _save(res.model.state_dict(), Path(out))
    if as_json:
        echo_json({"records": [{"layer": r.layer, **r.values} for r in recs],
                   "out": None if written is None else str(written)})
        return
    rows = [(r.layer, r.values["units_before"], r.values["units_after"],
             r.values["fraction_removed"]) for r in recs]
    print_table(rows, ["layer", "units before", "units after", "fraction removed"],
                title=f"Redundant units of {_name(p)} at beta {beta}: accuracy "
                      f"{res.accuracy_before:.4f} -> {res.accuracy_after:.4f}")
    if written is not None:
        click.echo(f"smaller model written to {written}")


COMMANDS = [weights]
