"""Child process of test_extract_lock.py: ``extract_to_store`` of a tiny MLP that, once its
first chunk is in the store, writes its pid to READY and waits for the file GO.

Usage: python _lock_child.py STORE READY GO
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from repscope.exceptions import RepscopeError
from repscope.extract import extract_to_store

N, CHUNK = 24, 8
LAYERS = ["0", "2"]


class Gate(torch.nn.Module):
    """Identity that, on its second call (the second chunk, the first being stored), signals
    READY and blocks until GO exists."""

    def __init__(self, ready: str, go: str) -> None:
        super().__init__()
        self.ready, self.go, self.calls = ready, go, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2 and self.ready:
            Path(self.ready).write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not Path(self.go).exists():
                if time.monotonic() > deadline:
                    raise SystemExit("never told to go on")
                time.sleep(0.01)
        return x


def build(ready: str = "", go: str = "") -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 4), Gate(ready, go), torch.nn.Linear(4, 3)
    )


def inputs() -> tuple[np.ndarray, dict[str, list[int]]]:
    X = np.random.default_rng(0).standard_normal((N, 5)).astype(np.float32)
    return X, {"id": list(range(N))}


def run(store: str, model: torch.nn.Module) -> None:
    X, meta = inputs()
    extract_to_store(
        model, X, store, LAYERS, batch_size=CHUNK, chunk_size=CHUNK, metadata=meta,
        progress=False, model_id="lock-mlp",
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:
        run(sys.argv[1], build(sys.argv[2], sys.argv[3]))
    except RepscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
