"""TopK SAE training runs for ``benchmarks/sae_train.py``: repscope and its anchors.

Each case trains a TopK SAE (``k`` active latents, ``d_sae = expansion * d``) on the shared
memory-mapped data for ``warmup + steps`` Adam steps of ``batch`` vectors, the way that
library's users would, and reports the CPU time of the last ``steps`` steps (the warm-up
steps, data-dependent initialisation included, are not timed), the FVU on held-out rows and
the fraction of latents that never fire on them. Imports are lazy: every case runs in its own
process with its own interpreter (the anchors live in separate venvs).

- ``repscope``: :func:`repscope.sae.fit` with :class:`~repscope.sae.TopKSAE` (defaults: "scale"
  normaliser, geometric-median decoder bias, AuxK, decoder renormalisation).
- ``sparsify`` (PyPI ``eai-sparsify``): ``SparseCoder`` with ``SparseCoderConfig``; its trainer
  only runs on a live Hugging Face model, so the loop is the trainer's step written out:
  ``b_dec`` = batch mean at step 0, unit decoder rows before each forward, loss ``out.fvu``
  (``auxk_alpha`` defaults to 0), ``remove_gradient_parallel_to_decoder_directions``, Adam.
- ``saelens`` (``sae-lens``): ``TopKTrainingSAE`` + ``SAETrainer`` fed by an iterator of
  batches (its ``DataProvider``), the documented way to train on your own tensors.
- ``dictionary_learning``: ``TopKTrainer.update(step, x)`` per step (the body of
  ``trainSAE`` without the activation buffer), ``warmup_steps=0`` so every library trains at
  the same constant learning rate. The package ``__init__`` imports nnsight, which fails with
  transformers 5; the case imports ``dictionary_learning.trainers`` alone.
- ``overcomplete``: ``TopKSAE`` + ``train_sae`` with the README's MSE criterion. Importing
  ``overcomplete`` fails when its torchvision does not match torch (the package ``__init__``
  imports the vision models); the case imports ``overcomplete.sae`` alone.

A case returns the CPU/wall time of the timed steps, the peak RSS when training ended, FVU,
dead fraction and mean L0 on the held-out rows, and the library's version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import _harness
import numpy as np

#: Interpreter of each case (overridden by ``--python-<name>``); None means the harness's own.
PYTHON: dict[str, str | None] = {
    "repscope": None,
    "sparsify": "/tmp/venv-sparsify/bin/python",
    "saelens": "/tmp/venv-saelens/bin/python",
    "dictionary_learning": "/tmp/venv-dictlearn/bin/python",
    "overcomplete": "/tmp/venv-overcomplete/bin/python",
}


class Clock:
    """CPU and wall time between the end of the warm-up and the end of training, and the
    process's peak resident size when training ended (before evaluation allocates)."""

    def __init__(self) -> None:
        self.c0 = self.w0 = self.c1 = self.w1 = self.peak_mb = float("nan")

    def start(self) -> None:
        self.c0, self.w0 = time.process_time(), time.perf_counter()

    def stop(self) -> None:
        self.c1, self.w1 = time.process_time(), time.perf_counter()
        self.peak_mb = _harness.peak_rss_bytes() / 2**20

    def result(self) -> dict[str, float]:
        return {"cpu": self.c1 - self.c0, "wall": self.w1 - self.w0, "peak_mb": self.peak_mb}


def import_skipping_init(package: str, module: str) -> Any:
    """Import ``package.module`` without running ``package/__init__.py`` (overcomplete's
    imports torchvision and breaks when it does not match torch; dictionary_learning's imports
    nnsight, which breaks with transformers 5)."""
    import importlib
    import importlib.util
    import sys
    import types

    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"{package} is not installed")
        pkg = types.ModuleType(package)
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules[package] = pkg
    return importlib.import_module(f"{package}.{module}")


def _torch(spec: dict[str, Any]) -> Any:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(spec["seed"])
    return torch


