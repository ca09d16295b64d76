"""Iterative Feature Merging (cluster-b §5): exact on positively rescaled duplicate units (with
ReLU, LeakyReLU and BatchNorm folded in), the vectorised merge equals the literal "closest pair
first" loop, the feature-complexity curve, records, named errors, and the recipe's claim on
digits MLPs as measured (a miss, kept as a strict xfail)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from repscope.exceptions import RepscopeTypeError, RepscopeValueError  # noqa: E402
from repscope.weights._redundancy import (  # noqa: E402
    RedundancyResult,
    feature_complexity_curve,
    merge_equivalent_units,
)
from repscope.weights._toy import digits_data, make_mlp, train_mlp  # noqa: E402

#: train_mlp's settings pinned here (the measured numbers below depend on them).
TRAIN: dict[str, Any] = {"epochs": 20, "lr": 0.05, "momentum": 0.9, "batch_size": 32}


def _with_duplicates(model: Any, layer: int, units: list[int], scales: list[float],
                     seed: int = 0) -> Any:
    """``model`` with, in Linear ``layer``, a new unit ``scale * w_k`` (bias too) per ``k``,
    whose outgoing weights are random; the same function is then
    ``out_k += scale * out_new`` folded onto unit ``k``."""
    gen = torch.Generator().manual_seed(seed)
    new = [m for m in model]
    lin, nxt = model[layer], model[layer + 2]
    W = torch.cat([lin.weight.detach()] + [s * lin.weight.detach()[k:k + 1]
                                           for k, s in zip(units, scales, strict=True)])
    b = torch.cat([lin.bias.detach()] + [s * lin.bias.detach()[k:k + 1]
                                         for k, s in zip(units, scales, strict=True)])
    W2 = torch.cat([nxt.weight.detach(), torch.randn(nxt.out_features, len(units),
                                                     generator=gen)], dim=1)
    a = torch.nn.Linear(W.shape[1], W.shape[0])
    c = torch.nn.Linear(W2.shape[1], W2.shape[0])
    with torch.no_grad():
        a.weight.copy_(W)
        a.bias.copy_(b)
        c.weight.copy_(W2)
        c.bias.copy_(nxt.bias.detach())
    new[layer], new[layer + 2] = a, c
    return torch.nn.Sequential(*new).eval()


def test_rescaled_duplicate_units_merge_to_the_same_function_exactly():
    base: Any = make_mlp((10, 16, 12, 3), seed=1)
    model = _with_duplicates(base, 0, [2, 5, 5, 9], [2.5, 0.3, 7.0, 1.0])
    model = _with_duplicates(model, 2, [0, 11], [4.0, 0.5], seed=3)
    X = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    res = merge_equivalent_units(model, 1e-6, progress=False)
    assert res.layers == ("0", "2")
    assert res.units_before == (20, 14) and res.units_after == (16, 12)
    with torch.no_grad():
        torch.testing.assert_close(res.model(X), model(X), rtol=0, atol=1e-5)
    # the kept unit of a pair is the one with the larger incoming norm: unit 5 scaled by 7.0
    # replaces unit 5 (and its 0.3 copy), so the first layer's rows are not the original's
    w_kept = res.model[0].weight.detach()
    assert any(torch.allclose(row, 7.0 * base[0].weight.detach()[5]) for row in w_kept)
    # beta = 0 merges nothing and is the same network
    res0 = merge_equivalent_units(model, 0.0, progress=False)
    assert res0.units_after == res0.units_before
    with torch.no_grad():
        torch.testing.assert_close(res0.model(X), model(X), rtol=0, atol=1e-6)


def test_batchnorm_is_folded_and_leaky_relu_merges_exactly():
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(6, 8), torch.nn.Linear(8, 2)
    with torch.no_grad():
        lin1.weight[3] = 3.0 * lin1.weight[1]
        lin1.bias[3] = 3.0 * lin1.bias[1]
    bn = torch.nn.BatchNorm1d(8)
    bn.train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    # running statistics from data; then make unit 3 the BN-image of unit 1 times 2
    bn(lin1(torch.randn(64, 6)))
    with torch.no_grad():
        bn.running_mean[3] = 3.0 * bn.running_mean[1]
        bn.running_var[3] = (3.0 ** 2) * (bn.running_var[1] + bn.eps) - bn.eps
        bn.weight[3], bn.bias[3] = 2.0 * bn.weight[1], 2.0 * bn.bias[1]
    model: Any = torch.nn.Sequential(lin1, bn, torch.nn.LeakyReLU(0.1),
                                     torch.nn.Dropout(0.1), lin2).eval()
    X = torch.randn(100, 6)
    res = merge_equivalent_units(model, 1e-6, progress=False)
    assert res.units_after == (7,)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in res.model)
    with torch.no_grad():
        torch.testing.assert_close(res.model(X), model(X), rtol=0, atol=1e-5)
    assert model[1].running_mean.shape == (8,)  # input untouched


def _naive_merge(W: np.ndarray, b: np.ndarray, W_next: np.ndarray,
                 beta: float) -> tuple[list[int], np.ndarray]:
    """The recipe literally: find the closest live pair, merge if below beta, repeat."""
    inc = np.concatenate([W, b[:, None]], 1)
    norms = np.linalg.norm(inc, axis=1)
    u = inc / norms[:, None]
    alive = list(range(len(b)))
    W_next = W_next.copy()
    while len(alive) > 1:
        best: tuple[float, int, int] = (np.inf, -1, -1)
        for ai, i in enumerate(alive):
            for j in alive[ai + 1:]:
                d = float(np.linalg.norm(u[i] - u[j]))
                if d < best[0]:
                    best = (d, i, j)
        d, i, j = best
        if d >= beta:
            break
        if norms[j] > norms[i]:
            i, j = j, i
        W_next[:, i] += norms[j] / norms[i] * W_next[:, j]
        alive.remove(j)
    return sorted(alive), W_next[:, sorted(alive)]


def test_vectorised_merge_equals_the_literal_closest_pair_loop():
    model: Any = make_mlp((5, 40, 4), seed=3)
    W = model[0].weight.detach().double().numpy()
    b = model[0].bias.detach().double().numpy()
    W2 = model[2].weight.detach().double().numpy()
    for beta in (0.5, 0.9, 1.2):
        keep, W2_new = _naive_merge(W, b, W2, beta)
        res = merge_equivalent_units(model, beta, progress=False)
        assert res.units_after == (len(keep),), beta
        np.testing.assert_allclose(res.model[0].weight.detach().double().numpy(), W[keep],
                                   atol=1e-6)
        np.testing.assert_allclose(res.model[2].weight.detach().double().numpy(), W2_new,
                                   atol=1e-5)
        assert 0 < len(keep) < 40


def test_feature_complexity_curve_is_monotone_and_ends_at_one_unit():
    model = make_mlp((8, 30, 20, 3), seed=0)
    betas = [0.0, 0.5, 1.0, 1.2, 1.4, 2.01]
    names, units = feature_complexity_curve(model, betas, progress=False)
    assert names == ("0", "2") and units.shape == (2, 6)
    assert list(units[:, 0]) == [30, 20]
    assert (np.diff(units, axis=1) <= 0).all()
    assert list(units[:, -1]) == [1, 1]  # every pair of unit vectors is within 2
    _, frac = feature_complexity_curve(model, betas, normalize=True, progress=False)
    np.testing.assert_allclose(frac[:, 0], 1.0)
    # layers= restricts the merge to one layer
    names2, only = feature_complexity_curve(model, [1.4], layers=["2"], progress=False)
    res = merge_equivalent_units(model, 1.4, layers=["2"], progress=False)
    assert names2 == res.layers == ("2",) and only.shape == (1, 1)
    assert res.units_after == (only[0, 0],) and res.units_before == (20,)
    assert res.model[0].weight.shape == (30, 8)  # layer "0" left as it was


@pytest.fixture(scope="module")
def digits_mlps():
    torch.set_num_threads(1)
    data = digits_data()
    return data, {w: train_mlp((64, w, w, 10), seed=0, data=data, **TRAIN) for w in (128, 512)}


def test_digits_mlps_small_beta_keeps_accuracy_and_the_measured_fractions(digits_mlps):
    """Measured (seed 0, the digits test split): no pair of trained units is closer than 0.8 at
    either width (nothing merges at beta <= 0.5); at beta = 0.9 accuracy moves < 0.5 points at
    both widths (128: 2.0 % removed, -0.37 points; 512: 0.1 %, -0.19); at beta = 1.0 width 128
    loses 25.8 % of its units (-0.74 points) and width 512 only 2.1 % (0.00): the removed
    fraction falls with width here, the opposite of the recipe's trend."""
    data, models = digits_mlps
    test = (data.X_test, data.y_test)
    r = {(w, beta): merge_equivalent_units(m, beta, data=test, progress=False)
         for w, m in models.items() for beta in (0.5, 0.9, 1.0)}
    for (w, beta), res in sorted(r.items()):
        print(f"width {w} beta {beta}: {res.units_after} removed {res.fraction_removed:.3f} "
              f"accuracy {res.accuracy_before:.4f} -> {res.accuracy_after:.4f}")
    for w in (128, 512):
        assert r[w, 0.5].fraction_removed == 0.0
        assert abs(r[w, 0.9].accuracy_after - r[w, 0.9].accuracy_before) < 0.005
        assert r[w, 0.9].units_before == (w, w)
    assert r[128, 1.0].fraction_removed > 0.15
    assert r[512, 1.0].fraction_removed < 0.05


