"""Pooling modes on token sequences and spatial maps, against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeValueError
from repscope.extract._pooling import TokenRows, pool


@pytest.fixture
def tokens() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    h = torch.from_numpy(rng.standard_normal((3, 5, 4)).astype(np.float32))
    lengths = np.array([5, 2, 3])
    mask = torch.from_numpy(np.arange(5)[None, :] < lengths[:, None])
    return h, mask, lengths


def test_masked_mean_ignores_padding(tokens) -> None:
    h, mask, lengths = tokens
    got = pool(h, "mean", mask, layer="x").numpy()
    want = np.stack([h[i, : lengths[i]].numpy().mean(0) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_last_and_first_pick_real_tokens(tokens) -> None:
    h, mask, lengths = tokens
    last = pool(h, "last", mask, layer="x").numpy()
    first = pool(h, "first", mask, layer="x").numpy()
    for i in range(3):
        np.testing.assert_array_equal(last[i], h[i, lengths[i] - 1].numpy())
        np.testing.assert_array_equal(first[i], h[i, 0].numpy())
    left = mask.flip(1)  # left padding: first real token is not at position 0
    first_left = pool(h, "first", left, layer="x").numpy()
    np.testing.assert_array_equal(first_left[1], h[1, 3].numpy())


def test_none_keeps_real_tokens_ragged(tokens) -> None:
    h, mask, lengths = tokens
    rows = pool(h, "none", mask, layer="x")
    assert isinstance(rows, TokenRows)
    np.testing.assert_array_equal(rows.lengths, lengths)
    np.testing.assert_array_equal(rows.values[5:7], h[1, :2].numpy())
    dense = pool(h, "none", None, layer="x")
    assert tuple(dense.shape) == (3, 5, 4)


def test_spatial_average_and_errors() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    np.testing.assert_allclose(pool(x, "mean", None, layer="c").numpy(), x.mean((2, 3)).numpy())
    with pytest.raises(RepscopeValueError, match=r"spatial map.*Use 'avg'"):
        pool(x, "last", None, layer="c")
    bad_mask = torch.ones(2, 7, dtype=torch.bool)
    with pytest.raises(RepscopeValueError, match=r"not \(batch, tokens, features\)"):
        pool(torch.ones(2, 3, 4), "mean", bad_mask, layer="attn")


def test_bfloat16_pools_to_float32(tokens) -> None:
    h, mask, _ = tokens
    out = pool(h.to(torch.bfloat16), "mean", mask, layer="x")
    assert out.dtype == torch.float32
