"""Real frozen features shared by every test session: extracted once, cached on disk.

Each bundle is extracted at most once per test session and, to keep re-runs fast, also cached
as a FeatureStore under ``$REPSCOPE_HOME/test-cache/<key>`` (the key holds the repscope version
and every extraction parameter; set ``REPSCOPE_TEST_CACHE=0`` to always re-extract). Missing
system data (the Austen novels) goes through :func:`repscope._testing.skip_or_fail`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repscope._version import __version__


@dataclass
class RealFeatures:
    """Per-layer pooled features of one model on one labelled dataset.

    ``X[layer]`` is (n, d) float32; ``y`` int labels; ``label_names``; ``layers`` in depth
    order; ``texts`` for text data; ``tokens``: optional padded token features of the last
    layer, (values (n, t, d), mask (n, t)).
    """

    model: str
    dataset: str
    layers: list[str]
    X: dict[str, np.ndarray]
    y: np.ndarray
    label_names: list[str]
    texts: list[str] | None = None
    tokens: tuple[np.ndarray, np.ndarray] | None = None
    store: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cache_root() -> Path | None:
    if os.environ.get("REPSCOPE_TEST_CACHE", "1") == "0":
        return None
    from repscope.zoo import repscope_home

    return Path(repscope_home()) / "test-cache"


def _key(**params: Any) -> str:
    blob = json.dumps({"v": __version__, **params}, sort_keys=True)
    return f"{params['model']}-{params['dataset']}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _load_or_extract(tmp: Path, **params: Any) -> RealFeatures:
    from repscope.extract import extract_to_store
    from repscope.store import FeatureStore
    from repscope.zoo import load_dataset, load_model

    data = load_dataset(params["dataset"], n=params["n"], seed=0)
    key = _key(**params)
    root = _cache_root()
    path = (root / key) if root is not None else (tmp / key)
    store = None
    if path.exists():
        try:
            store = FeatureStore.open(path, verify="none")
            if store.n_samples != len(data.labels) or not store.attrs.get("complete"):
                store = None
        except Exception:
            store = None
        if store is None:
            shutil.rmtree(path, ignore_errors=True)
    if store is None:
        work = path.with_name(path.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        model_kwargs = {"resolution": params["resolution"]} if "resolution" in params else {}
        loaded = load_model(params["model"], **model_kwargs)
        s = extract_to_store(
            loaded, data.inputs, work, layers=params["layers"], pooling=params["pooling"],
            batch_size=params["batch_size"], progress=False, max_length=params.get("max_length"),
            metadata={"label": np.asarray(data.labels).tolist()},
        )
        assert isinstance(s, FeatureStore)
        done = FeatureStore.create(path, model_id=params["model"], attrs={"complete": True, **params})
        feats = {
            layer: s.read_ragged(layer) if s.layer_info(layer).ragged else s.read(layer)
            for layer in s.layers
        }
        done.append(feats, {"label": s.metadata(["label"])["label"]})
        shutil.rmtree(work, ignore_errors=True)
        store = FeatureStore.open(path, verify="none")
    ragged = [layer for layer in store.layers if store.layer_info(layer).ragged]
    layers_out = [layer for layer in store.layers if not store.layer_info(layer).ragged]
    X = {layer: np.asarray(store.read(layer), dtype=np.float32) for layer in layers_out}
    extra: dict[str, Any] = {}
    if params.get("pool_ragged"):
        # token layers kept for token-level work are also mean-pooled per sample, so the
        # pooled view lists every layer in depth order
        layers_out = list(store.layers)
        extra["ragged"] = {layer: store.read_ragged(layer) for layer in ragged}
        for layer in ragged:
            r = extra["ragged"][layer]
            sums = np.add.reduceat(np.asarray(r.values, dtype=np.float64), r.offsets[:-1], axis=0)
            X[layer] = (sums / np.diff(r.offsets)[:, None]).astype(np.float32)
    tokens = None
    if ragged:
        padded = store.read_padded(ragged[-1])
        tokens = (np.asarray(padded.values, dtype=np.float32), np.asarray(padded.mask))
    return RealFeatures(
        model=params["model"], dataset=params["dataset"], layers=layers_out, X=X,
        y=np.asarray(store.metadata(["label"])["label"]).astype(np.int64),
        label_names=list(data.label_names),
        texts=list(data.inputs) if data.modality == "text" else None, tokens=tokens, store=path,
        extra=extra,
    )


def lite0_mnist(tmp: Path) -> RealFeatures:
    """EfficientNet-Lite0, every block, global-average pooled, on 1,000 MNIST images at 64 px."""
    return _load_or_extract(tmp, model="efficientnet-lite0", dataset="mnist", n=1000, resolution=64,
                            layers="blocks", pooling="avg", batch_size=100)


def lite0_fashion(tmp: Path) -> RealFeatures:
    """EfficientNet-Lite0, every block, global-average pooled, on 1,000 Fashion-MNIST images at
    64 px (the far-OOD partner of :func:`lite0_mnist`: same model and settings)."""
    return _load_or_extract(tmp, model="efficientnet-lite0", dataset="fashion-mnist", n=1000,
                            resolution=64, layers="blocks", pooling="avg", batch_size=100)


def minilm_austen(tmp: Path) -> RealFeatures:
    """MiniLM-L6, embeddings + 6 layers, mean pooled, on 1,200 Austen paragraphs (128 tokens)."""
    return _load_or_extract(tmp, model="minilm-l6", dataset="austen", n=1200, layers="blocks",
                            pooling="mean", batch_size=32, max_length=128)


def smollm2_austen(tmp: Path) -> RealFeatures:
    """SmolLM2-135M residual stream, all 30 decoder layers, mean pooled, on 400 paragraphs (64
    tokens); layer 14 (the middle) is also kept per token in ``extra["ragged"]`` for the SAE
    tests (one extraction serves both)."""
    layers = [f"model.layers.{i}" for i in range(30)]
    pooling = {layer: ("tokens" if layer == SMOL_TOKEN_LAYER else "mean") for layer in layers}
    return _load_or_extract(tmp, model="smollm2-135m", dataset="austen", n=400, layers=layers,
                            pooling=pooling, batch_size=24, max_length=64, pool_ragged=True)


SMOL_TOKEN_LAYER = "model.layers.14"


def minilm_austen_tokens(tmp: Path) -> RealFeatures:
    """MiniLM-L6 last-layer token features (kept, not pooled) on 600 Austen paragraphs (64
    tokens); ``tokens`` holds them padded with a mask, ``X`` is empty."""
    return _load_or_extract(tmp, model="minilm-l6", dataset="austen", n=600,
                            layers=["encoder.layer.5"], pooling="tokens", batch_size=32,
                            max_length=64)


#: Consecutive SmolLM2 decoder layers kept per token by :func:`smollm2_austen_pairs`: the
#: output of ``model.layers.i`` is the residual stream entering block ``i + 1``, so each pair
#: gives that block's update h_{i+1} - h_i.
SMOL_PAIR_LAYERS = [f"model.layers.{i}" for i in (0, 1, 7, 8, 14, 15, 22, 23, 27, 28)]


def smollm2_austen_pairs(tmp: Path) -> RealFeatures:
    """SmolLM2-135M residual stream per token at consecutive layers (:data:`SMOL_PAIR_LAYERS`)
    on 64 Austen paragraphs (64 tokens, about 3,300 tokens); ``extra["ragged"][layer]`` holds
    each layer's tokens (same token order in every layer), ``X`` their per-paragraph means."""
    return _load_or_extract(tmp, model="smollm2-135m", dataset="austen", n=64,
                            layers=SMOL_PAIR_LAYERS, pooling="tokens", batch_size=16,
                            max_length=64, pool_ragged=True)
