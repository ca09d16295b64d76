"""Merge methods, task vectors and their diagnostics against naive formulas written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.weights._merge import MERGE_METHODS, diagonal_fisher, merge_state_dicts
from repscope.weights._taskvec import (
    MergeResult,
    TaskVectorResult,
    diagnose_task_vectors,
    disentanglement_error,
    evaluate_merges,
    orthoreg_penalty,
    sign_conflict_rate,
    task_vector,
    task_vector_cosines,
)


def _models(n=3, seed=0, shape=(40, 30)):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(shape, generator=g), "b": torch.randn(shape[1], generator=g),
            "count": torch.tensor(7)}
    models = []
    for _ in range(n):
        models.append({"w": base["w"] + 0.3 * torch.randn(shape, generator=g),
                       "b": base["b"] + 0.3 * torch.randn(shape[1], generator=g),
                       "count": torch.tensor(7)})
    return base, models


def _np(sd):
    return {k: v.double().numpy() for k, v in sd.items() if v.is_floating_point()}


def test_linear_and_task_arithmetic_equal_naive_formulas():
    base, models = _models()
    w = [0.5, 0.3, 0.2]
    got = merge_state_dicts("linear", models, weights=w, progress=False)
    got_raw = merge_state_dicts("linear", models, weights=w, normalize=False, progress=False)
    ta = merge_state_dicts("task_arithmetic", models, base=base, weights=w, progress=False,
                           **{"lambda": 0.7})
    for k in ("w", "b"):
        xs = [m[k].double().numpy() for m in models]
        naive = sum(wi * x for wi, x in zip(w, xs)) / sum(w)
        np.testing.assert_allclose(got[k].numpy(), naive, atol=1e-5)
        np.testing.assert_allclose(got_raw[k].numpy(), naive * sum(w), atol=1e-5)
        b = base[k].double().numpy()
        np.testing.assert_allclose(ta[k].numpy(),
                                   b + 0.7 * sum(wi * (x - b) for wi, x in zip(w, xs)), atol=1e-5)
    assert torch.equal(got["count"], base["count"])
    assert got["w"].dtype == torch.float32


def _naive_ties(base, xs, weights, density, lam=1.0, normalize=True):
    taus = []
    for x, d, w in zip(xs, density, weights):
        tau = (x - base).ravel()
        k = max(1, int(d * tau.size))
        keep = np.argsort(-np.abs(tau))[:k]
        trimmed = np.zeros_like(tau)
        trimmed[keep] = tau[keep]
        taus.append(w * trimmed)
    taus = np.stack(taus)
    elected = np.where(taus.sum(0) >= 0, 1.0, -1.0)
    agree = np.sign(taus) == elected
    num = (taus * agree).sum(0)
    den = (np.asarray(weights)[:, None] * agree).sum(0)
    den[den == 0] = 1
    merged = num / den if normalize else num
    return base + lam * merged.reshape(base.shape)


def test_ties_equals_naive_trim_elect_disjoint_mean():
    base, models = _models()
    w, d = [1.0, 0.6, 0.8], [0.2, 0.5, 0.9]
    got = merge_state_dicts("ties", models, base=base, weights=w, density=d, progress=False,
                            lambda_=0.9)
    for k in ("w", "b"):
        naive = _naive_ties(base[k].double().numpy(), [m[k].double().numpy() for m in models],
                            w, d, lam=0.9)
        np.testing.assert_allclose(got[k].numpy(), naive, atol=1e-5)
    # density 1 and one model: TIES is task arithmetic with normalisation by the weight
    one = merge_state_dicts("ties", models[:1], base=base, weights=2.0, progress=False)
    np.testing.assert_allclose(one["w"].numpy(), models[0]["w"].numpy(), atol=1e-5)


def test_dare_seeded_reproducible_and_rescaled():
    base, models = _models(n=2, shape=(200, 100))
    kw = {"density": 0.3, "rescale": "density", "progress": False}
    a = merge_state_dicts("dare_linear", models, base=base, seed=3, **kw)
    b = merge_state_dicts("dare_linear", models, base=base, seed=3, **kw)
    c = merge_state_dicts("dare_linear", models, base=base, seed=4, **kw)
    assert torch.equal(a["w"], b["w"])
    assert not torch.equal(a["w"], c["w"])
    # one model: each entry of the delta is 0 (dropped) or tau / density (kept)
    one = merge_state_dicts("dare_linear", models[:1], base=base, seed=1, **kw)
    tau = (models[0]["w"] - base["w"]).double()
    delta = (one["w"] - base["w"]).double()
    kept = delta.abs() > 1e-6
    assert abs(float(kept.double().mean()) - 0.3) < 0.01
    np.testing.assert_allclose(delta[kept].numpy(), (tau[kept] / 0.3).numpy(), rtol=1e-4, atol=1e-6)
    # mergekit's rescale keeps the L1 norm of each dropped task vector
    l1 = merge_state_dicts("dare_linear", models[:1], base=base, seed=1, density=0.3,
                           progress=False)
    assert math.isclose(float((l1["w"] - base["w"]).abs().double().sum()),
                        float(tau.abs().sum()), rel_tol=1e-4)
    # density 1 keeps everything: dare_linear = task arithmetic, dare_ties = ties (no trim)
    full = merge_state_dicts("dare_ties", models, base=base, density=1.0, progress=False)
    ties = merge_state_dicts("ties", models, base=base, density=1.0, normalize=False,
                             progress=False)
    assert torch.allclose(full["w"], ties["w"], atol=1e-6)


def test_dare_ties_elects_signs_on_the_dropped_vectors():
    base, models = _models(n=3, shape=(30, 20))
    got = merge_state_dicts("dare_ties", models, base=base, density=0.5, rescale="none",
                            seed=2, progress=False)
    # recover each model's mask from dare_linear with one model and the same seed stream
    masks = []
    for i in range(3):
        lone = merge_state_dicts("dare_linear", models, base=base, density=0.5, rescale="none",
                                 seed=2, weights=[float(j == i) for j in range(3)],
                                 progress=False)
        masks.append(((lone["w"] - base["w"]).abs() > 0).double().numpy())
    taus = np.stack([(m["w"] - base["w"]).double().numpy() * mk for m, mk in zip(models, masks)])
    elected = np.where(taus.sum(0) >= 0, 1.0, -1.0)
    naive = base["w"].double().numpy() + (taus * (np.sign(taus) == elected)).sum(0)
    np.testing.assert_allclose(got["w"].numpy(), naive, atol=1e-5)


def test_slerp_equals_naive_and_falls_back_to_lerp():
    g = torch.Generator().manual_seed(0)
    a, b = {"w": torch.randn(10, 8, generator=g)}, {"w": torch.randn(10, 8, generator=g)}
    got = merge_state_dicts("slerp", [a, b], t=0.3, progress=False)["w"].double().numpy()
    x, y = a["w"].double().numpy().ravel(), b["w"].double().numpy().ravel()
    theta = math.acos(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))
    naive = (math.sin(0.7 * theta) * x + math.sin(0.3 * theta) * y) / math.sin(theta)
    np.testing.assert_allclose(got.ravel(), naive, atol=1e-5)
    # collinear tensors (cos > 0.9995): linear interpolation, not a 0/0
    c = {"w": 2 * a["w"]}
    lerp = merge_state_dicts("slerp", [a, c], t=0.25, progress=False)["w"]
    assert torch.allclose(lerp, 1.25 * a["w"], atol=1e-6)
    with pytest.raises(RepscopeValueError, match="exactly 2"):
        merge_state_dicts("slerp", [a, b, c], progress=False)


def test_model_stock_equals_jang_formula():
    base, models = _models(n=3)
    got = merge_state_dicts("model_stock", models, base=base, progress=False)
    for key in ("w", "b"):
        w0 = base[key].double().numpy().ravel()
        ds = [m[key].double().numpy().ravel() - w0 for m in models]
        cos = np.mean([ds[i] @ ds[j] / np.linalg.norm(ds[i]) / np.linalg.norm(ds[j])
                       for i in range(3) for j in range(i + 1, 3)])
        t = 3 * cos / (2 * cos + 1)
        avg = np.mean([m[key].double().numpy().ravel() for m in models], 0)
        np.testing.assert_allclose(got[key].numpy().ravel(), t * avg + (1 - t) * w0, atol=1e-5)


def test_fisher_weighted_average_and_diagonal_fisher():
    _, models = _models(n=2)
    g = torch.Generator().manual_seed(5)
    fishers = [{"w": torch.rand(40, 30, generator=g), "b": torch.rand(30, generator=g)}
               for _ in range(2)]
    got = merge_state_dicts("fisher", models, fishers=fishers, weights=[1.0, 2.0], eps=0.0,
                            progress=False)
    f0, f1 = fishers[0]["w"].double(), 2 * fishers[1]["w"].double()
    naive = (f0 * models[0]["w"] + f1 * models[1]["w"]) / (f0 + f1)
    assert torch.allclose(got["w"].double(), naive, atol=1e-5)
    # diagonal Fisher: per-example squared gradients, averaged (checked by a plain loop)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    loss = torch.nn.functional.cross_entropy
    fisher = diagonal_fisher(net, [(x[:7], y[:7]), (x[7:], y[7:])], loss, progress=False)
    naive_f = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    for i in range(12):
        net.zero_grad()
        loss(net(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in net.named_parameters():
            naive_f[k] += p.grad ** 2 / 12
    for k in naive_f:
        assert torch.allclose(fisher[k], naive_f[k], atol=1e-6), k


def test_registry_metadata():
    assert {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp",
            "model_stock", "fisher"} <= set(MERGE_METHODS)
    meta = MERGE_METHODS.meta("ties")
    assert meta["needs_base"] == "yes" and meta["params"]["density"] == 1.0
    assert meta["paper"].startswith("https://")
    assert MERGE_METHODS.canonical("DARE-TIES") == "dare_ties"


def test_bad_inputs_are_named_errors():
    base, models = _models(n=2)
    extra = {**models[1], "extra.weight": torch.zeros(2)}
    with pytest.raises(RepscopeValueError, match="keys"):
        merge_state_dicts("ties", [models[0], extra], base=base, progress=False)
    shaped = {**models[1], "b": torch.zeros(31)}
    with pytest.raises(RepscopeValueError, match="shape"):
        merge_state_dicts("linear", [models[0], shaped], progress=False)
    typed = {**models[1], "b": models[1]["b"].double()}
    with pytest.raises(RepscopeTypeError, match="dtype"):
        merge_state_dicts("linear", [models[0], typed], progress=False)
    nan = {**models[1], "w": models[1]["w"].clone()}
    nan["w"][0, 0] = float("nan")
    with pytest.raises(RepscopeValueError, match="'w'"):
        merge_state_dicts("task_arithmetic", [models[0], nan], base=base, progress=False)
    with pytest.raises(UnknownNameError, match="ties"):
        merge_state_dicts("tie", models, base=base, progress=False)
    with pytest.raises(RepscopeValueError, match="needs a base"):
        merge_state_dicts("ties", models, progress=False)
    with pytest.raises(RepscopeValueError, match="does not use a base"):
        merge_state_dicts("linear", models, base=base, progress=False)
    with pytest.raises(RepscopeValueError, match="unknown parameter 'densty'"):
        merge_state_dicts("ties", models, base=base, densty=0.5, progress=False)
    with pytest.raises(RepscopeValueError, match="one number per model"):
        merge_state_dicts("ties", models, base=base, weights=[1.0, 2.0, 3.0], progress=False)
    with pytest.raises(RepscopeValueError, match="density"):
        merge_state_dicts("ties", models, base=base, density=1.5, progress=False)
    with pytest.raises(RepscopeValueError, match="rescale"):
        merge_state_dicts("dare_ties", models, base=base, density=0.5, rescale="l3",
                          progress=False)
    before = models[0]["w"].clone()
    merge_state_dicts("ties", models, base=base, density=0.3, progress=False)
    assert torch.equal(models[0]["w"], before)  # inputs untouched


# --------------------------------------------------------------------------- task vectors
def test_task_vector_cosines_and_sign_conflicts_naive():
    base, models = _models(n=3)
    vecs = [task_vector(m, base) for m in models]
    assert set(vecs[0]) == {"w", "b"}  # the integer buffer has no task vector
    flat = np.stack([np.concatenate([v["w"].double().numpy().ravel(),
                                     v["b"].double().numpy().ravel()]) for v in vecs])
    norms = np.linalg.norm(flat, axis=1)
    cos = task_vector_cosines(vecs)
    assert cos.dtype == np.float64
    np.testing.assert_allclose(cos, flat @ flat.T / np.outer(norms, norms), atol=1e-12)
    sparse = [{k: t * (torch.rand(t.shape, generator=torch.Generator().manual_seed(i)) < 0.5)
               for k, t in v.items()} for i, v in enumerate(vecs)]
    f = np.stack([np.concatenate([v["w"].double().numpy().ravel(),
                                  v["b"].double().numpy().ravel()]) for v in sparse])
    eligible = (f != 0).sum(0) >= 2
    conflict = ((f > 0).any(0) & (f < 0).any(0))
    assert sign_conflict_rate(sparse) == pytest.approx(conflict.sum() / eligible.sum())
    assert sign_conflict_rate([vecs[0], vecs[0]]) == 0.0
    res = diagnose_task_vectors({"a": models[0], "b": models[1], "c": models[2]}, base,
                                progress=False)
    assert isinstance(res, TaskVectorResult) and res.names == ("a", "b", "c")
    np.testing.assert_allclose(res.cosines, cos, atol=1e-12)
    np.testing.assert_allclose(res.norms, norms, rtol=1e-7)  # float32 task vectors
    (layer, values), = res.record_rows()
    assert layer == ""
    assert set(values) == {"names", "cosines", "sign_conflict_rate", "norms"}
    with pytest.raises(RepscopeValueError, match="at least 2"):
        task_vector_cosines([vecs[0]])


def test_orthoreg_penalty():
    q, _ = torch.linalg.qr(torch.randn(12, 5, dtype=torch.float64))
    assert float(orthoreg_penalty({"a": q, "b": q.T})) < 1e-12  # orthonormal, both sides
    assert float(orthoreg_penalty({"z": torch.zeros(6, 4)})) == pytest.approx(2.0)  # sqrt(4)
    assert float(orthoreg_penalty({"z": torch.zeros(6, 4)}, squared=True)) == pytest.approx(4.0)
    d = torch.randn(7, 3, dtype=torch.float64)
    naive = np.linalg.norm(d.numpy().T @ d.numpy() - np.eye(3))
    assert float(orthoreg_penalty({"d": d, "bias": torch.ones(3)})) == pytest.approx(naive)
    net = torch.nn.Linear(5, 3)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(0.5)
    pen = orthoreg_penalty(net, ref)
    pen.backward()
    assert net.weight.grad is not None and float(net.weight.grad.abs().sum()) > 0
    with pytest.raises(RepscopeValueError, match="weight"):
        orthoreg_penalty(net, {"bias": ref["bias"]})


def test_disentanglement_error_matches_definition():
    torch.manual_seed(0)
    net = torch.nn.Linear(6, 4)
    base = {k: v.clone() for k, v in net.state_dict().items()}
    vecs = [{k: torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    xs = [torch.randn(50, 6), torch.randn(40, 6)]
    alphas = [0.5, 0.8]
    xi = disentanglement_error(net, base, vecs, alphas, xs)

    def predict(coefs, x):
        w = {k: base[k] + sum(c * v[k] for c, v in zip(coefs, vecs)) for k in base}
        return (x @ w["weight"].T + w["bias"]).argmax(-1)

    naive = sum(float((predict([alphas[t] if i == t else 0 for i in range(2)], xs[t])
                       != predict(alphas, xs[t])).double().mean()) for t in range(2))
    assert xi == pytest.approx(naive)
    assert 0 < xi <= 2
    zero = [{k: torch.zeros_like(v) for k, v in base.items()}] * 2
    assert disentanglement_error(net, base, zero, alphas, xs) == 0.0


def test_evaluate_merges_rows():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    base = {k: v.clone() for k, v in net.state_dict().items()}
    fts = [{k: v + 0.1 * torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    tasks = {"t1": (torch.randn(30, 5), torch.randint(0, 3, (30,))),
             "t2": (torch.randn(30, 5), torch.randint(0, 3, (30,)))}
    res = evaluate_merges(net, fts, tasks, {"linear": {}, "ties": {"density": 0.5}}, base=base,
                          progress=False)
    assert isinstance(res, MergeResult) and len(res.rows) == 4
    rows = res.record_rows()
    assert [r[0] for r in rows] == ["linear", "linear", "ties", "ties"]
    keys = {"method", "task", "params", "loss_before", "accuracy_before", "loss_after",
            "accuracy_after", "loss_base", "accuracy_base"}
    assert all(set(v) == keys for _, v in rows)
    merged = merge_state_dicts("linear", fts, progress=False)
    logits = tasks["t2"][0] @ merged["weight"].T + merged["bias"]
    loss = torch.nn.functional.cross_entropy(logits.double(), tasks["t2"][1])
    assert rows[1][1]["loss_after"] == pytest.approx(float(loss), rel=1e-5)
