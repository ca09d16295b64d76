"""Registry API, compare(), bad input, backends and shape paths of the standard measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _strategies import one_blas_thread  # noqa: F401  (autouse fixture)

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.results import Score
from repscope.similarity import (
    StreamingSimilarity,
    compare,
    get_measure,
    linear_cka,
    linear_cka_debiased,
    list_measures,
    measure_info,
    measures_with,
    procrustes_distance,
    register_measure,
    ridge_predictivity,
    shape_distance,
    svcca,
)

MEASURES = list_measures()


def _pair(n: int = 60, dx: int = 5, dy: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx))
    return X, X @ rng.standard_normal((dx, dy)) + rng.standard_normal((n, dy))


def test_compare_returns_a_score_with_metadata():
    X, Y = _pair()
    s = compare(X, Y, "procrustes")
    assert isinstance(s, Score)
    assert s.value == pytest.approx(procrustes_distance(X, Y))
    assert (s.direction, s.n_samples, s.n_features) == ("distance", 60, (5, 4))
    assert "Procrustes" in s.estimator
    d = compare(X, Y, "shape_cca").to_dict()
    assert d["details"]["alpha"] == 0.0
    assert d["type"] == "Score"


def test_registry_queries_and_errors():
    assert "cca" in measures_with("invertible_linear")
    assert "rsa" not in measures_with("orthogonal")
    assert set(list_measures(is_metric=True)) == {"procrustes", "shape_angular", "shape_cca"}
    with pytest.raises(RepscopeValueError, match="invariance must be one of"):
        measures_with("rotation")
    with pytest.raises(UnknownNameError, match="Did you mean 'procrustes'"):
        get_measure("procrustes_dist")
    with pytest.raises(RepscopeValueError, match="unknown"):
        register_measure("x", higher_is_better=True, is_metric=False, invariances={"rotation"})
    with pytest.raises(RepscopeValueError, match="higher_is_better=False"):
        register_measure("x", higher_is_better=True, is_metric=True, invariances=set(),
                         direction="distance")


def test_registered_defaults_bind_options():
    X, Y = _pair(seed=1)
    assert get_measure("shape_cca")(X, Y) == pytest.approx(shape_distance(X, Y, alpha=0.0))
    assert get_measure("shape_angular")(X, Y) == pytest.approx(shape_distance(X, Y))


@pytest.mark.parametrize("name", MEASURES)
def test_bad_input_gives_clear_errors(name):
    m = get_measure(name)
    X, Y = _pair(seed=2)
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        m(X, Y[:-1])
    with pytest.raises(RepscopeValueError, match=r"at least [34] sample"):
        m(X[:2], Y[:2])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(RepscopeValueError, match=r"X must be finite; got 1 NaN"):
        m(Xn, Y)
    with pytest.raises(RepscopeValueError, match="Y is constant"):
        m(X, np.full_like(Y, 2.5))
    with pytest.raises(RepscopeTypeError, match="numbers"):
        m(X, "not an array")


def test_debiased_needs_four_samples():
    X, Y = _pair(n=3, seed=3)
    with pytest.raises(RepscopeValueError, match="at least 4 sample"):
        linear_cka_debiased(X, Y)


@pytest.mark.parametrize("name", MEASURES)
def test_torch_and_float32_inputs_give_the_float64_value(name):
    X, Y = _pair(seed=4)
    m = get_measure(name)
    ref = m(X, Y)
    assert m(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert m(X.astype(np.float32), Y.astype(np.float32)) == pytest.approx(ref, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", [m for m in StreamingSimilarity.available()
                                  if m != "ridge_predictivity"])
def test_wide_inputs_row_space_path_equals_the_feature_space_moments(name):
    # d > n: the function reduces to the row space (or uses Gram matrices); the streaming
    # accumulator always works on the full d x d moments. Same value.
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((30, 8))
    X = Z @ rng.standard_normal((8, 70)) + 0.3 * rng.standard_normal((30, 70))
    Y = Z @ rng.standard_normal((8, 50)) + 0.3 * rng.standard_normal((30, 50))
    acc = StreamingSimilarity(name).update(X, Y)
    assert get_measure(name)(X, Y) == pytest.approx(acc.compute(), rel=1e-7, abs=1e-7)


def test_cka_stays_in_range_and_detects_unrelated_wide_data():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((50, 500)), rng.standard_normal((50, 500))
    biased, deb = linear_cka(X, Y), linear_cka_debiased(X, Y)
    assert 0.5 < biased <= 1.0  # the biased estimator is inflated when d >> n
    assert abs(deb) < 0.05


def test_option_validation_messages():
    X, Y = _pair(seed=7)
    with pytest.raises(RepscopeValueError, match=r"'variance' parameter of svcca must be in the range"):
        svcca(X, Y, variance=1.5)
    with pytest.raises(RepscopeValueError, match=r"'alpha' parameter of shape_distance"):
        shape_distance(X, Y, alpha=2.0)
    with pytest.raises(RepscopeValueError, match="'folds' parameter of ridge_predictivity must be >= 2"):
        ridge_predictivity(X, Y, folds=1)
    with pytest.raises(RepscopeValueError, match="'metric' parameter of rsa must be one of"):
        get_measure("rsa")(X, Y, metric="cosine")


def test_every_measure_documents_its_invariances():
    for name in MEASURES:
        fn = measure_info(name)["function"]
        assert fn.__doc__, name
        assert "invariant" in fn.__doc__.lower(), name


def test_real_layers_similarity_is_higher_for_neighbouring_layers(minilm_austen):
    f = minilm_austen
    L = f.layers
    a, b, z = f.X[L[3]][:600], f.X[L[4]][:600], f.X[L[0]][:600]
    for name in ("linear_cka", "linear_cka_debiased", "svcca", "rsa_euclidean"):
        m = get_measure(name)
        assert m(a, b) > m(z, b), name
    assert procrustes_distance(a, b) < procrustes_distance(z, b)


def test_minibatch_cka_seed_shuffles_rows_before_batching():
    from repscope.similarity import minibatch_cka

    rng = np.random.default_rng(8)
    X = np.sort(rng.standard_normal((400, 3)), axis=0)  # stored in a meaningful order
    Y = X @ rng.standard_normal((3, 3)) + rng.standard_normal((400, 3))
    order = np.random.default_rng(3).permutation(400)
    assert minibatch_cka(X, Y, batch_size=50, seed=3) == pytest.approx(
        minibatch_cka(X[order], Y[order], batch_size=50), rel=1e-12)
    assert minibatch_cka(X, Y, batch_size=50, seed=3) != pytest.approx(
        minibatch_cka(X, Y, batch_size=50), rel=1e-3)
