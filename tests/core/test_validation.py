"""The finiteness check of every feature matrix: its fast path (a column sum by one BLAS
product) must let no NaN or infinity through, and must not refuse finite values whose sum
overflows."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._validation import check_features
from repscope.exceptions import RepscopeValueError


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize(("values", "expect"), [
    ([np.nan], "1 NaN"),
    ([np.inf], "1 inf"),
    ([-np.inf], "1 inf"),
    ([np.inf, -np.inf], "2 inf"),  # opposite infinities in one column: the sum is NaN
    ([np.nan, np.inf], "1 NaN"),
])
def test_every_nonfinite_value_is_found(dtype, layout, values, expect):
    X = np.random.default_rng(0).standard_normal((40, 7)).astype(dtype)
    for i, v in enumerate(values):
        X[5 + 10 * i, 3] = v
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    with pytest.raises(RepscopeValueError, match=rf"X must be finite; got {expect}"):
        check_features(X, name="X")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_values_whose_sum_overflows_pass(dtype):
    big = np.finfo(dtype).max / 2
    X = np.full((6, 3), big, dtype=dtype)  # every column sum overflows to inf
    np.testing.assert_array_equal(check_features(X, name="X"), X)
