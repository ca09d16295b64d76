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
