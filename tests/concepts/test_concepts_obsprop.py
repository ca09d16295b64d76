"""ObsProp: head feature vectors through the RMSNorm form, coupling coefficient against a
Monte-Carlo estimate on the sphere, and the top heads by ||y|| against direct logit attribution
on SmolLM2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from repscope.concepts._obsprop import (
    ObsPropResult,
    coupling,
    direct_logit_attribution,
    head_feature_vectors,
    observable,
    obsprop,
)
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def sphere_coupling(y1: np.ndarray, y2: np.ndarray, *, n: int = 400_000, seed: int = 0,
                    band: float = 0.1) -> tuple[float, float]:
    """Monte-Carlo estimates of the expected y2-score when the y1-score is 1, for x uniform on
    a sphere (radius chosen so the y1-score has unit spread): the mean y2-score of samples whose
    y1-score lies in [1 - band, 1 + band] over their mean y1-score, and the least-squares slope
    of the y2-score on the y1-score over all samples."""
    gen = torch.Generator().manual_seed(seed)
    d = y1.shape[0]
    Y = torch.as_tensor(np.stack([y1, y2], 1), dtype=torch.float32)
    radius = np.sqrt(d) / np.linalg.norm(y1)
    s1_band = s2_band = 0.0
    s11 = s12 = 0.0
    for _ in range(n // 50_000):
        g = torch.randn(50_000, d, generator=gen)
        s = ((g @ Y) * (radius / g.norm(dim=1, keepdim=True))).double().numpy()
        keep = np.abs(s[:, 0] - 1.0) < band
        s1_band += s[keep, 0].sum()
        s2_band += s[keep, 1].sum()
        s11 += (s[:, 0] ** 2).sum()
        s12 += (s[:, 0] * s[:, 1]).sum()
    return s2_band / s1_band, s12 / s11


# ------------------------------------------------------------------------------ synthetic


def test_coupling_self_is_one_and_scales(rng):
    y = rng.normal(size=64)
    assert coupling(y, y) == pytest.approx(1.0, abs=1e-12)
    assert coupling(y, 3 * y) == pytest.approx(3.0)
    assert coupling(2 * y, y) == pytest.approx(0.5)
    Y = rng.normal(size=(4, 5, 64))
    np.testing.assert_allclose(coupling(Y, Y), 1.0, atol=1e-12)


def test_coupling_matches_sphere_monte_carlo(rng):
    d = 96
    y1 = rng.normal(size=d)
    y2 = 0.6 * y1 + rng.normal(size=d) * 0.8
    c = coupling(y1, y2)
    band, slope = sphere_coupling(y1, y2)
    assert band == pytest.approx(c, rel=0.02)
    assert slope == pytest.approx(c, rel=0.02)


def test_coupling_bad_widths_named():
    with pytest.raises(RepscopeValueError, match="y2"):
        coupling(np.ones(4), np.ones(5))
    with pytest.raises(RepscopeValueError, match="y1"):
        coupling(np.zeros(4), np.ones(4))


class _IdsTokenizer:
    """A tokenizer stand-in for a tiny random Llama: characters to ids."""

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, Any]:
        ids = torch.tensor([[ord(c) % 40 for c in text]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % 40 for c in text]


@pytest.fixture(scope="module")
def tiny_llama() -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norm weights away from 1, so the gamma terms matter
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.5 + torch.rand_like(p))
    return model


def _direct_effect_from_vectors(model, text, n, tok):
    """Each head's direct effect at the last token computed from the ObsProp vectors alone:
    sum_k a_qk (y_lh . x_hat_k) / rms(r)."""
    from repscope.concepts._attention import model_attention
    from repscope.extract import capture

    L = model.config.num_hidden_layers
    Y = head_feature_vectors(model, n)
    names = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(L))]
    enc = tok(text)
    with capture(model, names) as got:
        att = model_attention(model, enc)
    res = [got[k][0].double().numpy() for k in names]
    eps = model.model.norm.variance_epsilon
    r = res[-1][-1]
    rms_f = np.sqrt(np.mean(r * r) + eps)
    out = np.zeros(Y.shape[:2])
    for li in range(L):
        x = res[li]
        xhat = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True)
                           + model.model.layers[li].input_layernorm.variance_epsilon)
        a = att[li][0, :, -1].double().numpy()  # (H, T)
        out[li] = np.einsum("ht,td,hd->h", a, xhat, Y[li]) / rms_f
    return out


def test_feature_vectors_give_exact_direct_effect_tiny_llama(tiny_llama):
    """The RMSNorm form is exact: y . x_hat (with the attention weights and the final 1/rms)
    reproduces each head's direct logit attribution, with GQA value groups."""
    tok = _IdsTokenizer()
    n = observable(tiny_llama, [3, 7], [5], tokenizer=tok)
    dla, norms = direct_logit_attribution(tiny_llama, ["hello world", "abc"], n, tokenizer=tok)
    assert dla.shape == (2, 2, 4) and norms.shape == (2,) and np.all(norms > 0)
    pred = _direct_effect_from_vectors(tiny_llama, "hello world", n, tok)
    np.testing.assert_allclose(dla[0], pred, rtol=1e-6, atol=1e-9)
    # a wrong value-group mapping (head h reading kv head h % n_kv) would not match
    assert np.abs(dla[0]).max() > 1e-3


