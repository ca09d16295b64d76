"""State dicts: inputs (module, mapping, safetensors file and folder), the compatibility
checker's named errors, interpolation and float64 norms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.weights._state import (
    LazyStateDict,
    as_state_dict,
    check_compatible,
    interpolate,
    state_distance,
    state_norm,
)


def _net(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                               torch.nn.Linear(6, 3))


@pytest.fixture
def pair() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    a, b = _net(0), _net(1)
    with torch.no_grad():  # distinct BatchNorm statistics and counters in the two
        a[1].running_mean.normal_()
        b[1].running_mean.normal_()
        b[1].num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in a.state_dict().items()}, \
        {k: v.clone() for k, v in b.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# as_state_dict


def test_module_and_mapping_inputs(pair):
    net = _net(0)
    sd = as_state_dict(net)
    assert list(sd) == list(net.state_dict())
    assert sd["0.weight"].data_ptr() == net[0].weight.data_ptr()  # no copy of the weights
    assert not sd["0.weight"].requires_grad
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = as_state_dict({"w": arr})
    assert isinstance(got["w"], torch.Tensor)
    np.testing.assert_array_equal(got["w"].numpy(), arr)


def test_safetensors_file_and_folder_load_lazily(tmp_path, pair):
    from safetensors.torch import save_file

    a, _ = pair
    a = {**a, "half": torch.randn(3, 2).to(torch.bfloat16)}
    save_file(a, str(tmp_path / "one.safetensors"))
    sd = as_state_dict(tmp_path / "one.safetensors")
    assert isinstance(sd, LazyStateDict)
    assert sd.meta("0.weight") == ((6, 4), torch.float32)  # from the header
    assert set(sd) == set(a)
    for key, value in a.items():
        assert sd[key].dtype == value.dtype
        assert torch.equal(sd[key], value), key
    shards = tmp_path / "sharded"
    shards.mkdir()
    keys = list(a)
    save_file({k: a[k] for k in keys[:3]}, str(shards / "model-00001.safetensors"))
    save_file({k: a[k] for k in keys[3:]}, str(shards / "model-00002.safetensors"))
    folder = as_state_dict(str(shards))
    assert set(folder) == set(a)
    assert torch.equal(folder[keys[-1]], a[keys[-1]])
    check_compatible(folder, a)  # lazily opened and in-memory state dicts compare


def test_safetensors_folder_with_a_key_twice_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    save_file({"w": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(RepscopeValueError, match="'w' is in both a.safetensors and b.safetensors"):
        as_state_dict(tmp_path)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(RepscopeValueError, match=r"state_dict: .*does not exist"):
        as_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "model.bin").write_bytes(b"not a pickle we would open")
    with pytest.raises(RepscopeValueError, match="is not a .safetensors file"):
        as_state_dict(tmp_path / "model.bin")
    with pytest.raises(RepscopeValueError, match="has none"):
        as_state_dict(tmp_path)  # a folder without .safetensors files
    with pytest.raises(RepscopeTypeError, match="'w' is a list"):
        as_state_dict({"w": [1.0, 2.0]}, name="a")
    with pytest.raises(RepscopeTypeError, match="got a int"):
        as_state_dict(3)


# ---------------------------------------------------------------------------------------------
# check_compatible: one named error per kind of difference


def test_different_keys_are_listed(pair):
    a, b = pair
    b2 = {k: v for k, v in b.items() if not k.startswith("3.")}
    b2["extra.weight"] = torch.zeros(1)
    with pytest.raises(RepscopeValueError,
                       match=r"state dicts differ in keys: 2 only in a \(first: '3.weight', "
                             r"'3.bias'\), 1 only in b \(first: 'extra.weight'\)"):
        check_compatible(a, b2)
    with pytest.raises(RepscopeValueError, match="0 only in theta_A, 1 only in theta_B"):
        check_compatible({"w": a["0.weight"]}, {"w": a["0.weight"], "v": a["0.bias"]},
                         names=("theta_A", "theta_B"))


def test_different_shapes_are_listed(pair):
    a, b = pair
    b = {**b, "0.weight": torch.zeros(6, 5)}
    with pytest.raises(RepscopeValueError,
                       match=r"differ in the shapes of 1 tensors .*'0.weight' \[6, 4\] vs \[6, 5\]"):
        check_compatible(a, b)


def test_different_dtypes_are_listed(pair):
    a, b = pair
    b = {**b, "3.bias": b["3.bias"].double()}
    with pytest.raises(RepscopeTypeError, match=r"dtypes of 1 tensors .*'3.bias' float32 vs float64"):
        check_compatible(a, b)


@pytest.mark.parametrize(("bad", "count"), [(float("nan"), "1 NaN, 0 inf"),
                                            (float("inf"), "0 NaN, 1 inf")])
def test_non_finite_weights_are_named(pair, bad, count):
    a, b = pair
    b = {**b, "3.weight": b["3.weight"].clone()}
    b["3.weight"][1, 2] = bad
    with pytest.raises(RepscopeValueError,
                       match=rf"state dict b has non-finite values in 1 tensors: '3.weight' \({count}\)"):
        check_compatible(a, b)
    check_compatible(a, b, finite=False)  # the caller may skip the scan


def test_compatible_pair_passes_and_is_not_modified(pair):
    a, b = pair
    before = {k: v.clone() for k, v in b.items()}
    check_compatible(a, b)
    assert all(torch.equal(before[k], b[k]) for k in b)


# ---------------------------------------------------------------------------------------------
# interpolate


def test_interpolate_ends_are_exact_and_inputs_untouched(pair):
    a, b = pair
    a0 = {k: v.clone() for k, v in a.items()}
    at0, at1 = interpolate(a, b, 0.0), interpolate(a, b, 1.0)
    for key in a:
        assert torch.equal(at0[key], a[key]), key
        assert at0[key].data_ptr() != a[key].data_ptr()  # new tensors
        if a[key].is_floating_point():
            assert torch.equal(at1[key], b[key]), key
    assert all(torch.equal(a0[k], a[k]) for k in a)


def test_interpolate_formula_and_integer_buffers(pair):
    a, b = pair
    mid = interpolate(a, b, 0.3)
    for key in a:
        if a[key].is_floating_point():
            want = 0.7 * a[key].double() + 0.3 * b[key].double()
            torch.testing.assert_close(mid[key].double(), want, rtol=0, atol=1e-6)
    # BatchNorm's counter is an integer buffer: taken from a, never averaged
    assert int(mid["1.num_batches_tracked"]) == int(a["1.num_batches_tracked"]) == 0
    assert int(interpolate(a, b, 1.0)["1.num_batches_tracked"]) == 0
    assert int(b["1.num_batches_tracked"]) == 7


def test_interpolate_restricted_to_keys(pair):
    a, b = pair
    out = interpolate(a, b, 0.5, keys=["3.weight", "3.bias"])
    torch.testing.assert_close(out["3.weight"], 0.5 * (a["3.weight"] + b["3.weight"]))
    for key in a:
        if not key.startswith("3."):
            assert torch.equal(out[key], a[key]), key
    with pytest.raises(RepscopeValueError, match=r"keys: 1 not in the state dict \(first: '9.weight'\)"):
        interpolate(a, b, 0.5, keys=["9.weight"])


def test_interpolate_half_precision_and_bad_alpha(pair):
    a, b = pair
    ha = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in a.items()}
    hb = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in b.items()}
    mid = interpolate(ha, hb, 0.5)
    assert mid["0.weight"].dtype == torch.bfloat16
    want = (0.5 * (ha["0.weight"].float() + hb["0.weight"].float())).to(torch.bfloat16)
    assert torch.equal(mid["0.weight"], want)  # combined in float32, rounded once
    with pytest.raises(RepscopeValueError, match="alpha: expected a finite number"):
        interpolate(a, b, float("nan"))
    with pytest.raises(RepscopeValueError, match="non-finite"):
        interpolate(a, {**b, "0.bias": torch.full((6,), float("nan"))}, 0.5)


# ---------------------------------------------------------------------------------------------
# norms


def test_norm_and_distance_in_float64(pair):
    a, b = pair
    float_keys = [k for k in a if a[k].is_floating_point()]
    flat_a = np.concatenate([a[k].double().numpy().ravel() for k in float_keys])
    flat_b = np.concatenate([b[k].double().numpy().ravel() for k in float_keys])
    assert state_norm(a) == pytest.approx(np.linalg.norm(flat_a), rel=1e-12)
    assert state_distance(a, b) == pytest.approx(np.linalg.norm(flat_a - flat_b), rel=1e-12)
    assert state_distance(a, a) == 0.0
    w = a["3.weight"].double().numpy()
    assert state_norm(a, keys="3.weight") == pytest.approx(np.linalg.norm(w), rel=1e-12)
    # float64 accumulation: in float32, 1e12 + 1 rounds to 1e12 and the small tensor is lost
    big = {"x": torch.full((10_000,), 1e4, dtype=torch.float32), "y": torch.ones(1)}
    assert state_norm(big) - 1e6 == pytest.approx(5e-7, rel=1e-3)
