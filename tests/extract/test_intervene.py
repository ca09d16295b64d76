"""The intervention context: output replacement, hook removal, named errors, edit helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.extract._intervene import ablate_direction, add_direction, intervene

torch.set_num_threads(1)


class _TupleBlock(torch.nn.Module):
    """Returns (hidden, extra) like a Hugging Face decoder layer."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lin(x), x.sum()


class _Net(torch.nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = _TupleBlock(width)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.block(x)
        return self.head(h)


def test_replaces_tuple_first_and_removes_hooks() -> None:
    net = _Net()
    x = torch.randn(2, 5, 4)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0])
    with torch.no_grad():
        clean = net(x)
        with intervene(net, {"block": add_direction(v, 2.0)}):
            steered = net(x)
        after = net(x)
        expected = net.head(net.block.lin(x) + 2.0 * v)
    torch.testing.assert_close(steered, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(steered, clean)
    torch.testing.assert_close(after, clean, rtol=0, atol=0)
    assert len(net.block._forward_hooks) == 0


def test_hooks_removed_on_error() -> None:
    net = _Net()

    def boom(h: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), intervene(net, {"block.lin": boom}):
        net(torch.randn(1, 4))
    assert len(net.block.lin._forward_hooks) == 0


def test_unknown_layer_suggests_close_name() -> None:
    net = _Net()
    with pytest.raises(UnknownNameError, match=r"'block\.lin'"), intervene(
        net, {"block.lim": lambda h: h}
    ):
        pass


def test_bad_edits_and_shape_change() -> None:
    net = _Net()
    with pytest.raises(RepscopeTypeError, match="mapping"), intervene(net, ["block"]):  # type: ignore[arg-type]
        pass
    with pytest.raises(RepscopeTypeError, match="callable"), intervene(net, {"block": 3}):  # type: ignore[dict-item]
        pass
    with pytest.raises(RepscopeValueError, match="shape"), intervene(
        net, {"head": lambda h: h[..., :2]}
    ):
        net(torch.randn(1, 4))


def test_direction_width_is_checked() -> None:
    net = _Net()
    for edit in (add_direction(np.ones(5)), ablate_direction(np.ones(5))):
        with pytest.raises(RepscopeValueError, match="width 5 .* 4 features"), intervene(
            net, {"block": edit}
        ):
            net(torch.randn(2, 4))
    with pytest.raises(RepscopeValueError, match="1-D"):
        add_direction(np.ones((2, 2)))
    with pytest.raises(RepscopeValueError, match="zero vector"):
        ablate_direction(np.zeros(4))


def test_ablation_removes_component_and_positions() -> None:
    torch.manual_seed(1)
    h = torch.randn(2, 6, 4)
    v = torch.randn(4)
    out = ablate_direction(v)(h)
    assert float((out @ v).abs().max()) < 1e-5
    # the orthogonal part is untouched
    u = v / v.norm()
    torch.testing.assert_close(out, h - (h @ u)[..., None] * u)
    last = add_direction(v, 1.5, positions=-1)(h)
    torch.testing.assert_close(last[:, :-1], h[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(last[:, -1], h[:, -1] + 1.5 * v)
