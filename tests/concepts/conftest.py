"""Every concepts test runs on one torch and one BLAS thread: the models and arrays are small,
and the machine's cores are shared with other test processes."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    from repscope._threads import single_thread

    with single_thread():
        yield
