"""``repscope ood``: OOD detectors on features from disk, per layer, recorded for the report.

Two feature sets (ID and OOD), or one set split into ID and OOD samples by ``--id-classes``
(with ``--labels``) or by ``--ood-labels`` (a 0/1 file or column: 1 = OOD). Every detector is
fitted on part of the ID samples and scored on the held-out ID samples and the OOD samples
(:func:`repscope.ood.evaluate_detectors`); AUROC, AUPR, FPR at a TPR, detection error, score
histograms and ROC points go to the results database (analyses ``ood`` and
``ood_diagnostics``) and are rendered by ``repscope report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import (
    check_exists,
    dataset_option,
    echo_json,
    features_argument,
    json_option,
    layers_option,
    model_name,
    print_table,
    progress_option,
    rank_aware,
    settings,
    show_progress,
)


def parse_classes(text: str, option: str = "--id-classes") -> list[str]:
    """``"0-4"``, ``"0,2,5-7"`` or ``"cat,dog"`` as the label values they name (strings)."""
    from repscope.exceptions import RepscopeValueError

    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo.strip().lstrip("-").isdigit() and hi.strip().isdigit():
            a, b = int(lo), int(hi)
            if b < a:
                raise RepscopeValueError(
                    f"{option} ranges must go up (e.g. 0-4); got {part!r} in {text!r}.")
            out += [str(v) for v in range(a, b + 1)]
        else:
            out.append(part)
    if not out:
        raise RepscopeValueError(
            f"{option} must name at least one class, e.g. 0-4 or 0,2,5; got {text!r}.")
    return out


def _store_of(path: Path) -> Any:
    from repscope.store._manifest import MANIFEST

    if path.is_dir() and (path / MANIFEST).is_file():
        from repscope.store import FeatureStore

        return FeatureStore.open(path)
    return None


def _labels(spec: str, path: Path, n: int) -> np.ndarray:
    from repscope.cli._errors import check_labels_file
    from repscope.store import load_labels

    check_labels_file(spec)
    return np.asarray(load_labels(spec, store=_store_of(path), n_samples=n))


def _ood_mask(values: np.ndarray) -> np.ndarray:
    from repscope.exceptions import RepscopeValueError

    text = np.char.lower(values.astype(str))
    truthy, falsy = np.isin(text, ["1", "true", "ood", "yes"]), np.isin(
        text, ["0", "false", "id", "no"])
    if not np.all(truthy | falsy):
        bad = sorted(set(text[~(truthy | falsy)].tolist()))[:5]
        raise RepscopeValueError(
            f"--ood-labels must hold 1/0 (or true/false, ood/id) per sample, 1 = OOD; got "
            f"values such as {', '.join(map(repr, bad))}.")
    return truthy


def _list(as_json: bool) -> None:
    from repscope.ood._registry import detector_info, list_detectors

    infos = [detector_info(n) for n in list_detectors()]
    if as_json:
        echo_json([{"name": i.name, "level": i.level, "needs": sorted(i.needs),
                    "paper": i.paper, "summary": i.summary} for i in infos])
        return
    print_table([(i.name, i.level, ", ".join(sorted(i.needs)) or "-", i.summary, i.paper)
                 for i in infos], ["detector", "level", "needs", "what", "paper"],
                title="OOD detectors (scores: higher = more in-distribution)")


@click.command(name="ood")
@rank_aware
@features_argument("id_features", required=False)
@features_argument("ood_features", required=False)
@click.option("--labels", default=None,
              help="Class labels of the ID samples (or of the one store, with --id-classes): "
              "a .npy or text file, or a metadata column of the store.")
@click.option("--id-classes", default=None,
              help="With one feature set: the label values that are ID (e.g. 0-4 or 0,2,7); "
              "every other sample is OOD.")
@click.option("--ood-labels", default=None,
              help="With one feature set: a 0/1 file or column per sample, 1 = OOD.")
@click.option("--detector", "detector_names", multiple=True,
              help="Detector to run (repeatable; default: all; see --list).")
@layers_option("Layer to evaluate (repeatable; default: all).")
@click.option("--level", type=click.Choice(["all", "instance", "class"]), default="all",
              show_default=True,
              help="instance: detectors that compare with individual ID samples (kNN); class: "
              "class statistics or the ID decision boundary.")
@click.option("--positive", type=click.Choice(["ood", "id"]), default="ood", show_default=True,
              help="Positive class of FPR at --tpr (ood: share of ID flagged when --tpr of OOD "
              "is flagged; id: share of OOD accepted when --tpr of ID is accepted).")
@click.option("--tpr", default=0.95, show_default=True, type=float,
              help="True positive rate of the FPR operating point.")
@click.option("--holdout", default=0.3, show_default=True, type=float,
              help="Share of ID samples held out for scoring (the rest fit the detectors).")
@click.option("--no-diagnostics", "no_diagnostics", is_flag=True,
              help="Skip the PT-OOD diagnostics (ID-vs-OOD linear separability, confident "
              "OOD share).")
@click.option("--list", "list_only", is_flag=True, help="List the detectors and exit.")
@dataset_option
@progress_option
@json_option
def ood(id_features: str | None, ood_features: str | None, labels: str | None,
        id_classes: str | None, ood_labels: str | None, detector_names: tuple[str, ...],
        layers: tuple[str, ...], level: str, positive: str, tpr: float, holdout: float,
        no_diagnostics: bool, list_only: bool, dataset: str, as_json: bool) -> None:
    """OOD detection: fit detectors on ID_FEATURES, score held-out ID vs OOD_FEATURES.

    With one feature set, --id-classes (with --labels) or --ood-labels picks the OOD samples,
    e.g. MNIST digits 0-4 as ID and 5-9 as OOD from one store.

    Under torchrun (``torchrun --nproc-per-node N -m repscope ood ... --detector mahalanobis
    --no-diagnostics``) each rank reads its share of the rows, the detectors fitted from class
    moments (mahalanobis, relative_mahalanobis, gmm) fit from all-reduced moments and each
    rank's scores are gathered; the other detectors and the diagnostics run on one process.
    """
    from repscope.distributed import context
    from repscope.exceptions import RepscopeValueError
    from repscope.ood._evaluate import evaluate_detectors
    from repscope.store import load_features, open_layers

    if list_only:
        _list(as_json)
        return
    if id_features is None:
        raise click.UsageError("Missing argument ID_FEATURES (or pass --list).")
    dist = context()
    if dist.is_distributed:
        from repscope.ood._ranks import check_rank_detectors

        check_rank_detectors(detector_names, diagnostics=not no_diagnostics,
                             world_size=dist.world_size)
    path = check_exists(id_features, "ID_FEATURES")
    if dist.is_distributed:  # each rank reads its share of the rows later, never all of them
        src = open_layers(path, layers or None)
        feats: dict[str, Any] = {}
        n = int(src.n_samples)
    else:
        feats = load_features(path, layers or None)
        n = next(iter(feats.values())).shape[0]
    y_id: np.ndarray | None = None
    split_note = ""
    is_ood: np.ndarray | None = None
    if ood_features is not None:
        if id_classes or ood_labels:
            raise RepscopeValueError(
                "--id-classes and --ood-labels split one feature set; with OOD_FEATURES given "
                "leave them out.")
        ood_path = check_exists(ood_features, "OOD_FEATURES")
        if dist.is_distributed:
            src_ood = open_layers(ood_path, list(src.layers))
        else:
            feats_ood = load_features(ood_path, list(feats))
            feats_id = feats
        if labels:
            y_id = _labels(labels, path, n)
    else:
        if bool(id_classes) == bool(ood_labels):
            raise RepscopeValueError(
                "give OOD_FEATURES, or one feature set with exactly one of --id-classes "
                "(with --labels) or --ood-labels to pick its OOD samples.")
        y_all = _labels(labels, path, n) if labels else None
        if id_classes:
            if y_all is None:
                raise RepscopeValueError("--id-classes needs --labels (the class of each "
                                         "sample).")
            wanted = parse_classes(id_classes)
            known = sorted({str(v) for v in y_all.tolist()})
            missing = [c for c in wanted if c not in known]
            if missing:
                raise RepscopeValueError(
                    f"--id-classes names {', '.join(missing)}, not among the labels "
                    f"({', '.join(known[:20])}).")
            is_ood = ~np.isin(y_all.astype(str), wanted)
            split_note = f"ID classes {id_classes}"
        else:
            is_ood = _ood_mask(_labels(str(ood_labels), path, n))
            split_note = f"OOD from {ood_labels}"
        if is_ood.all() or not is_ood.any():
            raise RepscopeValueError(
                f"the split ({split_note}) leaves {int((~is_ood).sum())} ID and "
                f"{int(is_ood.sum())} OOD samples; both need at least one.")
        if not dist.is_distributed:
            feats_id = {k: v[~is_ood] for k, v in feats.items()}
            feats_ood = {k: v[is_ood] for k, v in feats.items()}
        y_id = y_all[~is_ood] if y_all is not None else None
    seed = settings().seed
    # every layer is scored (and every rank's scores gathered) before the run opens, so bad
    # input, or a rank that stops, records nothing
    if dist.is_distributed:
        from repscope.ood._ranks import evaluate_detectors_ranks

        res = evaluate_detectors_ranks(
            src, src if is_ood is not None else src_ood,
            id_rows=None if is_ood is None else np.flatnonzero(~is_ood),
            ood_rows=None if is_ood is None else np.flatnonzero(is_ood), labels=y_id,
            detectors=list(detector_names), level=level,  # type: ignore[arg-type]
            id_test_fraction=holdout, positive=positive, tpr=tpr,  # type: ignore[arg-type]
            seed=seed, dist=dist)
    else:
        res = evaluate_detectors(
            feats_id, feats_ood, labels=y_id, detectors=list(detector_names) or None,
            level=level,  # type: ignore[arg-type]
            id_test_fraction=holdout, diagnostics=not no_diagnostics,
            positive=positive, tpr=tpr, seed=seed,  # type: ignore[arg-type]
            progress=show_progress())
    model = model_name(path)
    params = {"level": level, "positive": positive, "tpr": tpr, "holdout": holdout,
              "seed": seed, "split": split_note or "two feature sets"}
    with settings().db() as db, db.run(
            "ood", {"id_features": str(path), "ood_features": str(ood_features or ""),
                    **params}, model=model, dataset=dataset) as run_id:
        db.add_many(res.all_records(model=model, dataset=dataset, run_id=run_id,
                                   params=params))
    if as_json:
        out = res.to_dict()
        out["model"] = model
        echo_json(out)
        return
    rows: list[tuple[Any, ...]] = []
    for e in res.entries:
        if e.metrics is None:
            rows.append((e.detector, e.layer or "(all)", "-", "-", "-", e.reason))
        else:
            m = e.metrics
            rows.append((e.detector, e.layer or "(all)", m.auroc, m.fpr_at_tpr, m.aupr_out,
                         ""))
    pct = f"{100 * tpr:g}"
    print_table(rows, ["detector", "layer", "AUROC", f"FPR@{pct}", "AUPR-out", "note"],
                title=f"OOD detection: {model} ({res.n_id_test} held-out ID vs {res.n_ood} "
                f"OOD; FPR with {positive} positive)")
    if res.diagnostics is not None:
        d = res.diagnostics
        print_table([(layer, a, c) for layer, a, c in
                     zip(d.layers, d.separability_accuracy, d.confident_ood)],
                    ["layer", "ID-vs-OOD linear probe (balanced acc.)",
                     f"OOD with confidence >= {d.confidence:g}"],
                    title="PT-OOD diagnostics")


COMMANDS = [ood]
