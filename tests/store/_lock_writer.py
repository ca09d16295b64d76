"""Writer process for the one-writer tests in test_store_writer_lock.py (run as a script, never
collected).

``python _lock_writer.py ROOT READY GO`` opens the store at ROOT for writing (creating it when
missing), appends samples 0-3 as one chunk, writes its pid to the file READY, waits until the
file GO exists, appends samples 4-7 and exits 0. A RepscopeError is printed to stderr and the
process exits 3. The handshake files, not sleeps, order it against the test.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

MODEL_ID = "lock-test-model"
CHUNK = 4
N_CHUNKS = 2


def chunk(i: int) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Features and metadata of chunk ``i``: samples ``4i..4i+3``, each row holding its id."""
    ids = list(range(i * CHUNK, (i + 1) * CHUNK))
    return {"h": np.array(ids, dtype=np.float32)[:, None].repeat(3, axis=1)}, {"id": ids}


def main(root: str, ready: str, go: str) -> int:
    from repscope.exceptions import RepscopeError
    from repscope.store import FeatureStore

    try:
        store = FeatureStore.create(root, MODEL_ID, exist_ok=True)
        while store.n_samples < N_CHUNKS * CHUNK:
            features, meta = chunk(store.n_samples // CHUNK)
            store.append(features, meta)
            if store.n_samples == CHUNK:
                Path(ready).write_text(str(os.getpid()))
                deadline = time.monotonic() + 120
                while not Path(go).exists():
                    if time.monotonic() > deadline:
                        raise SystemExit("never told to go on")
                    time.sleep(0.01)
    except RepscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
