"""Child process of the resume test: extract a tiny MLP over MNIST into a store.

Usage: python _resume_child.py STORE DATA.npz SLEEP_PER_BATCH

DATA.npz holds real MNIST digits ``X`` (uint8, n x 28 x 28) and labels ``y``, written by the
test from its session fixture (so the child does not parse the CSV again).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from repscope.extract import extract_to_store

BATCH, CHUNK = 16, 48
LAYERS = ["0", "1", "4"]
POOLING = {"0": "mean", "1": "none", "4": "mean"}


class Sleep(torch.nn.Module):
    """Identity that sleeps, so a run lasts long enough to be killed mid-way."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seconds:
            time.sleep(self.seconds)
        return x


class Tokens(torch.nn.Module):
    """(b, 64) -> (b, 4, 16): a token-shaped output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 4, 16)


def build(seconds: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 64), Tokens(), Sleep(seconds), torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )


def inputs(data: str) -> tuple[np.ndarray, dict[str, list]]:
    with np.load(data) as z:
        X, y = z["X"], z["y"]
    n = X.shape[0]
    meta = {"label": [int(v) for v in y], "id": [f"mnist:{i:05d}" for i in range(n)]}
    return (X.reshape(n, -1) / 255.0).astype(np.float32), meta


def main() -> None:
    path, data, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    torch.set_num_threads(1)
    X, meta = inputs(data)
    extract_to_store(
        build(seconds), X, path, LAYERS, POOLING, batch_size=BATCH, chunk_size=CHUNK,
        metadata=meta, progress=False, model_id="mnist-mlp",
    )


if __name__ == "__main__":
    main()
