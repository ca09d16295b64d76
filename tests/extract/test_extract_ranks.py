"""Extraction by rank: ``torchrun -m repscope extract`` on 2 gloo ranks writes a store made of
two parts that equals the one-process store array for array and row for row; a rank killed
mid-extraction makes the other stop with a clear error and a rerun completes the same store;
bad set-ups (another world size, another model's part, ranks with other arguments) are named
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from repscope._testing import cli_env, free_port, run_cli_ranks
from repscope.exceptions import RepscopeValueError
from repscope.store import FeatureStore

pytestmark = pytest.mark.real

N, BATCH, CHUNK = 66, 4, 8  # 9 chunks (the last of 2 rows): 2 ranks take 4 and 5 chunks


def _args(out: Path, *extra: str) -> list[str]:
    return ["extract", "minilm-l6", "--dataset", "austen", "--n-samples", str(N),
            "--batch-size", str(BATCH), "--chunk-size", str(CHUNK), "--out", str(out), *extra]


def _assert_same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert (a.n_samples, a.layers, a.model_id) == (b.n_samples, b.layers, b.model_id)
    for layer in a.layers:
        x, y = a.read(layer), b.read(layer)
        assert x.dtype == y.dtype and np.array_equal(x, y), layer
    ma, mb = a.metadata(), b.metadata()
    assert set(ma) == set(mb) == {"label", "id", "text"}
    for col in ma:
        assert np.array_equal(ma[col], mb[col]), col


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("extract-one")
    done = run_cli_ranks(_args(tmp / "store"), 1, cli_env(tmp / "r.db"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "store"


def test_two_ranks_write_the_one_process_store(one_rank: Path, tmp_path: Path) -> None:
    done = run_cli_ranks(_args(tmp_path / "store"), 2, cli_env(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr[-3000:]
    store = FeatureStore.open(tmp_path / "store", verify="full")
    parts = store._m["parts"]
    # contiguous runs of whole chunks, in rank order: 4 chunks (32 rows) and 5 (34 rows)
    assert [(p["rank"], p["start"], p["stop"]) for p in parts] == [(0, 0, 32), (1, 32, N)]
    assert [(c["start"], c["stop"]) for c in store._m["chunks"]] == [
        (s, min(s + CHUNK, N)) for s in range(0, N, CHUNK)]
    _assert_same_store(FeatureStore.open(one_rank), store)
    # rank 0 alone wrote the run record; the output was printed once
    import sqlite3

    with sqlite3.connect(tmp_path / "r.db") as db:
        runs = db.execute("SELECT command, status FROM runs").fetchall()
    assert runs == [("extract", "ok")]
    assert done.stdout.count(f"wrote {N} samples") == 1
    with pytest.raises(RepscopeValueError, match="extracted by 2 ranks and is read-only"):
        FeatureStore.create(tmp_path / "store", model_id=store.model_id, exist_ok=True)


def test_a_killed_rank_stops_the_other_and_a_rerun_completes(
    one_rank: Path, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    env = cli_env(tmp_path / "r.db", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                  WORLD_SIZE="2", OMP_NUM_THREADS="1", REPSCOPE_NO_PROGRESS="1",
                  REPSCOPE_DIST_TIMEOUT="60")
    cmd = [sys.executable, "-m", "repscope", *_args(out)]
    # the torchrun environment set by hand: no elastic agent to kill the survivor for us
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        manifest = out / "parts" / "rank-00001-of-00002" / "manifest.json"
        deadline = time.monotonic() + 120
        while not (manifest.is_file() and json.loads(manifest.read_text())["n_samples"] > 0):
            assert procs[1].poll() is None, procs[1].communicate()[1][-2000:]
            assert time.monotonic() < deadline, "rank 1 wrote no chunk within 120 s"
            time.sleep(0.02)
        os.kill(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert procs[0].returncode == 1 and waited < 60
    assert "rank 0 of 2" in err and "another rank stopped" in err and "run the same command" in err
    assert not (out / "manifest.json").exists()  # no half-joined store
    assert not (tmp_path / "r.db").exists()  # nothing recorded
    part = FeatureStore.open(out / "parts" / "rank-00001-of-00002")
    assert 0 < part.n_samples < N - 32  # rank 1 stopped inside its share
    done = run_cli_ranks(_args(out), 2, cli_env(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_store(FeatureStore.open(one_rank), FeatureStore.open(out, verify="full"))


def test_ranks_with_other_arguments_are_refused(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "r.db", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                  WORLD_SIZE="2", OMP_NUM_THREADS="1", REPSCOPE_DIST_TIMEOUT="60")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "repscope", *_args(tmp_path / "s", "--batch-size", str(4 + r))],
        env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for r in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [1, 1]
    assert all("the ranks disagree on the repscope version and the command's arguments" in e
               and "rank(s) [1]" in e for e in errs), errs
    assert not (tmp_path / "s").exists()


def test_a_command_that_runs_in_one_process_is_refused_under_torchrun(tmp_path: Path) -> None:
    done = run_cli_ranks(["report", "--out", str(tmp_path / "r.html")], 2,
                         cli_env(tmp_path / "r.db"))
    assert done.returncode != 0
    assert "'repscope report' runs in one process; launch it without torchrun" in done.stderr
    assert "extract" in done.stderr  # names the commands that do run on every rank
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- parts, without launching ranks
def _part(root: Path, rank: int, world: int, start: int, stop: int, model: str = "toy",
          width: int = 3) -> None:
    from repscope.extract._parts import PARTS_DIR, part_name

    x = np.arange(start, stop, dtype=np.float32)[:, None] * np.ones(width, np.float32)
    with FeatureStore.create(root / PARTS_DIR / part_name(rank, world), model_id=model,
                             attrs={"part": {"rank": rank, "world_size": world, "start": start,
                                             "stop": stop}}) as s:
        for a in range(0, stop - start, 4):
            s.append({"h": x[a:a + 4]}, metadata={"id": [str(i) for i in range(
                start + a, min(start + a + 4, stop))]})


def test_joined_parts_read_as_one_store_in_input_order(tmp_path: Path) -> None:
    from repscope.extract._parts import join_parts

    _part(tmp_path, 0, 2, 0, 6)
    _part(tmp_path, 1, 2, 6, 13)
    join_parts(tmp_path, [(0, 6), (6, 13)])
    store = FeatureStore.open(tmp_path, verify="full")
    assert store.n_samples == 13 and store.n_chunks == 4
    np.testing.assert_array_equal(store.read("h")[:, 0], np.arange(13))
    np.testing.assert_array_equal(store.read("h", [12, 0, 7])[:, 0], [12, 0, 7])
    assert list(store.metadata("id")["id"]) == [str(i) for i in range(13)]
    batches = list(store.iter_batches("h", 5, start=3))
    np.testing.assert_array_equal(np.concatenate(batches)[:, 0], np.arange(3, 13))


def test_a_part_of_another_model_or_an_unfinished_part_is_refused(tmp_path: Path) -> None:
    from repscope.extract._parts import join_parts

    _part(tmp_path / "a", 0, 2, 0, 6)
    _part(tmp_path / "a", 1, 2, 6, 13, model="other")
    with pytest.raises(RepscopeValueError, match="rank-00001-of-00002 was written with other "
                       "model than the first part"):
        join_parts(tmp_path / "a", [(0, 6), (6, 13)])
    _part(tmp_path / "b", 0, 2, 0, 6)
    _part(tmp_path / "b", 1, 2, 6, 10)
    with pytest.raises(RepscopeValueError, match="holds 4 samples, not the 7 of rank 1's share"):
        join_parts(tmp_path / "b", [(0, 6), (6, 13)])
    _part(tmp_path / "c", 0, 2, 0, 6)
    with pytest.raises(RepscopeValueError, match="rank 1 did not write it"):
        join_parts(tmp_path / "c", [(0, 6), (6, 13)])
    assert not any((tmp_path / d / "manifest.json").exists() for d in "abc")


def test_a_rerun_with_another_world_size_is_refused(tmp_path: Path) -> None:
    from repscope.extract._parts import check_parts_root

    _part(tmp_path, 0, 3, 0, 4)
    check_parts_root(tmp_path, 3)  # the same world size resumes
    with pytest.raises(RepscopeValueError, match="holds parts written by 3 ranks .* this run has "
                       "2. Resume it with torchrun --nproc-per-node 3"):
        check_parts_root(tmp_path, 2)
    with pytest.raises(RepscopeValueError, match="holds the parts of an extraction on several "
                       "ranks that has not finished"):
        FeatureStore.create(tmp_path, model_id="toy")
    with FeatureStore.create(tmp_path / "single", model_id="toy") as s:
        s.append({"h": np.zeros((2, 3), np.float32)})
    with pytest.raises(RepscopeValueError, match="holds a store that one process extracted"):
        check_parts_root(tmp_path / "single", 2)


def test_a_parted_manifest_cannot_name_files_outside_its_parts(tmp_path: Path) -> None:
    from repscope.exceptions import CorruptStoreError
    from repscope.extract._parts import join_parts

    _part(tmp_path, 0, 1, 0, 5)
    join_parts(tmp_path, [(0, 5)])
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["chunks"][0]["shards"]["h"]["file"] = "parts/elsewhere/layers/h/chunk-000000.safetensors"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptStoreError, match="chunk 0 shard of layer 'h'"):
        FeatureStore.open(tmp_path)


def _extract_toy(rank: int, world: int, root: str, n: int, chunk: int) -> list[int]:
    import torch

    from repscope.extract import extract_to_store

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4) / (n * 4)
    store = extract_to_store(net, x, root, ["0", "2"], batch_size=2, chunk_size=chunk,
                             progress=False, metadata={"i": list(range(n))})
    return [int(v) for v in store.metadata("i")["i"]]


def test_library_extraction_on_two_ranks_with_uneven_shares(tmp_path: Path) -> None:
    """extract_to_store under an initialised group shards by rank; 11 rows in chunks of 3
    (4 chunks, the last of 2 rows) split 2 + 2 chunks; a third rank would get a share of 1."""
    from repscope._testing import run_distributed

    run_distributed(_extract_toy, str(tmp_path / "two"), 11, 3, world_size=2, timeout=120)
    run_distributed(_extract_toy, str(tmp_path / "one"), 11, 3, world_size=1, timeout=120)
    a, b = FeatureStore.open(tmp_path / "one"), FeatureStore.open(tmp_path / "two")
    assert [p["stop"] - p["start"] for p in b._m["parts"]] == [6, 5]
    for layer in ("0", "2"):
        np.testing.assert_array_equal(a.read(layer), b.read(layer))
    assert list(b.metadata("i")["i"]) == list(range(11))


_LOST_PEER = """
import os, sys, time
import numpy as np
from repscope.distributed import launch
ctx = launch()
if ctx.rank == 1:
    os._exit(0)  # gone without a word, as a killed rank
time.sleep(1.0)
from repscope.cli._errors import one_line
from repscope.stats import Moments
try:
    Moments.from_arrays(np.ones((4, 3))).all_reduce()
except RuntimeError as err:
    print(one_line(err))
    os._exit(3)
print("no error")
"""


def test_a_lost_rank_during_an_analysis_is_one_clear_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "r.db", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                  WORLD_SIZE="2", OMP_NUM_THREADS="1", REPSCOPE_DIST_TIMEOUT="30")
    procs = [subprocess.Popen([sys.executable, "-c", _LOST_PEER],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    out, err = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=60)
    assert procs[0].returncode == 3, (out, err[-2000:])
    assert out.startswith("rank 0 of 2: a collective failed: another rank stopped"), out
    assert "Nothing was recorded; run the same command again." in out