def _data(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(spec["data"], mmap_mode="r")
    n_train = spec["n_train"]
    return x[:n_train], np.array(x[n_train : n_train + spec["n_eval"]], dtype=np.float32)


def batches(spec: dict[str, Any], clock: Clock | None = None) -> Iterator[Any]:
    """The shared stream of training batches (float32 tensors of ``batch`` rows): a fresh
    permutation of the training rows per epoch. With ``clock``, the clock starts when the
    first batch after the warm-up is requested, i.e. once the warm-up steps are done."""
    torch = _torch(spec)
    train, _ = _data(spec)
    rng = np.random.default_rng(spec["seed"])
    b, total = spec["batch"], spec["warmup"] + spec["steps"]
    per_epoch = len(train) // b
    i = 0
    while True:
        perm = rng.permutation(len(train))
        for j in range(per_epoch):
            if clock is not None and i == spec["warmup"]:
                clock.start()
            if i >= total:
                return
            idx = np.sort(perm[j * b : (j + 1) * b])
            yield torch.from_numpy(np.ascontiguousarray(train[idx], dtype=np.float32))
            i += 1


def evaluate(spec: dict[str, Any], forward: Callable[[Any], tuple[Any, Any]]) -> dict[str, float]:
    """FVU and dead fraction on the held-out rows; ``forward(x) -> (codes, x_hat)`` (dense
    codes, reconstruction in the input space)."""
    torch = _torch(spec)
    _, held = _data(spec)
    x = torch.from_numpy(held)
    sse = 0.0
    fired = None
    l0 = 0.0
    with torch.no_grad():
        for a in range(0, len(x), 2048):
            xb = x[a : a + 2048]
            codes, x_hat = forward(xb)
            sse += float((xb.double() - x_hat.double()).pow(2).sum())
            active = codes != 0
            l0 += float(active.sum())
            f = active.any(0)
            fired = f if fired is None else fired | f
    assert fired is not None
    tot = float((x.double() - x.double().mean(0)).pow(2).sum())
    return {"fvu": sse / tot, "dead": 1.0 - float(fired.float().mean()), "l0": l0 / len(x)}


# --------------------------------------------------------------------------- cases
def run_repscope(spec: dict[str, Any]) -> dict[str, Any]:
    _torch(spec)
    from repscope.sae import TopKConfig, TopKSAE, TrainSettings, fit

    train, _ = _data(spec)
    d = train.shape[1]
    sae = TopKSAE(TopKConfig(d_in=d, d_sae=spec["expansion"] * d, k=spec["k"], seed=spec["seed"]))
    clock = Clock()

    def on_row(i: int, row: dict[str, float]) -> None:
        if int(row["step"]) == spec["warmup"]:
            clock.start()

    settings = TrainSettings(
        n_steps=spec["warmup"] + spec["steps"],
        batch_size=spec["batch"],
        optimizer="adam",  # this table compares every library at the same Adam step
        lr=spec["lr"],
        log_every=spec["warmup"],
        seed=spec["seed"],
    )
    fit(train, sae, settings, callback=on_row, device=spec["device"])
    clock.stop()
    sae.eval()

    def forward(x: Any) -> tuple[Any, Any]:
        out = sae(x.to(spec["device"]))
        return out.dense().cpu(), out.reconstruction.cpu()

    return {**clock.result(), **evaluate(spec, forward), "version": _version("repscope")}


def run_sparsify(spec: dict[str, Any]) -> dict[str, Any]:
    torch = _torch(spec)
    from sparsify import SparseCoder, SparseCoderConfig

    d = spec["d"]
    dev = spec["device"]
    cfg = SparseCoderConfig(expansion_factor=spec["expansion"], k=spec["k"])
    sae = SparseCoder(d, cfg, device=dev, dtype=torch.float32)
    opt = torch.optim.Adam(sae.parameters(), lr=spec["lr"])
    clock = Clock()
    for step, x in enumerate(batches(spec, clock)):
        x = x.to(dev)
        if step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    clock.stop()
    sae.set_decoder_norm_to_unit_norm()

    def forward(x: Any) -> tuple[Any, Any]:
        out = sae(x.to(dev))
        codes = torch.zeros(len(x), sae.num_latents, device=dev).scatter_(
            -1, out.latent_indices, out.latent_acts.float()
        )
        return codes.cpu(), out.sae_out.float().cpu()

    return {**clock.result(), **evaluate(spec, forward), "version": _version("eai-sparsify")}


def run_saelens(spec: dict[str, Any]) -> dict[str, Any]:
    _torch(spec)
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d, dev = spec["d"], spec["device"]
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(d_in=d, d_sae=spec["expansion"] * d, k=spec["k"], device=dev)
    )
    total = (spec["warmup"] + spec["steps"]) * spec["batch"]
    cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=spec["batch"],
        lr=spec["lr"],
        lr_end=spec["lr"],  # SAETrainer asserts it is set (the runner config's post-init does)
        device=dev,
    )
    clock = Clock()
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches(spec, clock))
    trainer.fit()
    clock.stop()
    sae.eval()

    def forward(x: Any) -> tuple[Any, Any]:
        x = x.to(dev)
        codes = sae.encode(x)
        return codes.cpu(), sae.decode(codes).cpu()

    return {**clock.result(), **evaluate(spec, forward), "version": _version("sae-lens")}


