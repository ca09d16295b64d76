"""Deprecated: moved to :mod:`repscope.store` (``from repscope.store import load_features,
load_labels``). This module re-exports them for one release and warns on import."""

from __future__ import annotations

import warnings

from repscope.store._labels import load_labels
from repscope.store._layers import load_features

__all__ = ["load_features", "load_labels"]

warnings.warn(
    "repscope.io is deprecated and will be removed in the next release; import load_features "
    "and load_labels from repscope.store instead (from repscope.store import load_features, "
    "load_labels).",
    DeprecationWarning,
    stacklevel=2,
)
