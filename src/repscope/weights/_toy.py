"""Small models trained here in seconds: the MLPs on scikit-learn digits that the weight-space
tests, the demo and the examples share (no package ships two checkpoints of one architecture).

The setup follows the recipe of Landscaping LMC / weight matching: an MLP ``64-w-w-10`` with ReLU
on the 8x8 digits, standardised with the training split's mean and deviation, trained with SGD
from a seed; test-set cross-entropy is the loss of the barrier.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["DigitsData", "digits_data", "evaluate", "make_mlp", "mlp_from_state_dict", "train_mlp"]


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
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
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

    data = digits_data() if data is None else data
    model = make_mlp(widths, seed=seed)
    from repscope._threads import single_thread

    with single_thread(blas=False):  # a tiny model
        _sgd(model, data, seed=seed, epochs=epochs, lr=lr, momentum=momentum,
             batch_size=batch_size)
    return model.eval()


def _sgd(model: Any, data: DigitsData, *, seed: int, epochs: int, lr: float, momentum: float,
         batch_size: int) -> None:
    import torch

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


def evaluate(model: Any, X: Any, y: Any) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(X, y)``."""
    import torch

    with torch.no_grad():
        logits = model(torch.as_tensor(X))
        target = torch.as_tensor(y)
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        acc = float((logits.argmax(1) == target).float().mean())
    return loss, acc


def mlp_from_state_dict(state_dict: Any, *, name: str = "checkpoint") -> torch.nn.Sequential:
    """The ``nn.Sequential`` Linear/ReLU stack whose state dict is ``state_dict`` (keys
    ``"<i>.weight"`` and ``"<i>.bias"`` of 2-D weights, as :func:`make_mlp` and any plain
    ``nn.Sequential`` MLP write), with those weights loaded.

    Raises
    ------
    RepscopeValueError
        When the keys are not those of such a stack, naming ``name`` and the first odd key.
    """
    import torch

    from repscope.exceptions import RepscopeValueError

    sd = dict(state_dict)
    index: dict[int, tuple[int, int]] = {}
    for key, t in sd.items():
        head, _, attr = key.partition(".")
        if not head.isdigit() or attr not in ("weight", "bias"):
            raise RepscopeValueError(
                f"{name}: expected the state dict of an nn.Sequential Linear/ReLU stack (keys "
                f"'0.weight', '0.bias', '2.weight', ...); got key {key!r}.")
        if attr == "weight":
            if t.ndim != 2:
                raise RepscopeValueError(
                    f"{name}: {key!r} must be a 2-D Linear weight; got shape {tuple(t.shape)}.")
            index[int(head)] = (int(t.shape[1]), int(t.shape[0]))
    pos = sorted(index)
    if not pos:
        raise RepscopeValueError(f"{name}: no Linear weights ('<i>.weight') in the state dict.")
    layers: list[torch.nn.Module] = []
    for j, i in enumerate(pos):
        while len(layers) < i:
            layers.append(torch.nn.ReLU())
        fan_in, fan_out = index[i]
        if j and index[pos[j - 1]][1] != fan_in:
            raise RepscopeValueError(
                f"{name}: layer {i} takes {fan_in} inputs but layer {pos[j - 1]} gives "
                f"{index[pos[j - 1]][1]}; not a Linear stack.")
        layers.append(torch.nn.Linear(fan_in, fan_out, bias=f"{i}.bias" in sd))
    model = torch.nn.Sequential(*layers)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()})
    return model.eval()
