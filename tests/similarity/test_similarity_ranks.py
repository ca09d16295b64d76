"""``similarity`` (linear CKA), ``analyze spectrum`` and ``align`` on two ranks equal one process.

Real features: MiniLM-L6 on 1,200 Austen paragraphs. Store A is the session store with sample
ids added; store B holds four of its layers in a shuffled order with the same ids, so every
comparison pairs the samples by id (B read row by row in A's order). Three launches in all: the
``similarity`` command on one process and under ``torchrun`` on two ranks, and one two-rank
run of the library code the ``spectrum`` and ``align`` commands call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope._testing import cli_env, run_cli_ranks, run_distributed
from repscope.exceptions import RepscopeValueError

B_LAYERS = ["encoder.layer.1", "encoder.layer.2", "encoder.layer.3", "encoder.layer.4"]
ALIGN_LAYERS = ("encoder.layer.3", "encoder.layer.4")


@pytest.fixture(scope="module")
def stores(minilm_austen, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """(A with ids, B = four of A's layers with the same ids in a shuffled order, the
    shuffle: B's row ``i`` is A's row ``perm[i]``)."""
    from repscope.store import FeatureStore

    src = FeatureStore.open(minilm_austen.store, verify="none")
    n = src.n_samples
    ids = np.array([f"p{i}" for i in range(n)])
    perm = np.random.default_rng(1).permutation(n)
    root = tmp_path_factory.mktemp("ranks")
    out = []
    for name, order, layers in (("a", np.arange(n), src.layers), ("b", perm, B_LAYERS)):
        store = FeatureStore.create(root / f"{name}.store", model_id=f"minilm-{name}")
        store.append({layer: src.read(layer, order) for layer in layers},
                     {"id": ids[order].tolist()})
        out.append(root / f"{name}.store")
    return out[0], out[1], perm


def _matrix(db: Path) -> dict[str, Any]:
    from repscope.db import ResultsDB

    with ResultsDB(db) as rdb:
        records = list(rdb.query(analysis="similarity_matrix"))
    assert len(records) == 1
    return dict(records[0].values)


def test_similarity_linear_cka_on_two_ranks_equals_one_process(stores, tmp_path) -> None:
    a, b, _ = stores
    args = ["similarity", str(a), str(b), "--measure", "cka", "--dataset", "austen"]
    out = {}
    for w in (1, 2):
        db = tmp_path / f"w{w}.db"
        res = run_cli_ranks(args, w, cli_env(db))
        assert res.returncode == 0, res.stderr[-2000:]
        assert "reordered by id" in res.stderr
        out[w] = _matrix(db)
    one, two = out[1], out[2]
    m1, m2 = np.asarray(one["matrix"]), np.asarray(two["matrix"])
    assert m1.shape == (7, 4) and two["cols"] == B_LAYERS == one["cols"]
    np.testing.assert_allclose(m2, m1, rtol=1e-10, atol=0)
    assert two["n_samples"] == one["n_samples"] == 1200
    assert [r[:2] for r in two["best_matches"]] == [r[:2] for r in one["best_matches"]]
    # paired by id: A's copy of each of B's layers matches it exactly (shuffled rows would not)
    for j, layer in enumerate(B_LAYERS):
        i = one["rows"].index(layer)
        assert m2[i, j] == pytest.approx(1.0, abs=1e-12)
        assert m2[i].max() == m2[i, j]


def _spectrum_and_align(rank: int, world_size: int, a: str, b: str) -> dict[str, Any]:
    """What ``analyze spectrum`` and ``align`` compute on each rank (their own helpers), and
    the refusals of the measures that need every row."""
    from repscope.cli.align import _align_on_ranks
    from repscope.distributed import context
    from repscope.similarity._layers import compare_layers
    from repscope.stats import layer_spectrum
    from repscope.store import open_layers

    dist = context()
    assert dist.world_size == world_size == 2 and dist.rank == rank
    src = open_layers(a)
    spectra = {layer: layer_spectrum(src, layer, dist=dist) for layer in src.layers}
    aligned = {}
    for kind in ("orthogonal", "linear"):
        ev, _, _ = _align_on_ranks(Path(a), Path(b), *ALIGN_LAYERS, "id", map=kind,
                                   n_train=None, seed=3, scale=kind == "orthogonal")
        aligned[kind] = ev
    try:
        compare_layers(src, None, "rbf_cka", dist=dist)
        refused = ""
    except RepscopeValueError as err:
        refused = str(err)
    return {"spectra": spectra, "align": aligned, "refused": refused}


def test_spectrum_and_align_on_two_ranks_equal_one_process(stores) -> None:
    from repscope.align import evaluate_alignment
    from repscope.stats import pca_spectrum
    from repscope.store import load_features

    a, b, perm = stores
    ranks = run_distributed(_spectrum_and_align, str(a), str(b), world_size=2)
    fa = load_features(a)
    fb = load_features(b)
    X = fa[ALIGN_LAYERS[0]]
    Y = fb[ALIGN_LAYERS[1]][np.argsort(perm)]  # B in A's order
    for out in ranks:
        assert "'rbf_cka'" in out["refused"] and "runs on one process" in out["refused"]
        assert list(out["spectra"]) == list(fa)
        for layer, s in out["spectra"].items():
            ref = pca_spectrum(fa[layer])
            assert s.n_samples == ref.n_samples == 1200
            top = ref.explained_variance_ratio[0]
            np.testing.assert_allclose(s.explained_variance_ratio, ref.explained_variance_ratio,
                                       rtol=1e-10, atol=1e-12 * top)
            for f in ("effective_rank", "participation_ratio"):
                assert getattr(s, f) == pytest.approx(getattr(ref, f), rel=1e-10), (layer, f)
            assert s.n_components_90 == ref.n_components_90
        for kind, ev in out["align"].items():
            ref = evaluate_alignment(X, Y, map=kind, seed=3, scale=kind == "orthogonal",
                                     retrieval=False)
            assert ev.retrieval == ref.retrieval == {} and np.isnan(ev.matching)
            assert (ev.n_train, ev.n_test) == (ref.n_train, ref.n_test) == (600, 600)
            assert ev.params == ref.params
            for f in ("cosine", "cosine_unmapped", "r2", "kernel_agreement"):
                assert getattr(ev, f) == pytest.approx(getattr(ref, f), rel=1e-10), (kind, f)
            for f, v in ref.orthogonality_gap.items():
                assert ev.orthogonality_gap[f] == pytest.approx(v, rel=1e-10), (kind, f)
            assert ev.r2 > 0.3  # a real map, not a misaligned pairing (about 0 or below)


def test_commands_refuse_what_needs_every_row_on_several_ranks() -> None:
    from repscope.cli.align import _refuse_on_ranks as refuse_align
    from repscope.cli.similarity import _refuse_on_ranks as refuse_similarity

    refuse_similarity(("linear_cka",), 0, 0, 2)
    with pytest.raises(RepscopeValueError, match=r"--measure rbf_cka and --permutations needs "
                                                 r"every row at once.*only --measure linear_cka"):
        refuse_similarity(("linear_cka", "rbf_cka"), 100, 0, 2)
    refuse_align("orthogonal", "random", "", False, 2)
    with pytest.raises(RepscopeValueError, match=r"--anchors dpp and top-k retrieval and "
                                                 r"matching \(--top\) needs every pair.*"
                                                 r"--no-retrieval"):
        refuse_align("linear", "dpp", "", True, 2)