def run_dictionary_learning(spec: dict[str, Any]) -> dict[str, Any]:
    _torch(spec)
    TopKTrainer = import_skipping_init("dictionary_learning", "trainers.top_k").TopKTrainer

    d, dev = spec["d"], spec["device"]
    total = spec["warmup"] + spec["steps"]
    trainer = TopKTrainer(
        steps=total,
        activation_dim=d,
        dict_size=spec["expansion"] * d,
        k=spec["k"],
        layer=0,
        lm_name="synthetic",
        lr=spec["lr"],
        warmup_steps=0,
        seed=spec["seed"],
        device=dev,
    )
    clock = Clock()
    for step, x in enumerate(batches(spec, clock)):
        trainer.update(step, x.to(dev))
    clock.stop()
    ae = trainer.ae.eval()

    def forward(x: Any) -> tuple[Any, Any]:
        x_hat, f = ae(x.to(dev), output_features=True)
        return f.cpu(), x_hat.cpu()

    return {**clock.result(), **evaluate(spec, forward), "version": _version("dictionary-learning")}


def run_overcomplete(spec: dict[str, Any]) -> dict[str, Any]:
    torch = _torch(spec)
    oc = import_skipping_init("overcomplete", "sae")
    d, dev = spec["d"], spec["device"]
    sae = oc.TopKSAE(d, nb_concepts=spec["expansion"] * d, top_k=spec["k"], device=dev)
    optimizer = torch.optim.Adam(sae.parameters(), lr=spec["lr"])

    def criterion(x: Any, x_hat: Any, pre_codes: Any, codes: Any, dictionary: Any) -> Any:
        return (x - x_hat).square().mean()  # the README's TopK criterion

    clock = Clock()

    class Stream:
        def __iter__(self) -> Iterator[Any]:
            return batches(spec, clock)

    oc.train_sae(sae, Stream(), criterion, optimizer, nb_epochs=1, device=dev)
    clock.stop()
    sae.eval()

    def forward(x: Any) -> tuple[Any, Any]:
        _, codes, x_hat = sae(x.to(dev))
        return codes.cpu(), x_hat.cpu()

    return {**clock.result(), **evaluate(spec, forward), "version": _version("overcomplete")}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _preload_repscope() -> None:
    import repscope.sae  # noqa: F401


def _preload_sparsify() -> None:
    import sparsify  # noqa: F401


def _preload_saelens() -> None:
    import sae_lens.training.sae_trainer  # noqa: F401


#: Imports done before the memory baseline (the library itself is not "training memory").
PRELOAD: dict[str, Callable[[], Any]] = {
    "repscope": _preload_repscope,
    "sparsify": _preload_sparsify,
    "saelens": _preload_saelens,
    "dictionary_learning": lambda: import_skipping_init("dictionary_learning", "trainers.top_k"),
    "overcomplete": lambda: import_skipping_init("overcomplete", "sae"),
}

CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "repscope": run_repscope,
    "sparsify": run_sparsify,
    "saelens": run_saelens,
    "dictionary_learning": run_dictionary_learning,
    "overcomplete": run_overcomplete,
}
