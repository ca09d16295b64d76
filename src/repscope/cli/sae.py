"""``repscope sae train|eval|list``: sparse autoencoders on features from disk.

``train`` fits one SAE (or a sweep over k in one pass over the data) on a layer of a ``.npy``,
``.safetensors`` or FeatureStore, holding out whole documents drawn at random for evaluation,
with a default step budget from the data size (:func:`repscope.sae.plan_steps`); ``eval`` scores
a saved SAE on features (and, given a language model, the LM loss it recovers); ``list`` shows
the registered architectures. Every SAE trained or evaluated becomes one ``sae`` record; the
vectors come from :class:`repscope.sae.LayerVectors`.

``train`` also runs under ``torchrun`` (DDP, :mod:`repscope.distributed`): ``--batch-size`` is
the global batch, split evenly over the ranks; each rank reads only its piece of each global
batch, gradients are averaged, and W ranks train the SAE one process trains (the batch rule is
in :mod:`repscope.sae.training._trainer`). After the last collective rank 0 alone saves the
SAEs, evaluates them on the held-out vectors, finds their top-activating inputs (these need
all the held-out rows) and records.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    db_option,
    echo_json,
    features_argument,
    json_option,
    layers_option,
    model_name,
    parse_ints,
    print_table,
    progress_option,
    rank_aware,
    settings,
    show_progress,
)
from repscope.sae._budget import BUDGET_RULE, FEW_STEPS
from repscope.sae._words import DEAD_WORDS

_SKIP_FIRST = ("Token layers: leave out each sample's first token (in many LMs an attention sink "
               "whose huge norm would dominate the error)")
_EVAL_ROWS = (("FVU", "fvu"), ("explained variance", "explained_variance"), ("MSE", "mse"),
              ("L0", "l0"), ("not firing on the evaluation set", "dead_fraction"),
              ("shrinkage", "shrinkage"))
_LM_ROWS = (("LM loss clean", "clean"), ("LM loss SAE spliced", "spliced"),
            ("LM loss zero-ablated", "zero_ablated"),
            ("fraction of loss recovered", "fraction_recovered"))


def _k(sae: Any) -> int | None:
    """The SAE's k as its record stores it (None for architectures without one)."""
    k = getattr(sae.cfg, "k", None)
    return int(k) if isinstance(k, int) else None


class _Counted:
    """Re-iterable batches of ``data`` (an array or an iterable of batches) that advance a
    progress bar by the rows each batch holds."""

    def __init__(self, data: Any, advance: Any, rows: int = 65_536) -> None:
        self.data, self.advance, self.rows = data, advance, rows

    def __iter__(self) -> Any:
        if hasattr(self.data, "shape"):
            for a in range(0, int(self.data.shape[0]), self.rows):
                batch = self.data[a:a + self.rows]
                yield batch
                self.advance(int(batch.shape[0]))
            return
        for batch in self.data:
            yield batch
            self.advance(int(batch.shape[0]))


def _evaluate(sae: Any, vectors: Any, batch_size: int, seed: int,
              label: str) -> tuple[Any, list[dict]]:
    """The SAE's evaluation on ``vectors`` and its top-activating examples, described, under a
    progress bar over both passes."""
    from repscope._progress import progress_bar
    from repscope.sae.evaluation._inspect import top_activations, top_latents_values
    from repscope.sae.metrics import evaluate

    with progress_bar(label, 2 * vectors.n_vectors, enabled=show_progress(),
                      prefix="sae") as advance:
        data = _Counted(vectors.data, advance)
        ev = evaluate(sae, data, batch_size=batch_size)
        top = top_activations(sae, data, batch_size=batch_size, seed=seed)
    return ev, top_latents_values(top, vectors.describe)


def example_text(e: dict[str, Any]) -> str:
    """One top-activating example as plain text: the token in [brackets] within its context,
    else the start of the sample's text, its id, or its index."""
    act = f"{float(e.get('activation', math.nan)):.3g}"
    ctx = e.get("context")
    if isinstance(ctx, (list, tuple)) and len(ctx) == 3:
        return f"{act}  {ctx[0]}[{ctx[1]}]{ctx[2]}"
    where = f"pos {e['position']}  " if e.get("position") is not None else ""
    if e.get("text") is not None:
        text = " ".join(str(e["text"]).split())
        return f"{act}  {where}{text[:100] + '…' if len(text) > 100 else text}"
    if e.get("image_png"):
        return f"{act}  image #{e.get('index')}"
    ident = f"id {e['id']}" if e.get("id") is not None else f"#{e.get('index')}"
    return f"{act}  {where}{ident}"


