"""Real paired features for the alignment tests: MiniLM-L3 (ONNX) on the Austen paragraphs of
``minilm_austen`` (same n, seed and order, so rows are paired with MiniLM-L6's)."""

from __future__ import annotations

from typing import Any

import pytest

#: The graph output that holds the mean-pooled sentence vector (see the zoo's ModelInfo.extra).
L3_POOLED = "461"


def minilm_l3_austen_features(tmp: Any) -> Any:
    """MiniLM-L3 pooled output on the 1,200 Austen paragraphs of ``minilm_austen``."""
    import _realdata

    return _realdata._load_or_extract(
        tmp, model="minilm-l3-onnx", dataset="austen", n=1200, layers=[L3_POOLED],
        pooling="mean", batch_size=32, max_length=128,
    )


@pytest.fixture(scope="session")
def minilm_l3_austen(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """MiniLM-L3 (ONNX) pooled sentence vectors, rows paired with ``minilm_austen``."""
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError

    try:
        return minilm_l3_austen_features(tmp_path_factory.mktemp("minilm_l3_austen"))
    except DataNotFoundError as err:
        skip_or_fail(f"real features 'minilm_l3_austen' need data that is missing: {err}")
