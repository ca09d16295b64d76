"""Two processes writing to one database at the same time lose and duplicate nothing.

Nothing here depends on the scheduler: the writers start together through a file barrier,
and a handshake after each writer's first record (each waits for a file the other writes)
forces their records to interleave, so the interleaving assertions are certain, not likely.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from repscope.db import ResultsDB

N_PER_WRITER = 500

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from repscope.db import Record, ResultsDB

    path, writer, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    db = ResultsDB(path)
    run = db.start_run(f"writer-{writer}")
    (go.parent / f"ready-{writer}").touch()

    def wait_for(flag):
        deadline = time.monotonic() + 240  # a hang guard only; nothing is asserted on time
        while not flag.exists():
            if time.monotonic() > deadline:
                sys.exit(f"writer {writer} waited 240 s for {flag.name}")
            time.sleep(0.005)

    wait_for(go)
    for i in range(n):
        db.add(Record("concurrency", {"writer": writer, "i": i}, layer=str(i), run_id=run))
        if i == 0:  # handshake: neither writes its second record before both wrote a first
            (go.parent / f"first-{writer}").touch()
            wait_for(go.parent / f"first-{1 - writer}")
    db.finish_run(run)
    db.close()
    """
)


def test_two_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "shared.db"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), str(N_PER_WRITER), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in (0, 1)
    ]
    # Both open the (new) database, racing through the migrations, then start writing at once.
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{w}").exists() for w in (0, 1)):
        assert time.monotonic() < deadline, "writers did not start"
        for p in procs:
            assert p.poll() is None, f"a writer exited early (code {p.returncode}): {p.communicate()}"
        time.sleep(0.01)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err

    with ResultsDB(path) as db:
        recs = db.query(analysis="concurrency")
        assert len(recs) == 2 * N_PER_WRITER
        assert len({r.id for r in recs}) == len(recs)
        pairs = {(r.values["writer"], r.values["i"]) for r in recs}
        assert pairs == {(w, i) for w in (0, 1) for i in range(N_PER_WRITER)}
        # The handshake makes the writes interleave: each writer's first record was committed
        # before the other's second one, whatever the scheduler did.
        rank = {(r.values["writer"], r.values["i"]): r.id for r in recs}
        for w in (0, 1):
            assert rank[(w, 0)] < rank[(1 - w, 1)]
        assert {r.status for r in db.runs()} == {"ok"}
        assert len(db.applied_migrations) == len(set(db.applied_migrations))
