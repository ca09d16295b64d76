"""FeatureStore: extracted features on disk (safetensors shards + Parquet metadata + manifest).

See :class:`FeatureStore` for the layout, the write protocol (atomic chunks, resumable after a
crash) and the read API (memory-mapped random access, streaming batches, ragged token layers).
"""

from repscope.store._ragged import PaddedArray, RaggedArray, pad_ragged
from repscope.store.feature_store import SCHEMA_VERSION, FeatureStore, LayerInfo

__all__ = [
    "SCHEMA_VERSION",
    "FeatureStore",
    "LayerInfo",
    "PaddedArray",
    "RaggedArray",
    "pad_ragged",
]
