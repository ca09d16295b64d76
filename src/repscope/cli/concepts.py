"""``repscope concepts``: concept directions and erasure on stored features, and the model-facing
views (steering, attention metrics, ObsProp, class activation maps, layer updates, DAS).

Feature commands (``directions``, ``erase``, ``factorize``) read a store or array file and
labels like ``repscope probe``; model commands load a zoo model. Records go to the results
database for ``repscope report``.
"""

from __future__ import annotations

from typing import Any

import click

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    labels_option,
    layers_option,
    model_name,
    print_table,
    progress_option,
    settings,
    show_progress,
)


def _layers_and_labels(features: str, labels: str, layers: tuple[str, ...]) -> tuple[Any, Any,
                                                                                       Any]:
    from repscope.cli._errors import check_labels_file
    from repscope.store import load_labels, open_layers

    path = check_exists(features, "features")
    src = open_layers(path, list(layers) or None)
    check_labels_file(labels)
    y = load_labels(labels, store=src, n_samples=src.n_samples)
    return path, src, y


def _per_layer(command: str, path: Any, src: Any, layers: tuple[str, ...], params: dict[str, Any],
               dataset: str, analyse: Any) -> tuple[str, list[dict[str, Any]]]:
    """Run ``analyse(X) -> result`` on each layer (default: the last), record every result in
    one run of ``command``, and return the model name and the records' values by layer."""
    import numpy as np

    names = list(layers) or [src.layers[-1]]
    model = model_name(path)
    out: list[dict[str, Any]] = []
    with settings().db() as db, db.run(command, {"features": str(path), **params}, model=model,
                                       dataset=dataset) as run_id:
        for layer in names:
            X = np.asarray(src.read(layer), dtype=np.float64).reshape(src.n_samples, -1)
            recs = analyse(X).to_records(model=model, dataset=dataset, layer=layer,
                                         run_id=run_id, params=params)
            db.add_many(recs)
            out += [{"layer": layer, **r.values} for r in recs]
    return model, out


@click.group()
def concepts() -> None:
    """Concept directions, erasure, steering and other interventions, attention views."""


@concepts.command()
@features_argument()
@labels_option
@layers_option("Layer to erase the concept from (repeatable; default: the last).")
@click.option("--method", "methods", type=click.Choice(["leace", "inlp"]), multiple=True,
              default=("leace", "inlp"), show_default=True, help="Erasure method (repeatable).")
@click.option("--test-fraction", type=float, default=0.3, show_default=True,
              help="Share of samples held out to score the erasure.")
@dataset_option
@json_option
@progress_option
def erase(features: str, labels: str, layers: tuple[str, ...], methods: tuple[str, ...],
          test_fraction: float, dataset: str, as_json: bool) -> None:
    """Erase the concept given by --labels from each layer of FEATURES with LEACE (closed form,
    least squares change) and INLP (iterative nullspace projection), and check each by a fresh
    linear probe on held-out samples and by how far the points moved."""
    from repscope.concepts._erasure import erasure

    path, src, y = _layers_and_labels(features, labels, layers)
    seed = settings().seed
    params = {"labels": labels, "methods": list(methods), "test_fraction": test_fraction,
              "seed": seed}
    model, out = _per_layer(
        "concepts erase", path, src, layers, params, dataset,
        lambda X: erasure(X, y, methods=methods, test_fraction=test_fraction, random_state=seed,
                          progress=show_progress()))
    if as_json:
        echo_json(out)
        return
    rows = [(e["layer"], e["method"], e["accuracy_before"], e["accuracy_after"], e["chance"],
             e["relative_distance"], e["rank_removed"]) for e in out]
    print_table(rows, ["layer", "method", "probe acc. before", "after", "chance",
                       "relative distance moved", "directions removed"],
                title=f"Concept erasure in {model} ({labels})")


@concepts.command()
@features_argument()
@labels_option
@layers_option("Layer to find the direction in (repeatable; default: the last).")
@click.option("--positive", default=None,
              help="The concept's label value (default: the larger of exactly two values).")
@click.option("--n-random", type=int, default=50, show_default=True,
              help="Random concept sets for the CAV's null distribution.")