def _print_top_inputs(values: dict[str, Any], n_latents: int = 4, n_examples: int = 3) -> None:
    """The top-activating inputs of a few latents, a line each (the token in [brackets])."""
    tops = [t for t in values.get("top_latents") or [] if t.get("examples")][:n_latents]
    if not tops:
        return
    name = Path(str(values.get("path", ""))).name or values.get("architecture", "SAE")
    click.echo(f"\nTop inputs of {len(tops)} latents of {name} (activation, input):")
    missing = False
    for t in tops:
        click.echo(f"latent {t['latent']} (density {float(t.get('density') or 0):.3g}):")
        for e in t["examples"][:n_examples]:
            click.echo(f"  {example_text(e)}")
            missing |= e.get("position") is not None and e.get("context") is None
    if missing:
        click.echo("(text not stored: this store has no token strings; extract it again with "
                   "this version of repscope to see each token in its context)")


@click.group()
def sae() -> None:
    """Train, evaluate and list sparse autoencoders (SAEs) on features from disk."""


@sae.command()
@rank_aware
@features_argument()
@layers_option("Layer to train on (default: the last; a token layer trains on its tokens).",
               dest="layer", multiple=False)
@click.option("--arch", default="topk", show_default=True,
              help="Architecture (see `repscope sae list`).")
@click.option("--width", type=int, default=None, help="Number of latents (d_sae).")
@click.option("--expansion", type=float, default=None,
              help="Width as a multiple of the input dimension (default 8 unless --width).")
@click.option("--k", "k", type=int, default=None,
              help="Active latents per input for TopK-family architectures (default 32).")
@click.option("--k-sweep", default="",
              help="Comma-separated k values (e.g. 8,16,32): one SAE each, trained in one pass.")
@click.option("--l1", "l1", type=float, default=None, help="Sparsity coefficient of "
              "L1/L0-penalised architectures (relu, gated, jumprelu).")
@click.option("--steps", type=int, default=None, help="Optimiser steps (default: a budget from "
              f"the number of training vectors: {BUDGET_RULE}; fewer than {FEW_STEPS:,} steps "
              "get a warning).")
@click.option("--epochs", type=float, default=None,
              help="Passes over the training vectors, instead of the default budget.")
@click.option("--batch-size", default=1024, show_default=True, help="Vectors per step (under "
              "torchrun, the global batch: a multiple of the number of ranks).")
@click.option("--optimizer", type=click.Choice(["schedule_free_sign_sgd", "adam", "sign_sgd"]),
              default="schedule_free_sign_sgd", show_default=True,
              help="Schedule-free sign-SGD (sparsify's default; on SmolLM2 activations it "
              "reached sparsify's held-out FVU 2.5x faster than sparsify, where Adam did not "
              "reach it), Adam, or plain sign-SGD.")
@click.option("--lr", type=float, default=None,
              help="Learning rate (default 4.7e-3, the sign step, for the sign-based optimisers; "
              "2e-4 * sqrt(16384 / width) for Adam).")
@click.option("--holdout", default=0.1, show_default=True, help="Share of the samples held out "
              "for evaluation: whole documents (a sample id's prefix before ':', e.g. the novel "
              "of 'emma:0042', else each sample with its tokens) drawn at random (repscope --seed).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Where to save the "
              "SAE (default ./sae-<layer>-<arch>-k<k>); with --k-sweep, a folder holding one "
              "such directory per SAE.")
