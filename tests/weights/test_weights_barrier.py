"""Barriers on the linear path: naive formulas, the recipe's claims (cluster C §1 on the MLP
64-512-512-10 on digits, two SGD seeds, test cross-entropy), BatchNorm reset on a small CNN,
the second-order estimate against explicit Hessians, and named errors.

The two MLPs are trained once for the module (seeds 1 and 2, ``_toy.train_mlp`` defaults), on
one torch thread.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.weights._barrier import (
    BarrierResult,
    LayerBarrierResult,
    barrier_curve,
    default_blocks,
    layerwise_barriers,
    reset_batchnorm,
    taylor_barrier,
)
from repscope.weights._toy import digits_data, evaluate, make_mlp, train_mlp

WIDTHS = (64, 512, 512, 10)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return digits_data()


@pytest.fixture(scope="module")
def mlps(data):
    return train_mlp(WIDTHS, seed=1, data=data), train_mlp(WIDTHS, seed=2, data=data)


@pytest.fixture(scope="module")
def test_loss(data):
    def loss_fn(model):
        return evaluate(model, data.X_test, data.y_test)

    return loss_fn


@pytest.fixture(scope="module")
def batch_loss(data):
    X, y = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)

    def loss_on_batch(model):
        return torch.nn.functional.cross_entropy(model(X), y)

    return loss_on_batch


@pytest.fixture(scope="module")
def naive(mlps, test_loss):
    a, b = mlps
    return barrier_curve(make_mlp(WIDTHS), a, b, test_loss, label="naive", progress=False)


def _mix(a, b, alpha):
    sa, sb = a.state_dict(), b.state_dict()
    return {k: (1 - alpha) * sa[k] + alpha * sb[k] for k in sa}


# ---------------------------------------------------------------------------------------------
# the curve against naive formulas


def test_curve_matches_the_naive_formula(mlps, test_loss, naive, data):
    a, b = mlps
    model = make_mlp(WIDTHS)
    losses, accs = [], []
    for alpha in np.linspace(0, 1, 11):
        model.load_state_dict(_mix(a, b, float(alpha)))
        loss, acc = evaluate(model, data.X_test, data.y_test)
        losses.append(loss)
        accs.append(acc)
    np.testing.assert_allclose(naive.alphas, np.linspace(0, 1, 11), atol=1e-15)
    np.testing.assert_allclose(naive.loss, losses, rtol=0, atol=1e-5)
    np.testing.assert_allclose(naive.accuracy, accs, atol=1e-6)
    chord = [(1 - t) * losses[0] + t * losses[-1] for t in naive.alphas]
    assert naive.barrier == pytest.approx(max(x - c for x, c in zip(losses, chord)), abs=1e-5)
    acc_chord = [(1 - t) * accs[0] + t * accs[-1] for t in naive.alphas]
    # the accuracy barrier is positive when accuracy falls below its chord
    assert naive.accuracy_barrier == pytest.approx(
        max(c - x for x, c in zip(accs, acc_chord)), abs=1e-6)
    assert naive.loss_a == pytest.approx(test_loss(a)[0], abs=1e-6)
    assert naive.loss_b == pytest.approx(test_loss(b)[0], abs=1e-6)
    assert naive.excess[0] == naive.excess[-1] == 0.0
    assert naive.barrier_alpha == naive.alphas[int(np.argmax(naive.excess))]


def test_recipe_naive_barrier_and_accuracies(mlps, naive, test_loss):
    """Recipe: naive barrier 0.170 on this setup (here 0.1..0.3), both models >= 95 %."""
    a, b = mlps
    assert test_loss(a)[1] >= 0.95
    assert test_loss(b)[1] >= 0.95
    assert 0.1 <= naive.barrier <= 0.3
    assert 0.3 <= naive.barrier_alpha <= 0.7  # the ridge sits mid-path


def test_barrier_record_and_inputs_untouched(mlps, test_loss, naive):
    a, b = mlps
    before = {k: v.clone() for k, v in a.state_dict().items()}
    model = make_mlp(WIDTHS, seed=9)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    steps: list[int] = []
    res = barrier_curve(model, a.state_dict(), b, test_loss, alphas=[0.5, 0.25],
                        progress=steps.append)
    assert res.alphas == (0.0, 0.25, 0.5, 1.0)  # ends added, sorted
    assert sum(steps) == 4
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())
    (layer, values), = naive.record_rows()
    assert layer == ""
    assert set(values) == {"alphas", "loss", "accuracy", "excess", "barrier", "barrier_alpha",
                           "midpoint_excess", "accuracy_barrier", "loss_a", "loss_b",
                           "accuracy_a", "accuracy_b", "label", "n_alphas", "reset_bn"}
    assert values["label"] == "naive" and values["n_alphas"] == 11
    json.dumps(values)
    rec, = naive.to_records(model="mlp seeds 1, 2", dataset="digits")
    assert rec.analysis == BarrierResult.analysis == "weights_barrier"


def test_loss_only_and_mapping_evaluations(mlps, data):
    a, b = mlps
    X, y = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)

    def ce(model):
        return torch.nn.functional.cross_entropy(model(X), y)

    def acc(model):
        return float((model(X).argmax(1) == y).float().mean())

    only = barrier_curve(make_mlp(WIDTHS), a, b, ce, alphas=3, progress=False)
    assert only.accuracy is None and only.accuracy_barrier is None
    both = barrier_curve(make_mlp(WIDTHS), a, b, ce, alphas=3, metric_fn=acc, progress=False)
    mapped = barrier_curve(make_mlp(WIDTHS), a, b,
                           lambda m: {"loss": ce(m), "accuracy": acc(m)}, alphas=3,
                           progress=False)
    assert both.loss == mapped.loss == only.loss
    assert both.accuracy == mapped.accuracy is not None


def test_safetensors_files_give_the_same_curve(tmp_path, test_loss):
    from safetensors.torch import save_file

    a, b = make_mlp((64, 16, 10), seed=3), make_mlp((64, 16, 10), seed=4)
    save_file(a.state_dict(), str(tmp_path / "a.safetensors"))
    save_file(b.state_dict(), str(tmp_path / "b.safetensors"))
    arch = make_mlp((64, 16, 10))
    from_files = barrier_curve(arch, tmp_path / "a.safetensors", str(tmp_path / "b.safetensors"),
                               test_loss, alphas=5, progress=False)
    in_memory = barrier_curve(arch, a, b, test_loss, alphas=5, progress=False)
    assert from_files.loss == in_memory.loss
    assert len(set(from_files.loss)) == 5  # the files were read, point by point


# ---------------------------------------------------------------------------------------------
# layer-wise barriers


def test_layerwise_barriers_naive_pair(mlps, test_loss, data):
    """Recipe: every single-layer barrier is ~0 (<= 0.01)."""
    a, b = mlps
    res = layerwise_barriers(make_mlp(WIDTHS), a, b, test_loss, label="naive", progress=False)
    assert isinstance(res, LayerBarrierResult)
    assert res.blocks == ("0", "2", "4")
    assert res.keys[1] == ("2.weight", "2.bias")
    assert max(res.barriers.values()) <= 0.01
    # the block path ends at a with that block from b
    hybrid = make_mlp(WIDTHS)
    hybrid.load_state_dict({**a.state_dict(), "4.weight": b[4].weight, "4.bias": b[4].bias})
    assert res.curves[2].loss_b == pytest.approx(evaluate(hybrid, data.X_test, data.y_test)[0],
                                                 abs=1e-6)
    rows = res.record_rows()
    assert [layer for layer, _ in rows] == ["0", "2", "4"]
    assert set(rows[0][1]) == {"block", "keys", "barrier", "accuracy_barrier", "loss_a",
                               "loss_end", "label", "n_alphas"}
    assert res.to_records()[0].analysis == "weights_layer_barrier"
    one = layerwise_barriers(make_mlp(WIDTHS), a, b, test_loss, blocks={"head": ["4.weight"]},
                             alphas=3, progress=False)
    assert one.blocks == ("head",) and one.keys == (("4.weight",),)


# ---------------------------------------------------------------------------------------------
# the second-order estimate


def test_taylor_terms_against_explicit_hessians():
    """Gradients and HVPs against torch.autograd.functional on a tiny MLP (all parameters as
    one vector), and exact on a loss that is quadratic in the weights."""
    torch.manual_seed(0)
    X, y = torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 2, (32,))
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    net = net.double()
    a = {k: v.clone() for k, v in net.state_dict().items()}
    b = {k: v + 0.3 * torch.randn_like(v) for k, v in a.items()}
    keys, shapes = list(a), [a[k].shape for k in a]

    def flat_loss(theta):
        parts, i = {}, 0
        for k, s in zip(keys, shapes):
            n = int(np.prod(s))
            parts[k] = theta[i:i + n].reshape(s)
            i += n
        out = torch.func.functional_call(net, parts, (X,))
        return torch.nn.functional.cross_entropy(out, y)

    ta = torch.cat([a[k].ravel() for k in keys])
    tb = torch.cat([b[k].ravel() for k in keys])
    delta = tb - ta
    grad = [torch.autograd.functional.jacobian(flat_loss, t) for t in (ta, tb)]
    hess = [torch.autograd.functional.hessian(flat_loss, t) for t in (ta, tb)]
    want_g = 0.25 * float((grad[0] - grad[1]) @ delta)
    want_h = float(delta @ (hess[0] + hess[1]) @ delta) / 16
    res = taylor_barrier(net, a, b, lambda m: torch.nn.functional.cross_entropy(m(X), y))
    assert res.gradient_term == pytest.approx(want_g, rel=1e-9, abs=1e-12)
    assert res.curvature_term == pytest.approx(want_h, rel=1e-9, abs=1e-12)
    assert float(res) == res.estimate == pytest.approx(want_g + want_h, rel=1e-9)
    assert res.n_keys == 4

    # quadratic in the weights (least squares on a linear model): the estimate is exact
    lin = torch.nn.Linear(3, 2).double()
    target = torch.randn(32, 2, dtype=torch.float64)

    def mse(m):
        return ((m(X) - target) ** 2).mean()

    la = {k: v.clone() for k, v in lin.state_dict().items()}
    lb = {k: v + torch.randn_like(v) for k, v in la.items()}
    est = taylor_barrier(lin, la, lb, mse)
    curve = barrier_curve(lin, la, lb, mse, alphas=3, progress=False)
    assert est.estimate == pytest.approx(curve.midpoint_excess, abs=1e-10)
    # keys: the layer-wise path (only "bias" moves), again exact for a quadratic loss
    est_b = taylor_barrier(lin, la, lb, mse, keys="bias")
    curve_b = layerwise_barriers(lin, la, lb, mse, blocks={"bias": ["bias"]}, alphas=3,
                                 progress=False).curves[0]
    assert est_b.n_keys == 1
    assert est_b.estimate == pytest.approx(curve_b.midpoint_excess, abs=1e-10)


def test_taylor_far_off_for_the_unaligned_pair(mlps, naive, batch_loss):
    """Recipe: -0.035 predicted vs +0.170 actual for the unaligned pair."""
    a, b = mlps
    est = taylor_barrier(make_mlp(WIDTHS), a, b, batch_loss)
    assert abs(est.estimate - naive.barrier) > 0.1
    assert est.loss_a == pytest.approx(naive.loss_a, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# the aligned pair (weight matching)


def test_aligned_pair_claims(mlps, test_loss, batch_loss, naive):
    """Recipe: barrier 0.170 -> 0.000 after weight matching (midpoint better, -0.042), every
    layer barrier ~0, and the Taylor estimate within 0.01 (-0.040 vs -0.042)."""
    from repscope.weights._matching import weight_matching
    from repscope.weights._spec import mlp_spec

    a, b = mlps
    aligned = weight_matching(mlp_spec(a), a, b, progress=False).aligned
    res = barrier_curve(make_mlp(WIDTHS), a, aligned, test_loss, label="weight matching",
                        progress=False)
    assert res.loss_b == pytest.approx(naive.loss_b, abs=1e-5)  # same function as b
    assert res.barrier <= 0.01 < naive.barrier
    assert res.midpoint_excess <= 0.0
    layers = layerwise_barriers(make_mlp(WIDTHS), a, aligned, test_loss, progress=False)
    assert layers.max_barrier <= 0.01
    est = taylor_barrier(make_mlp(WIDTHS), a, aligned, batch_loss)
    assert abs(est.estimate - res.midpoint_excess) <= 0.01


# ---------------------------------------------------------------------------------------------
# BatchNorm reset


def _cnn(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10))


@pytest.fixture(scope="module")
def cnns(data):
    X = torch.from_numpy(data.X_train).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(data.y_train)
    out = []
    for seed in (0, 1):
        model = _cnn(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(seed + 100)
        model.train()
        for _ in range(3):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), 32):
                idx = order[start:start + 32]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
                opt.step()
        out.append(model.eval())
    return out[0], out[1], X


def test_reset_batchnorm_recomputes_exact_statistics(cnns):
    a, _, X = cnns
    model = _cnn(5)
    model.load_state_dict(a.state_dict())
    model[2] = torch.nn.Dropout(0.5)  # must stay in eval mode during the reset
    model.eval()
    bn = model[1]
    old_mean = bn.running_mean.clone()
    seen = {}
    handle = bn.register_forward_hook(lambda m, i, o: seen.__setitem__("x", i[0].detach()))
    halves = [X[:600], X[600:1200]]  # equal sizes: the average of batch means = the mean
    reset_batchnorm(model, [(h, None) for h in halves])
    handle.remove()
    assert not model.training and not bn.training and not model[2].training
    assert bn.momentum == 0.1  # restored
    assert int(bn.num_batches_tracked) == 2
    assert not torch.allclose(bn.running_mean, old_mean, atol=1e-3)
    with torch.no_grad():
        inputs = [model[0](h) for h in halves]
    want_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    want_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-4, atol=1e-5)
    assert "x" in seen  # the forward passes went through the module


def test_reset_batchnorm_restores_accuracy_after_interpolation(cnns, data):
    a, b, X = cnns
    Xt = data.X_test.reshape(-1, 1, 8, 8)

    def loss_fn(model):
        return evaluate(model, Xt, data.y_test)

    assert loss_fn(a)[1] >= 0.93 and loss_fn(b)[1] >= 0.93
    batches = [X[i:i + 256] for i in range(0, len(X), 256)]
    plain = barrier_curve(_cnn(0), a, b, loss_fn, alphas=5, progress=False)
    reset = barrier_curve(_cnn(0), a, b, loss_fn, alphas=5, reset_bn=batches, progress=False)
    assert reset.reset_bn and not plain.reset_bn
    assert reset.loss[0] == plain.loss[0] and reset.loss[-1] == plain.loss[-1]  # ends kept
    assert reset.accuracy[2] >= plain.accuracy[2] + 0.05  # the midpoint recovers
    assert reset.barrier < 0.5 * plain.barrier
    assert reset.accuracy_barrier < plain.accuracy_barrier


# ---------------------------------------------------------------------------------------------
# named errors


def test_named_errors(mlps, test_loss):
    a, b = mlps
    small = make_mlp((64, 8, 10))
    with pytest.raises(RepscopeValueError, match="alphas: expected at least 3 points"):
        barrier_curve(small, small, small, test_loss, alphas=2)
    with pytest.raises(RepscopeValueError, match=r"alphas: expected values in \[0, 1\]"):
        barrier_curve(small, small, small, test_loss, alphas=[0.5, 1.5])
    with pytest.raises(RepscopeValueError, match="strictly between 0 and 1"):
        barrier_curve(small, small, small, test_loss, alphas=[0.0, 1.0])
    with pytest.raises(RepscopeValueError, match="state dicts differ in keys"):
        barrier_curve(small, small, make_mlp((64, 8, 8, 10)), test_loss)
    with pytest.raises(RepscopeValueError, match="differ in the shapes"):
        barrier_curve(small, small, make_mlp((64, 9, 10)), test_loss)
    with pytest.raises(RepscopeValueError, match="model and a differ in the shapes"):
        barrier_curve(make_mlp((64, 9, 10)), small, small, test_loss)
    bad = {k: v.clone() for k, v in b.state_dict().items()}
    bad["2.weight"][0, 0] = float("nan")
    with pytest.raises(RepscopeValueError, match=r"state dict b has non-finite values .*'2.weight'"):
        barrier_curve(make_mlp(WIDTHS), a, bad, test_loss)
    with pytest.raises(RepscopeValueError, match="sequence of 3"):
        barrier_curve(small, small, small, lambda m: (1.0, 0.5, 0.0))
    with pytest.raises(RepscopeValueError, match="metric_fn: loss_fn already returns"):
        barrier_curve(small, small, small, test_loss, metric_fn=lambda m: 1.0, progress=False)
    with pytest.raises(RepscopeTypeError, match="model: expected a torch.nn.Module"):
        barrier_curve(small.state_dict(), small, small, test_loss)
    with pytest.raises(RepscopeValueError, match="blocks: the prefix '7' matches no key"):
        layerwise_barriers(small, small, small, test_loss, blocks=["7"])
    with pytest.raises(RepscopeValueError, match="no BatchNorm|BatchNorm modules"):
        reset_batchnorm(small, [torch.zeros(2, 64)])
    with pytest.raises(RepscopeValueError, match="batches: expected at least one batch"):
        reset_batchnorm(_cnn(0), [])
    with pytest.raises(RepscopeTypeError, match="loss_on_batch: expected a scalar tensor"):
        taylor_barrier(small, small, small, lambda m: 0.5)
    assert default_blocks(small) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