def test_heads_sum_to_attention_output_tiny_llama(tiny_llama):
    """Summed over heads, the attribution is the attention block's output along n_f."""
    from repscope.extract import capture

    tok = _IdsTokenizer()
    n = observable(tiny_llama, [3], [5], tokenizer=tok)
    dla, _ = direct_logit_attribution(tiny_llama, ["some text"], n, tokenizer=tok)
    names = [f"model.layers.{i}.self_attn" for i in range(2)] + ["model.layers.1"]
    with capture(tiny_llama, names) as got, torch.no_grad():
        tiny_llama(**tok("some text"))
    m = tiny_llama.model
    n_f = (m.norm.weight.detach().double().numpy()
           * (tiny_llama.lm_head.weight.detach().double().numpy().T @ n))
    r = got["model.layers.1"][0, -1].double().numpy()
    rms = np.sqrt(np.mean(r * r) + m.norm.variance_epsilon)
    for li in range(2):
        o = got[f"model.layers.{li}.self_attn"][0, -1].double().numpy()
        assert dla[0, li].sum() == pytest.approx(o @ n_f / rms, rel=1e-6, abs=1e-9)


def test_input_norms_scale_and_raw_vectors(tiny_llama):
    n = observable(tiny_llama, [1], [2])
    Y = head_feature_vectors(tiny_llama, n)
    Yr = head_feature_vectors(tiny_llama, n, input_norms=[2.0, 4.0])
    np.testing.assert_allclose(Yr[0], Y[0] * np.sqrt(32) / 2.0)
    np.testing.assert_allclose(Yr[1], Y[1] * np.sqrt(32) / 4.0)
    raw = head_feature_vectors(tiny_llama, n, norm_weights=False)
    assert not np.allclose(raw, Y)
    with pytest.raises(RepscopeValueError, match="input_norms"):
        head_feature_vectors(tiny_llama, n, input_norms=[1.0])


def test_obsprop_result_records(tiny_llama):
    tok = _IdsTokenizer()
    n1 = observable(tiny_llama, [3], [5], tokenizer=tok)
    n2 = observable(tiny_llama, [4], [6], tokenizer=tok)
    res = obsprop(tiny_llama, n1, second=n1, prompts=["abcdef"], top_k=3, tokenizer=tok,
                  names=("a-b", "a-b again"))
    assert isinstance(res, ObsPropResult)
    np.testing.assert_allclose(res.coupling, 1.0)  # same observable: C(y, y) = 1
    np.testing.assert_allclose(np.diag(res.top_coupling), 1.0)
    assert len(res.top_heads) == 3 and res.top_overlap is not None and 0 <= res.top_overlap <= 3
    best = res.head_norm.max()
    assert res.head_norm[res.top_heads[0]] == best
    rows = res.record_rows()
    assert [r[0] for r in rows] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    ranks = [x for _, v in rows for x in v["top_rank"] if x is not None]
    assert sorted(ranks) == [0, 1, 2]
    recs = res.to_records(model="tiny")
    assert recs[0].analysis == "concepts_obsprop" and recs[0].values["top_overlap"] == res.top_overlap
    other = obsprop(tiny_llama, n1, second=n2, top_k=2)
    assert other.dla is None and other.top_overlap is None and other.coupling is not None
    assert not np.allclose(other.coupling, 1.0)