@dataset_option
@json_option
@progress_option
def directions(features: str, labels: str, layers: tuple[str, ...], positive: str | None,
               n_random: int, dataset: str, as_json: bool) -> None:
    """Concept directions in each layer of FEATURES for the concept --labels == --positive:
    difference of means, probe weights and a CAV, each scored by held-out AUC, their cosines,
    and the CAV's p-value against random directions and random concept sets."""
    from repscope.concepts._directions import concept_directions

    path, src, y = _layers_and_labels(features, labels, layers)
    pos: Any = positive
    if positive is not None and y.dtype.kind in "iu":
        pos = int(positive)
    seed = settings().seed
    params = {"labels": labels, "positive": positive, "n_random": n_random, "seed": seed}
    model, out = _per_layer(
        "concepts directions", path, src, layers, params, dataset,
        lambda X: concept_directions(X, y, positive=pos, n_random=n_random, random_state=seed,
                                     progress=show_progress()))
    if as_json:
        echo_json(out)
        return
    rows = [(e["layer"], e["positive"], e["auc_mean_difference"], e["auc_probe"], e["auc_cav"],
             e["cos_probe_cav"], e["p_random_concepts"]) for e in out]
    print_table(rows, ["layer", "concept", "AUC means", "AUC probe", "AUC CAV", "cos(probe, CAV)",
                       "CAV p (random concepts)"], title=f"Concept directions in {model}")


@concepts.command()
@features_argument()
@click.option("--concept", "concept_specs", multiple=True, required=True,
              help="A concept NAME or NAME=LABELS (a .npy/text file or a metadata column; "
              "default: the column NAME); repeatable, at least two.")
@layers_option("Layer to factorize (repeatable; default: the last).")
@click.option("--train-fraction", type=float, default=0.5, show_default=True,
              help="Share of value combinations the probes train on (the rest are unseen).")
@dataset_option
@json_option
@progress_option
def factorize(features: str, concept_specs: tuple[str, ...], layers: tuple[str, ...],
              train_fraction: float, dataset: str, as_json: bool) -> None:
    """Linear factorization of each layer of FEATURES by several concepts: how much of the
    embedding the additive per-concept means explain (R², raw and whitened), the binding
    (interaction) share, concept ranks, cross- vs within-concept |cos|, and probes trained on
    some value combinations and tested on unseen ones."""
    from repscope.concepts._factorization import linear_factorization
    from repscope.exceptions import RepscopeValueError
    from repscope.store import load_labels, open_layers

    path = check_exists(features, "features")
    src = open_layers(path, list(layers) or None)
    cons: dict[str, Any] = {}
    for spec in concept_specs:
        name, _, source = spec.partition("=")
        cons[name] = load_labels(source or name, store=src, n_samples=src.n_samples)
    if len(cons) < 2:
        raise RepscopeValueError(
            f"--concept must be given at least twice (factorization needs several concepts); "
            f"got {len(cons)}.")
    seed = settings().seed
    params = {"concepts": list(concept_specs), "train_fraction": train_fraction, "seed": seed}
    model, out = _per_layer(
        "concepts factorize", path, src, layers, params, dataset,
        lambda X: linear_factorization(X, cons, train_fraction=train_fraction,
                                       random_state=seed, progress=show_progress()))
    if as_json:
        echo_json(out)
        return
    rows = [(e["layer"], e["r2"], e["r2_whitened"], e["binding"], e["cross_abs_cos"],
             e["within_abs_cos"], ", ".join(f"{k}: {v:.3f}" for k, v in
                                            e["heldout_accuracy"].items()))
            for e in out]
    print_table(rows, ["layer", "R²", "R² whitened", "binding", "cross |cos|", "within |cos|",
                       "probe accuracy on unseen combinations"],
                title=f"Linear factorization of {model} by {', '.join(cons)}")


@concepts.command()
@click.argument("model")
@click.option("--dataset", "dataset_name", default="austen", show_default=True,
              help="Zoo text dataset the texts come from.")
@click.option("--n", "n_texts", type=int, default=16, show_default=True, help="Texts to run.")
@click.option("--max-length", type=int, default=64, show_default=True,
              help="Tokens per text.")
