"""Cross-probe leakage matrix and k-JEM dependence between sub-spaces."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.geometry._leakage import column_groups, cross_probe
from repscope.probe import KFold


def _two_subspaces(rng, n=600, leak=0.0):
    """10 columns: attribute A lives in columns 0-4, attribute B in 5-9; ``leak`` also writes
    B into the first block."""
    A = rng.integers(0, 2, n)
    B = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 10))
    X[:, 0] += 3.0 * (2 * A - 1)
    X[:, 5] += 3.0 * (B - 1)
    X[:, 6] += 3.0 * (B == 1)
    if leak:
        X[:, 1] += leak * (B - 1)
        X[:, 2] += leak * (B == 1)
    return X, {"A": A, "B": B}


def test_two_subspace_case_gives_a_block_diagonal_leakage_matrix(rng):
    X, attrs = _two_subspaces(rng)
    res = cross_probe(column_groups(X, {"first": (0, 5), "second": slice(5, 10)}), attrs,
                      protocol=KFold(3))
    assert res.groups == ("first", "second") and res.attributes == ("A", "B")
    N = res.normalized
    assert N[0, 0] > 0.9 and N[1, 1] > 0.9
    assert abs(N[0, 1]) < 0.1 and abs(N[1, 0]) < 0.1
    assert res.above_chance.tolist() == [[True, False], [False, True]]
    assert res.leakage({"first": ["A"], "second": ["B"]}) < 0.1


def test_a_leaky_split_is_not_block_diagonal(rng):
    X, attrs = _two_subspaces(rng, leak=3.0)
    res = cross_probe(column_groups(X, {"first": (0, 5), "second": (5, 10)}), attrs,
                      protocol=KFold(3))
    assert res.normalized[0, 1] > 0.5 and bool(res.above_chance[0, 1])
    assert res.leakage({"first": ["A"], "second": ["B"]}) > 0.5


def test_leakage_records_one_per_cell_with_chance_and_interval(rng):
    X, attrs = _two_subspaces(rng, n=300)
    res = cross_probe({"first": X[:, :5], "second": X[:, 5:]}, attrs, protocol=KFold(3),
                      dependence=True)
    recs = res.to_records(model="m", dataset="d", layer="L")
    assert len(recs) == 4 and {r.analysis for r in recs} == {"geometry_leakage"}
    cell = next(r for r in recs if r.values["group"] == "second" and r.values["attribute"] == "B")
    assert cell.values["ci_low"] <= cell.values["accuracy"] <= cell.values["ci_high"]
    assert cell.values["chance"] == pytest.approx(res.chance[1]) and cell.layer == "L"
    # k-JEM of a group with itself is its maximum; the independent blocks depend less
    D = res.dependence
    assert D is not None and D.shape == (2, 2) and D[0, 1] < min(D[0, 0], D[1, 1])


def test_kjem_rises_with_dependence(rng):
    from repscope.similarity import kjem

    X = rng.standard_normal((400, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    values = []
    for noise in (10.0, 1.0, 0.3, 0.1, 0.0):            # decreasing noise = rising dependence
        Y = X @ Q + noise * rng.standard_normal((400, 8)) / np.sqrt(8)
        Y /= np.linalg.norm(Y, axis=1, keepdims=True)
        values.append(kjem(X, Y))
    assert np.all(np.diff(values) > 0)


def test_cross_probe_bad_input(rng):
    X, attrs = _two_subspaces(rng, n=60)
    with pytest.raises(RepscopeValueError, match="same inputs"):
        cross_probe({"a": X[:, :5], "b": X[:50, 5:]}, attrs)
    with pytest.raises(RepscopeValueError, match="one label per sample"):
        cross_probe({"a": X}, {"A": attrs["A"][:10]})
    with pytest.raises(RepscopeValueError, match=r"columns in \[0, 10\)"):
        column_groups(X, {"a": (5, 12)})
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes"):
        cross_probe({"a": X}, {"A": np.zeros(60, dtype=int)})


def test_leakage_report_section_draws_the_matrix_from_records(rng):
    from repscope.geometry._report_tools import render_leakage

    X, attrs = _two_subspaces(rng, n=200)
    res = cross_probe({"first": X[:, :5], "second": X[:, 5:]}, attrs, protocol=KFold(3))
    html = render_leakage(res.to_records(model="m", dataset="d", layer="L"))
    assert "<svg" in html and "first" in html and "second" in html and "leakage" in html
    assert html.count("<tr>") >= 5                      # header + one row per cell


def test_leakage_cli_records_the_matrix_from_a_store(rng, tmp_path):
    import json

    from click.testing import CliRunner

    from repscope.cli._common import Settings
    from repscope.cli.leakage import leakage
    from repscope.db import ResultsDB
    from repscope.store import FeatureStore

    X, attrs = _two_subspaces(rng, n=150)
    store = FeatureStore.create(tmp_path / "s", model_id="toy")
    store.append({"blocks.1": X.astype(np.float32)},
                 {"A": attrs["A"].tolist(), "B": attrs["B"].tolist()})
    db = tmp_path / "r.db"
    runner = CliRunner()
    args = [str(tmp_path / "s"), "--group", "first=blocks.1:0-5", "--group",
            "second=blocks.1:5-10", "--attribute", "A", "--attribute", "B", "--folds", "3",
            "--json"]
    res = runner.invoke(leakage, args, obj=Settings(db_path=str(db)))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    N = np.asarray(out["normalized"])
    assert N[0, 0] > 0.8 and N[1, 1] > 0.8 and abs(N[0, 1]) < 0.2
    with ResultsDB(str(db)) as rdb:
        recs = rdb.query(analysis="geometry_leakage")
    assert len(recs) == 4
    bad = runner.invoke(leakage, [*args[:2], "first=blocks.1:5", *args[3:]],
                        obj=Settings(db_path=str(db)))
    assert bad.exit_code != 0 and "--group columns must be START-STOP" in str(bad.exception)
