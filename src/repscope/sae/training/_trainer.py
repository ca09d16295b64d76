"""Train one SAE or a sweep of them in one pass over the data; DDP across ranks.

:func:`fit` trains one SAE; :func:`sweep` trains several (different k, L1, width, seed or
architecture) on the same stream of batches, so the data are read, moved and shuffled once.

Per step and SAE: ``xn = sae.normalize(batch)``, ``out = sae.forward_normalized(xn)``,
``loss = sae.loss(xn, out, state)``, backward, (DDP: one flattened all-reduce of the gradients),
``sae.before_optimizer_step()``, optional gradient clipping, the optimiser (schedule-free
sign-SGD by default, Adam or sign-SGD: :mod:`._optim`), ``sae.after_optimizer_step()``
(decoder renormalisation and other constraints are explicit post-steps, never a side effect of
forward), firing counts by ``bincount`` on the active indices (all-reduced under DDP). Metrics
are summed on the device and read every ``log_every`` steps; every ``check_every`` steps the
trainer syncs once: it refreshes the dead-latent set (AuxK), checks that the loss and the inputs
were finite and snapshots the weights. A non-finite loss stops training with
:class:`SAETrainingError`, the SAE restored to the last finite snapshot (and saved to
``checkpoint_dir`` when given). Under schedule-free the parameters hold the interpolation point
while training; at the end each SAE gets the average iterate (the point schedule-free returns).

Under ``torch.distributed`` (e.g. ``torchrun``) every rank runs the same loop on its piece of
each global batch: ``settings.batch_size`` is the per-rank batch and the global batch is
``batch_size * world_size`` vectors. Epoch ``e`` orders the vectors by one permutation drawn
from ``settings.seed`` and ``e`` (independent of the world size); global batch ``j`` takes
positions ``[j * B, (j + 1) * B)`` of it and rank ``r`` keeps the ``r``-th contiguous piece
(:mod:`._data`). Rank 0's initialisation is broadcast, gradients are averaged over ranks and
the firing counts and logged sums are all-reduced, so W ranks with batch ``B / W`` train the
SAE one process trains with batch ``B``, up to floating-point summation order (a last global
batch of an epoch that does not split evenly is averaged per rank). Give each rank a
:class:`~._data.RowReader` (:meth:`repscope.sae.LayerVectors.reader`) and it reads only its
rows of each batch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from repscope._progress import bar_shown, progress_bar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.sae.archs._base import (
    SAEConfig,
    SparseAutoencoder,
    TrainState,
    architectures,
    firing_counts,
)
from repscope.sae.training._data import as_source
from repscope.sae.training._optim import ScheduleFreeSignSGD, default_lr, make_optimizer
from repscope.sae.training._settings import TrainSettings

__all__ = ["SAETrainingError", "TrainResult", "default_lr", "fit", "sweep"]

Callback = Callable[[int, dict[str, float]], None]
_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(TrainSettings))


class SAETrainingError(RepscopeValueError):
    """Training stopped (non-finite loss or inputs); ``.result`` holds the restored SAE."""

    def __init__(self, message: str, result: TrainResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class TrainResult:
    """One trained SAE and how training went.

    Attributes
    ----------
    sae : SparseAutoencoder
        The trained model (in eval mode).
    history : dict of str to list of float
        Logged every ``log_every`` steps (the last row at the last step): ``step``, ``n_seen``,
        ``loss``, ``fvu``, ``l0``, ``dead_in_training`` (share of latents with no firing in
        the last ``state.dead_after`` training vectors), ``never_fired`` (share of latents no
        training vector has activated so far), ``lr``, ``seconds`` and each loss term.
    state : TrainState
        Firing counters (``fire_count``, ``since_fired``, ``dead_after``) at the end: the
        record's "dead in training" and "never fired in training" are read from them
        (:meth:`dead_in_training` and :meth:`never_fired`), as the history's last row is.
    n_steps : int
    seconds : float
        Wall time of the training loop (shared by a sweep's SAEs).
    """

    sae: SparseAutoencoder
    history: dict[str, list[float]] = field(default_factory=dict)
    state: TrainState | None = None
    n_steps: int = 0
    seconds: float = 0.0

    def dead_in_training(self) -> float:
        """Share of latents dead in training at the end: no firing in the last
        ``state.dead_after`` training vectors (NaN without counters)."""
        if self.state is None:
            return math.nan
        return float(self.state.dead_mask().float().mean())

    def never_fired(self) -> float:
        """Share of latents that no training vector activated (NaN without counters)."""
        if self.state is None:
            return math.nan
        return float((self.state.fire_count == 0).float().mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.sae.architecture,
            "config": self.sae.cfg.to_dict(),
            "history": self.history,
            "n_steps": self.n_steps,
            "seconds": self.seconds,
        }


def _as_sae(obj: Any, i: int) -> SparseAutoencoder:
    if isinstance(obj, SparseAutoencoder):
        return obj
    if isinstance(obj, SAEConfig):
        for name in architectures.names():
            if type(obj) is architectures.meta(name)["config"]:
                return architectures.get(name)(obj)
        raise RepscopeTypeError(f"No registered architecture uses {type(obj).__name__}.")
    raise RepscopeTypeError(
        f"Entry {i} of 'saes' must be a SparseAutoencoder or an SAE config. Got "
        f"{type(obj).__name__} instead."
    )


def _dist() -> tuple[int, int, Any]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def _all_reduce_grads(params: list[torch.nn.Parameter], dist: Any, world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    a = 0
    for g in grads:
        g.copy_(flat[a : a + g.numel()].view_as(g))
        a += g.numel()


def _broadcast_module(module: torch.nn.Module, dist: Any) -> None:
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


class _Run:
    """Everything one SAE of a sweep carries through training."""

    def __init__(self, sae: SparseAutoencoder, lr: float, opt: torch.optim.Optimizer) -> None:
        self.sae = sae
        self.lr = lr
        self.opt = opt
        dead_after = getattr(sae.cfg, "resolved_dead_after", None)
        if dead_after is None:
            dead_after = getattr(sae.cfg, "dead_after", None) or min(10_000_000, 32 * sae.d_sae)
        self.state = TrainState(sae.d_sae, sae.device, dead_after=int(dead_after))
        self.params = [p for p in sae.parameters() if p.requires_grad]
        self.history: dict[str, list[float]] = {}
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.snapshot = copy.deepcopy(sae.state_dict())
        self.snapshot_step = 0
        self.nonfinite_inputs = torch.zeros((), dtype=torch.int64, device=sae.device)

    def add(self, name: str, value: Tensor) -> None:
        v = value.detach().to(torch.float64)
        if name in self.sums:
            self.sums[name] += v
        else:
            self.sums[name] = v.clone()


def fit(
    X: Any,
    sae: SparseAutoencoder | SAEConfig,
    settings: TrainSettings | None = None,
    *,
    callback: Callback | None = None,
    device: str | torch.device | None = None,
    **deprecated: Any,
) -> TrainResult:
    """Train one SAE on ``X``; see :func:`sweep` for the parameters.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import TopKConfig, TopKSAE, TrainSettings, fit
    >>> X = torch.randn(2048, 16)
    >>> sae = TopKSAE(TopKConfig(d_in=16, d_sae=64, k=4))
    >>> res = fit(X, sae, TrainSettings(n_steps=20, batch_size=256))
    >>> res.n_steps, len(res.history["fvu"]) > 0
    (20, True)
    """
    settings = _settings(settings, deprecated, "fit")
    return _sweep(X, [sae], settings, callback, device)[0]


def sweep(
    X: Any,
    saes: Sequence[SparseAutoencoder | SAEConfig],
    settings: TrainSettings | None = None,
    *,
    callback: Callback | None = None,
    device: str | torch.device | None = None,
    **deprecated: Any,
) -> list[TrainResult]:
    """Train several SAEs on one pass over ``X``.

    Parameters
    ----------
    X : Tensor, ndarray or memmap of shape (..., d_in), (FeatureStore, layer), or iterable
        Training vectors; leading dimensions are flattened. An iterable yields batches (tensors,
        arrays or RaggedArrays); it is read once per epoch (a one-shot generator allows one
        epoch). Under ``torch.distributed`` each rank passes the same array (every rank keeps
        its slice of each global batch) or its own iterator.
    saes : sequence of SparseAutoencoder or SAEConfig
        What to train; configs are built by architecture. All must share ``sample_shape``.
    settings : TrainSettings, optional
        Step budget, batch size, optimiser, schedule, shuffling, logging, checks and checkpoints
        (default: ``TrainSettings()``). A tuple ``lr`` gives one learning rate per SAE.
    callback : callable, optional
        ``callback(i_sae, row)`` after each history row.
    device : str or torch.device, optional
        Move the SAEs there first (default: where they are); batches go to the SAE's device.
    **deprecated
        The fields of :class:`TrainSettings` as keyword arguments (``n_steps=...``), as before
        ``settings`` existed: deprecated (a :class:`DeprecationWarning`), removed in the next
        release. Not together with ``settings``.

    Returns
    -------
    list of TrainResult
        In the order of ``saes``.

    Raises
    ------
    SAETrainingError
        A loss or input became NaN/inf; the SAEs are restored to the last finite snapshot.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import TopKConfig, TrainSettings, sweep
    >>> X = torch.randn(2048, 16)
    >>> configs = [TopKConfig(d_in=16, d_sae=64, k=k) for k in (2, 4)]
    >>> results = sweep(X, configs, TrainSettings(n_steps=20, batch_size=256))
    >>> [r.sae.cfg.k for r in results]
    [2, 4]
    """
    settings = _settings(settings, deprecated, "sweep")
    return _sweep(X, saes, settings, callback, device)


def _settings(
    settings: TrainSettings | None, deprecated: dict[str, Any], caller: str
) -> TrainSettings:
    """``settings``, or (deprecated) the settings built from keyword arguments."""
    unknown = sorted(set(deprecated) - set(_SETTING_NAMES))
    if unknown:
        raise RepscopeTypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r}. Training settings "
            f"go in settings=TrainSettings(...), whose fields are {list(_SETTING_NAMES)}."
        )
    if settings is not None and not isinstance(settings, TrainSettings):
        raise RepscopeTypeError(
            f"The 'settings' parameter of {caller} must be a TrainSettings or None. Got "
            f"{type(settings).__name__} instead."
        )
    if not deprecated:
        return settings if settings is not None else TrainSettings()
    names = ", ".join(n for n in _SETTING_NAMES if n in deprecated)
    if settings is not None:
        raise RepscopeTypeError(
            f"{caller}() got both 'settings' and the keyword arguments {names}; put them in "
            "settings=TrainSettings(...) alone."
        )
    warnings.warn(
        f"Passing training settings to {caller}() as keyword arguments ({names}) is "
        "deprecated and will stop working in the next release; pass "
        "settings=TrainSettings(...) instead.",
        DeprecationWarning,
        stacklevel=3,  # the frame that called fit() or sweep()
    )
    return TrainSettings(**deprecated)


def _sweep(
    X: Any,
    saes: Sequence[SparseAutoencoder | SAEConfig],
    st: TrainSettings,
    callback: Callback | None,
    device: str | torch.device | None,
) -> list[TrainResult]:
    if isinstance(saes, (SparseAutoencoder, SAEConfig)) or not isinstance(saes, Sequence):
        raise RepscopeTypeError(
            "The 'saes' parameter of sweep must be a list of SAEs or configs; use fit() for "
            f"one. Got {type(saes).__name__} instead."
        )
    if len(saes) == 0:
        raise RepscopeValueError("The 'saes' parameter of sweep is empty.")
    models = [_as_sae(s, i) for i, s in enumerate(saes)]
    shapes = {m.sample_shape for m in models}
    if len(shapes) != 1:
        raise RepscopeValueError(
            f"All SAEs of a sweep must take the same input shape. Got {sorted(shapes)} instead."
        )
    sample_shape = models[0].sample_shape
    caller = "sweep" if len(models) > 1 else "fit"
    if device is not None:
        models = [m.to(device) for m in models]
    lrs = _resolve_lrs(st.lr, models, caller, st.optimizer)

    rank, world, dist = _dist()
    source = as_source(X, sample_shape)
    total_len = source.known_length()
    if st.n_steps is None:
        if total_len is None:
            if st.n_epochs != 1.0:
                raise RepscopeValueError(
                    "Training on an iterator of unknown length: give n_steps, or n_epochs=1."
                )
            planned: int | None = None
        else:
            planned = max(1, math.ceil(st.n_epochs * total_len / (st.batch_size * world)))
    else:
        planned = st.n_steps
    if st.lr_schedule == "cosine" and planned is None:
        raise RepscopeValueError("lr_schedule='cosine' needs n_steps for an iterator source.")

    # ------------------------------------------------------------------ initialisation
    sample = source.sample(st.init_samples, seed=st.seed)
    if not bool(torch.isfinite(sample).all()):
        raise RepscopeValueError(
            f"The 'X' parameter contains NaN or inf values (in the {sample.shape[0]} vectors "
            "used for initialisation)."
        )
    runs: list[_Run] = []
    for m, lr_i in zip(models, lrs):
        m.train()
        with torch.no_grad():
            s = sample.to(m.device)
            m.fit_normalizer(s)
            m.init_from_data(m.normalize(s))
        del s
        if dist is not None:
            _broadcast_module(m, dist)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = make_optimizer(
            st.optimizer,
            params,
            lr_i,
            betas=st.betas,
            weight_decay=st.weight_decay,
            momentum=st.momentum,
        )
        runs.append(_Run(m, lr_i, opt))
    del sample

    # ------------------------------------------------------------------ loop
    step = 0
    t0 = time.perf_counter()
    show = bar_shown(st.progress and rank == 0)  # rows go above a drawn bar only, never
    next_line = 0  # into a pipe; the step from which the next history row is printed
    with progress_bar("training steps", planned, enabled=show, prefix="sae") as advance:
        epoch = 0
        finished = False
        while not finished:
            got_any = False
            for batch in source.batches(
                st.batch_size,
                shuffle=st.shuffle,
                shuffle_buffer=st.shuffle_buffer,
                seed=st.seed,
                epoch=epoch,
                rank=rank,
                world_size=world,
            ):
                got_any = True
                factor = _lr_factor(step, planned, st.warmup_steps, st.lr_schedule)
                for run in runs:
                    _train_step(run, batch, factor, st.max_grad_norm, dist, world)
                step += 1
                advance(1)
                if step % st.log_every == 0 or step == planned:
                    line_now = show and (step >= next_line or step == planned)
                    if line_now:
                        next_line = step + _line_every(planned, st.log_every)
                    for i, run in enumerate(runs):
                        row = _log_row(run, step, t0, dist)
                        if line_now:
                            _print_row(i, row, len(runs), planned)
                        if callback is not None:
                            callback(i, row)
                if step % st.check_every == 0:
                    for i, run in enumerate(runs):
                        _check(run, i, step, st.checkpoint_dir, runs, t0)
                if planned is not None and step >= planned:
                    finished = True
                    break
            epoch += 1
            if not got_any:
                if step == 0:
                    raise RepscopeValueError("The 'X' parameter yielded no training batches.")
                if planned is not None and step < planned:
                    warnings.warn(
                        f"The training iterator ran out after {step} steps, before n_steps="
                        f"{planned}; pass a list or another re-iterable for several epochs.",
                        RuntimeWarning,
                        stacklevel=3,  # the frame that called fit() or sweep()
                    )
                break
            if planned is None:
                break
    seconds = time.perf_counter() - t0
    results = []
    for i, run in enumerate(runs):
        if step % st.check_every:
            _check(run, i, step, st.checkpoint_dir, runs, t0)
        if run.count:
            _log_row(run, step, t0, dist)
        run.state.refresh()
        if isinstance(run.opt, ScheduleFreeSignSGD):
            run.opt.eval()  # the parameters take the average iterate
        run.sae.eval()
        results.append(TrainResult(run.sae, run.history, run.state, n_steps=step, seconds=seconds))
        if st.checkpoint_dir is not None and rank == 0:
            _save(run.sae, Path(st.checkpoint_dir) / f"sae_{i}")
    return results


def _resolve_lrs(
    lr: float | tuple[float, ...] | None,
    models: list[SparseAutoencoder],
    caller: str,
    optimizer: str,
) -> list[float]:
    """One learning rate per SAE (``lr`` was validated by :class:`TrainSettings`)."""
    if lr is None:
        return [default_lr(m.d_sae, optimizer) for m in models]
    if isinstance(lr, float):
        return [lr] * len(models)
    if len(lr) != len(models):
        raise RepscopeValueError(
            f"The 'lr' parameter of {caller} must be a float or one per SAE ({len(models)}). "
            f"Got {len(lr)} values instead."
        )
    return list(lr)


def _lr_factor(step: int, planned: int | None, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and planned is not None:
        span = max(1, planned - warmup)
        t = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def _train_step(
    run: _Run,
    batch: Tensor,
    factor: float,
    max_grad_norm: float | None,
    dist: Any,
    world: int,
) -> None:
    sae = run.sae
    x = batch.to(sae.device, non_blocking=True)
    run.nonfinite_inputs += (~torch.isfinite(x)).sum()
    xn = sae.normalize(x)
    out = sae.forward_normalized(xn)
    loss = sae.loss(xn, out, run.state)
    for g in run.opt.param_groups:
        g["lr"] = run.lr * factor
    run.opt.zero_grad(set_to_none=True)
    loss.total.backward()
    if dist is not None:
        _all_reduce_grads(run.params, dist, world)
    sae.before_optimizer_step()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.params, max_grad_norm)
    run.opt.step()
    sae.after_optimizer_step()
    with torch.no_grad():
        counts = firing_counts(out)
        flat_x = xn.reshape(-1, xn.shape[-1])
        flat_r = out.reconstruction.reshape(-1, xn.shape[-1])
        err = (flat_r - flat_x).pow(2).sum()
        l0 = out.l0().sum().to(torch.float64)
        n_samples, n_rows = batch.shape[0], flat_x.shape[0]
        if dist is not None:
            # the global batch's sums (its variance about the global mean, from the sums of x
            # and x^2), so the history is the one a single process logs on the global batch
            x64 = flat_x.detach().double()
            packed = torch.cat([
                torch.stack([err.double(), x64.pow(2).sum(), l0, loss.total.detach().double(),
                             x64.new_tensor(n_samples), x64.new_tensor(n_rows)]),
                x64.sum(0),
            ])
            dist.all_reduce(counts)
            dist.all_reduce(packed)
            err, l0, total = packed[0], packed[2], packed[3] / world
            n_samples, n_rows = int(packed[4]), int(packed[5])
            var = packed[1] - packed[6:].pow(2).sum() / max(n_rows, 1)
        else:
            var = (flat_x - flat_x.mean(0)).pow(2).sum()
            total = loss.total.detach()
    run.state.observe(out, n_samples, counts=counts)
    run.add("loss", total)
    run.add("_err", err)
    run.add("_var", var)
    run.add("_l0", l0 / n_rows)
    run.add("_rows", torch.tensor(float(n_rows), dtype=torch.float64))
    terms = loss.terms
    if dist is not None and terms:  # the global batch's terms, as one process would log them
        names = sorted(terms)
        packed_terms = torch.stack([terms[n].detach().double() for n in names])
        dist.all_reduce(packed_terms)
        terms = dict(zip(names, packed_terms / world))
    for name, v in terms.items():
        run.add(name, v)
    run.count += 1
    run.add("lr", torch.tensor(run.opt.param_groups[0]["lr"], dtype=torch.float64))


def _log_row(run: _Run, step: int, t0: float, dist: Any) -> dict[str, float]:
    if not run.count:
        return {}
    sums = {k: float(v) for k, v in run.sums.items()}
    c = run.count
    row = {
        "step": float(step),
        "n_seen": float(run.state.n_seen),
        "loss": sums.pop("loss") / c,
        "fvu": sums.pop("_err") / max(sums.pop("_var"), 1e-300),
        "l0": sums.pop("_l0") / c,
        "dead_in_training": float(run.state.dead_mask().float().mean()),
        "never_fired": float((run.state.fire_count == 0).float().mean()),
        "lr": sums.pop("lr") / c,
        "seconds": time.perf_counter() - t0,
    }
    sums.pop("_rows", None)
    for k, v in sums.items():
        row[k] = v / c  # a loss term's mean contribution over the window's steps
    n_rows = len(run.history.get("step", []))
    for k in run.history:
        row.setdefault(k, 0.0)  # a term (AuxK) absent from this whole window
    for k, v in row.items():
        run.history.setdefault(k, [0.0] * n_rows).append(v)
    run.sums = {}
    run.count = 0
    return row


def _line_every(planned: int | None, log_every: int) -> int:
    """Steps between the history rows printed under the bar: about ten per run."""
    if planned is None:
        return log_every * 10
    return max(log_every, math.ceil(planned / 10))


def _print_row(i: int, row: dict[str, float], n: int, planned: int | None) -> None:
    """One history row as a line on stderr (above the bar while it is drawn)."""
    head = f"[sae {i}] " if n > 1 else ""
    of = f"/{planned}" if planned is not None else ""
    print(
        f"{head}step {int(row['step'])}{of}: loss {row['loss']:.4g}  fvu {row['fvu']:.4f}  "
        f"l0 {row['l0']:.1f}  dead in training {row['dead_in_training']:.3f}",
        file=sys.stderr,
    )


def _check(
    run: _Run, i: int, step: int, checkpoint_dir: str | Path | None, runs: list[_Run], t0: float
) -> None:
    """One host sync: finiteness, dead-set refresh, snapshot."""
    finite_params = all(bool(torch.isfinite(p).all()) for p in run.params)
    _, _, dist = _dist()
    if dist is not None:  # every rank stops together, whichever read the bad inputs
        dist.all_reduce(run.nonfinite_inputs)
    bad_inputs = int(run.nonfinite_inputs)
    last_loss = run.sums.get("loss")
    finite_loss = last_loss is None or bool(torch.isfinite(last_loss))
    if finite_params and finite_loss and bad_inputs == 0:
        run.state.refresh()
        run.snapshot = copy.deepcopy(run.sae.state_dict())
        if isinstance(run.opt, ScheduleFreeSignSGD):  # keep the point a result would hold
            for name, p in run.sae.named_parameters():
                run.snapshot[name] = run.opt.average(p)
        run.snapshot_step = step
        return
    # restore every SAE of the sweep to its last good state and stop
    for r in runs:
        r.sae.load_state_dict(r.snapshot)
        r.sae.eval()
    cause = (
        f"{bad_inputs} NaN/inf input values reached the SAE"
        if bad_inputs
        else "the loss or the weights became NaN/inf (try a lower lr or max_grad_norm)"
    )
    where = ""
    if checkpoint_dir is not None:
        path = Path(checkpoint_dir) / f"sae_{i}"
        _save(run.sae, path)
        where = f"; it was saved to {path}"
    result = TrainResult(
        run.sae, run.history, run.state, n_steps=run.snapshot_step, seconds=time.perf_counter() - t0
    )
    raise SAETrainingError(
        f"SAE training stopped between steps {run.snapshot_step} and {step}: {cause}. The SAE "
        f"was restored to step {run.snapshot_step}, the last finite check{where}.",
        result,
    )


def _save(sae: SparseAutoencoder, path: Path) -> None:
    from repscope.sae.io._saelens import save_sae

    save_sae(sae, path)
