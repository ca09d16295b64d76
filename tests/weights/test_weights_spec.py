"""Permutation specs verified by invariance: a random permutation drawn from the spec leaves the
model's outputs unchanged, and a permutation the spec forbids changes them (so the tests can
fail). MLP, a CNN with BatchNorm / depthwise convs / residuals / a squeeze-excitation gate, a
transformer block with ``nn.MultiheadAttention`` (a known leaf module on the fx path; heads fixed),
EfficientNet-Lite0 (torch.export path) and SmolLM2-135M (``llama_spec``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from repscope._testing import skip_or_fail
from repscope.exceptions import DataNotFoundError, RepscopeTypeError, RepscopeValueError
from repscope.weights._spec import (
    Perm,
    PermutationSpec,
    apply_permutation,
    identity_permutation,
    llama_spec,
    mlp_spec,
    random_permutation,
)
from repscope.weights._toy import make_mlp
from repscope.weights._trace import spec_from_model


def _run(model: nn.Module, sd: dict[str, Any], *args: Any) -> torch.Tensor:
    with torch.no_grad():
        out = functional_call(model, sd, args, tie_weights=False)
    return out.logits if hasattr(out, "logits") else out


def _assert_invariant(model: nn.Module, spec: PermutationSpec, *args: Any, seeds: int = 2,
                      atol: float = 1e-5) -> None:
    model.eval()
    sd = model.state_dict()
    ref = _run(model, dict(sd), *args)
    scale = float(ref.abs().max())
    for seed in range(seeds):
        perms = random_permutation(spec, seed)
        assert any(not np.array_equal(p, np.arange(len(p))) for p in perms.values())
        new = apply_permutation(spec, perms, sd)
        moved = [k for k in spec.axes if not torch.equal(new[k], sd[k])]
        assert moved, "the permutation changed no tensor"
        out = _run(model, new, *args)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=atol * max(scale, 1.0))


def _load(name: str) -> Any:
    from repscope.zoo import load_model

    try:
        return load_model(name).model
    except DataNotFoundError as err:
        skip_or_fail(f"zoo model {name!r} is not available: {err}")


# ----------------------------------------------------------------------------- contract


def test_apply_moves_items_blockwise_and_keeps_groups() -> None:
    t = torch.arange(12.0).reshape(6, 2)
    spec = PermutationSpec({"H": Perm("H", 3, block=2, groups=((0, 1), (2,)))}, {"w": ("H", None)})
    new = apply_permutation(spec, {"H": np.array([1, 0, 2])}, {"w": t, "other": t})
    # new = old[perm] blockwise: item 0 of the output is item 1 (rows 2, 3) of the input
    assert torch.equal(new["w"], t[[2, 3, 0, 1, 4, 5]])
    assert new["other"].data_ptr() == t.data_ptr() and new["w"].data_ptr() != t.data_ptr()
    assert torch.equal(t, torch.arange(12.0).reshape(6, 2))  # input not mutated
    for seed in range(20):
        p = random_permutation(spec, seed)["H"]
        assert p[2] == 2 and set(p[:2]) == {0, 1}
    with pytest.raises(RepscopeValueError, match="out of its group"):
        apply_permutation(spec, {"H": np.array([2, 1, 0])}, {"w": t})
    with pytest.raises(RepscopeValueError, match="not a permutation"):
        apply_permutation(spec, {"H": np.array([0, 0, 2])}, {"w": t})
    with pytest.raises(RepscopeValueError, match="'w' are missing|missing"):
        apply_permutation(spec, {}, {"v": t})
    with pytest.raises(RepscopeValueError, match="axis 0 has 5 entries"):
        apply_permutation(spec, {}, {"w": torch.zeros(5, 2)})
    assert {k: v.tolist() for k, v in identity_permutation(spec).items()} == {"H": [0, 1, 2]}


def test_mlp_spec_invariance_and_traced_spec_agrees() -> None:
    model = make_mlp((64, 32, 24, 10), seed=0)
    spec = mlp_spec(model)
    assert spec.perm_axes("P0") == [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)]
    assert spec.axes["4.weight"] == (None, "P1")
    _assert_invariant(model, spec, torch.randn(8, 64))
    traced = spec_from_model(model, torch.randn(8, 64))
    rename = {"0": "P0", "2": "P1"}
    assert {k: tuple(rename.get(n, n) if n else None for n in v)
            for k, v in traced.axes.items()} == {k: v for k, v in spec.axes.items()
                                                 if any(spec.axes[k])}
    # a permutation applied to the rows of layer 0 only (not to the columns of layer 2) breaks it
    half = PermutationSpec({"P0": spec.perms["P0"]}, {"0.weight": ("P0", None)})
    sd = apply_permutation(half, random_permutation(half, 0), model.state_dict())
    x = torch.randn(8, 64)
    assert (_run(model, sd, x) - _run(model, model.state_dict(), x)).abs().max() > 1e-3


def test_from_dict_hand_written_spec_is_validated() -> None:
    model = make_mlp((64, 16, 10), seed=1)
    spec = PermutationSpec.from_dict({"P0": {"0.weight": 0, "0.bias": 0, "2.weight": 1}}, model)
    assert spec.perms["P0"].size == 16
    assert spec.axes == {"0.weight": ("P0", None), "0.bias": ("P0",), "2.weight": (None, "P0")}
    _assert_invariant(model, spec, torch.randn(4, 64))
    with pytest.raises(RepscopeValueError, match="sizes disagree"):
        PermutationSpec.from_dict({"P0": {"0.weight": 0, "2.weight": 0}}, model)
    with pytest.raises(RepscopeValueError, match="'1.weight' is not in the state dict"):
        PermutationSpec.from_dict({"P0": {"0.weight": 0, "1.weight": 1}}, model)
    with pytest.raises(RepscopeValueError, match="axis 2 does not exist"):
        PermutationSpec.from_dict({"P0": {"0.weight": 2}}, model)
    with pytest.raises(RepscopeValueError, match="not in perms"):
        PermutationSpec({}, {"0.weight": ("Q", None)})
    with pytest.raises(RepscopeTypeError, match="nn.Sequential"):
        mlp_spec(nn.Linear(3, 2))


# ----------------------------------------------------------------------------- traced models


class _MBBlock(nn.Module):
    """Expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 -> BN -> SE gate -> project 1x1 -> BN (+ x)."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c, e, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(e)
        self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e)
        self.bn1 = nn.BatchNorm2d(e)
        self.se_reduce = nn.Conv2d(e, 4, 1)
        self.se_expand = nn.Conv2d(4, e, 1)
        self.project = nn.Conv2d(e, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn0(self.expand(x))).clamp(max=6.0)
        h = nn.functional.relu6(self.bn1(self.dw(h)))
        s = nn.functional.adaptive_avg_pool2d(h, 1)
        h = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(s)))) * h
        return x + self.bn2(self.project(h))


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(_MBBlock(8, 24), _MBBlock(8, 16))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8, 5)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.blocks(torch.relu(self.bn(self.stem(x)))))
        return self.head(self.drop(h.mean((2, 3))))


