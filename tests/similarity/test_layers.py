"""compare_layers: equals per-pair calls, symmetry, FeatureStore streaming, real features."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.similarity._cka import linear_cka
from repscope.similarity._knn_measures import cknna, knn_jaccard, mutual_knn
from repscope.similarity._layers import LayerMatrix, compare_layers
from repscope.store import FeatureStore


def _layers(rng: np.random.Generator, n: int = 120, widths=(5, 9, 3, 12)) -> dict[str, np.ndarray]:
    Z = rng.standard_normal((n, 6))
    out = {}
    for i, w in enumerate(widths):
        out[f"l{i}"] = (np.tanh(Z @ rng.standard_normal((6, w))) + 0.3 * i
                        * rng.standard_normal((n, w)) + 10.0).astype(np.float32)
    return out


def _ref(A, B, fn) -> np.ndarray:
    return np.array([[fn(a, b) for b in B.values()] for a in A.values()])


def test_linear_cka_matrix_equals_per_pair_calls_and_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    A, B = _layers(rng), _layers(rng, widths=(4, 7, 8))
    self_m = compare_layers(A)
    np.testing.assert_allclose(self_m.values, _ref(A, A, linear_cka), atol=1e-10)
    np.testing.assert_array_equal(self_m.values, self_m.values.T)
    np.testing.assert_array_equal(np.diag(self_m.values), 1.0)
    assert self_m.symmetric
    assert self_m.rows == self_m.cols == ("l0", "l1", "l2", "l3")
    cross = compare_layers(A, B)
    np.testing.assert_allclose(cross.values, _ref(A, B, linear_cka), atol=1e-10)
    # several row groups (memory budget) and small batches give the same matrix
    for m in (compare_layers(A, B, max_memory=400, batch_size=7),
              compare_layers(A, max_memory=400, batch_size=7)):
        ref = cross.values if m.cols[0] == "l0" and len(m.cols) == 3 else self_m.values
        np.testing.assert_allclose(m.values, ref, atol=1e-10)


def test_float32_products_agree_with_float64() -> None:
    rng = np.random.default_rng(6)
    A, B = _layers(rng, n=300), _layers(rng, n=300, widths=(4, 7))
    for other in (None, B):
        exact = compare_layers(A, other).values
        fast = compare_layers(A, other, products="float32", batch_size=64).values
        np.testing.assert_allclose(fast, exact, atol=1e-5)
    with pytest.raises(RepscopeValueError, match="'products' parameter of compare_layers"):
        compare_layers(A, products="float16")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "fn"), [("mutual_knn", mutual_knn), ("knn_jaccard", knn_jaccard),
                                     ("cknna", cknna)])
def test_knn_matrices_equal_per_pair_calls(name, fn) -> None:
    rng = np.random.default_rng(1)
    A, B = _layers(rng), _layers(rng, widths=(4, 7))
    m = compare_layers(A, B, name, k=6)
    np.testing.assert_allclose(m.values, _ref(A, B, lambda a, b: fn(a, b, k=6)), atol=1e-12)
    s = compare_layers(A, None, name, k=6)
    np.testing.assert_allclose(s.values, _ref(A, A, lambda a, b: fn(a, b, k=6)), atol=1e-12)
    np.testing.assert_allclose(np.diag(s.values), 1.0, atol=1e-12)


def test_generic_measure_and_symmetry_flag() -> None:
    rng = np.random.default_rng(2)
    A = _layers(rng)
    calls: list[tuple[int, int]] = []

    def m(x, y):
        calls.append((x.shape[1], y.shape[1]))
        return float(x.shape[1] - y.shape[1])  # antisymmetric: needs both triangles

    r = compare_layers(A, measure=m)
    assert len(calls) == 16
    np.testing.assert_array_equal(r.values, -r.values.T)
    calls.clear()
    compare_layers(A, measure=lambda x, y: m(x, y) ** 2, symmetric=True)
    assert len(calls) == 10  # upper triangle with the diagonal
    reg = compare_layers(A, measure="linear_cka_debiased")
    np.testing.assert_allclose(reg.values, reg.values.T, atol=1e-12)


def test_feature_store_streaming_equals_in_memory(tmp_path) -> None:
    rng = np.random.default_rng(3)
    A, B = _layers(rng, n=150), _layers(rng, n=150, widths=(6, 2))
    sa = FeatureStore.create(tmp_path / "a", "model-a")
    sb = FeatureStore.create(tmp_path / "b", "model-b")
    for s in range(0, 150, 40):  # several chunks
        sa.append({k: v[s:s + 40] for k, v in A.items()})
        sb.append({k: v[s:s + 40] for k, v in B.items()})
    for measure in ("linear_cka", "mutual_knn"):
        got = compare_layers(sa, sb, measure, batch_size=32)
        np.testing.assert_allclose(got.values, compare_layers(A, B, measure).values, atol=1e-10)
    sub = compare_layers(sa, layers_a=["l2", "l0"])
    assert sub.rows == ("l2", "l0")
    np.testing.assert_allclose(sub.values[0, 1], linear_cka(A["l2"], A["l0"]), atol=1e-10)


def test_model_by_model_matrix_and_best_matches() -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 8))
    models = {"m1": X, "m2": X @ rng.standard_normal((8, 8)) + 0.1 * rng.standard_normal(
        (200, 8)), "m3": rng.standard_normal((200, 8))}
    r = compare_layers(models)
    assert dict((a, b) for a, b, _ in r.best_matches)["m1"] == "m2"
    assert r.top_pairs(1)[0][:2] == ("m1", "m2")
    d = r.to_dict()
    assert d["type"] == "LayerMatrixResult"
    assert len(d["values"]) == 3


def test_bad_inputs_raise() -> None:
    rng = np.random.default_rng(5)
    A = _layers(rng)
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        compare_layers({"a": A["l0"], "b": A["l1"][:50]})
    with pytest.raises(RepscopeValueError, match="same samples"):
        compare_layers(A, {"x": A["l0"][:60]})
    with pytest.raises(UnknownNameError, match=r"unknown layer .nope. in A\. .*Known layers: l0"):
        compare_layers(A, layers_a=["nope"])
    with pytest.raises(RepscopeTypeError, match="must be a FeatureStore"):
        compare_layers(42)
    with pytest.raises(RepscopeValueError, match="constant layers"):
        compare_layers({"a": A["l0"], "c": np.ones((120, 3))})


def test_real_lite0_neighbouring_layers_more_similar(lite0_mnist) -> None:
    feats = {name: lite0_mnist.X[name] for name in lite0_mnist.layers}
    m = compare_layers(feats)
    assert isinstance(m, LayerMatrix)
    assert m.values.shape == (len(feats), len(feats))
    L = len(feats)
    gaps = np.abs(np.subtract.outer(np.arange(L), np.arange(L)))
    near = m.values[gaps == 1].mean()
    far = m.values[gaps >= L // 2].mean()
    assert near > far + 0.1
    # each layer's best match is, on average, close to it in depth
    pos = {name: i for i, name in enumerate(m.cols)}
    dist = [abs(pos[a] - pos[b]) for a, b, _ in m.best_matches]
    assert np.mean(dist) < 2.5
    knn = compare_layers(feats, measure="mutual_knn", k=10)
    assert knn.values[gaps == 1].mean() > knn.values[gaps >= L // 2].mean()
