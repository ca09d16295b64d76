"""Child process of the resume test: extract a tiny MLP over MNIST into a store.

Usage: python _resume_child.py STORE DATA.npz [SIGNAL_FILE]

With SIGNAL_FILE the run stops once the store holds its first complete chunk: the next
forward pass touches SIGNAL_FILE and waits there to be killed (no race with the test).

DATA.npz holds real MNIST digits ``X`` (uint8, n x 28 x 28) and labels ``y``, written by the
test from its session fixture (so the child does not parse the CSV again).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from repscope.extract import extract_to_store

BATCH, CHUNK = 16, 48
LAYERS = ["0", "1", "4"]
POOLING = {"0": "mean", "1": "none", "4": "mean"}


class PauseAfterFirstChunk(torch.nn.Module):
    """Identity that, once the store at ``store`` holds a complete chunk, touches ``signal``
    and waits to be killed, so the kill lands mid-run at a known point."""

    def __init__(self, store: str, signal: str | None) -> None:
        super().__init__()
        self.manifest = Path(store) / "manifest.json"
        self.signal = None if signal is None else Path(signal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.signal is not None and self._n_samples() >= CHUNK:
            self.signal.touch()
            time.sleep(120)  # the test kills us here
            raise SystemExit("not killed")
        return x

    def _n_samples(self) -> int:
        try:
            return int(json.loads(self.manifest.read_text())["n_samples"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0


class Tokens(torch.nn.Module):
    """(b, 64) -> (b, 4, 16): a token-shaped output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 4, 16)


def build(store: str, signal: str | None) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 64), Tokens(), PauseAfterFirstChunk(store, signal), torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )


def inputs(data: str) -> tuple[np.ndarray, dict[str, list]]:
    with np.load(data) as z:
        X, y = z["X"], z["y"]
    n = X.shape[0]
    meta = {"label": [int(v) for v in y], "id": [f"mnist:{i:05d}" for i in range(n)]}
    return (X.reshape(n, -1) / 255.0).astype(np.float32), meta


def main() -> None:
    path, data = sys.argv[1], sys.argv[2]
    signal = sys.argv[3] if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    X, meta = inputs(data)
    extract_to_store(
        build(path, signal), X, path, LAYERS, POOLING, batch_size=BATCH, chunk_size=CHUNK,
        metadata=meta, progress=False, model_id="mnist-mlp",
    )


if __name__ == "__main__":
    main()
