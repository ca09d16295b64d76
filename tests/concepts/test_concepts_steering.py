"""Steering SmolLM2 along a mean-difference direction: the target token's log-probability rises
monotonically with the coefficient and stays above a random direction of the same norm; the
intervention context equals a hand-written forward hook; named errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.concepts._steering import SteeringResult, next_token_direction, steering_effect
from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.extract._intervene import add_direction, intervene

LAYER = "model.layers.22"  # of 30: early layers' additions are partly undone by later blocks
TARGET = " she"
COEFS = (0.0, 1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def smol():
    from repscope.zoo import load_dataset, load_model

    torch.set_num_threads(1)
    model = load_model("smollm2-135m")
    texts = [str(t) for t in load_dataset("austen", n=120, seed=0).inputs]
    direction = next_token_direction(model, texts[:40], LAYER, TARGET, max_length=32)
    prompts = [" ".join(t.split()[:8]) for t in texts[100:106]]
    return model, direction, prompts


@pytest.mark.real
def test_steering_raises_target_above_random_control(smol):
    model, direction, prompts = smol
    res = steering_effect(model, prompts, LAYER, direction, COEFS, target_token=TARGET,
                          n_random=1, max_length=16, progress=False)
    print(f"\n{TARGET!r} at {LAYER}, |d|={res.direction_norm:.1f}: log-prob "
          f"{np.round(res.target_logprob, 3)} vs random {np.round(res.random_target_logprob, 3)};"
          f" KL {np.round(res.kl, 3)}; ablation {res.ablation_target_logprob:.3f}")
    assert isinstance(res, SteeringResult)
    assert res.kl[0] == pytest.approx(0.0, abs=1e-9)
    assert res.target_logprob[0] == pytest.approx(res.clean_target_logprob, abs=1e-9)
    assert res.monotonic and res.above_random
    assert np.all(np.diff(res.target_logprob) > 0.2)
    assert res.target_logprob[-1] > res.clean_target_logprob + 3.0
    rows = res.record_rows()
    assert [r[1]["coefficient"] for r in rows] == list(COEFS)
    assert {"target_logprob", "kl", "random_target_logprob", "ablation_kl"} <= set(rows[0][1])


@pytest.mark.real
def test_context_equals_hand_patched_forward(smol):
    model, direction, prompts = smol
    net, tok = model.model, model.tokenizer
    enc = tok(prompts[:3], return_tensors="pt", padding=True)
    v = torch.as_tensor(direction) * 2.0
    block = net.model.layers[22]

    def hand_hook(_m, _i, out):
        return (out[0] + v, *out[1:]) if isinstance(out, tuple) else out + v

    with torch.inference_mode():
        clean = net(**enc).logits
        with intervene(net, {LAYER: add_direction(direction, 2.0)}):
            ours = net(**enc).logits
        handle = block.register_forward_hook(hand_hook)
        try:
            ref = net(**enc).logits
        finally:
            handle.remove()
        res = steering_effect(model, prompts[:3], LAYER, direction, [2.0], target_token=TARGET,
                              baseline=None, progress=False)
    assert float((ours - clean).abs().max()) > 1.0  # the edit did something
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    last = enc["attention_mask"].sum(1) - 1
    lp = torch.log_softmax(ref[torch.arange(3), last].double(), -1)[:, tok.encode(TARGET)[0]]
    assert res.target_logprob[0] == pytest.approx(float(lp.mean()), abs=1e-5)


@pytest.mark.real
def test_bad_input_named_errors(smol):
    model, direction, prompts = smol
    with pytest.raises(RepscopeValueError, match="width 576"):
        steering_effect(model, prompts, LAYER, np.ones(10), [1.0], target_token=TARGET,
                        progress=False)
    with pytest.raises(UnknownNameError, match=r"model\.layers\.22"):
        steering_effect(model, prompts, "model.layer.22", direction, [1.0],
                        target_token=TARGET, progress=False)
    with pytest.raises(RepscopeValueError, match="one token"):
        steering_effect(model, prompts, LAYER, direction, [1.0], target_token=" she said",
                        progress=False)
    with pytest.raises(RepscopeValueError, match="coefficients"):
        steering_effect(model, prompts, LAYER, direction, [], target_token=TARGET,
                        progress=False)
