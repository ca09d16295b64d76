"""Time-to-FVU runs for ``benchmarks/sae_train.py --time-to-fvu``: repscope and sparsify at their
defaults on real activations.

Each case trains a TopK SAE (``k`` active latents, ``d_sae = expansion * d``, batch ``batch``)
for ``steps`` steps on the shared stream of shuffled training tokens, and every ``eval_every``
steps stops its CPU clock, measures the FVU on the held-out tokens
(``sum ||x - x_hat||^2 / sum ||x - mean||^2``, in the input space) and restarts the clock. The
curve of (step, training CPU-seconds, held-out FVU) comes back; the parent reads the time to a
target FVU off it. Schedule-free optimisers are evaluated at their average iterate (``eval()``,
the point either library keeps), and go back to the interpolation point to train on.

- ``repscope``: :func:`repscope.sae.fit` at its defaults (``TopKConfig(d_in, d_sae, k, seed)``
  and ``TrainSettings(n_steps, batch_size, log_every, seed)``: schedule-free sign-SGD at its
  default learning rate, encoder columns starting at norm 0.58, chosen by these measurements);
  ``repscope_adam``: Adam at its default learning rate with the unit-norm encoder start (the
  defaults before). The case reaches the optimiser for the evaluations by wrapping
  ``make_optimizer`` (instrumentation only; training is untouched).
- ``sparsify`` (``eai-sparsify``): ``SparseCoder`` at ``SparseCoderConfig`` defaults and its
  trainer's default optimiser, ``ScheduleFreeWrapper(SignSGD, momentum=0.95)`` at
  ``5e-3 / sqrt(d_sae / 2**14)``, the trainer's step written out (its trainer only runs on a
  live Hugging Face model): ``b_dec`` = batch mean at step 0, unit decoder rows before each
  forward, loss ``out.fvu`` (``auxk_alpha`` defaults to 0), gradient parallel to the decoder
  rows removed, step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class PausableClock:
    """CPU seconds (``time.process_time``) of training only: paused around evaluations."""

    def __init__(self) -> None:
        self.total = 0.0
        self.t: float | None = None

    def resume(self) -> None:
        self.t = time.process_time()

    def pause(self) -> float:
        if self.t is not None:
            self.total += time.process_time() - self.t
            self.t = None
        return self.total


def _torch(spec: dict[str, Any]) -> Any:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(spec["seed"])
    return torch


def _data(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(training tokens memmap, held-out tokens array) from the spec's token file."""
    x = np.load(spec["data"], mmap_mode="r")
    n_train = spec["n_train"]
    held = np.array(x[n_train : n_train + spec["n_eval"]], dtype=np.float32)
    return x[:n_train], held


def batches(spec: dict[str, Any]) -> Iterator[Any]:
    """The shared stream: a fresh seeded permutation of the training tokens per epoch."""
    torch = _torch(spec)
    train, _ = _data(spec)
    rng = np.random.default_rng(spec["seed"])
    b = spec["batch"]
    per_epoch = len(train) // b
    i = 0
    while True:
        perm = rng.permutation(len(train))
        for j in range(per_epoch):
            if i >= spec["steps"]:
                return
            idx = np.sort(perm[j * b : (j + 1) * b])
            yield torch.from_numpy(np.ascontiguousarray(train[idx], dtype=np.float32))
            i += 1


def held_out_fvu(spec: dict[str, Any], reconstruct: Callable[[Any], Any]) -> float:
    torch = _torch(spec)
    _, held = _data(spec)
    x = torch.from_numpy(held)
    sse = 0.0
    with torch.no_grad():
        for a in range(0, len(x), 4096):
            xb = x[a : a + 4096]
            sse += float((xb.double() - reconstruct(xb).double()).pow(2).sum())
    tot = float((x.double() - x.double().mean(0)).pow(2).sum())
    return sse / tot


