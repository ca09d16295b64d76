"""``geometry`` and ``ood`` on two ranks equal one process.

Real features: EfficientNet-Lite0 blocks on 1,000 MNIST images (the session store). One
two-rank launch runs the library code the two commands call under torchrun
(:func:`~repscope.geometry._ranks.geometry_layers_ranks`,
:func:`~repscope.ood._ranks.evaluate_detectors_ranks`); the references are the same functions in
this process (one rank) and the one-process drivers the commands call without torchrun.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from repscope._testing import run_distributed
from repscope.exceptions import RepscopeValueError

GEO_LAYERS = ["_blocks.3", "_blocks.11"]
OOD_LAYERS = ["_blocks.5", "_blocks.11"]
DETECTORS = ["mahalanobis", "relative_mahalanobis", "gmm"]


def _inputs(store: str) -> tuple[Any, np.ndarray, np.ndarray]:
    from repscope.store import load_labels, open_layers

    src = open_layers(store)
    y = np.asarray(load_labels("label", store=src, n_samples=src.n_samples))
    is_ood = ~np.isin(y.astype(str), [str(c) for c in range(5)])  # --id-classes 0-4
    return src, y, is_ood


def _both(store: str, dist: Any = None) -> dict[str, Any]:
    from repscope.geometry._ranks import RANK_MEASURES, geometry_layers_ranks
    from repscope.ood._ranks import evaluate_detectors_ranks
    from repscope.store import open_layers

    _, y, is_ood = _inputs(store)
    geo = geometry_layers_ranks(open_layers(store, GEO_LAYERS), y, list(RANK_MEASURES),
                                coding_rate=True, seed=3, dist=dist)
    osrc = open_layers(store, OOD_LAYERS)
    ood = evaluate_detectors_ranks(osrc, osrc, id_rows=np.flatnonzero(~is_ood),
                                   ood_rows=np.flatnonzero(is_ood), labels=y[~is_ood],
                                   detectors=DETECTORS, seed=3, dist=dist)
    return {"geometry": geo, "ood": ood}


def _rank(rank: int, world_size: int, store: str) -> dict[str, Any]:
    from repscope.distributed import context
    from repscope.geometry._ranks import geometry_layers_ranks
    from repscope.store import open_layers

    dist = context()
    assert dist.world_size == world_size == 2 and dist.rank == rank
    out = _both(store, dist)
    _, y, _ = _inputs(store)
    try:  # a kNN measure refuses on the ranks before any collective
        geometry_layers_ranks(open_layers(store, GEO_LAYERS), y, ["fisher_ratio", "thornton"],
                              dist=dist)
        out["refused"] = ""
    except RepscopeValueError as err:
        out["refused"] = str(err)
    return out


@pytest.fixture(scope="module")
def runs(lite0_mnist) -> dict[str, Any]:
    store = str(lite0_mnist.store)
    return {"two": run_distributed(_rank, store, world_size=2), "one": _both(store),
            "store": store}


def _close(a: float, b: float, rel: float = 1e-10) -> bool:
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def test_geometry_on_two_ranks_equals_one_process(runs) -> None:
    from repscope.geometry._layers import geometry_layers
    from repscope.geometry._ranks import RANK_MEASURES
    from repscope.store import open_layers

    _, y, _ = _inputs(runs["store"])
    # what `repscope geometry` runs without torchrun (reads every layer whole)
    ref = geometry_layers(open_layers(runs["store"], GEO_LAYERS), y, list(RANK_MEASURES),
                          coding_rate=True, seed=3)
    for res in [runs["one"]["geometry"], *(r["geometry"] for r in runs["two"])]:
        assert res.layers == ref.layers and res.measures == ref.measures
        assert res.n_samples == ref.n_samples == 1000
        for i, layer in enumerate(ref.layers):
            for j, m in enumerate(ref.measures):
                assert _close(res.values[i][j], ref.values[i][j]), (layer, m, res.values[i][j],
                                                                    ref.values[i][j])
            c, cr = res.coding_rates[i], ref.coding_rates[i]
            for f in ("rate", "compressed_rate", "rate_reduction", "rate_reduction_shuffled"):
                assert _close(getattr(c, f), getattr(cr, f)), (layer, f)
            assert c.classes == cr.classes and c.class_counts == cr.class_counts
            np.testing.assert_allclose(c.class_rates, cr.class_rates, rtol=1e-10)
    # real, label-dependent values: the shuffled baseline is far below the true rate reduction
    c = ref.coding_rates[1]
    assert c.rate_reduction > 2 * c.rate_reduction_shuffled
    for r in runs["two"]:
        assert "--measure thornton needs every row at once" in r["refused"]
        assert "fisher_ratio" in r["refused"] and "\n" not in r["refused"]


def test_ood_on_two_ranks_equals_one_process(runs) -> None:
    from repscope.ood._evaluate import evaluate_detectors
    from repscope.store import load_features

    _, y, is_ood = _inputs(runs["store"])
    feats = load_features(runs["store"], OOD_LAYERS)
    # what `repscope ood --no-diagnostics` runs without torchrun
    ref = evaluate_detectors({k: v[~is_ood] for k, v in feats.items()},
                             {k: v[is_ood] for k, v in feats.items()}, labels=y[~is_ood],
                             detectors=DETECTORS, diagnostics=False, seed=3)
    for res in [runs["one"]["ood"], *(r["ood"] for r in runs["two"])]:
        assert (res.n_id_fit, res.n_id_test, res.n_ood) == (ref.n_id_fit, ref.n_id_test,
                                                             ref.n_ood)
        assert len(res.entries) == len(ref.entries) == len(OOD_LAYERS) * len(DETECTORS)
        for e, er in zip(res.entries, ref.entries):
            assert (e.detector, e.layer, e.reason) == (er.detector, er.layer, "")
            for f in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "detection_error",
                      "threshold"):
                assert _close(getattr(e.metrics, f), getattr(er.metrics, f)), (e.detector, f)
            assert e.hist_id == er.hist_id and e.hist_ood == er.hist_ood
            np.testing.assert_allclose(e.hist_edges, er.hist_edges, rtol=1e-10)
            np.testing.assert_allclose(e.roc_fpr, er.roc_fpr, rtol=1e-10)
            np.testing.assert_allclose(e.roc_tpr, er.roc_tpr, rtol=1e-10)
    assert min(e.metrics.auroc for e in ref.entries) > 0.6  # real detection, not chance


def test_commands_refuse_what_needs_every_row_on_several_ranks() -> None:
    from repscope.geometry._ranks import check_rank_measures
    from repscope.ood._ranks import check_rank_detectors

    check_rank_measures(["fisher_ratio", "coding_rate"], world_size=2)
    with pytest.raises(RepscopeValueError, match=r"^repscope geometry: the default measure "
                                                 r"set .* runs on one process.*--measure"):
        check_rank_measures((), world_size=2)
    with pytest.raises(RepscopeValueError, match=r"--measure twonn and --persistence needs "
                                                 r"every row at once.*on 4 ranks.*nc_max_angle"):
        check_rank_measures(["fisher_ratio", "twonn"], persistence=True, world_size=4)
    check_rank_detectors(["mahalanobis", "gmm"], diagnostics=False)
    with pytest.raises(RepscopeValueError, match=r"^repscope ood: --detector knn and the "
                                                 r"PT-OOD diagnostics \(pass --no-diagnostics\)"
                                                 r" needs every row.*relative_mahalanobis"):
        check_rank_detectors(["mahalanobis", "knn"], diagnostics=True)
    with pytest.raises(RepscopeValueError, match=r"the default detector set"):
        check_rank_detectors((), diagnostics=False)


def test_geometry_and_ood_commands_are_rank_aware() -> None:
    from repscope.cli._common import RANK_AWARE
    from repscope.cli.geometry import geometry
    from repscope.cli.ood import ood

    for cmd in (geometry, ood):
        assert getattr(cmd.callback, RANK_AWARE, False) is True
