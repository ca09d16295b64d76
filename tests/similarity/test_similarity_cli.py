"""``repscope similarity`` and ``repscope align`` through CliRunner, on their command objects
(inside a bare RepscopeGroup so library errors become one-line messages, as under ``repscope``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import RepscopeGroup
from repscope.cli._common import Settings
from repscope.cli.align import align
from repscope.cli.similarity import similarity


@pytest.fixture
def app() -> RepscopeGroup:
    group = RepscopeGroup(name="repscope")
    group.add_command(similarity)
    group.add_command(align)
    return group


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(db_path=str(tmp_path / "results.db"), seed=0)


@pytest.fixture
def features(tmp_path) -> tuple[str, str, dict[str, np.ndarray], dict[str, np.ndarray]]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    n = 120
    h0 = rng.standard_normal((n, 6))
    a = {"l0": h0, "l1": np.tanh(h0 @ rng.standard_normal((6, 8))), "l2": rng.standard_normal((n, 5))}
    q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    b = {"m0": rng.standard_normal((n, 4)), "m1": h0 @ q + 0.05 * rng.standard_normal((n, 6))}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({k: v.astype(np.float32) for k, v in a.items()}, str(pa))
    save_file({k: v.astype(np.float32) for k, v in b.items()}, str(pb))
    return str(pa), str(pb), a, b


def _records(settings: Settings, analysis: str) -> list:
    from repscope.db import ResultsDB

    with ResultsDB(settings.db_path) as db:
        return list(db.query(analysis=analysis))


def test_similarity_matrix_json_and_record(app, settings, features) -> None:
    from repscope.similarity import linear_cka

    pa, pb, a, b = features
    res = CliRunner().invoke(app, ["similarity", pa, pb, "--json"], obj=settings)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    M = np.array(out["matrix"], dtype=float)
    assert M.shape == (3, 2)
    assert out["rows"] == ["l0", "l1", "l2"]
    assert out["cols"] == ["m0", "m1"]
    assert M[0, 1] == pytest.approx(linear_cka(a["l0"].astype(np.float32), b["m1"].astype(np.float32)), abs=1e-6)
    assert out["best_matches"][0][:2] == ["l0", "m1"]
    recs = _records(settings, "similarity_matrix")
    assert len(recs) == 1
    assert recs[0].params["measure"] == "linear_cka"
    np.testing.assert_allclose(np.asarray(recs[0].values["matrix"], dtype=float), M)


def test_similarity_permutations_bootstrap_and_layer_selection(app, settings, features) -> None:
    pa, pb, _, _ = features
    res = CliRunner().invoke(app, ["similarity", pa, pb, "--layer-a", "l0", "--layer-a", "l2",
                                   "--layer-b", "m1", "--measure", "linear_cka", "--measure", "procrustes",
                                   "--permutations", "49", "--bootstrap", "30", "--json"], obj=settings)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [o["measure"] for o in out] == ["linear_cka", "procrustes"]
    cka = out[0]
    assert cka["rows"] == ["l0", "l2"]
    assert cka["cols"] == ["m1"]
    s0, s2 = cka["stats"]
    assert s0["p_value"] == pytest.approx(1 / 50)  # a strong pairing beats every permutation
    assert s2["p_value"] > 0.05  # an unrelated layer does not
    assert s0["ci_low"] <= cka["matrix"][0][0] + 1e-9
    assert s0["ci_high"] > s0["ci_low"]
    assert out[1]["higher_is_better"] is False  # a distance: the best match is the smallest


def test_similarity_within_one_model_table_output(app, settings, features) -> None:
    pa, _, _, _ = features
    res = CliRunner().invoke(app, ["similarity", pa, "--measure", "mutual_knn"], obj=settings)
    assert res.exit_code == 0, res.output
    assert "mutual_knn" in res.output
    res = CliRunner().invoke(app, ["similarity", pa], obj=settings)
    assert res.exit_code == 0, res.output
    assert "best layer of a" in res.output
    assert "l0" in res.output


def test_similarity_list_and_bad_input(app, settings, features, tmp_path) -> None:
    pa, _, _, _ = features
    res = CliRunner().invoke(app, ["similarity", "--list"], obj=settings)
    assert "mutual_knn" in res.output
    assert res.exit_code == 0
    assert "linear_cka" in res.output
    res = CliRunner().invoke(app, ["similarity", pa, "--measure", "linear_ckaa"], obj=settings)
    assert res.exit_code == 1
    assert "linear_cka" in res.output
    assert "Traceback" not in res.output
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((10, 3)))
    res = CliRunner().invoke(app, ["similarity", pa, str(short)], obj=settings)
    assert res.exit_code == 1
    assert "needs the same samples on both sides" in res.output and " 10. " in res.output
    res = CliRunner().invoke(app, ["similarity", str(tmp_path / "nope.npy")], obj=settings)
    assert res.exit_code == 1
    assert "does not exist" in res.output


def test_align_command_records_alignment(app, settings, features) -> None:
    pa, pb, _a, _b = features
    res = CliRunner().invoke(app, ["align", pa, pb, "--layer-a", "l0", "--layer-b", "m1",
                                   "--sweep", "1,3,6", "--json"], obj=settings)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["retrieval"]["1"] > 0.95 > out["retrieval_unmapped"]["1"]
    assert out["sweep"]["ks"] == [1, 3, 6]
    assert abs(out["orthogonality_gap"]["gap"]) < 0.05  # the truth is a rotation
    recs = _records(settings, "alignment")
    assert len(recs) == 1
    assert recs[0].layer == "l0 -> m1"
    res = CliRunner().invoke(app, ["align", pa, pb, "--map", "subspace", "--k", "3",
                                   "--layer-a", "l1", "--layer-b", "m1"], obj=settings)
    assert res.exit_code == 0, res.output
    assert "subspace map" in res.output
    assert "unmapped" in res.output


def test_align_bad_input(app, settings, features) -> None:
    pa, pb, _, _ = features
    res = CliRunner().invoke(app, ["align", pa, pb, "--sweep", "a,b"], obj=settings)
    assert res.exit_code == 1
    assert "--sweep must be comma-separated integers" in res.output
    res = CliRunner().invoke(app, ["align", pa, pb, "--layer-a", "zz"], obj=settings)
    assert res.exit_code == 1
    assert "unknown layer 'zz'" in res.output
