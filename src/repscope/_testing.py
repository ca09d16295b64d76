"""Helpers for repscope's tests (and for users' tests of code built on repscope).

``REPSCOPE_STRICT_SKIPS=1`` (set by CI) turns skips for missing system data into failures, so
nothing real goes untested in CI while a user's machine without the data still passes.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import numpy as np

__all__ = ["random_orthogonal", "skip_or_fail", "strict_skips"]

STRICT_ENV = "REPSCOPE_STRICT_SKIPS"


def strict_skips() -> bool:
    """True when missing system data must fail tests instead of skipping them (CI)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it when :func:`strict_skips` is on."""
    import pytest

    if strict_skips():
        pytest.fail(f"{reason} ({STRICT_ENV}=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(reason)


def random_orthogonal(d: int, rng: Any = None) -> np.ndarray:
    """A Haar-random orthogonal ``d x d`` matrix (QR of a Gaussian with the sign fix)."""
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))
