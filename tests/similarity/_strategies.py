"""Hypothesis strategies and feature transforms for the generated similarity tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from repscope._testing import random_orthogonal

Transform = Callable[[np.ndarray], np.ndarray]

#: condition number above which generated data is rejected (keeps invariances numerically exact).
MAX_COND = 50.0


@st.composite
def paired_data(draw: st.DrawFn, *, min_n: int = 24, max_n: int = 60, max_d: int = 6
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(X, Y, seed)``: related, well-conditioned paired representations."""
    n = draw(st.integers(min_n, max_n))
    dx = draw(st.integers(3, max_d))
    dy = draw(st.integers(3, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 2.0, dx) + rng.normal(0, 2, dx)
    Y = X @ rng.standard_normal((dx, dy)) + 0.7 * rng.standard_normal((n, dy)) + rng.normal(0, 2, dy)
    for A in (X, Y):
        assume(np.linalg.cond(A - A.mean(axis=0)) < MAX_COND)
    return X, Y, seed


def transform(kind: str, d: int, rng: np.random.Generator) -> Transform:
    """A random feature transform of the named class (acting on ``(n, d)`` arrays)."""
    if kind == "orthogonal":
        Q = random_orthogonal(d, rng)
        return lambda A: A @ Q
    if kind == "isotropic_scale":
        c = float(rng.choice([0.1, 0.5, 3.0, 10.0]))
        return lambda A: c * A
    if kind == "translation":
        b = rng.normal(0.0, 5.0, d)
        return lambda A: A + b
    if kind == "permutation":
        p = rng.permutation(d)
        if d > 1 and np.all(p == np.arange(d)):
            p = np.roll(p, 1)
        return lambda A: A[:, p]
    if kind == "invertible_linear":
        M = random_orthogonal(d, rng) @ np.diag(rng.uniform(0.3, 3.0, d)) @ random_orthogonal(d, rng)
        return lambda A: A @ M
    raise ValueError(kind)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    """Small matrices: one BLAS thread is faster, and idle BLAS threads spinning on a busy
    2-core machine inflate CPU time many-fold."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
