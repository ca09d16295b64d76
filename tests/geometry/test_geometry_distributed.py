"""Moments-based geometry measures all-reduce: two processes, each holding half of the rows,
give the single-process value (the measures accept a fitted Moments)."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._testing import run_distributed
from repscope.geometry import get_geometry_measure
from repscope.stats import Moments

MEASURES = ("fisher_ratio", "fisher_trace_ratio", "calinski_harabasz", "nc_variability",
            "nc_equinorm", "nc_equiangularity")


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 50)
    X = rng.standard_normal((200, 6)) + 2.0 * rng.standard_normal((4, 6))[y]
    return X, y


def _rank_values(rank: int, world: int, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    import torch.distributed as dist

    rows = slice(rank, None, world)  # ranks hold interleaved halves (every class on each)
    m = Moments(class_cov="none").update(X[rows], labels=y[rows]).all_reduce(dist.group.WORLD)
    return {name: float(get_geometry_measure(name)(m)) for name in MEASURES}


def test_two_process_all_reduce_equals_single_process():
    X, y = _blobs()
    single = {name: float(get_geometry_measure(name)(X, y)) for name in MEASURES}
    out = run_distributed(_rank_values, X, y, world_size=2)
    for name in MEASURES:
        assert out[0][name] == pytest.approx(out[1][name], rel=1e-12), name
        assert out[0][name] == pytest.approx(single[name], rel=1e-9), name