@click.option("--skip-first", is_flag=True, help=f"{_SKIP_FIRST}.")
@dataset_option
@progress_option
@db_option
@json_option
def train(features: str, layer: str | None, arch: str, width: int | None, expansion: float | None,
          k: int | None, k_sweep: str, l1: float | None, steps: int | None, epochs: float | None,
          batch_size: int, optimizer: str, lr: float | None, holdout: float, out: str | None, skip_first: bool,
          dataset: str, as_json: bool) -> None:
    """Train SAEs on a layer of FEATURES; evaluate them on held-out samples.

    One SAE, or one per k of --k-sweep trained in one pass over the data. FEATURES is a .npy
    file (memory-mapped), a .safetensors file or a FeatureStore directory. Each SAE is saved in
    SAELens's format, scored on the held-out samples (FVU, L0, latents not firing on the
    evaluation set, dead in training and never fired in training, shrinkage, density
    histogram), described by the held-out inputs that activate a few latents most (a token in
    [brackets] within its text, else the sample's text or id), and recorded as an "sae" result.

    Under torchrun (`torchrun --nproc-per-node N -m repscope sae train ...`) the ranks train one
    SAE together: --batch-size is the global batch, each rank reads only its 1/N of every batch
    (same samples in the same order as one process), and after training rank 0 alone saves,
    evaluates and records.
    """
    from repscope.distributed import context
    from repscope.exceptions import RepscopeValueError
    from repscope.sae import (
        LayerVectors,
        TrainSettings,
        architectures,
        create_sae,
        plan_steps,
        sweep,
    )
    from repscope.sae._records import SAERunResult
    from repscope.sae.io import save_sae

    s = settings()
    ranks = context()
    fields = {f.name for f in dataclasses.fields(architectures.get(arch).config_class)}
    for a, b, both in ((width, expansion, "--width or --expansion"), (steps, epochs,
                       "--steps or --epochs"), (k, k_sweep or None, "--k or --k-sweep")):
        if a is not None and b is not None:
            raise RepscopeValueError(f"pass either {both}, not both.")
    if expansion is not None and not expansion > 0:
        raise RepscopeValueError(f"--expansion must be > 0; got {expansion}.")
    ks: list[int | None] = [k] if not k_sweep else list(
        dict.fromkeys(parse_ints(k_sweep, "--k-sweep")))
    if "k" not in fields and any(v is not None for v in ks):
        raise RepscopeValueError(
            f"architecture {arch!r} has no k (it is not TopK-style); drop --k/--k-sweep.")
    coef = next((n for n in ("l1_coefficient", "l0_coefficient") if n in fields), None)
    if l1 is not None and coef is None:
        raise RepscopeValueError(f"architecture {arch!r} has no L1/L0 coefficient; drop --l1.")

    path = check_exists(features, "features")
    model = model_name(path)
    train_v, held = LayerVectors(path, layer, skip_first=skip_first).split(holdout, seed=s.seed)
    eval_v, eval_on = (train_v, "training data") if held is None else (held, "held-out")
    d_sae = width if width is not None else max(1, round((expansion or 8.0) * train_v.d))
    params: dict[str, Any] = {"d_in": train_v.d, "d_sae": d_sae, "seed": s.seed,
                              **({coef: l1} if l1 is not None and coef else {})}
    models = [create_sae(arch, **params, **({"k": kv} if kv is not None else {})) for kv in ks]
    n_train_vec = train_v.n_vectors
    for name, value in (("--steps", steps), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise RepscopeValueError(f"{name} must be at least 1; got {value}.")
    if epochs is not None and not epochs > 0:
        raise RepscopeValueError(f"--epochs must be > 0; got {epochs}.")
    if batch_size % ranks.world_size:
        raise RepscopeValueError(
            f"--batch-size must be a multiple of the {ranks.world_size} ranks (each takes an "
            f"equal piece of every batch); got {batch_size}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = plan_steps(n_train_vec, batch_size, n_steps=steps, n_epochs=epochs,
                           names=("--steps", "--epochs"))
    for w in caught if ranks.is_writer else ():
        click.echo(f"warning: {w.message}", err=True)
    # one process keeps a store's training vectors in memory; a rank reads its rows by index
    data = train_v.data if not ranks.is_distributed else train_v.reader()
    with ranks.collective("training the SAE") if ranks.is_distributed else nullcontext():
        results = sweep(data, models,
                        TrainSettings(n_steps=steps, batch_size=batch_size // ranks.world_size,
                                      optimizer=optimizer,  # type: ignore[arg-type]
                                      lr=lr, seed=s.seed, progress=show_progress()),
                        device=s.device)
    if not ranks.is_writer:
        return  # training was the last collective: rank 0 saves, evaluates and records

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", train_v.layer).strip("_") or "layer"
    names = [f"sae-{slug}-{arch}-" + (f"w{d_sae}" if _k(r.sae) is None else f"k{_k(r.sae)}")
             for r in results]
    dirs = ([Path(n) for n in names] if out is None
            else [Path(out)] if len(results) == 1 else [Path(out) / n for n in names])
    n_eval_vec = eval_v.n_vectors
    run_params = {"features": str(path), "architecture": arch, "d_sae": d_sae,
                  "ks": ks if "k" in fields else None, "l1": l1, "n_steps": steps,
                  "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                  "holdout": holdout,
                  "skip_first": skip_first, "seed": s.seed}
    all_values = []
    with s.db() as db, db.run("sae train", run_params, model=model, dataset=dataset) as run_id:
        for res, target in zip(results, dirs):
            t = time.perf_counter()
            saved = save_sae(res.sae, target)
            ev, tops = _evaluate(res.sae, eval_v, max(batch_size, 1024), s.seed,
                                 f"evaluating {target.name}")
            run = SAERunResult(res.sae, ev, training=res, top_latents=tops, extra={
                "path": str(saved.resolve()),
                "n_train": n_train_vec, "n_eval": n_eval_vec, "n_train_samples":
                train_v.n_samples, "n_eval_samples": eval_v.n_samples, "eval_on": eval_on,
                "n_steps": res.n_steps, "epochs": res.n_steps * batch_size / n_train_vec,
                "split": train_v.split_info,
                "skip_first": skip_first, "seconds": res.seconds,
                "seconds_eval": time.perf_counter() - t,
                "lr": res.history.get("lr", [math.nan])[-1]})
            records = run.to_records(
                model=model, dataset=dataset, layer=train_v.layer, run_id=run_id,
                params={**{p: v for p, v in run_params.items() if p != "ks"}, "k": _k(res.sae)})
            db.add_many(records)
            all_values.append(dict(records[0].values))
    if as_json:
        echo_json(all_values)
        return
    print_table(
        [(v["architecture"], v["d_sae"], "—" if v["k"] is None else v["k"], v["fvu"], v["l0"],
          v["dead_fraction"], v["dead_in_training"], v["shrinkage"], v.get("path", ""))
         for v in all_values],
        ["architecture", "width", "k", "FVU", "L0", DEAD_WORDS["dead_fraction"],
         DEAD_WORDS["dead_in_training"], "shrinkage", "saved to"],
        title=f"SAEs on {model} · {train_v.layer}: {n_train_vec} training vectors, "
        f"{n_eval_vec} {eval_on.split()[0]} vectors, {steps} steps "
        f"({steps * batch_size / n_train_vec:.3g} epochs)")
    _print_top_inputs(all_values[-1])


@sae.command(name="eval")
@click.argument("sae_dir", type=click.Path())
@features_argument()
@layers_option("Layer of FEATURES (default: the last); with --model, also the model's module "
               "path whose output the SAE replaces.", dest="layer", multiple=False)
@click.option("--batch-size", default=4096, show_default=True, help="Vectors per forward pass.")
@click.option("--model", "lm_name", default=None,
              help="A zoo causal LM (e.g. smollm2-135m): also measure the LM loss recovered.")
@click.option("--texts-dataset", default="austen", show_default=True,
              help="Zoo text dataset for the LM loss.")
@click.option("--n-texts", default=100, show_default=True, help="Texts for the LM loss.")
@click.option("--max-length", default=64, show_default=True, help="Tokens per text (LM loss).")
@click.option("--skip-first", is_flag=True,
              help=f"{_SKIP_FIRST}; with --model, position 0 is not spliced either.")
@dataset_option
@progress_option
@db_option
@json_option
def eval_(sae_dir: str, features: str, layer: str | None, batch_size: int, lm_name: str | None,
          texts_dataset: str, n_texts: int, max_length: int, skip_first: bool, dataset: str,
          as_json: bool) -> None:
    """Evaluate a saved SAE (SAE_DIR) on all of FEATURES and record it.

    Reports FVU, L0, the latents not firing on the evaluation set, shrinkage and the
    top-activating inputs of a few latents (a token in [brackets] within its text);
    with --model, also the model's next-token loss clean, with the SAE's reconstruction
    spliced in at --layer, and zero-ablated (the fraction of loss recovered).
    """
    from repscope.exceptions import RepscopeValueError
    from repscope.sae import LayerVectors
    from repscope.sae._records import SAERunResult
    from repscope.sae.io import load_sae

    s = settings()
    if lm_name is not None and layer is None:
        raise RepscopeValueError("--model needs --layer (the model's module path).")
    sae_path = check_exists(sae_dir, "SAE directory")
    path = check_exists(features, "features")
    vectors = LayerVectors(path, layer, skip_first=skip_first)
    sae_model = load_sae(sae_path, device=s.device, expected_d_in=vectors.d)
    t = time.perf_counter()
    ev, tops = _evaluate(sae_model, vectors, batch_size, s.seed, "evaluation vectors")
    extra: dict[str, Any] = {}
    if lm_name is not None:
        from repscope.sae.evaluation._fidelity import spliced_lm_loss
        from repscope.zoo import load_dataset, load_model

        texts = list(load_dataset(texts_dataset, n=n_texts, seed=s.seed).inputs)
        rec = spliced_lm_loss(load_model(lm_name, device=s.device), sae_model, vectors.layer,
                              texts, max_length=max_length,
                              positions="skip_first" if skip_first else "all",
                              progress=show_progress())
        extra["loss_recovered"] = {
            "clean": rec.clean, "spliced": rec.spliced, "zero_ablated": rec.zero_ablated,
            "fraction_recovered": rec.fraction_recovered, "n_tokens": rec.n_tokens,
            "model": lm_name, "texts": texts_dataset, "n_texts": len(texts)}
    from repscope.sae.archs.poly import PolySAE

    if isinstance(sae_model, PolySAE) and sae_model.cfg.order >= 2:
        from repscope.sae.evaluation import interaction_cooccurrence

        ic = interaction_cooccurrence(sae_model, vectors.data, batch_size=batch_size)
        extra["interactions"] = {"r_interaction": ic.r_interaction,
                                 "r_covariance": ic.r_covariance, "n_latents": int(ic.latents.size)}
    run = SAERunResult(sae_model, ev, top_latents=tops, extra={
        "path": str(sae_path.resolve()), "n_eval": vectors.n_vectors,
        "n_eval_samples": vectors.n_samples, "eval_on": "features", "skip_first": skip_first,
        "seconds_eval": time.perf_counter() - t, **extra})
    values = run.record_values()
    params = {"features": str(path), "sae": str(sae_path), "architecture": values["architecture"],
              "d_sae": values["d_sae"], "k": values["k"], "lm": lm_name, "skip_first": skip_first}
    model = model_name(path)
    with s.db() as db, db.run("sae eval", params, model=model, dataset=dataset) as run_id:
        db.add_many(run.to_records(model=model, dataset=dataset, layer=vectors.layer,
                                   params=params, run_id=run_id))
    if as_json:
        echo_json(values)
        return
    rows = [(label, values[key]) for label, key in _EVAL_ROWS]
    rows += [(label, extra["loss_recovered"][key]) for label, key in _LM_ROWS
             if "loss_recovered" in extra]
    if "interactions" in extra:
        rows += [("interaction strength vs co-occurrence (r)", extra["interactions"]["r_interaction"]),
                 ("latent covariance vs co-occurrence (r)", extra["interactions"]["r_covariance"])]
    print_table(rows, ["metric", "value"],
                title=f"{values['architecture']} SAE (width {values['d_sae']}) on "
                f"{model} · {vectors.layer}, {values['n_eval']} vectors")
    _print_top_inputs(values)


@sae.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """List the registered SAE architectures."""
    from repscope.sae import architectures

    metas = {name: architectures.meta(name) for name in architectures.names()}
    infos = [{"architecture": name, "family": str(m.get("family", "")), "sparse_codes":
              bool(m.get("sparse_codes")), "config": getattr(m.get("config"), "__name__", "")}
             for name, m in metas.items()]
    if as_json:
        echo_json(infos)
        return
    print_table([(i["architecture"], i["family"], "yes" if i["sparse_codes"] else "no",
                  i["config"]) for i in infos],
                ["architecture", "family", "sparse codes", "config"], title="SAE architectures")


COMMANDS = [sae]