@json_option
@progress_option
def attention(model: str, dataset_name: str, n_texts: int, max_length: int,
              as_json: bool) -> None:
    """Attention metrics of every layer and head of a zoo text MODEL on N texts: mean attention
    distance, entropy, query-key NMI, head diversity and the attention the second half of each
    text gives the first half."""
    import repscope.zoo
    from repscope.concepts._attention import model_attention_metrics
    from repscope.exceptions import RepscopeValueError

    if n_texts < 1 or max_length < 2:
        raise RepscopeValueError(f"--n must be >= 1 and --max-length >= 2; got {n_texts} and "
                                 f"{max_length}.")
    loaded = repscope.zoo.load_model(model)
    texts = [str(t) for t in repscope.zoo.load_dataset(dataset_name, n=n_texts).inputs]
    res = model_attention_metrics(loaded, texts, max_length=max_length,
                                  progress=show_progress())
    params = {"n_texts": len(texts), "max_length": max_length, "groups": "halves"}
    with settings().db() as db, db.run("concepts attention", params, model=model,
                                       dataset=dataset_name) as run_id:
        recs = res.to_records(model=model, dataset=dataset_name, run_id=run_id, params=params)
        db.add_many(recs)
    if as_json:
        echo_json([{"layer": r.layer, **r.values} for r in recs])
        return
    rows = [(r.layer, r.values["mean_distance"], r.values["mean_entropy"], r.values["mean_nmi"],
             r.values["head_diversity"]) for r in recs]
    print_table(rows, ["layer", "mean distance", "mean entropy", "mean QK NMI",
                       "head diversity"], title=f"Attention of {model} on {len(texts)} "
                                                f"{dataset_name} texts")


@concepts.command()
@click.argument("model")
@click.option("--positive", required=True, help="Token whose logit the observable adds "
              "(e.g. ' she'; one token).")
@click.option("--negative", default=None, help="Token whose logit it subtracts (e.g. ' he').")
@click.option("--second-positive", default=None,
              help="A second observable's positive token, for coupling coefficients.")
@click.option("--second-negative", default=None)
@click.option("--prompt", "prompts", multiple=True,
              help="A prompt for direct logit attribution at its last token (repeatable).")
@click.option("--top-k", type=int, default=5, show_default=True)
@json_option
@progress_option
def obsprop(model: str, positive: str, negative: str | None, second_positive: str | None,
            second_negative: str | None, prompts: tuple[str, ...], top_k: int,
            as_json: bool) -> None:
    """ObsProp on a Llama-family zoo MODEL: data-free feature vectors of every attention head
    for the observable logit(POSITIVE) - logit(NEGATIVE), the top heads by norm, couplings with
    a second observable, and (with --prompt) the overlap with direct logit attribution."""
    import repscope.zoo
    from repscope.concepts._obsprop import observable
    from repscope.concepts._obsprop import obsprop as run_obsprop

    loaded = repscope.zoo.load_model(model)
    obs = observable(loaded, [positive], [negative] if negative else [])
    second = None
    if second_positive:
        second = observable(loaded, [second_positive],
                            [second_negative] if second_negative else [])
    name1 = f"{positive!r} - {negative!r}" if negative else repr(positive)
    name2 = "" if second is None else (f"{second_positive!r} - {second_negative!r}"
                                       if second_negative else repr(second_positive))
    res = run_obsprop(loaded, obs, second=second, prompts=list(prompts) or None, top_k=top_k,
                      names=(name1, name2), progress=show_progress())
    params = {"observable": name1, "second": name2, "prompts": len(prompts), "top_k": top_k}
    with settings().db() as db, db.run("concepts obsprop", params, model=model) as run_id:
        recs = res.to_records(model=model, run_id=run_id, params=params)
        db.add_many(recs)
    if as_json:
        echo_json(res.to_dict())
        return
    click.echo(f"ObsProp of {name1} on {model}: top heads (layer, head) by feature-vector norm")
    for row in _top_rows(recs, top_k):
        click.echo(f"  {row}")


@concepts.command()
@click.argument("model")
@click.option("--layer", required=True, help="Module whose output is steered (e.g. "
              "model.layers.22).")
@click.option("--target", "target", required=True,
              help="Target token (one token, e.g. ' she'): the direction is the mean residual "
              "before it minus the mean elsewhere, on the --dataset texts.")
@click.option("--coefficient", "coefficients", type=float, multiple=True,
              default=(0.0, 1.0, 2.0, 4.0), show_default=True,
              help="Multiples of the direction added (repeatable).")
@click.option("--dataset", "dataset_name", default="austen", show_default=True,
              help="Zoo text dataset the direction is estimated on.")
@click.option("--n", "n_texts", type=int, default=40, show_default=True,
              help="Texts to estimate the direction on.")
