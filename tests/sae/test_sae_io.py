"""Saving and loading SAEs: SAELens's format both ways, sparsify and dictionary_learning
checkpoints, round trips of every architecture, and the errors.

The SAELens fixtures under ``tests/data/`` were written by ``scripts/make_saelens_fixture.py``
in SAELens's layout with a naive re-implementation of SAELens's forward; the same expected
outputs were confirmed with SAELens 6.54.12 itself (``SAE.load_from_disk``). The foreign
checkpoints here are written by the tests in each library's layout, and each loader is checked
against a naive forward written from that library's source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from repscope.exceptions import DataNotFoundError, RepscopeValueError
from repscope.sae.archs import _base
from repscope.sae.archs._base import SparseAutoencoder, architectures
from repscope.sae.io import (
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    load_dictionary_learning,
    load_sae,
    load_sparsify,
    save_sae,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TOPK_FIXTURE = DATA / "saelens_topk_fixture"
JUMPRELU_FIXTURE = DATA / "saelens_jumprelu_fixture"
ATOL = 1e-5


# ---------------------------------------------------------------------------- naive references
def saelens_forward(cfg: dict[str, Any], w: dict[str, torch.Tensor], x: torch.Tensor):
    """SAELens 6.x inference forward (codes, reconstruction) written from its source:
    ``process_sae_in`` then the architecture's ``encode``/``decode``; training checkpoints of
    BatchTopK are read as SAELens's inference conversion (JumpReLU at ``topk_threshold``)."""
    arch = cfg["architecture"]
    sae_in = x - w["b_dec"] * bool(cfg.get("apply_b_dec_to_input", True))
    if arch == "gated":
        gate = (sae_in @ w["W_enc"] + w["b_gate"] > 0).to(x.dtype)
        mag = torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
        acts = gate * mag
        return acts, acts @ w["W_dec"] + w["b_dec"]
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    norms = w["W_dec"].norm(dim=-1)
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", arch == "batchtopk"))
    if arch == "standard":
        acts = torch.relu(pre)
    elif arch == "topk":
        if rescale:
            pre = pre * norms
        vals, idx = torch.topk(pre, cfg["k"], dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    elif arch == "jumprelu":
        acts = torch.relu(pre) * (pre > w["threshold"]).to(pre.dtype)
    elif arch == "batchtopk":
        if rescale:
            pre = pre * norms
        acts = torch.relu(pre) * (pre > float(w["topk_threshold"])).to(pre.dtype)
    else:
        raise AssertionError(arch)
    dec = acts / norms[None, :] if rescale else acts
    return acts, dec @ w["W_dec"] + w["b_dec"]


def write_saelens(path: Path, cfg: dict[str, Any], w: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / SAE_CFG_FILENAME).write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in w.items()}, str(path / SAE_WEIGHTS_FILENAME))
    return path


def random_saelens(arch: str, d_in: int = 12, d_sae: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * (0.3 + torch.rand(d_sae, 1, generator=g)),
        "b_dec": 0.3 * torch.randn(d_in, generator=g) + 1.0,
    }
    if arch == "gated":
        w.update(
            b_gate=0.1 * torch.randn(d_sae, generator=g),
            r_mag=0.2 * torch.randn(d_sae, generator=g),
            b_mag=0.1 * torch.randn(d_sae, generator=g),
        )
    else:
        w["b_enc"] = 0.1 * torch.randn(d_sae, generator=g)
    if arch == "jumprelu":
        w["threshold"] = 0.3 * torch.rand(d_sae, generator=g)
    if arch == "batchtopk":
        w["topk_threshold"] = torch.tensor(0.25, dtype=torch.float64)
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": arch != "jumprelu",
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.3.hook_resid_post"},
    }
    if arch in ("topk", "batchtopk"):
        cfg["k"] = 5
    return cfg, w


def inputs(d_in: int, n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g) * torch.linspace(0.3, 2.0, d_in) + 0.7


# ---------------------------------------------------------------------------- SAELens fixtures
@pytest.mark.parametrize("fixture", [TOPK_FIXTURE, JUMPRELU_FIXTURE], ids=["topk", "jumprelu"])
def test_saelens_fixture_forward_matches_expected(fixture):
    sae = load_sae(fixture)
    x = torch.from_numpy(np.load(fixture / "inputs.npy"))
    with torch.no_grad():
        out = sae(x)
    np.testing.assert_allclose(
        out.reconstruction.numpy(), np.load(fixture / "expected_output.npy"), atol=ATOL
    )
    np.testing.assert_allclose(
        out.dense().numpy(), np.load(fixture / "expected_feature_acts.npy"), atol=ATOL
    )
    assert sae.cfg.normalize_activations == "none"
    assert sae.cfg.metadata["saelens"]["hook_name"] == "blocks.0.hook_resid_post"


