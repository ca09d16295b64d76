"""Weight matching, activation matching, alignment to a reference and the alignment diagnostics.

The recipe's setup (``cluster-c.md`` §2): MLPs 64-512-512-10 trained on the scikit-learn digits
from seeds 1 and 2 (``repscope.weights._toy``), trained once for the module.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from repscope.exceptions import RepscopeError, RepscopeValueError
from repscope.weights._diagnostics import OVERALL, alignment_diagnostics, sv_alignment
from repscope.weights._matching import (
    activation_matching,
    align_to_reference,
    default_layers,
    weight_matching,
)
from repscope.weights._spec import (
    Perm,
    PermutationSpec,
    apply_permutation,
    mlp_spec,
    random_permutation,
)
from repscope.weights._toy import digits_data, make_mlp, train_mlp


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    data = digits_data()
    models = {s: train_mlp((64, 512, 512, 10), seed=s, data=data) for s in (1, 2)}
    spec = mlp_spec(models[1])
    wm = weight_matching(spec, models[1], models[2], progress=False)
    return {"data": data, "a": models[1], "b": models[2], "spec": spec, "wm": wm}


@pytest.fixture(scope="module")
def diagnostics(trained):
    return alignment_diagnostics(trained["spec"], trained["a"], trained["b"],
                                 trained["wm"].aligned, model=trained["a"],
                                 batches=torch.from_numpy(trained["data"].X_test),
                                 progress=False)


def _dist(x, y) -> float:
    return sum(float(((x[k].double() - y[k].double()) ** 2).sum()) for k in x) ** 0.5


def _outputs64(model, state, X):
    with torch.no_grad():
        return torch.func.functional_call(model.double(), {k: v.double() for k, v in state.items()},
                                          (torch.as_tensor(X).double(),))


def _midpoint_loss(model, a, b, data) -> float:
    mid = {k: 0.5 * a[k] + 0.5 * b[k] for k in a}
    with torch.no_grad():
        logits = torch.func.functional_call(model, mid, (torch.from_numpy(data.X_test),))
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.y_test)))


# ----------------------------------------------------------------------------- weight matching


def test_aligned_b_computes_the_same_function(trained):
    wm, b = trained["wm"], trained["b"].state_dict()
    X = trained["data"].X_test
    net = make_mlp((64, 512, 512, 10))
    out_b, out_aligned = _outputs64(net, b, X), _outputs64(net, wm.aligned, X)
    assert torch.max(torch.abs(out_b - out_aligned)) < 1e-5
    # not the identity: the hidden units moved
    assert all((wm.perms[n] != np.arange(512)).sum() > 400 for n in ("P0", "P1"))
    assert not torch.equal(wm.aligned["0.weight"], b["0.weight"])
    # inputs untouched
    assert torch.equal(trained["b"].state_dict()["0.weight"], b["0.weight"])


def test_objective_never_decreases_and_converges(trained):
    wm = trained["wm"]
    assert wm.converged and wm.n_iter >= 2
    assert wm.objective.shape == (wm.n_iter + 1,)
    assert np.all(np.diff(wm.objective) >= -1e-9 * abs(wm.objective[-1]))
    assert wm.objective[-1] > wm.objective[0] + 10.0  # the recipe's pair: -0.08 -> ~132
    assert wm.n_changed[-1] == 0 and wm.n_changed[0] > 0
    # the objective is the weights' inner product after alignment
    a = trained["a"].state_dict()
    inner = sum(float((a[k].double() * wm.aligned[k].double()).sum()) for k in a)
    assert inner == pytest.approx(wm.objective[-1], rel=1e-6)


def test_recovers_a_known_permutation_exactly(trained):
    a, spec = trained["a"].state_dict(), trained["spec"]
    p = random_permutation(spec, seed=7)
    b = apply_permutation(spec, p, a)
    r = weight_matching(spec, a, b, progress=False)
    for n in p:
        np.testing.assert_array_equal(r.perms[n], np.argsort(p[n]))
    assert _dist(a, r.aligned) == 0.0
    assert r.converged and r.n_iter == 2  # one iteration finds it, one confirms


def test_progress_callback_counts_iterations(trained):
    steps: list[int] = []
    r = weight_matching(trained["spec"], trained["a"], trained["b"], max_iter=2,
                        progress=steps.append)
    assert sum(steps) == r.n_iter == 2
    assert not r.converged  # the full run needs more than two iterations


def _git_rebasin_reference(spec, a, b, *, max_iter=100, seed=0):
    """A plain numpy/scipy port of git-re-basin's weight_matching loop (no caching)."""
    A = {k: a[k].numpy() for k in spec.axes}
    B = {k: b[k].numpy() for k in spec.axes}
    perm = {n: np.arange(p.size) for n, p in spec.perms.items()}
    names = list(spec.perms)
    rng = np.random.default_rng(seed)

    def permuted(k, except_axis):
        w = B[k]
        for ax, n in enumerate(spec.axes[k]):
            if n is not None and ax != except_axis:
                w = np.take(w, perm[n], axis=ax)
        return w

    for _ in range(max_iter):
        progress = False
        for i in rng.permutation(len(names)):
            n = names[i]
            size = spec.perms[n].size
            C = np.zeros((size, size))
            for k, ax in spec.perm_axes(n):
                wa = np.moveaxis(A[k], ax, 0).reshape(size, -1)
                wb = np.moveaxis(permuted(k, ax), ax, 0).reshape(size, -1)
                C += wa @ wb.T
            _, ci = linear_sum_assignment(C, maximize=True)
            old = C[np.arange(size), perm[n]].sum()
            new = C[np.arange(size), ci].sum()
            if new > old + 1e-12:
                progress = True
                perm[n] = ci
        if not progress:
            break
    return perm


