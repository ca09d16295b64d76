"""Task-arithmetic setups on the scikit-learn digits, trained here in seconds: one pretrained MLP
and fine-tunes of it on disjoint class subsets (the small-scale experiments proposed for aTLAS
and OrthoReg), shared by the tests and ``benchmarks/orthoreg_atlas.py``.

Definition used throughout ("pretrained on half of digits"): the training split is halved
(stratified by class, ``seed``); the base model is trained on the first half, all ten classes;
task ``k`` fine-tunes the base on the second half restricted to its class subset (by default
digits 0-4 and 5-9). Each fine-tune therefore sees only its classes and drifts towards
predicting them; task addition has to bring both back together. Held-out data is the digits
test split, all classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from repscope.weights._toy import DigitsData

__all__ = ["TaskSetup", "finetune", "make_task_setup"]


@dataclass(frozen=True)
class TaskSetup:
    """A pretrained digits MLP and the data of its fine-tuning tasks.

    Attributes
    ----------
    data : DigitsData
    base : nn.Sequential
        The pretrained model (eval mode).
    widths : tuple of int
    pretrain_idx, finetune_idx : ndarray of int
        Rows of ``data.X_train`` used for pretraining, and the other half.
    subsets : tuple of tuple of int
        Each task's classes.
    """

    data: DigitsData
    base: Any
    widths: tuple[int, ...]
    pretrain_idx: np.ndarray
    finetune_idx: np.ndarray
    subsets: tuple[tuple[int, ...], ...]

    def task_data(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of task ``k``: the fine-tuning half restricted to its classes."""
        X, y = self.data.X_train[self.finetune_idx], self.data.y_train[self.finetune_idx]
        keep = np.isin(y, self.subsets[k])
        return X[keep], y[keep]

    def validation(self, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` labelled examples of all classes from the fine-tuning half (the small set
        aTLAS learns its coefficients on; disjoint from the test split)."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(self.finetune_idx, size=min(int(n), len(self.finetune_idx)),
                         replace=False)
        return self.data.X_train[idx], self.data.y_train[idx]


def _train(model: Any, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int,
           batch_size: int = 32, extra_loss: Callable[[Any], Any] | None = None) -> Any:
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    Xt, yt = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(y))
    gen = torch.Generator().manual_seed(int(seed) + 20_000)
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            opt.step()
    return model.eval()


def make_task_setup(widths: tuple[int, ...] = (64, 128, 128, 10), *, seed: int = 0,
                    subsets: Sequence[Sequence[int]] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
                    pretrain_epochs: int = 5, lr: float = 0.01,
                    data: DigitsData | None = None) -> TaskSetup:
    """Pretrain a digits MLP on half of the training split (see the module docstring)."""
    from repscope.weights._toy import digits_data, make_mlp

    data = digits_data() if data is None else data
    rng = np.random.default_rng(seed)
    pre, fine = [], []
    for c in np.unique(data.y_train):
        idx = rng.permutation(np.flatnonzero(data.y_train == c))
        pre.append(idx[: len(idx) // 2])
        fine.append(idx[len(idx) // 2:])
    pre_idx, fine_idx = np.sort(np.concatenate(pre)), np.sort(np.concatenate(fine))
    model = make_mlp(widths, seed=seed)
    _train(model, data.X_train[pre_idx], data.y_train[pre_idx], epochs=pretrain_epochs, lr=lr,
           seed=seed)
    return TaskSetup(data, model, tuple(widths), pre_idx, fine_idx,
                     tuple(tuple(int(c) for c in s) for s in subsets))


def finetune(setup: TaskSetup, k: int, *, epochs: int = 5, lr: float = 0.01, seed: int = 0,
             extra_loss: Callable[[Any], torch.Tensor] | None = None) -> Any:
    """A copy of ``setup.base`` fine-tuned (SGD, momentum 0.9, batch 32) on task ``k``;
    ``extra_loss(model)`` is added to the cross-entropy of each step (e.g. an OrthoReg term)."""
    import copy

    model = copy.deepcopy(setup.base)
    X, y = setup.task_data(k)
    return _train(model, X, y, epochs=epochs, lr=lr, seed=seed + 1 + k, extra_loss=extra_loss)
