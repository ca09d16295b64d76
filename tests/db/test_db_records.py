"""Records in and out of the results database: values, arrays, filters, runs, export."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math

import numpy as np
import pytest

from repscope.db import Record, ResultsDB, default_db_path
from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError


@pytest.fixture
def db(tmp_path):
    with ResultsDB(tmp_path / "results.db") as database:
        yield database


def test_default_path_follows_repscope_home(tmp_path, monkeypatch):
    monkeypatch.delenv("REPSCOPE_DB", raising=False)
    monkeypatch.setenv("REPSCOPE_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "results.db"
    with ResultsDB() as database:
        assert database.path == tmp_path / "home" / "results.db"
        assert database.path.exists()


def test_directory_path_means_results_db_inside(tmp_path):
    with ResultsDB(tmp_path) as database:
        assert database.path == tmp_path / "results.db"


def test_database_uses_wal_journal(db):
    mode = db._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_scalar_values_round_trip_with_nan_and_inf(db):
    values = {"a": 1.5, "nan": math.nan, "inf": math.inf, "ninf": -math.inf, "i": np.int64(3),
              "f32": np.float32(0.25), "s": "nan", "b": True, "none": None, "nested": {"x": [1, 2]}}
    db.add(Record("scalars", values))
    got = db.query()[0].values
    assert math.isnan(got["nan"])
    assert got["inf"] == math.inf
    assert got["ninf"] == -math.inf
    assert got["s"] == "nan"  # a string stays a string
    assert got["i"] == 3
    assert isinstance(got["i"], int)
    assert got["f32"] == 0.25
    assert got["b"] is True
    assert got["none"] is None
    assert got["nested"] == {"x": [1, 2]}


def test_non_mapping_value_is_wrapped(db):
    db.add(Record("single", 0.5))
    assert db.query()[0].values == {"value": 0.5}


def test_large_array_is_stored_by_reference_and_round_trips(db):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((40, 30)).astype(np.float32)
    big[0, 0] = np.nan
    db.add(Record("cka", {"matrix": big, "small": np.arange(4)}, layer="l1"))
    rec = db.query()[0]
    ref = rec.raw_values["matrix"]
    assert set(ref) == {"$array", "shape", "dtype"}
    assert ref["shape"] == [40, 30]
    assert ref["dtype"] == "float32"
    raw_json = db._conn.execute("SELECT vals FROM records").fetchone()[0]
    assert len(raw_json) < 400  # the JSON holds the reference, not the 1,200 numbers
    path = db.arrays.path(ref["$array"])
    assert path.parent == db.path.parent / "arrays"
    assert path.suffix == ".npy"
    got = rec.values["matrix"]
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, big)  # NaN in the same place
    np.testing.assert_array_equal(rec.values["small"], np.arange(4))
    assert rec.values["small"].dtype == np.int64


def test_identical_arrays_share_one_file(db):
    arr = np.ones((100,))
    db.add_many([Record("a", {"x": arr}), Record("b", {"x": arr.copy()})])
    assert len(list(db.arrays.root.glob("*.npy"))) == 1


def test_torch_tensor_values_are_stored_as_arrays(db):
    torch = pytest.importorskip("torch")
    db.add(Record("t", {"w": torch.arange(200, dtype=torch.float32), "s": torch.tensor(2.0)}))
    vals = db.query()[0].values
    np.testing.assert_array_equal(vals["w"], np.arange(200, dtype=np.float32))
    assert vals["s"] == 2.0


def test_unstorable_value_raises_with_key_name(db):
    with pytest.raises(RepscopeTypeError, match=r"values\['bad'\] has type object"):
        db.add(Record("x", {"bad": object()}))


def test_dollar_keys_are_reserved(db):
    with pytest.raises(RepscopeTypeError, match="reserved for array references"):
        db.add(Record("x", {"$array": "abc"}))


def test_empty_analysis_name_is_rejected():
    with pytest.raises(RepscopeValueError, match="'analysis' parameter of Record"):
        Record("", {"a": 1})


def test_tampered_array_file_is_detected(db):
    db.add(Record("x", {"m": np.zeros(500)}))
    rec = db.query()[0]
    db.arrays.path(rec.raw_values["m"]["$array"]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="does not match its sha256"):
        _ = rec.values


def test_repscope_db_env_wins_over_home_and_an_explicit_path_over_both(tmp_path, monkeypatch):
    monkeypatch.setenv("REPSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPSCOPE_DB", str(tmp_path / "env" / "mine.db"))
    assert default_db_path() == tmp_path / "env" / "mine.db"
    with ResultsDB() as database:
        assert database.path == tmp_path / "env" / "mine.db"
        assert database.path.exists()
    with ResultsDB(tmp_path / "explicit.db") as database:
        assert database.path == tmp_path / "explicit.db"
    assert not (tmp_path / "home" / "results.db").exists()
    monkeypatch.setenv("REPSCOPE_DB", "  ")  # blank: as if unset
    assert default_db_path() == tmp_path / "home" / "results.db"


def _fill(db):
    run_a = db.start_run("probe", {"C": 1.0}, model="m1", dataset="d")
    run_b = db.start_run("probe", {"C": 2.0}, model="m2", dataset="d")
    recs = []
    for run, model, base in ((run_a, "m1", 0.5), (run_b, "m2", 0.6)):
        for i, layer in enumerate(("l0", "l1", "l2")):
            recs.append(Record("separability", {"accuracy": base + 0.1 * i, "accuracy_std": 0.01},
                               model=model, dataset="d", layer=layer, run_id=run))
        recs.append(Record("extraction", {"n_samples": 10}, model=model, dataset="d", run_id=run))
    db.add_many(recs)
    db.finish_run(run_a)
    db.finish_run(run_b, "failed", notes="oom")
    return run_a, run_b


def test_query_filters(db):
    _run_a, run_b = _fill(db)
    assert len(db.query()) == 8
    assert len(db.query(analysis="separability")) == 6
    assert [r.layer for r in db.query(analysis="separability", model="m1")] == ["l0", "l1", "l2"]
    assert len(db.query(layer=["l0", "l2"])) == 4
    assert len(db.query(run_id=run_b)) == 4
    assert db.query(analysis="separability", model="m2", layer="l1")[0].values["accuracy"] == (
        pytest.approx(0.7))
    assert db.query(dataset="other") == []
    assert len(db.query(limit=3)) == 3
    assert db.query(limit=1, newest_first=True)[0].analysis == "extraction"
    assert len(db.query(since=dt.timedelta(hours=1))) == 8
    assert db.query(since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == []
    assert len(db.query(since="2000-01-01")) == 8
    assert db.count(analysis="extraction") == 2
    ids = [r.id for r in db.query()]
    assert ids == sorted(ids)
    assert len(set(ids)) == 8


def test_bad_since_raises(db):
    with pytest.raises(ValueError, match="ISO 8601"):
        db.query(since="yesterday")


def test_runs_and_latest_run(db):
    run_a, run_b = _fill(db)
    runs = db.runs()
    assert [r.id for r in runs] == [run_b, run_a]
    assert runs[0].status == "failed"
    assert runs[0].notes == "oom"
    assert runs[0].n_records == 4
    assert runs[1].status == "ok"
    assert runs[1].params == {"C": 1.0}
    assert runs[1].finished
    assert runs[1].model == "m1"
    assert runs[1].host
    assert runs[1].version
    assert db.latest_run().id == run_b
    assert db.latest_run("probe").id == run_b
    assert db.latest_run("other") is None
    assert len(db.runs(limit=1)) == 1
    assert db.get_run(run_a).command == "probe"


def test_run_context_manager_marks_failure(db):
    with pytest.raises(RuntimeError), db.run("boom") as run_id:
        raise RuntimeError("x")
    assert db.get_run(run_id).status == "failed"
    with db.run("fine") as run_ok:
        pass
    assert db.get_run(run_ok).status == "ok"


def test_unknown_run_errors(db):
    with pytest.raises(UnknownNameError, match="unknown run 'nope'"):
        db.finish_run("nope")
    with pytest.raises(RepscopeValueError, match="refer to a run that is not in"):
        db.add(Record("x", {"a": 1}, run_id="nope"))
    assert db.count() == 0  # nothing half-written
    with pytest.raises(ValueError, match="'status' parameter of finish_run"):
        db.finish_run("nope", "done")  # type: ignore[arg-type]


def test_compare_side_by_side(db):
    run_a, run_b = _fill(db)
    rows = db.compare("separability", runs=[run_a, run_b], value="accuracy")
    assert [r["layer"] for r in rows] == ["l0", "l1", "l2"]
    assert rows[1][run_a] == pytest.approx(0.6)
    assert rows[1][run_b] == pytest.approx(0.7)
    assert rows[2]["delta"] == pytest.approx(0.1)
    default = db.compare("separability")  # two latest runs
    assert list(default[0])[1:] == [run_a, run_b]
    assert default[0][run_a] == {"accuracy": 0.5, "accuracy_std": 0.01}
    by_model = db.compare("separability", key=("model", "layer"), runs=[run_a, run_b],
                          value="accuracy")
    assert len(by_model) == 6
    assert by_model[0][run_b] is None


def test_export_json_round_trip(db, tmp_path):
    _fill(db)
    db.add(Record("cka", {"matrix": np.full((10, 10), 0.5), "bad": math.nan}, model="m1"))
    out = db.export(tmp_path / "out.json")
    data = json.loads(out.read_text())  # strict JSON: json.loads would accept NaN, so check
    assert "NaN" not in out.read_text()
    stored = db.query()
    assert [d["id"] for d in data] == [r.id for r in stored]
    assert data == [r.to_dict() for r in stored]
    cka = data[-1]
    assert cka["values"]["bad"] == "nan"
    assert cka["values"]["matrix"][3][4] == 0.5
    only = json.loads(db.export(tmp_path / "sep.json", analysis="separability").read_text())
    assert {d["analysis"] for d in only} == {"separability"}
    assert len(only) == 6


def test_export_csv_round_trip(db, tmp_path):
    _fill(db)
    out = db.export(tmp_path / "out.csv", model="m2")
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    stored = db.query(model="m2")
    assert len(rows) == len(stored) == 4
    for row, rec in zip(rows, stored):
        assert int(row["id"]) == rec.id
        assert row["layer"] == rec.layer
        assert row["analysis"] == rec.analysis
        assert row["run_id"] == rec.run_id
        assert json.loads(row["values"]) == rec.to_dict()["values"]
        assert json.loads(row["params"]) == rec.params
    assert float(rows[0]["values.accuracy"]) == pytest.approx(0.6)
    assert rows[-1]["values.accuracy"] == ""


def test_export_rejects_unknown_format(db, tmp_path):
    with pytest.raises(ValueError, match="'fmt' parameter of export"):
        db.export(tmp_path / "x.txt", fmt="xml")  # type: ignore[arg-type]