def test_matches_a_plain_port_of_git_rebasin():
    a = make_mlp((8, 16, 16, 16, 4), seed=3).double().state_dict()
    b = make_mlp((8, 16, 16, 16, 4), seed=4).double().state_dict()
    spec = mlp_spec(a)
    ref = _git_rebasin_reference(spec, a, b, seed=5)
    r = weight_matching(spec, a, b, seed=5, first_sweep="random", progress=False)
    for n in spec.perms:
        np.testing.assert_array_equal(r.perms[n], ref[n])


def test_single_permutation_is_the_brute_force_optimum():
    # one hidden permutation: the objective is linear in it, so one LAP is the global optimum
    a = make_mlp((5, 6, 3), seed=0).double().state_dict()
    b = make_mlp((5, 6, 3), seed=1).double().state_dict()
    spec = mlp_spec(a)
    r = weight_matching(spec, a, b, progress=False)

    def objective(p):
        s = apply_permutation(spec, {"P0": np.asarray(p)}, b)
        return sum(float((a[k] * s[k]).sum()) for k in a)

    best = max(itertools.permutations(range(6)), key=objective)
    np.testing.assert_array_equal(r.perms["P0"], best)
    assert r.objective[-1] == pytest.approx(objective(best), rel=1e-12)


# ----------------------------------------------------------------------------- blocks and groups


def _head_spec(d=5, heads=6, head_dim=3, groups=((0, 1, 2), (3, 4, 5))):
    perm = Perm("H", heads, block=head_dim, groups=groups)
    return PermutationSpec({"H": perm}, {"v.weight": ("H", None), "v.bias": ("H",),
                                        "o.weight": (None, "H")})


def _head_state(seed, d=5, heads=6, head_dim=3):
    g = torch.Generator().manual_seed(seed)
    return {"v.weight": torch.randn(heads * head_dim, d, generator=g, dtype=torch.float64),
            "v.bias": torch.randn(heads * head_dim, generator=g, dtype=torch.float64),
            "o.weight": torch.randn(d, heads * head_dim, generator=g, dtype=torch.float64)}


def test_grouped_block_permutation_is_the_constrained_optimum():
    spec = _head_spec()
    a, b = _head_state(0), _head_state(1)
    r = weight_matching(spec, a, b, progress=False)
    got = r.perms["H"]
    for g in spec.perms["H"].groups:
        assert sorted(got[list(g)].tolist()) == list(g)  # never crosses a group

    def objective(p):
        s = apply_permutation(spec, {"H": np.asarray(p)}, b)
        return sum(float((a[k] * s[k]).sum()) for k in a)

    allowed = [np.concatenate([p, 3 + np.asarray(q)])
               for p in itertools.permutations(range(3)) for q in itertools.permutations(range(3))]
    best = max(allowed, key=objective)
    np.testing.assert_array_equal(got, best)
    # without groups the optimum leaves the groups (so the constraint did something)
    free = PermutationSpec({"H": Perm("H", 6, block=3)}, spec.axes)
    r_free = weight_matching(free, a, b, progress=False)
    assert r_free.objective[-1] > r.objective[-1]
    assert sorted(r_free.perms["H"][:3].tolist()) != [0, 1, 2]


