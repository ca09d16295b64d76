"""SmolLM2-135M (Llama causal LM): decoder-layer hooks, next-token logits, ragged stores."""

from __future__ import annotations

import numpy as np
import torch

from repscope.extract import extract, extract_to_store, list_layers
from repscope.store import FeatureStore

PROMPTS = ["The capital of France is", "Sparse autoencoders find features in the residual stream."]


def test_decoder_layer_hooks_equal_hidden_states(smollm) -> None:
    model, tok = smollm.model, smollm.tokenizer
    n_layers = model.config.num_hidden_layers
    layers = [f"model.layers.{i}" for i in range(n_layers)]
    out = extract(smollm, PROMPTS, layers, "tokens", progress=False)
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hs = model(**enc, output_hidden_states=True).hidden_states
    lengths = enc["attention_mask"].sum(1).numpy()
    assert len(hs) == n_layers + 1
    for i, name in enumerate(layers):
        for j in range(len(PROMPTS)):
            got = out[name].sample(j)
            want = hs[i + 1][j, : lengths[j]].numpy()
            if i < n_layers - 1:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
            else:  # transformers applies the final norm to the last entry; the hook does not
                assert not np.allclose(got, want, atol=1e-2)
                normed = model.model.norm(torch.from_numpy(got)).detach().numpy()
                np.testing.assert_allclose(normed, want, rtol=1e-4, atol=1e-4)


def test_last_token_logits_predict_paris(smollm) -> None:
    assert "lm_head" in list_layers(smollm)
    out = extract(smollm, PROMPTS[:1], ["lm_head"], "last", progress=False)
    logits = out["lm_head"]
    assert logits.shape == (1, smollm.model.config.vocab_size)
    assert smollm.tokenizer.decode([int(logits[0].argmax())]) == " Paris"


def test_residual_stream_tokens_land_ragged_in_store(smollm, tmp_path) -> None:
    texts = [*PROMPTS, "Hi", "One more prompt with several tokens in it, to vary lengths."]
    layers = ["model.embed_tokens", "model.layers.5", "model.layers.12"]
    store = extract_to_store(smollm, texts, tmp_path / "lm", layers, "tokens", batch_size=3,
                             metadata={"text": texts}, progress=False)
    assert isinstance(store, FeatureStore)
    counts = np.array([len(smollm.tokenizer(t)["input_ids"]) for t in texts])
    for name in layers:
        ragged = store.read_ragged(name)
        np.testing.assert_array_equal(ragged.offsets, np.concatenate([[0], np.cumsum(counts)]))
        assert ragged.values.shape == (counts.sum(), 576)
    mem = extract(smollm, texts, ["model.layers.5"], "tokens", batch_size=3, progress=False)
    np.testing.assert_array_equal(store.read_ragged("model.layers.5").values,
                                  mem["model.layers.5"].values)
    assert list(store.metadata()["text"]) == texts
