"""FeatureStore: extracted features on disk (safetensors shards + Parquet metadata + manifest).

See :class:`FeatureStore` for the layout, the write protocol (atomic chunks, resumable after a
crash) and the read API (memory-mapped random access, streaming batches, ragged token layers).
:func:`open_layers` reads the layers of a store, of ``.npy``/``.safetensors`` files or of
arrays in memory through one :class:`LayerSource` (explicit token pooling); every analysis
reads its features that way.
"""

from repscope.store._labels import load_labels
from repscope.store._layers import (
    PAIR_BY,
    TOKEN_POOLINGS,
    LayerSource,
    PairBy,
    TokenPooling,
    load_features,
    open_layers,
    pair_sources,
)
from repscope.store._ragged import PaddedArray, RaggedArray, pad_ragged
from repscope.store.feature_store import SCHEMA_VERSION, FeatureStore, LayerInfo

__all__ = [
    "PAIR_BY",
    "SCHEMA_VERSION",
    "TOKEN_POOLINGS",
    "FeatureStore",
    "LayerInfo",
    "LayerSource",
    "PaddedArray",
    "PairBy",
    "RaggedArray",
    "TokenPooling",
    "load_features",
    "load_labels",
    "open_layers",
    "pad_ragged",
    "pair_sources",
]