def test_grouped_block_permutation_is_recovered_and_keeps_the_function():
    spec = _head_spec()
    a = _head_state(2)
    p = random_permutation(spec, seed=3)
    b = apply_permutation(spec, p, a)
    b = {k: v + 1e-3 * torch.randn(v.shape, dtype=v.dtype,
                                   generator=torch.Generator().manual_seed(9))
         for k, v in b.items()}
    r = weight_matching(spec, a, b, progress=False)
    np.testing.assert_array_equal(r.perms["H"], np.argsort(p["H"]))
    # whole heads moved: y = o(relu(v x)) is unchanged by the blockwise permutation
    x = torch.randn(7, 5, dtype=torch.float64)

    def f(s):
        return torch.relu(x @ s["v.weight"].T + s["v.bias"]) @ s["o.weight"].T

    assert torch.allclose(f(b), f(r.aligned), atol=1e-12)


# ----------------------------------------------------------------------------- the recipe's claims


def test_distance_ratio_is_about_0_9(diagnostics):
    assert 0.8 <= diagnostics.distance_ratio <= 0.98  # recipe: 0.918


def test_singular_values_unchanged(diagnostics):
    for layer in diagnostics.layers:
        row = diagnostics[layer]
        assert row["sigma_change"] < 1e-6
        assert row["max_sigma_diff_after"] == pytest.approx(row["max_sigma_diff_before"],
                                                            abs=1e-6)
        assert row["max_sigma_diff_before"] > 1e-3  # the two models' spectra do differ


def test_top_singular_vector_alignment_rises_several_fold(diagnostics):
    assert diagnostics.layers == ["0.weight", "2.weight", "4.weight"]
    for layer in diagnostics.layers:
        row = diagnostics[layer]
        assert row["sv_alignment_after"] >= 3 * row["sv_alignment_before"], layer  # recipe ~10x
        assert row["top_k"] == 10


def test_cka_unchanged_and_unit_correlation_raised(diagnostics):
    for layer in ("0.weight", "2.weight"):
        row = diagnostics[layer]
        assert row["cka_after"] == pytest.approx(row["cka_before"], abs=1e-6)
        assert row["unit_corr_before"] < 0.1 < 0.3 < row["unit_corr_after"]


def test_diagnostics_records(diagnostics):
    rows = dict(diagnostics.record_rows())
    assert set(rows) == {"0.weight", "2.weight", "4.weight", OVERALL}
    for values in rows.values():
        assert set(values) == set(diagnostics.KEYS)
    assert rows[OVERALL]["sv_alignment_after"] is None
    records = diagnostics.to_records(model="mlp seed 1 vs 2")
    assert {r.analysis for r in records} == {"weights_alignment"}


def test_sv_alignment_definition():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((6, 4))
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    assert sv_alignment(U, S, Vt.T, -U, S, -Vt.T, 3) == pytest.approx(1.0)  # sign-blind
    # swapping the two leading pairs of B: only pairs 3.. still align
    Ub, Vb = U[:, [1, 0, 2, 3]], Vt.T[:, [1, 0, 2, 3]]
    expected = S[2] ** 2 / np.sum(S[:3] ** 2)
    assert sv_alignment(U, S, Vt.T, Ub, S, Vb, 3) == pytest.approx(expected)


def test_matching_lowers_the_midpoint_loss(trained):
    a, b, data = trained["a"].state_dict(), trained["b"].state_dict(), trained["data"]
    net = make_mlp((64, 512, 512, 10))
    naive = _midpoint_loss(net, a, b, data)
    assert _midpoint_loss(net, a, trained["wm"].aligned, data) < naive - 0.1


# ----------------------------------------------------------------------------- activation matching


def test_activation_matching(trained):
    a, b, data, spec = trained["a"], trained["b"], trained["data"], trained["spec"]
    assert default_layers(spec, a) == {"P0": "1", "P1": "3"}  # the ReLU after each Linear
    r = activation_matching(a, b, spec, [torch.from_numpy(data.X_train[:600]),
                                         torch.from_numpy(data.X_train[600:])])
    assert r.layers == {"P0": "1", "P1": "3"} and r.n_samples == len(data.X_train)
    for n in spec.perms:
        assert r.mean_corr[n] > r.mean_corr_identity[n] + 0.3
    sa, sb = a.state_dict(), b.state_dict()
    net = make_mlp((64, 512, 512, 10))
    assert torch.max(torch.abs(_outputs64(net, sb, data.X_test)
                               - _outputs64(net, r.aligned, data.X_test))) < 1e-5
    assert _dist(sa, r.aligned) < 0.97 * _dist(sa, sb)  # the barrier-relevant distance drops
    assert _midpoint_loss(net, sa, r.aligned, data) < _midpoint_loss(net, sa, sb, data) - 0.1
    assert a.training is False and b.training is False


def test_activation_matching_needs_a_feeding_module(trained):
    spec = PermutationSpec({"P": Perm("P", 512)}, {"2.weight": (None, "P"),
                                                   "0.bias": ("P",)})
    with pytest.raises(RepscopeValueError, match="'P' moves the output of no module"):
        activation_matching(trained["a"], trained["b"], spec,
                            torch.from_numpy(trained["data"].X_test))