def _random_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return model.eval()


def test_cnn_batchnorm_depthwise_residual_se_invariance() -> None:
    model = _random_bn(_CNN())
    x = torch.randn(2, 3, 8, 8)
    spec = spec_from_model(model, x)
    # residual stream: stem, both blocks' projections and the head share one permutation
    assert spec.axes["blocks.0.project.weight"][0] == spec.axes["stem.weight"][0]
    assert spec.axes["blocks.1.bn2.running_var"] == spec.axes["stem.bias"]
    assert spec.axes["head.weight"] == (None, spec.axes["stem.weight"][0])
    # depthwise output = its input's permutation; SE expand writes the same channels
    e0 = spec.axes["blocks.0.expand.weight"][0]
    assert spec.axes["blocks.0.dw.weight"] == (e0, None, None, None)
    assert spec.axes["blocks.0.se_expand.weight"][0] == e0
    assert spec.axes["blocks.0.bn0.running_mean"] == (e0,)
    assert sorted(p.size for p in spec.perms.values()) == [4, 4, 8, 16, 24]
    assert model.training is False
    _assert_invariant(model, spec, x, seeds=3)
    model.train()
    spec_from_model(model, x)
    assert model.training is True  # mode restored


class _TransformerBlock(nn.Module):
    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 32)
        self.fc2 = nn.Linear(32, d)
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))
        return self.out(x.mean(1))


