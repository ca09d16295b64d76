"""Small models trained here in seconds: the MLPs on scikit-learn digits that the weight-space
tests, the demo and the examples share (no package ships two checkpoints of one architecture).

The setup follows the recipe of Landscaping LMC / weight matching: an MLP ``64-w-w-10`` with ReLU
on the 8x8 digits, standardised with the training split's mean and deviation, trained with SGD
from a seed; test-set cross-entropy is the loss of the barrier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["DigitsData", "digits_data", "evaluate", "make_mlp", "train_mlp"]


@dataclass(frozen=True)
class DigitsData:
    """The scikit-learn digits, split once and standardised with the training statistics.

    Attributes
    ----------
    X_train, X_test : ndarray of float32, shape (n, 64)
    y_train, y_test : ndarray of int64, shape (n,)
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def digits_data(*, test_size: float = 0.3, seed: int = 0) -> DigitsData:
    """Split the 1,797 digits (stratified, ``seed``) and standardise with the training split.

    Parameters
    ----------
    test_size : float, default=0.3
    seed : int, default=0

    Returns
    -------
    DigitsData
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed,
                                          stratify=y)
    # Pixels that are always 0 in the training split keep unit scale (no division by ~0).
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd = np.where(sd > 1e-3, sd, 1.0)
    f32 = np.float32
    return DigitsData(((Xtr - mu) / sd).astype(f32), ytr.astype(np.int64),
                      ((Xte - mu) / sd).astype(f32), yte.astype(np.int64))


def make_mlp(widths: tuple[int, ...] = (64, 512, 512, 10), *, seed: int = 0) -> torch.nn.Sequential:
    """``nn.Sequential(Linear, ReLU, ..., Linear)`` with ``widths`` (in, hidden..., out),
    initialised from ``seed``. State-dict keys are ``"0.weight"``, ``"0.bias"``, ``"2.weight"``...
    """
    import torch

    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        from repscope.exceptions import RepscopeValueError

        raise RepscopeValueError(f"widths must be at least (in, out), all >= 1; got {widths!r}.")
    gen = torch.Generator().manual_seed(int(seed))
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        lin = torch.nn.Linear(int(a), int(b))
        bound = 1.0 / np.sqrt(a)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def train_mlp(widths: tuple[int, ...] = (64, 512, 512, 10), *, seed: int = 0,
              data: DigitsData | None = None, epochs: int = 20, lr: float = 0.05,
              momentum: float = 0.9, batch_size: int = 32) -> torch.nn.Sequential:
    """Train :func:`make_mlp` on the digits training split with SGD (init and batch order
    from ``seed``); returns the model in eval mode."""
    import torch

    data = digits_data() if data is None else data
    model = make_mlp(widths, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(int(seed) + 10_000)
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), int(batch_size)):
            idx = order[start:start + int(batch_size)]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def evaluate(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(X, y)``."""
    import torch

    with torch.no_grad():
        logits = model(torch.as_tensor(X))
        target = torch.as_tensor(y)
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        acc = float((logits.argmax(1) == target).float().mean())
    return loss, acc