# ----------------------------------------------------------------------------- several models


def test_align_three_models_to_a_reference(trained):
    a, b, data, spec = trained["a"], trained["b"], trained["data"], trained["spec"]
    c = train_mlp((64, 512, 512, 10), seed=3, data=data)
    res = align_to_reference(a, [b, c], spec, progress=False)
    assert len(res.results) == 2 and len(res.aligned) == 2
    sa = a.state_dict()
    net = make_mlp((64, 512, 512, 10))
    for other, r in zip((b, c), res.results, strict=True):
        so = other.state_dict()
        assert r.converged
        assert _dist(sa, r.aligned) < 0.95 * _dist(sa, so)
        assert torch.max(torch.abs(_outputs64(net, so, data.X_test)
                                   - _outputs64(net, r.aligned, data.X_test))) < 1e-5
    np.testing.assert_array_equal(res.results[0].perms["P0"], trained["wm"].perms["P0"])
    # all three in the reference's unit order: the aligned others are closer to each other too
    assert _dist(res.aligned[0], res.aligned[1]) < 0.95 * _dist(b.state_dict(), c.state_dict())
    by_act = align_to_reference(a, [b, c], spec, method="activation",
                                batches=torch.from_numpy(data.X_test), progress=False)
    assert [r.method for r in by_act.results] == ["activation", "activation"]


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_named(trained):
    spec, a, b = trained["spec"], trained["a"].state_dict(), trained["b"].state_dict()
    with pytest.raises(RepscopeValueError, match="differ in keys"):
        weight_matching(spec, a, {k: v for k, v in b.items() if k != "4.bias"}, progress=False)
    bad = dict(b)
    bad["2.weight"] = b["2.weight"].clone()
    bad["2.weight"][0, 0] = float("nan")
    with pytest.raises(RepscopeValueError, match="'2.weight'"):
        weight_matching(spec, a, bad, progress=False)
    with pytest.raises(RepscopeValueError, match="'2.weight'"):
        alignment_diagnostics(spec, a, b, bad, progress=False)
    small = mlp_spec(make_mlp((64, 32, 10)))
    with pytest.raises(RepscopeValueError, match="missing|entries"):
        weight_matching(small, a, b, progress=False)
    with pytest.raises(RepscopeValueError, match="max_iter"):
        weight_matching(spec, a, b, max_iter=0, progress=False)
    with pytest.raises(RepscopeValueError, match="not a permutation"):
        weight_matching(spec, a, b, init={"P0": np.zeros(512, dtype=np.int64)}, progress=False)
    with pytest.raises(RepscopeValueError, match="top_k"):
        alignment_diagnostics(spec, a, b, b, top_k=0, progress=False)
    with pytest.raises(RepscopeValueError, match="model and batches"):
        alignment_diagnostics(spec, a, b, b, model=trained["a"], progress=False)
    with pytest.raises(RepscopeError, match="others"):
        align_to_reference(a, [], spec, progress=False)


def _residual_stack(seed, d=24, hidden=96, blocks=4):
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": torch.randn(d, d, generator=g), "head.weight": torch.randn(5, d,
                                                                                     generator=g)}
    spec: dict[str, dict[str, int]] = {"res": {"embed.weight": 0, "head.weight": 1}}
    for i in range(blocks):
        sd[f"{i}.fc1.weight"] = torch.randn(hidden, d, generator=g)
        sd[f"{i}.fc1.bias"] = torch.randn(hidden, generator=g)
        sd[f"{i}.fc2.weight"] = torch.randn(d, hidden, generator=g)
        spec["res"].update({f"{i}.fc1.weight": 1, f"{i}.fc2.weight": 0})
        spec[f"h{i}"] = {f"{i}.fc1.weight": 0, f"{i}.fc1.bias": 0, f"{i}.fc2.weight": 1}
    return sd, PermutationSpec.from_dict(spec, sd)


def test_anchored_first_sweep_solves_the_residual_permutation_first():
    a, spec = _residual_stack(0)
    p = random_permutation(spec, seed=1)
    b = apply_permutation(spec, p, a)
    r = weight_matching(spec, a, b, first_sweep="anchored", progress=False)
    assert r.details["order"][0] == "res"
    for n in p:
        np.testing.assert_array_equal(r.perms[n], np.argsort(p[n]))
    assert _dist(a, r.aligned) == 0.0
    with pytest.raises(RepscopeValueError, match="first_sweep"):
        weight_matching(spec, a, b, first_sweep="bfs", progress=False)
