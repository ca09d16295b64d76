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


#: Session and module fixtures that load a real pretrained model (or features extracted from
#: one) or drive a real browser. :func:`pytest_collection_modifyitems` marks every test that
#: uses one of them, directly or through another fixture, with ``real``; tests that load a zoo
#: model themselves carry the mark in their own file. ``make test-fast`` deselects ``real``.
REAL_FIXTURES = frozenset({
    # tests/conftest.py: cached real features
    "lite0_mnist", "minilm_austen", "minilm_austen_tokens", "smollm2_austen",
    "smollm2_austen_pairs",
    # tests/align/conftest.py
    "minilm_l3_austen",
    # tests/extract/conftest.py: zoo models loaded once per session
    "minilm", "minilm_st", "minilm_onnx", "smollm", "dinov2", "effnet",
    # tests/zoo/test_zoo_models.py
    "effnet0", "smollm2_loads",
    # tests/cli/test_demo.py (the demo on EfficientNet-Lite0/Lite1), tests/report/test_browser.py
    "demo_run", "browser",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use a real model, a model's features or Chromium as ``real``."""
    for item in items:
        if REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


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
def lite0_fashion(tmp_path_factory):
    """EfficientNet-Lite0 block features on 1,000 Fashion-MNIST images (far OOD for MNIST)."""
    return _real("lite0_fashion", tmp_path_factory)


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


@pytest.fixture(scope="session")
def smollm2_austen_pairs(tmp_path_factory):
    """SmolLM2-135M residual stream per token at consecutive layers (0-1, 7-8, 14-15, 22-23,
    27-28) on 64 Austen paragraphs (about 3,300 tokens)."""
    return _real("smollm2_austen_pairs", tmp_path_factory)
