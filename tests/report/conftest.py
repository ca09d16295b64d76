"""Databases holding records of every built-in report section (plus an unknown analysis),
written through the result types' ``to_records`` as the commands and the demo write them;
with ``legacy=True``, the records of the retired ``separability`` and ``cka`` analyses that
databases written before their retirement hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from repscope.db import Record, ResultsDB
from repscope.probe import LayerwiseResult
from repscope.similarity import LayerMatrixResult

HOSTILE = "<script>alert(1)</script>"

LAYERS = ["stem", *(f"blocks.{i}" for i in range(7)), "conv_head", "global_pool"]


def probe_result(layers, accuracy, *, probe: str = "logistic") -> LayerwiseResult:
    """A per-layer probe result as ``probe_layers`` returns it (interval: +-0.02, clipped)."""
    acc = tuple(float(a) for a in accuracy)
    return LayerwiseResult(
        layers=tuple(layers), accuracy=acc,
        ci_low=tuple(max(0.0, a - 0.02) for a in acc),
        ci_high=tuple(min(1.0, a + 0.02) for a in acc),
        std=tuple(0.004 + 0.01 * (1 - a) for a in acc), split_scores=tuple((a,) * 5 for a in acc),
        n_features=(64,) * len(acc), chance=0.1, protocol="KFold(k=5, seed=0)", probe=probe)


def similarity_result(matrix, rows, cols, *, measure: str = "linear_cka") -> LayerMatrixResult:
    """A layer map as ``compare_layers`` returns it (best match per row read off ``matrix``)."""
    m = np.asarray(matrix, dtype=float)
    best = tuple((rows[i], cols[int(np.nanargmax(m[i]))], float(np.nanmax(m[i])))
                 for i in range(m.shape[0]) if np.isfinite(m[i]).any())
    return LayerMatrixResult(values=m, rows=tuple(rows), cols=tuple(cols), measure=measure,
                             higher_is_better=True, symmetric=False, n_samples=1797,
                             best_matches=best)


def fill_demo_db(path: Path, *, hostile: bool = False, seed: int = 0,
                 legacy: bool = False) -> str:
    """Write a plausible demo run into ``path``; returns the run id.

    With ``hostile=True`` a model name, a dataset label and a layer name carry HTML/JS. With
    ``legacy=True`` the per-layer accuracies and the layer map are stored as the retired
    analyses stored them (``separability``: accuracy and its spread per layer; ``cka``: the
    matrix and its row/column layers, no best matches), as in a database written before their
    retirement.
    """
    rng = np.random.default_rng(seed)
    models = ["efficientnet_lite0", "efficientnet_lite1"]
    dataset = "mnist-digits (sklearn)"
    if hostile:
        models[1] = HOSTILE
    with ResultsDB(path) as db:
        run = db.start_run("demo", {"n_samples": 1797, "seed": seed}, model=models[0],
                           dataset=dataset)
        recs = []
        for m_i, model in enumerate(models):
            recs.append(Record("extraction", {"n_samples": 1797, "layers": LAYERS,
                                              "seconds": 41.3 + 9 * m_i,
                                              "store": f"~/.repscope/stores/{model}"},
                               model=model, dataset=dataset, run_id=run))
        depth = np.linspace(0, 1, len(LAYERS))
        for m_i, model in enumerate(models):
            acc = 0.55 + 0.42 * (1 - np.exp(-4 * depth)) - 0.03 * depth**4 + 0.01 * m_i
            if legacy:
                recs += [Record("separability",
                                {"accuracy": float(a), "accuracy_std": 0.004 + 0.01 * (1 - a)},
                                model=model, dataset=dataset, layer=layer, run_id=run,
                                params={"probe": "logistic", "folds": 5})
                         for layer, a in zip(LAYERS, acc)]
            else:
                recs += probe_result(LAYERS, acc).to_records(
                    model=model, dataset=dataset, run_id=run,
                    params={"probe": "logistic", "n_folds": 5, "seed": seed})
        for m_i, model in enumerate(models):
            for l_i, layer in enumerate(LAYERS):
                k = 96 + 32 * l_i
                alpha = 1.6 - 0.9 * depth[l_i] + 0.05 * m_i
                ev = np.arange(1, k + 1, dtype=float) ** -alpha
                ev /= ev.sum()
                p = ev[ev > 0]
                recs.append(Record("pca_spectrum",
                                   {"explained_variance_ratio": ev.astype(np.float32),
                                    "effective_rank": float(np.exp(-(p * np.log(p)).sum()))},
                                   model=model, dataset=dataset, layer=layer, run_id=run))
        n = len(LAYERS)
        ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cka = np.clip(np.exp(-((ii - jj) ** 2) / 6.0) * 0.85 + 0.1
                      + rng.normal(0, 0.02, (n, n)), 0, 1)
        layers_b = [*LAYERS[:-1], HOSTILE] if hostile else LAYERS
        if legacy:
            recs.append(Record("cka", {"matrix": cka, "rows": LAYERS, "cols": layers_b,
                                       "model_a": models[0], "model_b": models[1]},
                               model=models[0], dataset=dataset, run_id=run,
                               params={"measure": "linear_cka", "n_samples": 1797}))
        else:
            recs += similarity_result(cka, LAYERS, layers_b).to_records(
                model_a=models[0], model_b=models[1], dataset=dataset, run_id=run)
        recs.append(Record("mystery_metric", {"score": 0.42, "curve": np.linspace(0, 1, 200),
                                              "note": "plain"},
                           model=models[0], dataset=HOSTILE if hostile else dataset,
                           layer="blocks.3", run_id=run, params={"k": 5}))
        db.add_many(recs)
        db.finish_run(run)
    return run


@pytest.fixture
def demo_db(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "results.db"
    return path, fill_demo_db(path)


@pytest.fixture
def hostile_db(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "hostile" / "results.db"
    return path, fill_demo_db(path, hostile=True)


@pytest.fixture
def legacy_db(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "legacy" / "results.db"
    return path, fill_demo_db(path, legacy=True)


@pytest.fixture
def fill_db():
    """The :func:`fill_demo_db` function (test modules do not import conftest)."""
    return fill_demo_db


@pytest.fixture
def make_probe():
    """The :func:`probe_result` function."""
    return probe_result


@pytest.fixture
def make_layer_map():
    """The :func:`similarity_result` function."""
    return similarity_result
