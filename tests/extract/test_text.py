"""MiniLM-L6 (transformers and sentence-transformers): hidden states, pooling, stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeValueError
from repscope.extract import extract, extract_to_store, list_layers
from repscope.store import FeatureStore

BLOCKS = ["embeddings", *(f"encoder.layer.{i}" for i in range(6))]


def test_blocks_are_embeddings_then_encoder_layers(minilm) -> None:
    names = list_layers(minilm)
    assert names[0] == "embeddings"
    assert set(BLOCKS) <= set(names)
    out = extract(minilm, ["one short text"], "blocks", progress=False)
    assert list(out) == BLOCKS


def test_token_hidden_states_equal_output_hidden_states(minilm, sentences) -> None:
    tok, model = minilm.tokenizer, minilm.model
    out = extract(minilm, sentences, "blocks", "tokens", batch_size=4, max_length=128,
                  progress=False)
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, output_hidden_states=True).hidden_states
    lengths = enc["attention_mask"].sum(1).numpy()
    for i, name in enumerate(BLOCKS):
        ragged = out[name]
        np.testing.assert_array_equal(np.diff(ragged.offsets), lengths)
        for j in range(len(sentences)):
            np.testing.assert_allclose(
                ragged.sample(j), ref[i][j, : lengths[j]].numpy(), rtol=0, atol=1e-5
            )


def test_mean_pooled_last_layer_equals_sentence_transformers_encode(minilm_st, sentences) -> None:
    st = minilm_st.model
    assert st.max_seq_length == 256
    assert len(st.tokenizer(sentences[-1])["input_ids"]) > 256  # truncation is exercised
    out = extract(minilm_st, sentences, ["encoder.layer.5"], "mean", batch_size=4,
                  progress=False)
    x = out["encoder.layer.5"]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = st.encode(sentences, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-5)


def test_cls_and_last_pooling_match_token_positions(minilm, sentences) -> None:
    out = extract(minilm, sentences, ["encoder.layer.2", "encoder.layer.3"],
                  {"encoder.layer.2": "tokens", "encoder.layer.3": "last"}, progress=False)
    tokens = extract(minilm, sentences, ["encoder.layer.3"], "tokens", progress=False)
    first = extract(minilm, sentences, ["encoder.layer.2"], "cls", progress=False)
    r2, r3 = out["encoder.layer.2"], tokens["encoder.layer.3"]
    for j in range(len(sentences)):
        np.testing.assert_array_equal(first["encoder.layer.2"][j], r2.sample(j)[0])
        np.testing.assert_array_equal(out["encoder.layer.3"][j], r3.sample(j)[-1])


def test_austen_paragraphs_into_store_with_metadata(minilm, austen, tmp_path) -> None:
    texts = list(austen.inputs[:12])
    meta = {"label": austen.labels[:12], "id": austen.ids[:12], "text": texts}
    store = extract_to_store(minilm, texts, tmp_path / "s", "blocks", "mean", batch_size=4,
                             chunk_size=8, metadata=meta, progress=False)
    assert isinstance(store, FeatureStore)
    assert store.n_samples == 12
    assert store.n_chunks == 2
    assert store.layers == BLOCKS
    assert store.attrs["extract"]["pooling"] == dict.fromkeys(BLOCKS, "mean")
    got = store.metadata()
    assert list(got["id"]) == austen.ids[:12]
    assert list(got["text"]) == texts
    np.testing.assert_array_equal(got["label"], austen.labels[:12])
    mem = extract(minilm, texts, "blocks", "mean", batch_size=4, chunk_size=8, progress=False)
    for name in BLOCKS:
        np.testing.assert_array_equal(store.read(name), mem[name])


def _failing_after(texts: list[str], k: int):
    for i, t in enumerate(texts):
        if i == k:
            raise RuntimeError("interrupted")
        yield t


def test_ragged_store_resumes_after_interruption(minilm, sentences, tmp_path) -> None:
    texts = sentences * 3  # 18 texts, chunks of 4
    kw = {"batch_size": 2, "chunk_size": 4, "progress": False}
    path = tmp_path / "tok"
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_to_store(minilm, _failing_after(texts, 10), path, ["encoder.layer.1"], "tokens",
                         **kw)
    assert FeatureStore.open(path).n_samples == 8  # two complete chunks
    store = extract_to_store(minilm, texts, path, ["encoder.layer.1"], "tokens", **kw)
    whole = extract_to_store(minilm, texts, tmp_path / "ref", ["encoder.layer.1"], "tokens", **kw)
    a, b = store.read_ragged("encoder.layer.1"), whole.read_ragged("encoder.layer.1")
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(RepscopeValueError, match=r"made with pooling=\{'encoder\.layer\.1': 'none'\}"):
        extract_to_store(minilm, texts, path, ["encoder.layer.1"], "mean", **kw)
    with pytest.raises(RepscopeValueError, match=r"made with layers=\['encoder\.layer\.1'\]"):
        extract_to_store(minilm, texts, path, ["encoder.layer.2"], "tokens", **kw)


def test_forward_stops_after_the_last_requested_layer(minilm) -> None:
    def n_hooks() -> int:  # transformers installs output-recording hooks of its own
        return sum(len(m._forward_hooks) for m in minilm.model.modules())

    before = n_hooks()
    calls = []
    late = minilm.model.get_submodule("encoder.layer.5")
    handle = late.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = extract(minilm, ["short text", "another one"], ["encoder.layer.1"], progress=False)
        assert calls == []  # layers after encoder.layer.1 never ran
        extract(minilm, ["short text"], ["encoder.layer.1", "output"], progress=False)
        assert calls == [1]  # "output" needs the whole forward
    finally:
        handle.remove()
    assert out["encoder.layer.1"].shape == (2, 384)
    assert n_hooks() == before


@pytest.mark.gpu
def test_cuda_model_gives_cpu_results(minilm_st, sentences) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from repscope.extract import sentence_transformer_adapter

    st = minilm_st.model
    cpu = extract(st, sentences, "blocks", progress=False)
    st.to("cuda")
    try:
        gpu = extract(sentence_transformer_adapter(st), sentences, "blocks", progress=False)
        assert next(st.parameters()).device.type == "cuda"  # never moved back or elsewhere
    finally:
        st.to("cpu")
    for name in cpu:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-3, atol=1e-3)
