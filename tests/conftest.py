"""Session-wide test configuration.

Tests that write a results database pass an explicit path (never the user's default); model
caches under ``REPSCOPE_HOME`` are shared, since they are expensive to rebuild.

``REPSCOPE_STRICT_SKIPS=1`` (set by ``.ci/run``) turns skips for missing system data into
failures: see :func:`repscope._testing.skip_or_fail`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Keep BLAS/torch from oversubscribing the 2-core CI machine when tests spawn processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _real(name: str, tmp_path_factory: pytest.TempPathFactory) -> object:
    """Extract (or load from the test cache) one real-feature bundle; skip/fail without data."""
    import _realdata
    from repscope._testing import skip_or_fail
    from repscope.exceptions import DataNotFoundError

    try:
        return getattr(_realdata, name)(tmp_path_factory.mktemp(name))
    except DataNotFoundError as err:
        skip_or_fail(f"real features {name!r} need data that is missing: {err}")


@pytest.fixture(scope="session")
def lite0_mnist(tmp_path_factory):
    """EfficientNet-Lite0 block features on 1,000 MNIST images (see tests/_realdata.py)."""
    return _real("lite0_mnist", tmp_path_factory)


@pytest.fixture(scope="session")
def minilm_austen(tmp_path_factory):
    """MiniLM-L6 mean-pooled layers on 1,200 Austen paragraphs, labelled by novel."""
    return _real("minilm_austen", tmp_path_factory)


@pytest.fixture(scope="session")
def minilm_austen_tokens(tmp_path_factory):
    """MiniLM-L6 last-layer token features (padded + mask) on 600 Austen paragraphs."""
    return _real("minilm_austen_tokens", tmp_path_factory)


@pytest.fixture(scope="session")
def smollm2_austen(tmp_path_factory):
    """SmolLM2-135M residual stream (30 layers, mean pooled; layer 14 also per token) on 400
    Austen paragraphs."""
    return _real("smollm2_austen", tmp_path_factory)