def test_transformer_block_with_multihead_attention() -> None:
    """fx keeps nn.MultiheadAttention as a leaf: its in_proj columns and out_proj rows follow the
    residual permutation; its heads stay fixed (q, k, v share one in_proj_weight tensor)."""
    torch.manual_seed(0)
    model = _TransformerBlock().eval()
    x = torch.randn(2, 5, 6)
    spec = spec_from_model(model, x)
    r = spec.axes["embed.weight"][0]
    assert spec.axes["attn.in_proj_weight"] == (None, r)
    assert spec.axes["attn.out_proj.weight"] == (r, None)
    assert spec.axes["ln2.bias"] == (r,) and spec.axes["fc2.weight"][0] == r
    assert "attn.in_proj_bias" not in spec.axes
    _assert_invariant(model, spec, x, seeds=3)
    # permuting the in_proj rows (inside the packed q/k/v heads) is not a symmetry
    bad = PermutationSpec({"q": Perm("q", 48)}, {"attn.in_proj_weight": ("q", None),
                                                 "attn.in_proj_bias": ("q",)})
    sd = apply_permutation(bad, random_permutation(bad, 0), model.state_dict())
    assert (_run(model, sd, x) - _run(model, model.state_dict(), x)).abs().max() > 1e-3


def test_unsupported_ops_and_untraceable_models_are_named() -> None:
    class MatMul(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x) @ torch.ones(8, 8))

    class GroupNormNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.g, self.f = nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.f(self.g(self.c(x)).mean((2, 3)))

    class FlattenNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.f = nn.Conv2d(3, 4, 3), nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.f(torch.flatten(torch.relu(self.c(x)), 1))

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h if x.sum() > 0 else torch.relu(h))

    img = torch.randn(2, 3, 6, 6)
    with pytest.raises(RepscopeValueError, match="op 'matmul'"):
        spec_from_model(MatMul(), torch.randn(3, 4))
    with pytest.raises(RepscopeValueError, match="module 'g' \\(GroupNorm\\)"):
        spec_from_model(GroupNormNet(), img)
    with pytest.raises(RepscopeValueError, match="op 'flatten'.*4 channels with 16 positions"):
        spec_from_model(FlattenNet(), img)
    with pytest.raises(RepscopeValueError, match="Branchy traces neither with torch.fx"):
        spec_from_model(Branchy(), torch.randn(3, 4))
    with pytest.raises(RepscopeTypeError, match="nn.Module"):
        spec_from_model({"w": torch.zeros(2)}, torch.randn(1))


# ----------------------------------------------------------------------------- real models


@pytest.mark.real
def test_efficientnet_lite0_spec_is_invariant() -> None:
    """Lite0 has no squeeze-excitation (se_ratio None in the Lite variants); fx fails on the zoo
    wrapper's isinstance check, so this exercises the torch.export path (padding ops of the
    same-padding convs, depthwise convs, 9 residual additions)."""
    model = _load("efficientnet-lite0")
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    spec = spec_from_model(model, x)
    assert not any(getattr(b, "has_se", False) for b in model._blocks)
    assert len(spec.perms) == 24
    dw = spec.axes["_blocks.1._depthwise_conv.weight"]
    assert dw[0] == spec.axes["_blocks.1._expand_conv.weight"][0] and dw[1:] == (None,) * 3
    # block 2 is residual: its projection writes the residual permutation of block 1's output
    assert spec.axes["_blocks.2._project_conv.weight"][0] == \
        spec.axes["_blocks.1._project_conv.weight"][0]
    assert spec.axes["_fc.weight"][0] is None and spec.axes["_fc.weight"][1] is not None
    _assert_invariant(model, spec, x, seeds=1)


@pytest.fixture(scope="module")
def smollm() -> Any:
    return _load("smollm2-135m")


