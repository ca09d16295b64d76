"""ONNX Runtime graphs: intermediate tensors exposed on a copy; graph outputs unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import UnknownNameError
from repscope.extract import extract, list_layers

DINO_LAYERS = [f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in (0, 6, 11)]


ALL = [*DINO_LAYERS, "output_importance"]


@pytest.fixture(scope="module")
def digits_224(dinov2, mnist) -> np.ndarray:
    return np.asarray(dinov2.preprocess(mnist[0][:3]), dtype=np.float32)


@pytest.fixture(scope="module")
def dino_tokens(dinov2, digits_224) -> dict[str, np.ndarray]:
    return extract(dinov2, digits_224, ALL, "none", batch_size=2, progress=False)


def test_dinov2_layer_tokens_and_unchanged_graph_output(dinov2, digits_224, dino_tokens) -> None:
    import onnxruntime as ort

    out = dino_tokens
    for name in DINO_LAYERS:
        assert out[name].shape == (3, 257, 384)
        assert np.isfinite(out[name]).all()
    assert not np.allclose(out[DINO_LAYERS[0]], out[DINO_LAYERS[1]])
    original = ort.InferenceSession(dinov2.model, providers=["CPUExecutionProvider"])
    want = original.run(["output_importance"], {"input_image": digits_224})[0]
    np.testing.assert_allclose(out["output_importance"], want, rtol=0, atol=1e-5)


def test_dinov2_preprocesses_raw_images_and_pools_tokens(dinov2, mnist, dino_tokens) -> None:
    pooling = {**dict.fromkeys(DINO_LAYERS, "mean"), "output_importance": "avg"}
    raw = extract(dinov2, mnist[0][:3], ALL, pooling, progress=False)  # uint8 -> preprocess
    for name in DINO_LAYERS:
        assert raw[name].shape == (3, 384)
        np.testing.assert_allclose(raw[name], dino_tokens[name].mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(raw["output_importance"],
                               dino_tokens["output_importance"].mean((2, 3)), atol=1e-5)


def test_minilm_l3_pooled_output_is_masked_mean_of_tokens(minilm_onnx, sentences) -> None:
    names = list_layers(minilm_onnx)
    assert "461" in names
    assert "onnx::Shape_422" in names
    out = extract(minilm_onnx, sentences, ["461", "onnx::Shape_422"], "mean", batch_size=4,
                  progress=False)
    assert out["461"].shape == (len(sentences), 384)
    np.testing.assert_allclose(out["461"], out["onnx::Shape_422"], rtol=0, atol=1e-5)
    toks = extract(minilm_onnx, sentences, ["onnx::Shape_422"], "tokens", progress=False)
    ragged = toks["onnx::Shape_422"]
    manual = np.stack([ragged.sample(j).mean(0) for j in range(len(sentences))])
    np.testing.assert_allclose(out["461"], manual, rtol=0, atol=1e-5)


def test_unknown_onnx_tensor_lists_close_names(minilm_onnx) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown layer '46'.*Close names: .*'461'"):
        extract(minilm_onnx, ["x"], ["46"], progress=False)


def test_minilm_l3_friendly_layers_give_the_features_of_their_graph_tensors(
    minilm_onnx, sentences
) -> None:
    """The zoo's friendly names (the torch MiniLM's) resolve to the graph tensors they stand
    for; the internal names still work and come back under the name asked for."""
    info = minilm_onnx.info
    assert list(info.layers) == ["embeddings", "encoder.layer.0", "encoder.layer.1",
                                 "encoder.layer.2"]
    friendly = [*info.layers, "sentence_embedding"]
    internal = [info.layer_names[n] for n in friendly]
    assert internal[-2:] == ["onnx::Shape_422", "461"]
    out = extract(minilm_onnx, sentences, [*friendly, *internal], "mean", batch_size=4,
                  progress=False)
    assert list(out) == [*friendly, *internal]
    for f, t in zip(friendly, internal):
        np.testing.assert_array_equal(out[f], out[t])
    assert not np.allclose(out["embeddings"], out["encoder.layer.2"])
    # the default (and "blocks") are the friendly names, in depth order
    assert list(extract(minilm_onnx, sentences[:2], None, progress=False)) == list(info.layers)
    names = list_layers(minilm_onnx)
    assert names[:5] == friendly and "onnx::Shape_422" in names


def test_dinov2_friendly_layers_resolve_to_the_backbone_tensors(dinov2, dino_tokens,
                                                                 digits_224) -> None:
    out = extract(dinov2, digits_224, ["encoder.layer.0", "encoder.layer.11"], "none",
                  batch_size=2, progress=False)
    np.testing.assert_array_equal(out["encoder.layer.0"], dino_tokens[DINO_LAYERS[0]])
    np.testing.assert_array_equal(out["encoder.layer.11"], dino_tokens[DINO_LAYERS[2]])


def test_layer_names_must_name_tensors_of_the_graph(minilm_onnx) -> None:
    from repscope.extract import OnnxAdapter

    with pytest.raises(ValueError, match=r"\['block'\].*'nope'"):
        OnnxAdapter(minilm_onnx.model, minilm_onnx.tokenizer, layer_names={"block": "nope"})
