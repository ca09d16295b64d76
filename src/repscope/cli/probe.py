"""``repscope probe``: probes on features from disk (.npy, .safetensors, a FeatureStore).

Per-layer accuracy with intervals, and optionally few-shot accuracy, a learning curve and
calibration (temperature scaling) at the best layer. Everything is recorded in the results
database (analyses ``probe``, ``probe_few_shot``, ``probe_learning_curve``,
``probe_calibration``) and rendered by ``repscope report``.

Under ``torchrun`` (``torchrun --nproc-per-node N -m repscope probe ...``) every rank reads
only its contiguous share of each layer's rows and the per-layer accuracies equal one
process's (:func:`~repscope.probe._layerwise.probe_layers_ranks`): closed-form kinds fit from
all-reduced moments, ``logistic`` by its all-reduced L-BFGS. Kinds that need every row
(``knn``, token-set kinds) and ``--few-shot``, ``--learning-curve`` and ``--calibration`` run
on one process and are refused there.
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from repscope.cli._common import (
    KindChoice,
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
    rank_aware,
    settings,
    show_progress,
)


def _logits(est: Any, X: Any) -> np.ndarray:
    """Logits for calibration: ``decision_function`` (binary -> ``[0, z]``) or log-probs."""
    if hasattr(est, "decision_function"):
        z = np.asarray(est.decision_function(X), dtype=np.float64)
        return np.column_stack([np.zeros_like(z), z]) if z.ndim == 1 else z
    p = np.asarray(est.predict_proba(X), dtype=np.float64)
    return np.log(np.clip(p, 1e-12, None))


def _parse_shots(text: str) -> tuple[int, ...]:
    from repscope.exceptions import RepscopeValueError

    try:
        shots = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise RepscopeValueError(
            f"--few-shot must be comma-separated integers such as 1,5,10; got {text!r}."
        ) from None
    if not shots or min(shots) < 1:
        raise RepscopeValueError(f"--few-shot needs positive shot counts; got {text!r}.")
    return shots


def _refuse_on_ranks(probe_name: str, few_shot_spec: str | None, do_curve: bool,
                     do_calibration: bool) -> None:
    """Under more than one rank, refuse what needs every row in one process (one line)."""
    from repscope.exceptions import RepscopeValueError
    from repscope.probe._kinds import make_probe
    from repscope.probe._layerwise import rank_kind

    for option, given in (("--few-shot", few_shot_spec is not None),
                          ("--learning-curve", do_curve), ("--calibration", do_calibration)):
        if given:
            raise RepscopeValueError(
                f"{option} runs on one process; launch without torchrun (or leave out "
                f"{option} under torchrun).")
    if rank_kind(make_probe(probe_name)) is None:
        raise RepscopeValueError(
            f"--probe {probe_name} runs on one process (it needs every row at once); launch "
            "without torchrun, or choose a closed-form kind (ridge, lda, nb) or logistic.")


@click.command(name="probe")
@rank_aware
@features_argument()
@labels_option
@layers_option("Layer to probe (repeatable; default: all).")
@click.option("--probe", "probe_name", type=KindChoice("probe"), default="ridge",
              show_default=True, help="Which probe (kinds declared by the capabilities).")
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds.")
@click.option("--few-shot", "few_shot_spec", default=None,
              help="Shots per class at the best layer, e.g. 1,5,10.")
@click.option("--tries", default=5, show_default=True, help="Random draws per few-shot size.")
@click.option("--few-shot-sampler", "shot_sampler", type=click.Choice(["random", "dpp"]),
              default="random", show_default=True,
              help="How each class's shots are drawn: at random, or diverse examples by a "
                   "projection DPP.")
@click.option("--learning-curve", "do_curve", is_flag=True,
              help="Learning curve (accuracy vs training size) at the best layer.")
@click.option("--calibration", "do_calibration", is_flag=True,
              help="Temperature scaling, ECE and reliability diagram at the best layer.")
@dataset_option
@progress_option
@json_option
def probe(features: str, labels: str, layers: tuple[str, ...], probe_name: str, folds: int,
          few_shot_spec: str | None, tries: int, shot_sampler: str, do_curve: bool,
          do_calibration: bool,
          dataset: str, as_json: bool) -> None:
    """Probe LABELS from each layer of FEATURES (accuracy with 95% intervals)."""
    from repscope.cli._errors import check_labels_file
    from repscope.distributed import context
    from repscope.probe._kinds import make_probe
    from repscope.probe._layerwise import probe_layers, probe_layers_ranks
    from repscope.probe._protocols import KFold, few_shot, learning_curve
    from repscope.store import load_features, load_labels, open_layers

    ranks = context().is_distributed
    if ranks:
        _refuse_on_ranks(probe_name, few_shot_spec, do_curve, do_calibration)
    path = check_exists(features, "features")
    token_shape = None
    feats: Any = None
    if ranks:  # each rank reads its share of the rows later, layer by layer
        source = open_layers(path, list(layers) if layers else None)
        n = source.n_samples
    elif getattr(make_probe(probe_name), "reads_tokens", False):
        from repscope.probe._kinds import token_features

        feats, token_shape = token_features(path, layers or None)
    else:
        feats = load_features(path, layers or None)
    if not ranks:
        n = next(iter(feats.values())).shape[0]
    store = None
    if path.is_dir():
        from repscope.store import FeatureStore

        store = FeatureStore.open(path)
    check_labels_file(labels)
    y_raw = load_labels(labels, store=store, n_samples=n)
    shots = _parse_shots(few_shot_spec) if few_shot_spec else None
    seed = settings().seed
    model = model_name(path)

    def make(**kw: Any) -> Any:
        est = make_probe(probe_name, **kw)
        return est.set_params(token_shape=token_shape) if token_shape else est

    factory = make(seed=seed)
    bars = show_progress()
    if ranks:
        res = probe_layers_ranks(source, y_raw, probe=factory, protocol=KFold(folds, seed),
                                 progress=bars)
    else:
        res = probe_layers(feats, y_raw, probe=factory, protocol=KFold(folds, seed),
                           progress=bars)
    best = res.best_layer
    out: dict[str, Any] = {"model": model, "probe": probe_name, "layers": res.to_dict()}
    params = {"probe": probe_name, "n_folds": folds, "seed": seed}
    margins = None
    if hasattr(factory, "angular_margins") and feats is not None:
        from repscope.probe._margin import compare_margins

        # a margin head: its angular margins beside the softmax probe's at the best layer
        margins = compare_margins(feats[best], y_raw, factory.loss, test_size=0.3, seed=seed)
    with settings().db() as db, db.run("probe", {"features": str(path), **params}, model=model,
                                       dataset=dataset) as run_id:
        ctx = {"model": model, "dataset": dataset, "run_id": run_id}
        db.add_many(res.to_records(**ctx, params=params))
        X = None if feats is None else feats[best]  # none under torchrun: refused above
        if margins is not None:
            db.add_many(margins.to_records(**ctx, layer=best,
                                           params={**params, "test_size": 0.3}))
            out["margins"] = {"layer": best, "heads": margins.heads, "edges": margins.edges,
                              "n_train": margins.n_train, "n_test": margins.n_test}
        if shots:
            n_classes = len(np.unique(y_raw))
            fs_factory = make(k=max(1, min(10, min(shots) * n_classes)), seed=seed,
                              small=True)
            fs = few_shot(fs_factory, X, y_raw, shots=shots, n_tries=tries, seed=seed,
                          progress=bars, sampler=shot_sampler)  # type: ignore[arg-type]
            db.add_many(fs.to_records(**ctx, layer=best, params={**params, "n_tries": tries,
                                                                   "sampler": shot_sampler}))
            out["few_shot"] = {"layer": best, **fs.to_dict()}
            out["few_shot"].pop("test_indices", None)
        if do_curve:
            n_classes = len(np.unique(y_raw))
            lc_factory = make(k=max(1, min(10, 2 * n_classes)), seed=seed, small=True)
            lc = learning_curve(lc_factory, X, y_raw, n_repeats=3, seed=seed, progress=bars)
            db.add_many(lc.to_records(**ctx, layer=best, params=params))
            out["learning_curve"] = {"layer": best, **lc.to_dict()}
        if do_calibration:
            cal = _calibrate(factory, X, y_raw, seed)
            db.add_many(cal.to_records(**ctx, layer=best, params=params))
            out["calibration"] = {"layer": best, **cal.to_dict()}
    if as_json:
        echo_json(out)
        return
    print_table([(layer, a, f"[{lo:.3f}, {hi:.3f}]") for layer, a, lo, hi in
                 zip(res.layers, res.accuracy, res.ci_low, res.ci_high)],
                ["layer", "accuracy", "95% interval"],
                title=f"{probe_name} probe: {model} (chance {res.chance:.3f}; best {best})")
    if "margins" in out:
        heads = out["margins"]["heads"]
        print_table([(name, h["accuracy"], h["margin_mean"], h["frac_negative"],
                      h["intra_angle"], h["inter_angle_min"]) for name, h in heads.items()],
                    ["head", "held-out accuracy", "mean margin (deg)", "negative",
                     "angle to class centre", "min angle between classes"],
                    title=f"Angular margins at {best} (one 70/30 split)")
    if "few_shot" in out:
        fs_out = out["few_shot"]
        nan = [float("nan")] * len(fs_out["shots"])
        print_table([(s, m, f"[{lo:.3f}, {hi:.3f}]", e, n) for s, m, lo, hi, e, n in
                     zip(fs_out["shots"], fs_out["mean"], fs_out["ci_low"], fs_out["ci_high"],
                         fs_out.get("ece", nan), fs_out.get("nll", nan))],
                    ["shots/class", "accuracy", "95% interval", "ECE", "NLL"],
                    title=f"Few-shot at {best}")
    if "learning_curve" in out:
        lc_out = out["learning_curve"]
        print_table([(s, m) for s, m in zip(lc_out["sizes"], lc_out["mean"])],
                    ["training size", "accuracy"],
                    title=f"Learning curve at {best} (flat from n={lc_out['reached_at']})")
    if "calibration" in out:
        c = out["calibration"]
        click.echo(f"calibration at {best}: T={c['temperature']:.3g}, ECE "
                   f"{c['ece_before']:.4f} -> {c['ece_after']:.4f}")


def _calibrate(factory: Any, X: Any, y: np.ndarray, seed: int) -> Any:
    """Fit on 60%, temperature on 20% (validation), report on the last 20% (test)."""
    from repscope.probe._calibration import calibration_report
    from repscope.probe._protocols import Holdout, make_estimator

    rest, test = Holdout(0.2, seed).splits(y)[0]
    tr_rel, val_rel = Holdout(0.25, seed + 1).splits(y[rest])[0]
    tr, val = rest[tr_rel], rest[val_rel]
    est = make_estimator(factory).fit(X[tr], y[tr])
    classes = np.asarray(est.classes_)
    return calibration_report(_logits(est, X[val]), np.searchsorted(classes, y[val]),
                              _logits(est, X[test]), np.searchsorted(classes, y[test]))


COMMANDS = [probe]