@click.option("--prompt", "prompts", multiple=True,
              help="Prompt to steer (repeatable; default: 6 further texts of --dataset).")
@json_option
@progress_option
def steer(model: str, layer: str, target: str, coefficients: tuple[float, ...],
          dataset_name: str, n_texts: int, prompts: tuple[str, ...], as_json: bool) -> None:
    """Steer a zoo causal-LM MODEL by adding a concept direction at --layer: the target
    token's next-token log-probability and the KL from the unsteered distribution per
    coefficient, beside a random direction of the same norm (the control) and the ablation."""
    import repscope.zoo
    from repscope.concepts._steering import next_token_direction, steering_effect

    loaded = repscope.zoo.load_model(model)
    texts = [str(t) for t in repscope.zoo.load_dataset(dataset_name, n=n_texts + 6).inputs]
    direction = next_token_direction(loaded, texts[:n_texts], layer, target)
    steer_on = list(prompts) or texts[n_texts:n_texts + 6]
    res = steering_effect(loaded, steer_on, layer, direction, list(coefficients),
                          target_token=target, seed=settings().seed, progress=show_progress())
    params = {"target": target, "coefficients": list(coefficients), "n_texts": n_texts,
              "prompts": len(steer_on), "direction": "next-token mean difference"}
    with settings().db() as db, db.run("concepts steer", params, model=model,
                                       dataset=dataset_name) as run_id:
        recs = res.to_records(model=model, dataset=dataset_name, layer=layer, run_id=run_id,
                              params=params)
        db.add_many(recs)
    if as_json:
        echo_json([{"layer": r.layer, **r.values} for r in recs])
        return
    rows = [(r.values["coefficient"], r.values["target_logprob"],
             r.values["random_target_logprob"], r.values["kl"], r.values["random_kl"])
            for r in recs]
    print_table(rows, ["coefficient", "target log-prob", "random direction", "KL",
                       "KL random"], title=f"Steering {model} at {layer} towards {target!r}")


@concepts.command()
@click.option("--map", "maps", type=click.Choice(["rotation", "revnet"]), multiple=True,
              default=("rotation", "revnet"), show_default=True, help="DAS map (repeatable).")
@click.option("--hidden", type=int, default=64, show_default=True, help="MLP hidden width.")
@click.option("--n-pairs", type=int, default=25000, show_default=True,
              help="Counterfactual (base, source) pairs.")
@click.option("--no-control", is_flag=True, help="Skip the random-init control model.")
@json_option
@progress_option
def das(maps: tuple[str, ...], hidden: int, n_pairs: int, no_control: bool,
        as_json: bool) -> None:
    """Distributed alignment search on the hierarchical-equality task: interchange-intervention
    accuracy of a rotation and of a RevNet map on a trained MLP and, beside it, on the same MLP
    at random init (a high IIA there means the map, not the model, computes the variable)."""
    from repscope.concepts._das import das_hierarchical_equality

    seed = settings().seed
    res = das_hierarchical_equality(hidden=hidden, n_pairs=n_pairs, maps=list(maps),
                                    control=not no_control, seed=seed, progress=show_progress())
    name = f"hierarchical-equality MLP (hidden {hidden})"
    params = {"maps": list(maps), "hidden": hidden, "n_pairs": n_pairs, "seed": seed}
    with settings().db() as db, db.run("concepts das", params, model=name,
                                       dataset="hierarchical equality") as run_id:
        recs = res.to_records(model=name, dataset="hierarchical equality", run_id=run_id,
                              params=params)
        db.add_many(recs)
    if as_json:
        echo_json([{"layer": r.layer, **r.values} for r in recs])
        return
    rows = [(r.values["map"], r.values["model"], r.layer, r.values["k"],
             r.values["iia_heldout"], r.values["model_accuracy"]) for r in recs]
    print_table(rows, ["map", "model", "layer", "k", "IIA held-out", "model task accuracy"],
                title="DAS on hierarchical equality (chance 0.5)")


def _top_rows(recs: list[Any], top_k: int) -> list[str]:
    """The ``top_k`` heads by norm over all layers, as text."""
    heads = []
    for r in recs:
        for h, v in enumerate(r.values.get("head_norm") or []):
            heads.append((float(v), r.layer, h))
    heads.sort(reverse=True)
    return [f"{layer} head {h}: |y| = {v:.4g}" for v, layer, h in heads[:top_k]]


COMMANDS = [concepts]
