"""aTLAS (cluster-c §4): block-wise task-vector coefficients learned on ~50 labelled digits vs the
best single coefficient by grid search, both measured on held-out digits; composition against a
hand-written sum; named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from repscope.exceptions import RepscopeTypeError, RepscopeValueError  # noqa: E402
from repscope.weights._atlas import AtlasResult, compose, learn_blockwise_coefficients  # noqa: E402
from repscope.weights._taskvec import task_vector  # noqa: E402
from repscope.weights._toytasks import finetune, make_task_setup  # noqa: E402


@pytest.fixture(scope="module")
def tasks():
    """Three seeds of (setup, task vectors): a 64-128-128-10 MLP pretrained on half of the
    digits training split, fine-tuned on digits 0-4 and on 5-9 of the other half."""
    torch.set_num_threads(1)
    out = []
    for seed in range(3):
        setup = make_task_setup((64, 128, 128, 10), seed=seed)
        tvs = [task_vector(finetune(setup, k, seed=seed), setup.base) for k in range(2)]
        out.append((setup, tvs))
    return out


def test_blockwise_matches_or_beats_the_best_single_coefficient_on_held_out_digits(tasks):
    """The recipe's proposal, measured: block-wise λ (12 = 2 tasks x 6 tensors) learned on 50
    examples vs the best shared λ of a grid chosen on the same 50, on the 540 test digits.
    Measured here (seeds 0-2, lr 1e-2, 500 steps): block-wise accuracy 0.926/0.913/0.926 vs
    isotropic grid 0.898/0.900/0.911; held-out loss 0.231/0.260/0.255 vs 0.303/0.308/0.291.
    Over seeds 0-4 and two validation draws, block-wise had the higher accuracy in 9 of 10."""
    learned_acc, iso_acc, learned_loss, iso_loss = [], [], [], []
    for setup, tvs in tasks:
        d = setup.data
        res = learn_blockwise_coefficients(
            setup.base, setup.base, {"0-4": tvs[0], "5-9": tvs[1]}, setup.validation(50),
            steps=500, lr=1e-2, eval_data=(d.X_test, d.y_test), progress=False)
        print(f"block-wise acc {res.learned_acc:.4f} loss {res.learned_loss:.3f} | best single "
              f"lambda {res.isotropic_lambda} acc {res.isotropic_acc:.4f} loss "
              f"{res.isotropic_loss:.3f} | base acc {res.base_acc:.4f}")
        assert res.coefficients.shape == (2, 6)
        assert res.blocks == tuple(setup.base.state_dict())
        assert res.n_train == 50 and res.n_eval == len(d.y_test)
        assert res.train_loss[-1] < res.train_loss[0]
        learned_acc.append(res.learned_acc)
        iso_acc.append(res.isotropic_acc)
        learned_loss.append(res.learned_loss)
        iso_loss.append(res.isotropic_loss)
        # the composition beats the pretrained base (task addition helps at all)
        assert res.learned_acc > res.base_acc
    assert np.mean(learned_acc) >= np.mean(iso_acc)
    assert np.mean(learned_loss) <= np.mean(iso_loss)
    assert min(a - b for a, b in zip(learned_acc, iso_acc, strict=True)) > -0.01


def test_isotropic_mode_learns_one_coefficient_per_task_and_record_round_trips(tasks):
    setup, tvs = tasks[0]
    res = learn_blockwise_coefficients(setup.base, setup.base, tvs, setup.validation(50),
                                       blocks="isotropic", steps=50, lr=1e-2, progress=False)
    assert res.coefficients.shape == (2, 1) and res.blocks == ("all",)
    assert res.tasks == ("task0", "task1")
    assert np.isnan(res.learned_acc) and res.n_eval == 0
    (layer, values), = res.record_rows()
    assert layer == ""
    assert set(values) == {
        "mode", "tasks", "blocks", "coefficients", "steps", "n_train", "n_eval", "train_loss",
        "learned_loss", "learned_acc", "isotropic_lambda", "isotropic_loss", "isotropic_acc",
        "base_loss", "base_acc", "grid"}
    json.dumps(res.to_records(model="mlp")[0].values, default=str)
    assert isinstance(res, AtlasResult)


def test_compose_equals_hand_sum_and_does_not_mutate(tasks, tmp_path):
    setup, tvs = tasks[0]
    base = setup.base.state_dict()
    before = {k: v.clone() for k, v in base.items()}
    lam = np.arange(12, dtype=float).reshape(2, 6) / 10
    out = compose(base, tvs, lam)
    for b, k in enumerate(base):
        want = base[k].double() + lam[0, b] * tvs[0][k].double() + lam[1, b] * tvs[1][k].double()
        torch.testing.assert_close(out[k], want.float(), rtol=0, atol=1e-6)
    for k in base:
        assert torch.equal(base[k], before[k])
    # one λ per task broadcasts over blocks; a scalar over everything
    out1 = compose(base, tvs, [0.5, 0.25])
    torch.testing.assert_close(out1["2.weight"],
                               base["2.weight"] + 0.5 * tvs[0]["2.weight"]
                               + 0.25 * tvs[1]["2.weight"])
    out2 = compose(setup.base, tvs, 0.0)
    assert all(torch.equal(out2[k], base[k]) for k in base)
    # a safetensors file as the base gives the same state dict
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in base.items()}, str(tmp_path / "base.safetensors"))
    out3 = compose(tmp_path / "base.safetensors", tvs, lam)
    assert all(torch.equal(out3[k], out[k]) for k in base)


def test_composed_model_at_learned_coefficients_gives_the_reported_accuracy(tasks):
    setup, tvs = tasks[1]
    d = setup.data
    res = learn_blockwise_coefficients(setup.base, setup.base, tvs, setup.validation(50),
                                       steps=100, lr=1e-2, eval_data=(d.X_test, d.y_test),
                                       progress=False)
    import copy

    from repscope.weights._toy import evaluate

    model = copy.deepcopy(setup.base)
    model.load_state_dict(compose(setup.base, tvs, res))
    loss, acc = evaluate(model, d.X_test, d.y_test)
    assert acc == pytest.approx(res.learned_acc, abs=1e-6)
    assert loss == pytest.approx(res.learned_loss, abs=1e-4)


def test_bad_inputs_are_named_errors(tasks):
    setup, tvs = tasks[0]
    val = setup.validation(20)
    with pytest.raises(RepscopeValueError, match="blocks must be"):
        learn_blockwise_coefficients(setup.base, setup.base, tvs, val, blocks="layer",  # type: ignore[arg-type]
                                     progress=False)
    bad = dict(tvs[0])
    bad["0.weight"] = bad["0.weight"].clone()
    bad["0.weight"][0, 0] = float("nan")
    with pytest.raises(RepscopeValueError, match="NaN or inf in '0.weight'"):
        learn_blockwise_coefficients(setup.base, setup.base, [bad, tvs[1]], val, progress=False)
    short = {k: v for k, v in tvs[1].items() if k != "4.bias"}
    with pytest.raises(RepscopeValueError, match="differ in keys: 1 only in 'task0'"):
        compose(setup.base, [tvs[0], short], 1.0)
    with pytest.raises(RepscopeValueError, match=r"shape \(2,\), \(2, 1\) or \(2, 6\)"):
        compose(setup.base, tvs, np.ones((3, 6)))
    with pytest.raises(RepscopeTypeError, match="data must be a pair"):
        learn_blockwise_coefficients(setup.base, setup.base, tvs, val[0], progress=False)
    with pytest.raises(RepscopeTypeError, match="base: expected an nn.Module"):
        compose(3, tvs, 1.0)


@pytest.fixture(scope="module")
def orthoreg_runs(tasks):
    """Seed 0's setup fine-tuned on 0-4 and 5-9 with CE + lambda * OrthoReg (W4's penalty,
    plain Frobenius norm), lambda in {0, 0.1, 1}: the task vectors per lambda."""
    from repscope.weights._taskvec import orthoreg_penalty

    setup, _ = tasks[0]
    base_sd = {k: v.clone() for k, v in setup.base.state_dict().items()}
    out = {}
    for lam in (0.0, 0.1, 1.0):
        extra = None if lam == 0 else (lambda m, lam=lam: lam * orthoreg_penalty(m, base_sd))
        out[lam] = [task_vector(finetune(setup, k, seed=0, extra_loss=extra), setup.base)
                    for k in range(2)]
    return setup, out


def test_orthoreg_as_measured_on_digits(orthoreg_runs):
    """cluster-c §5's proposal, measured (seed 0, width 128): OrthoReg does lower its own
    penalty, but the task vectors' |cos| *rises* with lambda (0.427, 0.448, 0.498: the two
    fine-tunes on disjoint classes are anti-aligned, cos < 0, and the penalty inflates both
    deltas along shared directions); task addition at alpha 0.3 / 0.5 / 1 moves by about a point
    either way. Five seeds and width 512 in benchmarks/orthoreg_atlas.py agree."""
    from repscope.weights._taskvec import orthoreg_penalty, task_vector_cosines

    setup, runs = orthoreg_runs
    cos = {lam: float(task_vector_cosines(tvs)[0, 1]) for lam, tvs in runs.items()}
    pen = {lam: float(np.mean([float(orthoreg_penalty(t)) for t in tvs]))
           for lam, tvs in runs.items()}
    print("cos", cos, "penalty", pen)
    assert all(c < 0 for c in cos.values())
    assert pen[1.0] < pen[0.1] < pen[0.0]
    assert abs(cos[0.0]) < abs(cos[0.1]) < abs(cos[1.0])
    d = setup.data
    import copy

    from repscope.weights._toy import evaluate

    for tvs in runs.values():
        for alpha in (0.3, 0.5, 1.0):
            model = copy.deepcopy(setup.base)
            model.load_state_dict(compose(setup.base, tvs, alpha))
            assert evaluate(model, d.X_test, d.y_test)[1] > 0.88  # task addition works


@pytest.mark.xfail(strict=True, reason=(
    "measured on digits: |cos| of the task vectors rises with the OrthoReg weight "
    "(0.427 / 0.448 / 0.498 at lambda 0 / 0.1 / 1), see the test above"))
def test_orthoreg_claim_lowers_task_vector_cosine(orthoreg_runs):
    from repscope.weights._taskvec import task_vector_cosines

    _, runs = orthoreg_runs
    cos = {lam: abs(float(task_vector_cosines(tvs)[0, 1])) for lam, tvs in runs.items()}
    assert cos[1.0] < cos[0.0]