def test_saelens_fixture_matches_the_naive_reference():
    """The fixture's expected outputs are what the naive SAELens forward gives on its files."""
    for fixture in (TOPK_FIXTURE, JUMPRELU_FIXTURE):
        cfg = json.loads((fixture / SAE_CFG_FILENAME).read_text())
        w = load_file(str(fixture / SAE_WEIGHTS_FILENAME))
        _, y = saelens_forward(cfg, w, torch.from_numpy(np.load(fixture / "inputs.npy")))
        np.testing.assert_allclose(y.numpy(), np.load(fixture / "expected_output.npy"), atol=ATOL)


SAELENS_CASES = [
    (arch, rescale)
    for arch in ("standard", "topk", "jumprelu", "gated", "batchtopk")
    for rescale in (False, True)
    if not rescale or arch in ("topk", "batchtopk")  # the flag exists for the TopK family only
]


@pytest.mark.parametrize(("arch", "rescale"), SAELENS_CASES)
def test_saelens_files_load_with_saelens_forward(tmp_path, arch, rescale):
    cfg, w = random_saelens(arch)
    if arch in ("topk", "batchtopk"):
        cfg["rescale_acts_by_decoder_norm"] = rescale
    write_saelens(tmp_path / arch, cfg, w)
    sae = load_sae(tmp_path / arch, expected_d_in=12)
    x = inputs(12)
    codes, y = saelens_forward(cfg, w, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.reconstruction, y, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.dense(), codes, atol=ATOL, rtol=1e-5)
    assert 0 < int((codes != 0).sum()) < codes.numel()  # the sparsifier did something


def test_saelens_pre_v6_topk_layout(tmp_path):
    """SAELens 5.x: no ``architecture``, ``activation_fn_str='topk'`` with its k in
    ``activation_fn_kwargs``, a boolean ``normalize_activations`` and an all-ones
    ``scaling_factor`` tensor."""
    cfg = json.loads((TOPK_FIXTURE / SAE_CFG_FILENAME).read_text())
    old = {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "dtype": "torch.float32",
        "device": "cpu",
        "hook_point": "blocks.0.hook_resid_post",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": cfg["k"]},
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "finetuning_scaling_factor": False,
    }
    w = load_file(str(TOPK_FIXTURE / SAE_WEIGHTS_FILENAME))
    w["scaling_factor"] = torch.ones(cfg["d_sae"])
    write_saelens(tmp_path / "old", old, w)
    sae = load_sae(tmp_path / "old")
    x = torch.from_numpy(np.load(TOPK_FIXTURE / "inputs.npy"))
    with torch.no_grad():
        y = sae(x).reconstruction
    np.testing.assert_allclose(y.numpy(), np.load(TOPK_FIXTURE / "expected_output.npy"), atol=ATOL)
    assert sae.architecture == "topk" and sae.cfg.k == cfg["k"]


def test_saelens_unsupported_normaliser_and_architecture(tmp_path):
    cfg, w = random_saelens("standard")
    write_saelens(tmp_path / "ln", {**cfg, "normalize_activations": "layer_norm"}, w)
    with pytest.raises(RepscopeValueError, match="layer_norm"):
        load_sae(tmp_path / "ln")
    write_saelens(tmp_path / "mp", {**cfg, "architecture": "temporal"}, w)
    with pytest.raises(RepscopeValueError, match="temporal.*Supported"):
        load_sae(tmp_path / "mp")
    write_saelens(tmp_path / "avg", {**cfg, "normalize_activations": "expected_average_only_in"}, w)
    with pytest.warns(UserWarning, match="norm scaling factor"):
        load_sae(tmp_path / "avg")


# ---------------------------------------------------------------------------- our saves
def _config_kwargs(name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(architectures.get(name).config_class)}
    kw: dict[str, Any] = {}
    if "k" in fields:
        kw["k"] = 4
    return kw


def _buildable(name: str, mode: str) -> bool:
    cfg_cls = architectures.get(name).config_class
    try:
        cfg_cls(d_in=8, d_sae=32, normalize_activations=mode, **_config_kwargs(name)).validate()
    except RepscopeValueError:
        return False  # e.g. matching pursuit refuses whitening by design
    return True


ROUND_TRIPS = [
    (name, mode)
    for name in architectures.names()
    for mode in ("none", "scale", "whiten")
    if _buildable(name, mode)
]


