"""Concept erasure: LEACE against concept-erasure's reference, LEACE vs INLP (chance, distance)."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.concepts._erasure import (
    ErasureResult,
    LeaceEraser,
    erasure,
    fit_inlp,
    fit_leace,
    one_hot,
)
from repscope.exceptions import RepscopeTypeError, RepscopeValueError


def _planted(n: int, d: int, k: int, seed: int, scale: float = 1.0):
    """Correlated Gaussian features with a class-mean shift of ``k`` classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    X += scale * np.eye(k)[y] @ rng.standard_normal((k, d))
    return X, y


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"shrinkage": False}, {"constrain_cov_trace": False}, {"svd_tol": 1e-4}],
)
@pytest.mark.parametrize("k", [2, 4])
def test_leace_equals_concept_erasure(kwargs, k):
    torch = pytest.importorskip("torch")
    ce = pytest.importorskip("concept_erasure")
    X, y = _planted(1500, 12, k, seed=k)
    ours = fit_leace(X, y, **kwargs)
    fitter = ce.LeaceFitter.fit(torch.tensor(X), torch.tensor(one_hot(y)[1]), **kwargs)
    ref = fitter.eraser(torch.tensor(X)).numpy()
    np.testing.assert_allclose(ours(X), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.P, fitter.eraser.P.numpy(), rtol=0, atol=1e-6)
    assert ours.rank == k - 1


def test_leace_streams_through_moments_and_keeps_backend():
    torch = pytest.importorskip("torch")
    from repscope.stats import Moments

    X, y = _planted(1200, 8, 3, seed=5)
    z = one_hot(y)[1]
    a, b = Moments(class_cov="none"), Moments(class_cov="none")
    a.update(X[:500], z[:500])
    b.update(X[500:], z[500:])
    merged = LeaceEraser.from_moments(a.merge(b))
    np.testing.assert_allclose(merged(X), fit_leace(X, y)(X), atol=1e-9)
    t = torch.tensor(X, dtype=torch.float32)
    out = merged(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    # the erased features have no cross-covariance with the labels left
    E = merged(X)
    cross = (E - E.mean(0)).T @ (z - z.mean(0)) / len(y)
    assert np.abs(cross).max() < 1e-8


def test_leace_reaches_chance_and_moves_less_than_inlp():
    X, y = _planted(6000, 16, 2, seed=0)
    r = erasure(X, y)
    assert isinstance(r, ErasureResult)
    assert r.accuracy_before > 0.9
    assert abs(r.accuracy_after["leace"] - r.chance) <= 0.01
    # INLP also reaches chance (its own stopping rule) but removes more directions
    assert r.accuracy_after["inlp"] <= r.chance + 0.03
    assert r.rank_removed["leace"] == 1 < r.rank_removed["inlp"]
    assert r.mean_distance["leace"] < 0.5 * r.mean_distance["inlp"]
    rows = r.record_rows()
    assert [v["method"] for _, v in rows] == ["leace", "inlp"]
    assert set(rows[0][1]) == {
        "method", "accuracy_before", "accuracy_after", "chance", "mean_distance",
        "relative_distance", "rank_removed", "accuracy_curve", "n_train", "n_test",
        "n_features", "n_classes",
    }
    curve = rows[1][1]["accuracy_curve"]
    assert curve[0] > 0.9 and curve[-1] <= r.chance + 0.02
    import json

    json.dumps([v for _, v in rows])
    json.dumps(r.to_dict())


def test_inlp_removes_orthonormal_probe_directions():
    X, y = _planted(2000, 10, 3, seed=2)
    e = fit_inlp(X, y, max_iter=20)
    assert e.rank >= 2
    np.testing.assert_allclose(e.basis @ e.basis.T, np.eye(e.rank), atol=1e-10)
    P = e.P
    np.testing.assert_allclose(P @ P, P, atol=1e-10)
    E = e(X)
    np.testing.assert_allclose((E - e.mean) @ e.basis.T, 0.0, atol=1e-8)


def test_erasure_bad_input():
    X, y = _planted(200, 5, 2, seed=1)
    with pytest.raises(RepscopeValueError, match="labels must contain at least 2"):
        erasure(X, np.zeros(200, dtype=int))
    with pytest.raises(RepscopeValueError, match="'methods'.*'lasso'"):
        erasure(X, y, methods=["lasso"])
    with pytest.raises(RepscopeTypeError, match="'methods'"):
        erasure(X, y, methods="leace")
    e = fit_leace(X, y)
    with pytest.raises(RepscopeValueError, match="5 columns"):
        e(X[:, :4])
    from repscope.stats import Moments

    with pytest.raises(RepscopeValueError, match="paired targets"):
        LeaceEraser.from_moments(Moments.from_arrays(X))