def test_bad_inputs_named(tiny_llama):
    with pytest.raises(RepscopeTypeError, match="Llama-style"):
        head_feature_vectors(torch.nn.Linear(3, 3), np.ones(3))
    with pytest.raises(RepscopeValueError, match="observable"):
        head_feature_vectors(tiny_llama, np.ones(41))
    with pytest.raises(RepscopeValueError, match="positive"):
        observable(tiny_llama, ["ab"], tokenizer=_IdsTokenizer())
    with pytest.raises(RepscopeValueError, match="top_k"):
        obsprop(tiny_llama, observable(tiny_llama, [1]), top_k=0)


# ------------------------------------------------------------------------------ SmolLM2

PROMPTS = [
    "Elizabeth put on her bonnet, and then",
    "Mr. Darcy took up his hat, and then",
    "When Emma came home from the party,",
    "When Mr. Knightley came into the room,",
    "Anne Elliot was tired, so",
    "Captain Wentworth was tired, so",
    "Marianne wept all night because",
    "Colonel Brandon was silent because",
]


@pytest.fixture(scope="module")
def smol() -> Any:
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError
    from repscope.zoo import load_model

    try:
        return load_model("smollm2-135m")
    except DataNotFoundError as err:
        skip_or_fail(f"smollm2-135m is not available: {err}")


@pytest.mark.real
def test_smollm2_obsprop_coupling_and_dla_overlap(smol, record_property):
    she_he = observable(smol, [" she"], [" he"])
    her_him = observable(smol, [" her"], [" him"])
    res = obsprop(smol, she_he, second=her_him, prompts=PROMPTS, top_k=5,
                  names=("she - he", "her - him"))
    Y = head_feature_vectors(smol, she_he)
    Y2 = head_feature_vectors(smol, her_him)
    assert Y.shape == (30, 9, 576)
    l0, h0 = res.top_heads[0]
    y1, y2 = Y[l0, h0], Y2[l0, h0]
    assert coupling(y1, y1) == pytest.approx(1.0, abs=1e-12)
    c = coupling(y1, y2)
    band, slope = sphere_coupling(y1, y2)
    assert band == pytest.approx(c, rel=0.02)
    assert slope == pytest.approx(c, rel=0.02)
    # two different top heads
    la, ha = res.top_heads[1]
    c12 = coupling(Y[l0, h0], Y[la, ha])
    band12, slope12 = sphere_coupling(Y[l0, h0], Y[la, ha], seed=1)
    assert slope12 == pytest.approx(c12, rel=0.02, abs=0.002)
    assert band12 == pytest.approx(c12, rel=0.05, abs=0.02)
    # the DLA comparison, reported
    assert res.top_overlap is not None and 0 <= res.top_overlap <= 5
    record_property("top_overlap", res.top_overlap)
    print(f"\nSmolLM2 ' she'-' he': top-5 heads by ||y|| {res.top_heads}; by DLA "
          f"{res.dla_top_heads}; overlap {res.top_overlap}/5; C(top head, her-him) = {c:.4f} "
          f"(MC band {band:.4f}, slope {slope:.4f}); C(top1, top2) = {c12:.4f} (MC {slope12:.4f}); "
          f"median cos(y, y without norm weights) = {np.median(res.cos_raw):.3f}")
    rows = res.record_rows()
    assert len(rows) == 30 and rows[0][1]["top_overlap"] == res.top_overlap
    # the exactness of the RMSNorm form on the real model, for the first prompt
    pred = _direct_effect_from_vectors(smol.model, PROMPTS[0], she_he,
                                       lambda t: dict(smol.tokenizer(t, return_tensors="pt")))
    dla, _ = direct_logit_attribution(smol, PROMPTS[:1], she_he)
    np.testing.assert_allclose(dla[0], pred, rtol=1e-4, atol=1e-6)
    assert smol.model.config._attn_implementation != "eager"  # restored after the call
