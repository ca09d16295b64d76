"""Writer process for the crash tests in test_store_kill.py (run as a script, never collected).

``python _kill_writer.py ROOT MODE SIGNAL_FILE`` appends the dataset of :func:`make_dataset` to
the store at ROOT in chunks of :data:`CHUNK` samples, continuing from ``store.n_samples``:

* ``loop``: after :data:`PAUSE_CHUNK` complete chunks, between two appends, it touches
  SIGNAL_FILE and sleeps (to be killed between chunks; no race with the test's polling).
* ``pause-commit``: on chunk :data:`PAUSE_CHUNK`, every shard is in place but the manifest is
  not yet updated; it touches SIGNAL_FILE and sleeps (to be killed there).
* ``pause-shard``: while writing the second layer's shard of chunk :data:`PAUSE_CHUNK`, it
  leaves a half-written temp file, touches SIGNAL_FILE and sleeps.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

N_SAMPLES = 100
CHUNK = 8
PAUSE_CHUNK = 2
MODEL_ID = "kill-test-model"
DENSE = "model.layers.0.mlp"
RAGGED = "model.embed_tokens"


def make_dataset(n: int = N_SAMPLES, seed: int = 1234) -> dict[str, Any]:
    """A fixed dataset: a dense float32 layer, a ragged float16 token layer and metadata."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, size=n)
    lengths[3] = 1
    return {
        DENSE: rng.standard_normal((n, 6)).astype(np.float32),
        RAGGED: [rng.standard_normal((int(t), 4)).astype(np.float16) for t in lengths],
        "label": rng.integers(0, 5, size=n),
        "text": [f"sample {i} é" for i in range(n)],
        "score": rng.random(n),
    }


def append_rest(store: Any, data: dict[str, Any], pause: Path | None = None) -> None:
    """Append samples ``store.n_samples:`` of ``data`` in chunks of CHUNK; with ``pause``,
    stop for the kill (see :func:`_pause`) once PAUSE_CHUNK chunks are complete."""
    n = len(data["label"])
    while store.n_samples < n:
        a = store.n_samples
        b = min(a + CHUNK, n)
        store.append(
            {DENSE: data[DENSE][a:b], RAGGED: data[RAGGED][a:b]},
            metadata={k: data[k][a:b] for k in ("label", "text", "score")},
        )
        if pause is not None and store.n_samples == PAUSE_CHUNK * CHUNK:
            _pause(pause)


def _pause(signal_file: Path) -> None:
    signal_file.touch()
    time.sleep(120)  # the test kills us here
    raise SystemExit("not killed")


def main(root: str, mode: str, signal_file: str) -> None:
    import repscope.store._safetensors as st_mod
    import repscope.store.feature_store as fs_mod
    from repscope.store import FeatureStore
    from repscope.store._fs import tmp_path_for

    sig = Path(signal_file)
    if mode == "pause-commit":
        real_commit = fs_mod.write_manifest

        def commit(root_: Path, manifest: Any) -> None:
            if len(manifest["chunks"]) == PAUSE_CHUNK + 1:
                _pause(sig)
            real_commit(root_, manifest)

        fs_mod.write_manifest = commit  # type: ignore[assignment]
    elif mode == "pause-shard":
        real_write = st_mod.atomic_write
        calls = [0]

        def write(final: Path, fn: Any, *, sync_dir: bool = True) -> None:
            calls[0] += 1
            if calls[0] == 2 * PAUSE_CHUNK + 2:  # two layer shards per chunk
                with open(tmp_path_for(final), "wb") as f:
                    fn(f)
                    f.truncate(f.tell() // 2)
                    f.flush()
                _pause(sig)
            real_write(final, fn, sync_dir=sync_dir)

        st_mod.atomic_write = write  # type: ignore[assignment]
    store = FeatureStore.create(root, MODEL_ID, attrs={"seed": 1234}, exist_ok=True)
    append_rest(store, make_dataset(), pause=sig if mode == "loop" else None)


if __name__ == "__main__":
    main(*sys.argv[1:4])
