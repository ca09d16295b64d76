"""Session-wide test configuration.

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


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results databases written by tests go to a temporary REPSCOPE_HOME, unless a test
    sets its own. Model caches are kept (they are expensive to rebuild)."""
    if "REPSCOPE_TEST_KEEP_HOME" in os.environ:
        return
    home = os.environ.get("REPSCOPE_HOME")
    if home is None:
        # Model caches live under REPSCOPE_HOME/models; share the user's cache for speed.
        monkeypatch.setenv("REPSCOPE_HOME", os.path.expanduser("~/.repscope"))
