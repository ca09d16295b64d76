"""Unified Embedding: hashing (universal, seeded, per feature), lookups (concatenated or
summed), the paper's claim (one shared table at a 4x collision rate beats two half-size tables
on synthetic click data) and the orthogonality of the learned per-feature blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope._threads import single_thread
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._embedding import UnifiedEmbedding, feature_orthogonality

P = 2**31 - 1


def test_rows_are_universal_hashes_of_each_feature():
    emb = UnifiedEmbedding(97, 4, lookups=(2, 1), seed=3)
    values = torch.tensor([[0, 5], [12345, 2**40], [7, 7]])
    rows = emb.rows(values).numpy()
    a, b = emb.hash_a.numpy().astype(object), emb.hash_b.numpy().astype(object)
    for r, (v0, v1) in enumerate(values.tolist()):
        expect = [(int(a[i]) * (v % P) + int(b[i])) % P % 97
                  for i, v in enumerate((v0, v0, v1))]
        assert rows[r].tolist() == expect
    # the same value of two features reads different rows (different hash functions)
    assert rows[2, 0] != rows[2, 2] or rows[2, 1] != rows[2, 2]


def test_hashes_are_seeded_and_spread_evenly():
    one, same, other = (UnifiedEmbedding(1000, 2, n_features=2, seed=s) for s in (0, 0, 1))
    v = torch.arange(20_000).reshape(-1, 2)
    assert torch.equal(one.rows(v), same.rows(v))
    assert not torch.equal(one.rows(v), other.rows(v))
    counts = np.bincount(one.rows(v).reshape(-1).numpy(), minlength=1000)
    # 20,000 values in 1,000 rows: Poisson(20) loads, no row empty or overloaded
    assert counts.min() > 0 and counts.max() < 50


def test_concat_and_sum_lookups_read_the_table():
    torch.manual_seed(0)
    emb = UnifiedEmbedding(50, 3, lookups=(2, 1), seed=1)
    summed = UnifiedEmbedding(50, 3, lookups=(2, 1), combine="sum", seed=1)
    summed.weight.data.copy_(emb.weight.data)
    x = torch.tensor([[4, 9], [100, 0]])
    r = emb.rows(x)
    w = emb.weight
    expect = torch.cat([w[r[:, 0]], w[r[:, 1]], w[r[:, 2]]], dim=-1)
    torch.testing.assert_close(emb(x), expect)
    torch.testing.assert_close(summed(x), torch.cat([w[r[:, 0]] + w[r[:, 1]], w[r[:, 2]]], -1))
    assert emb.output_dim == 9 and summed.output_dim == 6
    assert emb.feature_slices == [slice(0, 6), slice(6, 9)]
    assert emb(x[None]).shape == (1, 2, 9)


# --------------------------------------------------------------------------- the paper's claim
V = 10_000


def _clicks(n: int, rng: np.random.Generator, effects: np.ndarray):
    x = rng.integers(0, V, (n, 2))
    logit = effects[0][x[:, 0]] + effects[1][x[:, 1]] - 0.5
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return torch.as_tensor(x), torch.as_tensor(y, dtype=torch.float32)


class _Logistic(torch.nn.Module):
    """Embeddings -> one logit; ``tables`` is one shared table or one table per feature."""

    def __init__(self, tables: list[UnifiedEmbedding]) -> None:
        super().__init__()
        self.tables = torch.nn.ModuleList(tables)
        self.out = torch.nn.Linear(sum(t.output_dim for t in tables), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.tables) == 1:
            h = self.tables[0](x)
        else:
            h = torch.cat([t(x[:, i:i + 1]) for i, t in enumerate(self.tables)], dim=-1)
        return self.out(h).squeeze(-1)


def _fit(model, x, y, x_test, y_test) -> float:
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 2048):
            idx = perm[i:i + 2048]
            loss = bce(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(bce(model(x_test), y_test))


@pytest.fixture(scope="module")
def trained():
    """A shared table of 5,000 rows for two features of 10,000 values (20,000 values: 4 per
    row) vs two tables of 2,500 rows (the same parameters, the same load), both read by a
    logistic layer whose two feature blocks start identical (cosine 1)."""
    rng = np.random.default_rng(0)
    effects = rng.normal(0.0, 1.5, (2, V))
    x, y = _clicks(200_000, rng, effects)
    x_test, y_test = _clicks(50_000, rng, effects)
    out = {}
    with single_thread():
        for name in ("unified", "separate"):
            torch.manual_seed(0)
            tables = ([UnifiedEmbedding(5000, 4, n_features=2, seed=0)] if name == "unified"
                      else [UnifiedEmbedding(2500, 4, seed=10 * i) for i in range(2)])
            model = _Logistic(tables)
            with torch.no_grad():
                model.out.weight[:, 4:] = model.out.weight[:, :4]
            loss = _fit(model, x, y, x_test, y_test)
            w = model.out.weight.detach()
            out[name] = (loss, feature_orthogonality([w[:, :4], w[:, 4:]]), model)
    return out


def test_shared_table_beats_two_half_size_tables_at_4x_collisions(trained):
    unified, separate = trained["unified"][0], trained["separate"][0]
    assert sum(p.numel() for p in trained["unified"][2].tables.parameters()) == \
        sum(p.numel() for p in trained["separate"][2].tables.parameters()) == 20_000
    assert unified < separate - 0.02
    assert unified < np.log(2) - 0.05  # it learned something


def test_shared_table_drives_feature_blocks_orthogonal(trained):
    uni, sep = trained["unified"][1], trained["separate"][1]
    # from cosine 1 at the start, the shared table's blocks become near-orthogonal; with
    # separate tables nothing pushes them apart
    assert uni.cosine[0, 1] < 0.3
    assert uni.cosine[0, 1] < sep.cosine[0, 1] - 0.2
    np.testing.assert_allclose(uni.per_feature, 1 - uni.cosine[0, 1])
    # the embedding-aware entry point cuts the same blocks
    model = trained["unified"][2]
    again = feature_orthogonality(model.out.weight.detach(), embedding=model.tables[0])
    np.testing.assert_allclose(again.cosine, uni.cosine)


# --------------------------------------------------------------------------- the metric
def test_orthogonality_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    r = feature_orthogonality([a[None], b[None]])
    cos = abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)
    assert r.cosine[0, 1] == pytest.approx(cos)
    assert r.principal_cosine[0, 1] == pytest.approx(cos)
    # blocks reading orthogonal subspaces: 0; sharing a direction: principal cosine 1
    q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    w1, w2 = rng.standard_normal((4, 2)) @ q[:2], rng.standard_normal((3, 3)) @ q[2:5]
    r = feature_orthogonality([w1, w2, np.vstack([q[0], q[4]])], energy=1.0)
    assert r.cosine[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert r.principal_cosine[0, 2] == pytest.approx(1.0)
    assert r.principal_cosine[1, 2] == pytest.approx(1.0)
    assert r.ranks.tolist() == [2, 3, 2]
    assert 0 < r.per_feature[0] < 1
    # invariant to rescaling a block and to an orthogonal map of the table space
    r2 = feature_orthogonality([3 * w1 @ q.T, w2 @ q.T, np.vstack([q[0], q[4]]) @ q.T],
                               energy=1.0)
    np.testing.assert_allclose(r2.cosine, r.cosine, atol=1e-12)


def test_table_blocks_follow_the_chunks():
    emb = UnifiedEmbedding(10, 2, lookups=(2, 1))
    w = torch.arange(18.0).reshape(3, 6)
    b0, b1 = emb.table_blocks(w)
    torch.testing.assert_close(b0, torch.cat([w[:, 0:2], w[:, 2:4]]))
    torch.testing.assert_close(b1, w[:, 4:6])


def test_bad_input_is_named():
    with pytest.raises(RepscopeValueError, match="n_rows must be a positive integer; got 0"):
        UnifiedEmbedding(0, 4)
    with pytest.raises(RepscopeValueError, match="combine must be 'concat' or 'sum'; got 'max'"):
        UnifiedEmbedding(10, 4, combine="max")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match=r"lookups must give one count per feature "
                                                 r"\(n_features=3\); got 2 counts"):
        UnifiedEmbedding(10, 4, n_features=3, lookups=(1, 2))
    emb = UnifiedEmbedding(10, 4, n_features=2)
    with pytest.raises(RepscopeValueError, match=r"values must have shape \(\.\.\., 2\)"):
        emb(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(RepscopeTypeError, match="values must hold integers; got dtype "
                                                "torch.float32"):
        emb(torch.zeros(3, 2))
    with pytest.raises(RepscopeValueError, match="non-negative category ids; got minimum -1"):
        emb(torch.tensor([[1, -1]]))
    with pytest.raises(RepscopeValueError, match=r"weight must have shape \(out_features, 8\)"):
        feature_orthogonality(torch.zeros(2, 5), embedding=emb)
    with pytest.raises(RepscopeValueError, match="at least two features; got 1"):
        feature_orthogonality([np.ones((2, 3))])
    with pytest.raises(RepscopeValueError, match="share their number of columns"):
        feature_orthogonality([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(RepscopeValueError, match=r"blocks \[1\] are all zeros"):
        feature_orthogonality([np.ones((2, 3)), np.zeros((2, 3))])