def floor_seconds(spec: dict[str, Any], reps: int = 5) -> float:
    """Median CPU-s of one dense encoder product plus top-k on a batch (the per-step floor)."""
    torch = _torch(spec)
    d = spec["d"]
    m = spec["expansion"] * d
    x = torch.randn(spec["batch"], d)
    w = torch.randn(d, m) / d**0.5
    b = torch.zeros(m)
    times = []
    for _ in range(reps + 1):
        t = time.process_time()
        pre = torch.addmm(b, x, w)
        pre.topk(spec["k"], dim=-1, sorted=False)
        times.append(time.process_time() - t)
    return float(np.median(times[1:]))


def run_repscope(spec: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``overrides``: ``optimizer`` (a TrainSettings field) and ``encoder_init_norm`` (a
    TopKConfig field) away from the library's defaults."""
    _torch(spec)
    import repscope.sae.training._trainer as trainer
    from repscope.sae import TopKConfig, TopKSAE, TrainSettings, fit

    train, _ = _data(spec)
    d = spec["d"]
    init = {k: v for k, v in overrides.items() if k == "encoder_init_norm"}
    sae = TopKSAE(TopKConfig(d_in=d, d_sae=spec["expansion"] * d, k=spec["k"], seed=spec["seed"],
                             **init))
    made: list[Any] = []
    make = trainer.make_optimizer

    def capture(*args: Any, **kwargs: Any) -> Any:
        made.append(make(*args, **kwargs))
        return made[-1]

    trainer.make_optimizer = capture
    clock = PausableClock()
    curve: list[tuple[int, float, float]] = []

    def reconstruct(x: Any) -> Any:
        return sae(x).reconstruction

    def on_row(i: int, row: dict[str, float]) -> None:
        cpu = clock.pause()
        opt = made[0]
        if hasattr(opt, "eval"):
            opt.eval()
        curve.append((int(row["step"]), cpu, held_out_fvu(spec, reconstruct)))
        if hasattr(opt, "train"):
            opt.train()
        clock.resume()

    kwargs: dict[str, Any] = {k: v for k, v in overrides.items() if k == "optimizer"}
    if spec.get("lr") is not None:
        kwargs["lr"] = spec["lr"]
    settings = TrainSettings(
        n_steps=spec["steps"],
        batch_size=spec["batch"],
        log_every=spec["eval_every"],
        check_every=spec["eval_every"],
        seed=spec["seed"],
        **kwargs,
    )
    clock.resume()  # initialisation (normaliser, geometric median) counts: users pay it
    try:
        res = fit(train, sae, settings, callback=on_row)
    finally:
        trainer.make_optimizer = make
    return {
        "curve": curve,
        "settings": {k: v for k, v in res.history.items() if k == "lr"},
        "version": _version("repscope"),
    }


def run_repscope_adam(spec: dict[str, Any]) -> dict[str, Any]:
    return run_repscope(spec, optimizer="adam", encoder_init_norm=None)


def run_sparsify(spec: dict[str, Any]) -> dict[str, Any]:
    torch = _torch(spec)
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    d = spec["d"]
    cfg = SparseCoderConfig(expansion_factor=spec["expansion"], k=spec["k"])
    sae = SparseCoder(d, cfg, device="cpu", dtype=torch.float32)
    lr = spec.get("lr") or 5e-3 / (sae.num_latents / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD([{"params": sae.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
    clock = PausableClock()
    curve: list[tuple[int, float, float]] = []

    def reconstruct(x: Any) -> Any:
        return sae(x).sae_out.float()

    clock.resume()
    for step, x in enumerate(batches(spec)):
        if step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        if (step + 1) % spec["eval_every"] == 0 or step + 1 == spec["steps"]:
            cpu = clock.pause()
            opt.eval()
            curve.append((step + 1, cpu, held_out_fvu(spec, reconstruct)))
            opt.train()
            clock.resume()
    return {"curve": curve, "version": _version("eai-sparsify")}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


#: Interpreter of each case (overridden by ``--python-<name>``); None means the harness's own.
PYTHON: dict[str, str | None] = {
    "repscope": None,
    "repscope_adam": None,
    "sparsify": "/tmp/venv-sparsify/bin/python",
}

CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "repscope": run_repscope,
    "repscope_adam": run_repscope_adam,
    "sparsify": run_sparsify,
}
