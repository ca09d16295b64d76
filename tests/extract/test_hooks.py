"""capture(): hooks live only inside the context manager; layer-name and model-type errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.extract import capture, extract, list_layers


class Boom(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside forward")


class TupleOut(torch.nn.Module):
    """Returns (hidden, extra) like a Hugging Face decoder layer."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, torch.zeros(1)


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))


def _n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_removes_hooks_after_exception_in_forward() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), Boom())
    with pytest.raises(RuntimeError, match="boom inside forward"):  # noqa: SIM117
        with capture(net, ["0", "1"]) as acts:
            net(torch.ones(2, 3))
    assert "0" in acts  # the first module ran and was captured before the failure
    assert _n_hooks(net) == 0


def test_extract_removes_hooks_and_restores_training_flags_when_forward_raises() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), Boom())
    net.train()
    with pytest.raises(RuntimeError, match="boom inside forward"):
        extract(net, np.ones((4, 3), np.float32), ["0", "1"], progress=False)
    assert _n_hooks(net) == 0
    assert all(m.training for m in net.modules())


def test_capture_takes_hidden_states_from_tuple_outputs() -> None:
    net = torch.nn.Sequential(torch.nn.Identity(), TupleOut())
    with capture(net, ["1"]) as acts:
        net(torch.full((2, 3), 1.5))
    assert torch.equal(acts["1"], torch.full((2, 3), 3.0))


def test_capture_unknown_module_lists_close_names() -> None:
    net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.ReLU())
    with pytest.raises(UnknownNameError, match=r"unknown layer '0\.1'.*Close names: '0\.0'"):  # noqa: SIM117
        with capture(net, ["0.1"]):
            pass
    assert _n_hooks(net) == 0


def test_extract_unknown_layer_lists_close_names(minilm) -> None:
    with pytest.raises(UnknownNameError, match=r"'encoder\.layer\.9'.*Close names: .*'encoder\.layer\.") as err:
        extract(minilm, ["hello"], ["encoder.layer.9"], progress=False)
    assert "encoder.layer.0" in err.value.known
    assert isinstance(err.value, KeyError)


def test_extract_rejects_unsupported_model() -> None:
    from sklearn.linear_model import LinearRegression

    with pytest.raises(RepscopeTypeError, match=r"cannot run a sklearn\..*LinearRegression.*Supported: .*torch\.nn\.Module"):
        extract(LinearRegression(), np.ones((2, 2)), progress=False)
    with pytest.raises(RepscopeTypeError, match="Supported"):
        list_layers(object())


def test_extract_refuses_to_move_the_model() -> None:
    net = _net()
    with pytest.raises(RepscopeValueError, match=r"never moves your model.*model\.to\('cuda'\)"):
        extract(net, np.ones((2, 3), np.float32), ["0"], device="cuda", progress=False)
    assert next(net.parameters()).device.type == "cpu"


def test_extract_torch_module_matches_manual_forward_in_input_order() -> None:
    net = _net()
    X = np.random.default_rng(0).standard_normal((37, 3)).astype(np.float32)
    out = extract(net, X, ["1", "output"], batch_size=8, progress=False)
    with torch.no_grad():
        h = torch.relu(net[0](torch.from_numpy(X)))
    np.testing.assert_allclose(out["1"], h.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["output"], net(torch.from_numpy(X)).detach().numpy(), atol=1e-6)
    assert list_layers(net) == ["0", "1", "2", "output"]


def test_extract_reads_an_iterable_of_batches_like_an_array() -> None:
    net = _net()
    X = np.random.default_rng(1).standard_normal((23, 3)).astype(np.float32)
    loader = [(torch.from_numpy(X[i : i + 5]), i) for i in range(0, 23, 5)]
    a = extract(net, X, "blocks", batch_size=4, progress=False)
    b = extract(net, iter(loader), "blocks", batch_size=4, progress=False)
    assert list(a) == ["0", "1", "2"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_pooling_errors_name_the_options() -> None:
    net = _net()
    with pytest.raises(RepscopeValueError, match=r"must be one of .*Did you mean 'mean'"):
        extract(net, np.ones((2, 3), np.float32), ["0"], pooling="meen", progress=False)
    with pytest.raises(RepscopeValueError, match=r"missing \['1'\]"):
        extract(net, np.ones((2, 3), np.float32), ["0", "1"], pooling={"0": "mean"}, progress=False)
