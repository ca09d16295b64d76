"""Attention metrics: hand computations on known attention patterns, padding invariance, named
errors, and every MiniLM-L6 and SmolLM2 layer on a few Austen paragraphs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from repscope.concepts._attention import (
    AttentionResult,
    attention_metrics,
    grid_positions,
    model_attention,
    model_attention_metrics,
)
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

LN2, LN3 = np.log(2.0), np.log(3.0)


def _entropy(p):
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _known():
    """Head 0: uniform causal attention; head 1: each token attends to itself."""
    causal = np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    return np.stack([causal, np.eye(3)])[None]  # (1, 2, 3, 3)


def test_metrics_equal_hand_computation_causal_pattern():
    res = attention_metrics([_known()], groups=np.array([0, 0, 1]),
                            group_names=["prompt", "continuation"])
    assert isinstance(res, AttentionResult)
    # distance: head 0 rows 0, 0.5, (2 + 1 + 0) / 3
    np.testing.assert_allclose(res.distance[0], [0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(res.entropy[0], [(LN2 + LN3) / 3, 0.0], atol=1e-12)
    # normalised by log of the attendable keys 1, 2, 3 (the first query: 0)
    np.testing.assert_allclose(res.entropy_norm[0], [2 / 3, 0.0], atol=1e-12)
    # NMI: p(k) = column means of the rows
    p_k = np.array([11 / 18, 5 / 18, 2 / 18])
    h_k = _entropy(p_k)
    nmi0 = (h_k - (LN2 + LN3) / 3) / np.sqrt(LN3 * h_k)
    np.testing.assert_allclose(res.nmi[0], [nmi0, 1.0], atol=1e-12)
    np.testing.assert_allclose(res.head_diversity, [0.25], atol=1e-12)
    js1 = _entropy([0.25, 0.75]) - LN2 / 2
    js2 = _entropy([1 / 6, 1 / 6, 2 / 3]) - LN3 / 2
    np.testing.assert_allclose(res.head_js, [(0 + js1 + js2) / 3], atol=1e-12)
    # allocation: prompt queries (0, 1) put all mass on the prompt; query 2 puts 2/3 there
    np.testing.assert_allclose(res.allocation[0, 0], [[1, 0], [2 / 3, 1 / 3]], atol=1e-12)
    np.testing.assert_allclose(res.allocation[0, 1], [[1, 0], [0, 1]], atol=1e-12)
    rows = res.record_rows()
    assert rows[0][0] == "layer.0"
    v = rows[0][1]
    assert v["group_names"] == ["prompt", "continuation"] and v["n_heads"] == 2
    assert v["mean_distance"] == pytest.approx(0.25) and v["n_tokens"] == 3
    assert res.to_records(model="m")[0].analysis == "concepts_attention"


def test_spatial_distance_on_a_patch_grid():
    """A class token plus a 2 x 2 grid; a query at patch (0, 0) attending half to the class
    token and half to patch (1, 1) has distance sqrt(2) (the class token has no position)."""
    pos = grid_positions(2, 2, prefix=1)
    assert np.isnan(pos[0]).all() and pos[4].tolist() == [1.0, 1.0]
    A = np.full((1, 1, 5, 5), 0.2)
    A[0, 0, 1] = [0.5, 0, 0, 0, 0.5]  # query patch (0, 0)
    res = attention_metrics([A], positions=pos)
    # uniform rows over the 4 patches: mean distance from each patch = (0 + 1 + 1 + sqrt2) / 4
    uniform = (2 + np.sqrt(2)) / 4
    expect = (np.sqrt(2) + 3 * uniform) / 4  # 4 patch queries; the class query is left out
    assert res.distance[0, 0] == pytest.approx(expect, abs=1e-12)
    assert res.distance_unit == "positions"
    # bidirectional: entropy normalised by log 5 for every query
    h = (_entropy([0.5, 0.5]) + 4 * np.log(5)) / 5
    assert res.entropy[0, 0] == pytest.approx(h, abs=1e-12)
    assert res.entropy_norm[0, 0] == pytest.approx(h / np.log(5), abs=1e-12)


def test_padding_does_not_change_metrics(rng):
    """A batch of two sequences, the shorter right-padded, equals the token-weighted pooling of
    the sequences run alone."""
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    a = softmax(rng.normal(size=(3, 5, 5)))
    b3 = softmax(rng.normal(size=(3, 3, 3)))
    b = np.zeros((3, 5, 5))
    b[:, :3, :3] = b3
    b[:, 3:, :] = 0.2  # padded queries: anything
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    both = attention_metrics([np.stack([a, b])], mask=mask)
    ra, rb = attention_metrics([a]), attention_metrics([b3])
    np.testing.assert_allclose(both.distance, (5 * ra.distance + 3 * rb.distance) / 8)
    np.testing.assert_allclose(both.entropy, (5 * ra.entropy + 3 * rb.entropy) / 8)
    np.testing.assert_allclose(both.nmi, (ra.nmi + rb.nmi) / 2)
    assert both.n_tokens == 8 and both.n_sequences == 2


def test_causal_detection_ignores_padded_queries():
    """A left-padded causal batch whose padded query attends to later (valid) keys is still
    causal: the attendable keys of the i-th valid query are i."""
    A = np.zeros((1, 1, 4, 4))
    A[0, 0, 0] = [0, 1 / 3, 1 / 3, 1 / 3]  # the padded query
    A[0, 0, 1:] = [[0, 1, 0, 0], [0, 0.5, 0.5, 0], [0, 1 / 3, 1 / 3, 1 / 3]]
    res = attention_metrics([A], mask=np.array([0, 1, 1, 1]))
    assert res.entropy_norm[0, 0] == pytest.approx(2 / 3)  # (0 + 1 + 1) / 3; not (0 + ln2/ln3 + 1) / 3


def test_bad_patterns_named():
    with pytest.raises(RepscopeValueError, match="summing to 1"):
        attention_metrics([np.ones((1, 1, 3, 3))])
    with pytest.raises(RepscopeValueError, match=r"attentions\[0\]"):
        attention_metrics([np.ones((2, 3))])
    with pytest.raises(RepscopeValueError, match="groups"):
        attention_metrics([_known()], groups=np.array([0, 1]))
    with pytest.raises(RepscopeValueError, match="group_names"):
        attention_metrics([_known()], groups=np.array([0, 1, 2]), group_names=["a"])


class _NoAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
        return self.lin(input_ids.float())


class _EmptyAttention(_NoAttention):
    def forward(self, input_ids: Any, attention_mask: Any = None, output_attentions: bool = False
                ) -> Any:
        return {"last_hidden_state": self.lin(input_ids.float()), "attentions": ()}


def test_model_without_attention_weights_named():
    inputs = {"input_ids": torch.ones(1, 4)}
    with pytest.raises(RepscopeTypeError, match="attention weights.*_NoAttention"):
        model_attention(_NoAttention(), inputs)
    with pytest.raises(RepscopeTypeError, match="_EmptyAttention returned none"):
        model_attention(_EmptyAttention(), inputs)


# ------------------------------------------------------------------------------ real models


def _zoo(name: str) -> Any:
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError
    from repscope.zoo import load_model

    try:
        return load_model(name)
    except DataNotFoundError as err:
        skip_or_fail(f"zoo model {name!r} is not available: {err}")


@pytest.fixture(scope="module")
def austen_texts() -> list[str]:
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError
    from repscope.zoo import load_dataset

    try:
        return list(load_dataset("austen", n=6, seed=0).inputs)
    except DataNotFoundError as err:
        skip_or_fail(f"the Austen novels are not available: {err}")


def _check_common(res: AttentionResult, n_layers: int, n_heads: int) -> None:
    assert len(res.layers) == n_layers
    for arr in (res.distance, res.entropy, res.entropy_norm, res.nmi):
        assert arr.shape == (n_layers, n_heads) and np.isfinite(arr).all()
    assert (res.entropy_norm >= 0).all() and (res.entropy_norm <= 1 + 1e-9).all()
    assert (res.nmi >= 0).all() and (res.nmi <= 1).all()
    assert res.allocation is not None
    np.testing.assert_allclose(res.allocation.sum(-1), 1.0, atol=1e-6)
    assert len(res.record_rows()) == n_layers


@pytest.mark.real
def test_minilm_every_layer(austen_texts):
    lm = _zoo("minilm-l6")
    res = model_attention_metrics(lm, austen_texts, groups="special", max_length=64)
    _check_common(res, 6, 12)
    assert res.group_names == ("special", "text")
    # bidirectional: text queries attend to the special tokens ([CLS], [SEP]) as well
    assert (res.allocation[:, :, 1, 0] > 0).all()
    assert lm.model.config._attn_implementation != "eager"  # restored
    print("\nMiniLM-L6 per layer: distance", np.round(res.distance.mean(1), 2), "entropy_norm",
          np.round(res.entropy_norm.mean(1), 3), "NMI", np.round(res.nmi.mean(1), 3),
          "head diversity", np.round(res.head_diversity, 2),
          "text->special", np.round(res.allocation[:, :, 1, 0].mean(1), 3))


@pytest.mark.real
def test_smollm2_every_layer(austen_texts):
    lm = _zoo("smollm2-135m")
    res = model_attention_metrics(lm, austen_texts, groups="halves", max_length=48)
    _check_common(res, 30, 9)
    # causal: the prompt cannot attend to the continuation
    np.testing.assert_allclose(res.allocation[:, :, 0, 1], 0.0, atol=1e-7)
    assert (res.allocation[:, :, 1, 0] > 0).all()
    # the model-level call equals the metrics of the patterns themselves
    tok = lm.tokenizer
    enc = dict(tok(austen_texts[:2], return_tensors="pt", padding=True, truncation=True,
                   max_length=48))
    att = model_attention(lm, enc)
    direct = attention_metrics(att, mask=enc["attention_mask"])
    again = model_attention_metrics(lm, austen_texts[:2], groups=None, max_length=48)
    np.testing.assert_allclose(again.entropy, direct.entropy, rtol=1e-6)
    np.testing.assert_allclose(again.nmi, direct.nmi, rtol=1e-6)
    print("\nSmolLM2 per layer: distance", np.round(res.distance.mean(1), 1), "entropy_norm",
          np.round(res.entropy_norm.mean(1), 2), "NMI", np.round(res.nmi.mean(1), 2),
          "continuation->prompt", np.round(res.allocation[:, :, 1, 0].mean(1), 2))