@pytest.mark.real
def test_smollm2_llama_spec_is_invariant_and_forbidden_permutations_are_not(
        smollm: Any) -> None:
    model = smollm.eval()
    spec = llama_spec(model)
    heads = spec.perms["layers.0.heads"]
    assert (heads.size, heads.block, heads.groups) == (9, 64, ((0, 1, 2), (3, 4, 5), (6, 7, 8)))
    assert spec.axes["lm_head.weight"] == spec.axes["model.embed_tokens.weight"] == (
        None, "residual")
    assert spec.axes["model.layers.3.self_attn.k_proj.weight"] == (None, "residual")
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30, 2]])
    sd = model.state_dict()
    ref = _run(model, dict(sd), ids)
    perms = random_permutation(spec, 0)
    new = apply_permutation(spec, perms, sd)
    assert not torch.equal(new["model.layers.0.self_attn.q_proj.weight"],
                           sd["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(_run(model, new, ids), ref, rtol=1e-5, atol=1e-4 * 31)

    # forbidden 1: query heads moved across key/value groups (head 0 <-> head 3 of layer 0)
    free = PermutationSpec({"H": Perm("H", 9, 64)}, {
        "model.layers.0.self_attn.q_proj.weight": ("H", None),
        "model.layers.0.self_attn.o_proj.weight": (None, "H")})
    cross = apply_permutation(free, {"H": np.array([3, 1, 2, 0, 4, 5, 6, 7, 8])}, sd)
    assert (_run(model, cross, ids) - ref).abs().max() > 1e-2
    # the same swap inside one group (head 0 <-> head 2) is a symmetry
    within = apply_permutation(free, {"H": np.array([2, 1, 0, 3, 4, 5, 6, 7, 8])}, sd)
    torch.testing.assert_close(_run(model, within, ids), ref, rtol=1e-5, atol=1e-4 * 31)
    # forbidden 2: one permutation inside the rotary head dimension, on q and k of every head
    # (without rotary embeddings q.k would not change)
    rng = np.random.default_rng(0)
    inner = torch.as_tensor(rng.permutation(64))
    rot = dict(sd)
    for name, n in (("q_proj", 9), ("k_proj", 3)):
        key = f"model.layers.0.self_attn.{name}.weight"
        rows = (torch.arange(n)[:, None] * 64 + inner[None, :]).reshape(-1)
        rot[key] = sd[key][rows]
    assert (_run(model, rot, ids) - ref).abs().max() > 1e-2


@pytest.mark.real
def test_llama_spec_from_config_and_keys(smollm: Any) -> None:
    cfg = smollm.config
    keys = [k for k in smollm.state_dict() if k != "lm_head.weight"]  # safetensors: tied, absent
    spec = llama_spec(cfg, state_dict_keys=keys)
    assert "lm_head.weight" not in spec.axes
    assert set(spec.axes) == set(llama_spec(cfg).axes) == set(keys)
    with pytest.raises(RepscopeValueError, match="outside the Llama layout.*extra_norm"):
        llama_spec(cfg, state_dict_keys=[*keys, "model.layers.0.extra_norm.weight"])
    with pytest.raises(RepscopeValueError, match="'model.layers.2.mlp.up_proj.weight' is "
                                                 "missing"):
        llama_spec(cfg, state_dict_keys=[k for k in keys if k != "model.layers.2.mlp.up_proj."
                                                                  "weight"])
    with pytest.raises(RepscopeTypeError, match="Llama-family config"):
        llama_spec({"hidden_size": 8})


def test_spec_applies_to_a_safetensors_file(tmp_path: Any) -> None:
    from safetensors.torch import save_file

    model = make_mlp((64, 16, 10), seed=2)
    path = tmp_path / "mlp.safetensors"
    save_file(dict(model.state_dict()), str(path))
    spec = mlp_spec(path)
    assert spec.axes == mlp_spec(model).axes
    perms = random_permutation(spec, 4)
    from_file = apply_permutation(spec, perms, path)
    from_model = apply_permutation(spec, perms, model)
    assert all(torch.equal(from_file[k], from_model[k]) for k in from_model)
    with pytest.raises(RepscopeTypeError, match="state_dict"):
        apply_permutation(spec, perms, 3)