def _trained_like(name: str, mode: str, seed: int = 0) -> tuple[SparseAutoencoder, torch.Tensor]:
    """An SAE with random (non-initial) parameters and a fitted normaliser, plus raw inputs."""
    cls = architectures.get(name)
    cfg = cls.config_class(d_in=8, d_sae=32, normalize_activations=mode, **_config_kwargs(name))
    sae = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    shape = sae.sample_shape
    mix = torch.randn(8, 8, generator=g) * torch.linspace(0.2, 3.0, 8)
    x = (torch.randn(256, *shape[:-1], 8, generator=g) @ mix + 4.0).reshape(256, *shape)
    with torch.no_grad():
        sae.fit_normalizer(x.reshape(-1, *shape)[:200])
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if hasattr(sae, "topk_threshold"):
            sae.topk_threshold.fill_(0.05)
    return sae.eval(), x


@pytest.mark.parametrize(("name", "mode"), ROUND_TRIPS)
def test_round_trip_every_architecture(tmp_path, name, mode):
    sae, x = _trained_like(name, mode)
    with torch.no_grad():
        ref = sae(x)
    save_sae(sae, tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    assert type(back) is type(sae)
    assert back.cfg.normalize_activations == "none"
    with torch.no_grad():
        got = back(x)
    torch.testing.assert_close(got.reconstruction, ref.reconstruction, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(got.dense(), ref.dense(), atol=ATOL, rtol=1e-5)
    saved = json.loads((tmp_path / "sae" / SAE_CFG_FILENAME).read_text())
    assert saved["metadata"]["repscope"]["config"]["normalize_activations"] == mode
    assert saved["normalize_activations"] == "none"
    # the unfolded config survives apart from the (folded) normaliser
    want = {**sae.cfg.to_dict(), "normalize_activations": "none"}
    have = back.cfg.to_dict()
    for key, value in want.items():
        if key != "metadata":
            assert json.loads(json.dumps(have[key])) == json.loads(json.dumps(value)), key


@pytest.mark.parametrize("name", ["relu", "topk", "jumprelu", "gated", "batchtopk"])
def test_saved_files_follow_saelens_layout(tmp_path, name):
    """What save_sae writes is a SAELens file: SAELens's architecture name and tensor names,
    and SAELens's forward (naive reference) on it equals ours."""
    sae, x = _trained_like(name, "scale", seed=3)
    save_sae(sae, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / SAE_CFG_FILENAME).read_text())
    w = load_file(str(tmp_path / "s" / SAE_WEIGHTS_FILENAME))
    want_arch = {"relu": "standard"}.get(name, name)
    assert cfg["architecture"] == want_arch
    assert cfg["normalize_activations"] == "none" and cfg["d_in"] == 8 and cfg["d_sae"] == 32
    expected = {
        "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
        "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
        "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
        "gated": {"W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"},
        "batchtopk": {"W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"},
    }[want_arch]
    assert set(w) == expected
    codes, y = saelens_forward(cfg, w, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.reconstruction, y, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.dense(), codes, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["relu", "jumprelu", "gated", "topk"])
def test_whitening_fold_without_decoder_bias_subtraction(tmp_path, name):
    """Folding a whitening normaliser when the encoder does not subtract b_dec needs the mean
    shift in the encoder biases (SAELens's fold_activation_whitening does it)."""
    cls = architectures.get(name)
    sae = cls(
        cls.config_class(
            d_in=8,
            d_sae=32,
            normalize_activations="whiten",
            apply_b_dec_to_input=False,
            **_config_kwargs(name),
        )
    )
    _, x = _trained_like("relu", "none")
    with torch.no_grad():
        sae.fit_normalizer(x)
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ref = sae(x)
    save_sae(sae, tmp_path / "w")
    with torch.no_grad():
        got = load_sae(tmp_path / "w")(x)
    # float32 cancellation: x @ (P W_enc) - mu P W_enc against (x - mu) @ P @ W_enc, |x| ~ 4
    torch.testing.assert_close(got.reconstruction, ref.reconstruction, atol=1e-4, rtol=1e-4)
    assert (
        float((got.reconstruction - ref.reconstruction).abs().max())
        < 1e-3
        < float((sae.input_mean @ sae.input_transform @ sae.W_enc.detach()).abs().max())
    )  # the mean shift is far larger than the tolerance: without it the test fails


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_replaces_an_sae_atomically(tmp_path, monkeypatch):
    a, x = _trained_like("topk", "scale", seed=1)
    b, _ = _trained_like("topk", "scale", seed=2)
    save_sae(a, tmp_path / "s")
    assert (tmp_path / "s").stat().st_mode & 0o055 == 0o055 & ~_umask()  # not a private dir
    save_sae(b, tmp_path / "s")  # replaces
    with torch.no_grad():
        torch.testing.assert_close(
            load_sae(tmp_path / "s")(x).reconstruction, b(x).reconstruction, atol=ATOL, rtol=1e-5
        )
    import repscope.sae.io._saelens as io_mod

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(io_mod, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_sae(a, tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary left behind
    with torch.no_grad():
        torch.testing.assert_close(
            load_sae(tmp_path / "s")(x).reconstruction, b(x).reconstruction, atol=ATOL, rtol=1e-5
        )


def test_save_refuses_foreign_directory_and_files(tmp_path):
    sae, _ = _trained_like("topk", "none")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(RepscopeValueError, match="other files"):
        save_sae(sae, tmp_path / "d")
    (tmp_path / "f").write_text("x")
    with pytest.raises(RepscopeValueError, match="is a file"):
        save_sae(sae, tmp_path / "f")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- errors
def test_shape_mismatch_names_file_field_and_shapes(tmp_path):
    d = shutil.copytree(TOPK_FIXTURE, tmp_path / "bad")
    cfg = json.loads((d / SAE_CFG_FILENAME).read_text())
    cfg["d_sae"] = 32
    (d / SAE_CFG_FILENAME).write_text(json.dumps(cfg))
    with pytest.raises(RepscopeValueError) as err:
        load_sae(d)
    msg = str(err.value)
    assert SAE_WEIGHTS_FILENAME in msg and "'W_enc'" in msg and "(16, 64)" in msg
    assert "(16, 32)" in msg


def test_expected_d_in_mismatch(tmp_path):
    with pytest.raises(RepscopeValueError) as err:
        load_sae(TOPK_FIXTURE, expected_d_in=384)
    msg = str(err.value)
    assert "cfg.json" in msg and "'d_in'" in msg and "16" in msg and "384" in msg
    sae, _ = _trained_like("jumprelu", "scale")
    save_sae(sae, tmp_path / "j")
    with pytest.raises(RepscopeValueError, match="expected_d_in=9"):
        load_sae(tmp_path / "j", expected_d_in=9)
    assert load_sae(tmp_path / "j", expected_d_in=8).d_in == 8


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="No SAE directory"):
        load_sae(tmp_path / "nowhere")
    d = shutil.copytree(TOPK_FIXTURE, tmp_path / "partial")
    (d / SAE_WEIGHTS_FILENAME).unlink()
    with pytest.raises(DataNotFoundError, match=SAE_WEIGHTS_FILENAME):
        load_sae(d)
    (d / SAE_CFG_FILENAME).unlink()
    with pytest.raises(DataNotFoundError, match=SAE_CFG_FILENAME):
        load_sae(d)
    with pytest.raises(DataNotFoundError, match="sae.safetensors"):
        load_sparsify(shutil.copytree(TOPK_FIXTURE, tmp_path / "sp"))
    with pytest.raises(DataNotFoundError, match="ae.pt"):
        load_dictionary_learning(tmp_path / "sp")


def test_missing_tensor_is_named(tmp_path):
    cfg, w = random_saelens("jumprelu")
    del w["threshold"]
    write_saelens(tmp_path / "j", cfg, w)
    with pytest.raises(RepscopeValueError, match=r"missing \['threshold'\]"):
        load_sae(tmp_path / "j")


# ---------------------------------------------------------------------------- no pickle
@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle was called")

    real_load = torch.load

    def guarded_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is not True:
            raise AssertionError("torch.load without weights_only=True")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", guarded_load)


def test_loading_never_unpickles(tmp_path, no_pickle):
    load_sae(TOPK_FIXTURE)
    sae, _ = _trained_like("gated", "whiten")
    save_sae(sae, tmp_path / "g")
    load_sae(tmp_path / "g")
    state, cfg = dl_relu_checkpoint()
    write_dictionary_learning(tmp_path / "dl", state, cfg)
    load_dictionary_learning(tmp_path / "dl")
    write_sparsify(tmp_path / "sp", *sparsify_checkpoint())
    load_sparsify(tmp_path / "sp")


# ---------------------------------------------------------------------------- sparsify
def sparsify_checkpoint(d_in: int = 12, m: int = 48, k: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = {
        "encoder.weight": torch.randn(m, d_in, generator=g) / d_in**0.5,
        "encoder.bias": 0.1 * torch.randn(m, generator=g),
        "W_dec": torch.randn(m, d_in, generator=g) * 0.5,
        "b_dec": torch.randn(d_in, generator=g) + 0.5,
    }
    cfg = {
        "activation": "topk",
        "expansion_factor": 4,
        "normalize_decoder": True,
        "num_latents": 0,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    return cfg, w


def write_sparsify(path: Path, cfg: dict[str, Any], w: dict[str, torch.Tensor]) -> Path:
    """``SparseCoder.save_to_disk``: ``sae.safetensors`` (module state dict) + ``cfg.json``."""
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in w.items()}, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


def sparsify_forward(cfg: dict[str, Any], w: dict[str, torch.Tensor], x: torch.Tensor):
    """sparsify's ``SparseCoder.forward`` (eai-sparsify 1.3.3): ``fused_encoder`` is
    ``relu(linear(x - b_dec))`` then ``topk``; decode sums the chosen ``W_dec`` rows."""
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    vals, idx = pre.topk(cfg["k"], dim=-1, sorted=False)
    y = (vals[..., None] * w["W_dec"][idx]).sum(-2) + w["b_dec"]
    dense = torch.zeros_like(pre).scatter_(-1, idx, vals)
    return dense, y


def test_sparsify_checkpoint_reproduces_its_forward(tmp_path):
    cfg, w = sparsify_checkpoint()
    write_sparsify(tmp_path / "run" / "layers.3", cfg, w)
    cfg5 = {**cfg, "k": 3}
    write_sparsify(tmp_path / "run" / "layers.5", cfg5, sparsify_checkpoint(seed=5)[1])
    sae = load_sparsify(tmp_path / "run", hookpoint="layers.3")
    assert sae.architecture == "topk" and sae.d_sae == 48 and sae.cfg.k == 6
    x = inputs(12)
    codes, y = sparsify_forward(cfg, w, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.reconstruction, y, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.dense(), codes, atol=ATOL, rtol=1e-5)
    # the hookpoint directory itself works too
    assert load_sparsify(tmp_path / "run" / "layers.5").cfg.k == 3
    with pytest.raises(RepscopeValueError, match=r"layers\.3.*layers\.5"):
        load_sparsify(tmp_path / "run")
    with pytest.raises(RepscopeValueError, match="expected_d_in=7"):
        load_sparsify(tmp_path / "run", hookpoint="layers.3", expected_d_in=7)


def test_sparsify_unsupported_variants(tmp_path):
    cfg, w = sparsify_checkpoint()
    write_sparsify(
        tmp_path / "skip", {**cfg, "skip_connection": True}, {**w, "W_skip": torch.zeros(12, 12)}
    )
    with pytest.raises(RepscopeValueError, match="skip"):
        load_sparsify(tmp_path / "skip")
    write_sparsify(tmp_path / "gm", {**cfg, "activation": "groupmax"}, w)
    with pytest.raises(RepscopeValueError, match="groupmax"):
        load_sparsify(tmp_path / "gm")
    write_sparsify(tmp_path / "bad", {**cfg, "num_latents": 40}, w)
    with pytest.raises(RepscopeValueError, match="encoder.weight"):
        load_sparsify(tmp_path / "bad")


# ---------------------------------------------------------------------------- dictionary_learning
def write_dictionary_learning(
    path: Path, state: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """``trainSAE``'s output: ``ae.pt`` (``torch.save(ae.state_dict())``) + ``config.json``."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / "ae.pt")
    (path / "config.json").write_text(json.dumps(config))
    return path


def _dl_config(dict_class: str, trainer_class: str, **extra: Any) -> dict[str, Any]:
    return {
        "trainer": {
            "trainer_class": trainer_class,
            "dict_class": dict_class,
            "activation_dim": 12,
            "dict_size": 40,
            "lr": 1e-4,
            "device": "cpu",
            "layer": 3,
            "lm_name": "synthetic",
            "submodule_name": "resid_post_layer_3",
            **extra,
        },
        "buffer": {"d_submodule": 12, "io": "out", "n_ctxs": 10, "ctx_len": 16},
    }


def dl_relu_checkpoint(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = {
        "bias": torch.randn(12, generator=g) + 1.0,
        "encoder.weight": torch.randn(40, 12, generator=g) / 12**0.5,
        "encoder.bias": 0.1 * torch.randn(40, generator=g) - 0.1,
        "decoder.weight": torch.randn(12, 40, generator=g) * 0.4,
    }
    return state, _dl_config("AutoEncoder", "StandardTrainer")


def dl_topk_checkpoint(seed: int = 0, batch: bool = False):
    g = torch.Generator().manual_seed(seed)
    state = {
        "encoder.weight": torch.randn(40, 12, generator=g) / 12**0.5,
        "encoder.bias": 0.1 * torch.randn(40, generator=g),
        "decoder.weight": torch.randn(12, 40, generator=g) * 0.4,
        "b_dec": torch.randn(12, generator=g) + 1.0,
        "k": torch.tensor(5, dtype=torch.int64),
        "threshold": torch.tensor(0.2 if batch else -1.0),
    }
    cls = ("BatchTopKSAE", "BatchTopKTrainer") if batch else ("AutoEncoderTopK", "TopKTrainer")
    return state, _dl_config(*cls, k=5)


def dl_jumprelu_checkpoint(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = {
        "W_enc": torch.randn(12, 40, generator=g) / 12**0.5,
        "b_enc": 0.1 * torch.randn(40, generator=g),
        "W_dec": torch.randn(40, 12, generator=g) * (0.3 + torch.rand(40, 1, generator=g)),
        "b_dec": torch.randn(12, generator=g) + 1.0,
        "threshold": 0.2 * torch.rand(40, generator=g),
    }
    return state, _dl_config("JumpReluAutoEncoder", "JumpReluTrainer")


def dl_forward(kind: str, s: dict[str, torch.Tensor], x: torch.Tensor):
    """dictionary_learning's ``forward`` (codes, reconstruction), from dictionary.py."""
    if kind == "relu":  # AutoEncoder: relu(encoder(x - bias)); decoder(f) + bias
        f = torch.relu((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])
        return f, f @ s["decoder.weight"].T + s["bias"]
    if kind == "topk":  # AutoEncoderTopK: relu(encoder(x - b_dec)), topk, decoder(f) + b_dec
        post = torch.relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        vals, idx = post.topk(int(s["k"]), sorted=False, dim=-1)
        f = torch.zeros_like(post).scatter_(-1, idx, vals)
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if kind == "batchtopk":  # BatchTopKSAE in inference: threshold rule
        post = torch.relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        f = post * (post > s["threshold"])
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if kind == "matryoshka":  # MatryoshkaBatchTopKSAE in inference: threshold rule
        post = torch.relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
        f = post * (post > s["threshold"])
        return f, f @ s["W_dec"] + s["b_dec"]
    if kind == "gated":  # GatedAutoEncoder (normalize_decoder=False, the default)
        x_enc = (x - s["decoder_bias"]) @ s["encoder.weight"].T
        gate = (x_enc + s["gate_bias"] > 0).to(x.dtype)
        f = gate * torch.relu(s["r_mag"].exp() * x_enc + s["mag_bias"])
        return f, f @ s["decoder.weight"].T + s["decoder_bias"]
    # JumpReluAutoEncoder (apply_b_dec_to_input False)
    pre = x @ s["W_enc"] + s["b_enc"]
    f = torch.relu(pre * (pre > s["threshold"]))
    return f, f @ s["W_dec"] + s["b_dec"]


def dl_matryoshka_checkpoint(seed: int = 0):
    state, _ = dl_jumprelu_checkpoint(seed)
    state["threshold"] = torch.tensor(0.15)
    state["k"] = torch.tensor(5, dtype=torch.int32)
    state["group_sizes"] = torch.tensor([8, 12, 20])
    return state, _dl_config(
        "MatryoshkaBatchTopKSAE", "MatryoshkaBatchTopKTrainer", k=5, group_fractions=[0.2, 0.3, 0.5]
    )


def dl_gated_checkpoint(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = {
        "decoder_bias": torch.randn(12, generator=g) + 1.0,
        "encoder.weight": torch.randn(40, 12, generator=g) / 12**0.5,
        "r_mag": 0.2 * torch.randn(40, generator=g),
        "gate_bias": 0.1 * torch.randn(40, generator=g),
        "mag_bias": 0.1 * torch.randn(40, generator=g),
        "decoder.weight": torch.randn(12, 40, generator=g) * 0.4,
    }
    return state, _dl_config("GatedAutoEncoder", "GatedSAETrainer")


@pytest.mark.parametrize("kind", ["relu", "topk", "batchtopk", "matryoshka", "jumprelu", "gated"])
def test_dictionary_learning_checkpoints_reproduce_their_forward(tmp_path, kind):
    state, cfg = {
        "relu": dl_relu_checkpoint,
        "topk": dl_topk_checkpoint,
        "batchtopk": lambda: dl_topk_checkpoint(batch=True),
        "jumprelu": dl_jumprelu_checkpoint,
        "matryoshka": dl_matryoshka_checkpoint,
        "gated": dl_gated_checkpoint,
    }[kind]()
    d = write_dictionary_learning(tmp_path / "trainer_0", state, cfg)
    sae = load_dictionary_learning(d, expected_d_in=12)
    x = inputs(12)
    codes, y = dl_forward(kind, state, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.reconstruction, y, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.dense(), codes, atol=ATOL, rtol=1e-5)
    assert 0 < int((codes != 0).sum()) < codes.numel()
    # the ae.pt path alone works too (the class is then read from the tensors' names)
    again = load_dictionary_learning(d / "ae.pt")
    with torch.no_grad():
        torch.testing.assert_close(again(x).reconstruction, y, atol=ATOL, rtol=1e-5)


def test_dictionary_learning_dimension_mismatch(tmp_path):
    state, cfg = dl_relu_checkpoint()
    cfg["trainer"]["activation_dim"] = 16
    d = write_dictionary_learning(tmp_path / "t", state, cfg)
    with pytest.raises(RepscopeValueError, match="'activation_dim' is 16.*have 12"):
        load_dictionary_learning(d)
    cfg["trainer"]["activation_dim"] = 12
    write_dictionary_learning(d, state, cfg)
    with pytest.raises(RepscopeValueError, match="expected_d_in=16"):
        load_dictionary_learning(d / "ae.pt", expected_d_in=16)
    (d / "ae.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RepscopeValueError, match="weights_only"):
        load_dictionary_learning(d)


def test_registry_covers_the_saelens_mapping():
    assert {"relu", "topk", "jumprelu", "gated"} <= set(architectures.names())
    assert _base.architectures is architectures


@pytest.mark.parametrize(
    "statement",
    [
        "from repscope.sae import architectures as registry",
        "from repscope.sae.archs._base import architectures as registry",
        "from repscope.sae.io import load_sae\nregistry = sys.modules[BASE].architectures",
        "import repscope.sae.metrics\nregistry = sys.modules[BASE].architectures",
    ],
)
def test_every_architecture_is_registered_wherever_the_registry_is_reached(statement):
    # a fresh interpreter where only `statement` ran: the registry is already complete
    code = (
        f"import sys\nBASE = 'repscope.sae.archs._base'\n{statement}\n"
        "print(sorted(registry.names()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(
        [
            "batchtopk",
            "gated",
            "group_sparse",
            "jumprelu",
            "matching_pursuit",
            "matryoshka_batchtopk",
            "poly",
            "relu",
            "topk",
        ]
    )


def test_importing_repscope_sae_imports_neither_torch_nor_sklearn():
    code = "import sys, repscope.sae\nprint([m for m in ('torch', 'sklearn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- hostile files
def _edit_cfg(d: Path, edit: Any) -> None:
    cfg = json.loads((d / SAE_CFG_FILENAME).read_text())
    edit(cfg)
    (d / SAE_CFG_FILENAME).write_text(json.dumps(cfg))


def _small_repscope_save(path: Path, name: str = "relu") -> Path:
    sae, _ = _trained_like(name, "none")
    save_sae(sae, path)
    return path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("d_sae", [10**8, 10**12])
@pytest.mark.parametrize("layout", ["repscope", "saelens"])
def test_a_config_width_the_weights_lack_fails_fast_without_allocating(tmp_path, layout, d_sae):
    """cfg.json's d_sae is compared with the safetensors header before anything is built: a
    1 KB file claiming 10**8 latents cost 59 s and 6.9 GB, and 10**12 died in the allocator."""
    if layout == "repscope":
        d = _small_repscope_save(tmp_path / "s")

        def edit(cfg: dict[str, Any]) -> None:
            cfg["d_sae"] = d_sae
            cfg["metadata"]["repscope"]["config"]["d_sae"] = d_sae

    else:
        cfg0, w = random_saelens("standard", d_in=8, d_sae=32)
        d = write_saelens(tmp_path / "s", cfg0, w)

        def edit(cfg: dict[str, Any]) -> None:
            cfg["d_sae"] = d_sae

    _edit_cfg(d, edit)
    before, start = _peak_rss_mib(), time.perf_counter()
    with pytest.raises(RepscopeValueError) as err:
        load_sae(d)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert _peak_rss_mib() - before < 256
    msg = str(err.value)
    assert "'W_enc'" in msg and "(8, 32)" in msg and f"(8, {d_sae})" in msg
    assert SAE_WEIGHTS_FILENAME in msg


def test_a_header_declaring_more_bytes_than_the_file_holds_is_refused(tmp_path):
    cfg0, w = random_saelens("standard", d_in=8, d_sae=32)
    d = write_saelens(tmp_path / "s", cfg0, w)
    _edit_cfg(d, lambda cfg: cfg.update(d_sae=10**12))
    header = {
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * 8 * 10**12]}
        for name, shape in [("W_enc", [8, 10**12])]
    }
    raw = json.dumps(header).encode()
    (d / SAE_WEIGHTS_FILENAME).write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    start = time.perf_counter()
    with pytest.raises(RepscopeValueError, match="not a readable safetensors file"):
        load_sae(d)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("d_sae", 64), ("d_in", 16), ("k", 7), ("dtype", "float64"), ("architecture", "standard")],
)
def test_top_level_fields_contradicting_the_repscope_metadata_are_refused(tmp_path, field, value):
    d = _small_repscope_save(tmp_path / "s", "topk")
    cfg = json.loads((d / SAE_CFG_FILENAME).read_text())
    was = cfg[field]
    _edit_cfg(d, lambda c: c.update({field: value}))
    with pytest.raises(RepscopeValueError) as err:
        load_sae(d)
    msg = str(err.value)
    assert f"field {field!r} is {value!r}" in msg
    where = "architecture" if field == "architecture" else f"config.{field}"
    assert f"metadata.repscope.{where}" in msg and repr(was) in msg


def test_tensor_dtypes_must_match_the_config(tmp_path):
    d = _small_repscope_save(tmp_path / "s")
    w = load_file(str(d / SAE_WEIGHTS_FILENAME))
    save_file({**w, "W_dec": w["W_dec"].double()}, str(d / SAE_WEIGHTS_FILENAME))
    with pytest.raises(RepscopeValueError) as err:
        load_sae(d)
    msg = str(err.value)
    assert "'W_dec'" in msg and "F64" in msg and "F32" in msg and "float32" in msg
    # a SAELens file: any floating dtype (cast to cfg.json's dtype, as SAELens does), no ints
    cfg0, w0 = random_saelens("standard", d_in=8, d_sae=32)
    d = write_saelens(tmp_path / "l", cfg0, {**w0, "W_dec": w0["W_dec"].double()})
    assert load_sae(d).W_dec.dtype == torch.float32
    write_saelens(d, cfg0, {**w0, "b_dec": w0["b_dec"].round().to(torch.int32)})
    with pytest.raises(RepscopeValueError, match=r"'b_dec'.*I32"):
        load_sae(d)


def _with_nan(w: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    t = w[name].clone()
    t.view(-1)[3] = float("nan")
    t.view(-1)[5] = float("inf")
    return {**w, name: t}


@pytest.mark.parametrize("source", ["repscope", "saelens", "sparsify", "dictionary_learning"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, source):
    if source == "repscope":
        d = _small_repscope_save(tmp_path / "s")
        w = load_file(str(d / SAE_WEIGHTS_FILENAME))
        save_file(_with_nan(w, "W_dec"), str(d / SAE_WEIGHTS_FILENAME))
        name, load = "W_dec", load_sae
    elif source == "saelens":
        cfg0, w0 = random_saelens("jumprelu")
        d = write_saelens(tmp_path / "l", cfg0, _with_nan(w0, "threshold"))
        name, load = "threshold", load_sae
    elif source == "sparsify":
        cfg1, w1 = sparsify_checkpoint()
        d = write_sparsify(tmp_path / "sp", cfg1, _with_nan(w1, "encoder.weight"))
        name, load = "encoder.weight", load_sparsify
    else:
        state, cfg2 = dl_relu_checkpoint()
        d = write_dictionary_learning(tmp_path / "dl", _with_nan(state, "decoder.weight"), cfg2)
        name, load = "decoder.weight", load_dictionary_learning
    with pytest.raises(RepscopeValueError) as err:
        load(d)
    msg = str(err.value)
    assert repr(name) in msg and "2 non-finite" in msg


@pytest.mark.parametrize("arch", sorted(architectures.names()))
def test_every_saved_tensor_is_checked_against_the_config_before_loading(arch, tmp_path):
    """The header check covers every tensor a save writes (built on the meta device), not only
    the encoder and decoder: a stray tensor or a wrongly shaped bias is refused."""
    from repscope.sae.io._saelens import expected_tensors

    fields = {f.name for f in dataclasses.fields(architectures.get(arch).config_class)}
    params: dict[str, Any] = {"d_in": 8, "d_sae": 16}
    if "k" in fields:
        params["k"] = 2
    sae = architectures.get(arch)(architectures.get(arch).config_class(**params))
    target = save_sae(sae, tmp_path / "sae")
    weights = target / "sae_weights.safetensors"
    saved = load_file(str(weights))
    cfg = json.loads((target / "cfg.json").read_text())["metadata"]["repscope"]
    assert set(expected_tensors(arch, cfg["config"])) == set(saved)
    save_file({**saved, "junk": torch.zeros(3)}, str(weights))
    with pytest.raises(RepscopeValueError, match="unexpected \\['junk'\\]"):
        load_sae(target)
    save_file({**saved, "b_dec": torch.zeros(7)}, str(weights))
    with pytest.raises(RepscopeValueError, match="b_dec"):
        load_sae(target)
