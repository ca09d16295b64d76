"""The data-independent settings of SAE training, validated once.

:class:`TrainSettings` holds everything :func:`~repscope.sae.fit` and
:func:`~repscope.sae.sweep` need besides the data, the SAEs, the per-row callback and the
device: step budget, batch size, optimiser, learning-rate schedule, shuffling, logging, checks and
checkpoints. It is frozen, so one object can be shared by several runs and recorded next to
their results (:meth:`TrainSettings.to_dict`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope._validation import check_choice, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["TrainSettings"]

_OWNER = "TrainSettings"

#: The optimisers :class:`TrainSettings` accepts: (learning rate at ``d_sae = 2**14``, width
#: exponent ``a``); :func:`~repscope.sae.default_lr` is ``lr * (2**14 / d_sae) ** a``.
OPTIMIZERS: dict[str, tuple[float, float]] = {
    "schedule_free_sign_sgd": (4.7e-3, 0.0),
    "adam": (2e-4, 0.5),
    "sign_sgd": (4.7e-3, 0.0),
}


@dataclass(frozen=True)
class TrainSettings:
    """How to train SAEs: everything but the data, the SAEs, the callback and the device.

    Parameters
    ----------
    n_steps : int, optional
        Optimiser steps; by default ``n_epochs`` epochs over the data.
    n_epochs : float
        Epochs when ``n_steps`` is None (needs a source of known length unless 1).
    batch_size : int
        Vectors per step (per rank under DDP).
    optimizer : {"schedule_free_sign_sgd", "adam", "sign_sgd"}
        ``"schedule_free_sign_sgd"`` (default): sign-SGD inside schedule-free averaging, the
        default of EleutherAI sparsify; the trained SAE holds the average iterate. Chosen by
        time to a held-out FVU (``benchmarks/sae_train.py --time-to-fvu``): SmolLM2-135M's
        layer-14 residual stream over 1,200 Austen paragraphs (106,541 training tokens, 8,192
        held-out tokens of other paragraphs), TopK k = 32, batch 1,024, one CPU thread of a
        shared 2-core machine, each library at its defaults (here with ``TopKConfig``'s encoder
        columns starting at norm 0.58). At 8x (d_sae 4,608) it reached the FVU sparsify's
        defaults reach at step 400 (0.217) in 21.5 CPU-s where sparsify took 52.8 (2.5x), and
        ended lower (0.201 vs 0.216 after 500 steps); Adam at its default learning rate with
        unit-norm encoder columns did not reach it in 500 steps (0.253). ``"adam"``: Adam, the
        default before; pass it with an ``lr`` tuned for Adam (a sign-based optimiser's ``lr``
        is the step of every weight: its default is 12 times Adam's at d_sae 4,608).
        ``"sign_sgd"``: plain sign-SGD. See :mod:`repscope.sae.training._optim`.
    lr : float, sequence of float, or None
        Learning rate, one for all SAEs or one per SAE of a sweep (kept as a tuple); None
        gives :func:`~repscope.sae.default_lr` of each SAE's width and the optimiser (4.7e-3
        at any width for the sign-based ones, ``2e-4 * sqrt(2**14 / d_sae)`` for Adam).
    betas : pair of float in [0, 1)
        Adam's moment decay rates.
    weight_decay : float
        Adam's (L2) weight decay, at least 0; the sign-based optimisers take none (an error).
    momentum : float in (0, 1]
        Schedule-free interpolation: gradients are taken at ``(1 - momentum) * z +
        momentum * x`` (0.95, sparsify's).
    lr_schedule : {"constant", "cosine"}
        After ``warmup_steps`` of linear warm-up; cosine decays to 0 at the last step.
    warmup_steps : int
        Steps of linear learning-rate warm-up (0: none).
    max_grad_norm : float, optional
        Clip the global gradient norm to this positive value.
    shuffle : bool
        In-memory data get a new permutation per epoch; streamed data pass through a buffer.
    shuffle_buffer : int
        Vectors in the shuffle buffer of streamed data (at least one global batch is used).
    seed : int
        Shuffling and initialisation-sample seed, at least 0 (parameter initialisation uses
        each SAE's ``cfg.seed``).
    init_samples : int
        Vectors used to fit the normaliser and initialise the decoder bias.
    log_every : int
        Steps between history rows.
    check_every : int
        Steps between finiteness checks, dead-set refreshes and snapshots.
    checkpoint_dir : path, optional
        Where to save each SAE (``<dir>/sae_<i>``) at the end, and the last good one on failure.
    progress : bool
        Show a progress bar over the training steps (rich, on stderr, with an ETA) and about
        ten history rows as lines above it (see :func:`repscope._progress.progress_bar` for
        when a bar is drawn).

    Raises
    ------
    RepscopeTypeError, RepscopeValueError
        A setting of the wrong type or out of range; the message names it.

    Examples
    --------
    >>> from repscope.sae import TrainSettings
    >>> s = TrainSettings(n_epochs=5, batch_size=256, lr=3e-3)
    >>> s.batch_size, s.lr_schedule
    (256, 'constant')
    >>> import dataclasses
    >>> dataclasses.replace(s, lr_schedule="cosine", warmup_steps=100).warmup_steps
    100
    """

    n_steps: int | None = None
    n_epochs: float = 1.0
    batch_size: int = 1024
    optimizer: Literal["schedule_free_sign_sgd", "adam", "sign_sgd"] = "schedule_free_sign_sgd"
    lr: float | tuple[float, ...] | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    momentum: float = 0.95
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    shuffle: bool = True
    shuffle_buffer: int = 262_144
    seed: int = 0
    init_samples: int = 16_384
    log_every: int = 50
    check_every: int = 50
    checkpoint_dir: str | Path | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        def count(name: str, min_value: int) -> None:
            v = check_scalar(
                getattr(self, name), name, caller=_OWNER, kind=int, min_value=min_value
            )
            self._set(name, int(v))

        if self.n_steps is not None:
            count("n_steps", 1)
        n_epochs = check_scalar(
            self.n_epochs, "n_epochs", caller=_OWNER, min_value=0, include_min=False
        )
        self._set("n_epochs", float(n_epochs))
        count("batch_size", 1)
        check_choice(self.optimizer, "optimizer", tuple(OPTIMIZERS), caller=_OWNER)
        self._set("lr", _check_lr(self.lr))
        self._set("betas", _check_betas(self.betas))
        wd = check_scalar(self.weight_decay, "weight_decay", caller=_OWNER, min_value=0)
        if wd > 0 and self.optimizer != "adam":
            raise RepscopeValueError(
                f"The 'weight_decay' parameter of {_OWNER} applies to optimizer 'adam' only; "
                f"got weight_decay={wd} with optimizer {self.optimizer!r}."
            )
        self._set("weight_decay", float(wd))
        mom = check_scalar(
            self.momentum, "momentum", caller=_OWNER, min_value=0, max_value=1, include_min=False
        )
        self._set("momentum", float(mom))
        check_choice(self.lr_schedule, "lr_schedule", ("constant", "cosine"), caller=_OWNER)
        count("warmup_steps", 0)
        if self.max_grad_norm is not None:
            norm = check_scalar(
                self.max_grad_norm, "max_grad_norm", caller=_OWNER, min_value=0, include_min=False
            )
            self._set("max_grad_norm", float(norm))
        self._set("shuffle", _check_bool(self.shuffle, "shuffle"))
        count("shuffle_buffer", 0)
        count("seed", 0)
        count("init_samples", 1)
        count("log_every", 1)
        count("check_every", 1)
        if self.checkpoint_dir is not None and not isinstance(
            self.checkpoint_dir, (str, os.PathLike)
        ):
            raise RepscopeTypeError(
                f"The 'checkpoint_dir' parameter of {_OWNER} must be a path (str or "
                f"os.PathLike) or None. Got {type(self.checkpoint_dir).__name__} instead."
            )
        self._set("progress", _check_bool(self.progress, "progress"))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: normalise once, here

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (``checkpoint_dir`` as a string)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        if isinstance(self.lr, tuple):
            out["lr"] = list(self.lr)
        if self.checkpoint_dir is not None:
            out["checkpoint_dir"] = os.fspath(self.checkpoint_dir)
        return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _check_lr(lr: Any) -> float | tuple[float, ...] | None:
    if lr is None:
        return None
    if _is_number(lr):
        return float(check_scalar(lr, "lr", caller=_OWNER, min_value=0, include_min=False))
    if isinstance(lr, (str, bytes)) or not isinstance(lr, (Sequence, np.ndarray)):
        raise RepscopeTypeError(
            f"The 'lr' parameter of {_OWNER} must be a float, a sequence of floats (one per "
            f"SAE) or None. Got {type(lr).__name__} instead."
        )
    values = tuple(lr.tolist() if isinstance(lr, np.ndarray) else lr)
    if not values:
        raise RepscopeValueError(
            f"The 'lr' parameter of {_OWNER} must be a float or one value per SAE. Got an empty "
            f"{type(lr).__name__} instead."
        )
    for v in values:
        if not _is_number(v):
            raise RepscopeTypeError(
                f"The 'lr' parameter of {_OWNER} must hold floats. Got {v!r} "
                f"({type(v).__name__}) in {lr!r} instead."
            )
        check_scalar(v, "lr", caller=_OWNER, min_value=0, include_min=False)
    return tuple(float(v) for v in values)


def _check_betas(betas: Any) -> tuple[float, float]:
    if (
        isinstance(betas, (str, bytes))
        or not isinstance(betas, Sequence)
        or len(betas) != 2
        or not all(_is_number(b) for b in betas)
    ):
        raise RepscopeTypeError(
            f"The 'betas' parameter of {_OWNER} must be a pair of floats. Got {betas!r} instead."
        )
    for b in betas:
        check_scalar(b, "betas", caller=_OWNER, min_value=0, max_value=1, include_max=False)
    return (float(betas[0]), float(betas[1]))


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise RepscopeTypeError(
            f"The {name!r} parameter of {_OWNER} must be a bool. Got {value!r} "
            f"({type(value).__name__}) instead."
        )
    return bool(value)