@pytest.mark.xfail(strict=True, reason=(
    "recipe claim not reproduced on digits with train_mlp's SGD: at beta = 1.0, width 128 "
    "removes 25.8 % at -0.74 points, width 512 removes 2.1 % (see the test above)"))
def test_digits_recipe_claim_more_redundancy_at_width_512(digits_mlps):
    """The recipe's claim at one beta for both widths: >= 10 % of the units removed with an
    accuracy change < 0.5 points, and a larger fraction at width 512 than at 128."""
    data, models = digits_mlps
    test = (data.X_test, data.y_test)
    beta = 1.0
    r = {w: merge_equivalent_units(m, beta, data=test, progress=False)
         for w, m in models.items()}
    for res in r.values():
        assert res.fraction_removed >= 0.10
        assert abs(res.accuracy_after - res.accuracy_before) < 0.005
    assert r[512].fraction_removed > r[128].fraction_removed


def test_record_rows_and_curve_in_the_result():
    model = make_mlp((8, 30, 20, 3), seed=0)
    X = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 50)
    res = merge_equivalent_units(model, 1.2, data=(X, y), curve=[0.0, 1.2, 2.01],
                                 progress=False)
    assert isinstance(res, RedundancyResult)
    assert res.curve_units == ((30, res.units_after[0], 1), (20, res.units_after[1], 1))
    rows = res.record_rows()
    assert [layer for layer, _ in rows] == ["0", "2"]
    assert set(rows[0][1]) == {"beta", "units_before", "units_after", "fraction_removed",
                               "accuracy_before", "accuracy_after", "loss_before",
                               "loss_after", "curve_betas", "curve_units"}
    assert rows[1][1]["curve_units"] == [20, res.units_after[1], 1]
    assert 0 <= rows[0][1]["accuracy_after"] <= 1
    assert "model" not in res.to_dict()
    json.dumps([r.values for r in res.to_records(model="mlp")])


def test_bad_inputs_are_named_errors():
    with pytest.raises(RepscopeTypeError, match="nn.Sequential"):
        merge_equivalent_units(torch.nn.Linear(3, 3), 0.1, progress=False)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))
    with pytest.raises(RepscopeValueError, match=r"module '0' \(Conv2d\) is not supported"):
        merge_equivalent_units(conv, 0.1, progress=False)
    tanh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    with pytest.raises(RepscopeValueError, match=r"'1' \(Tanh\)"):
        merge_equivalent_units(tanh, 0.1, progress=False)
    model: Any = make_mlp((4, 6, 2), seed=0)
    with pytest.raises(RepscopeValueError, match="layers: '2' is not a hidden Linear"):
        merge_equivalent_units(model, 0.1, layers=["2"], progress=False)
    with pytest.raises(RepscopeValueError, match="beta must be"):
        merge_equivalent_units(model, -1.0, progress=False)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(RepscopeValueError, match="Linear '2' has NaN or inf in its weight"):
        merge_equivalent_units(model, 0.1, progress=False)
