"""The prefetching reader: same batches as the plain reader, bounded read-ahead, read errors
raised in the caller, and no thread left behind however the caller stops."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope.exceptions import CorruptStoreError
from repscope.stats import Moments
from repscope.store import FeatureStore, RaggedArray
from repscope.store._prefetch import THREAD_NAME, prefetch


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(autouse=True)
def _no_leaked_reader() -> Iterator[None]:
    assert not _readers()
    yield
    assert not _readers(), "a prefetching thread outlived its stream"


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    """7 chunks of uneven sizes: a dense float16 layer, a ragged float32 one, labels."""
    rng = np.random.default_rng(0)
    with FeatureStore.create(tmp_path / "s", "m") as s:
        for rows in (5, 13, 1, 8, 21, 3, 9):
            s.append(
                {
                    "h": rng.standard_normal((rows, 6)).astype(np.float16),
                    "tok": [rng.standard_normal((int(t), 3)).astype(np.float32)
                            for t in rng.integers(0, 5, rows)],
                },
                metadata={"label": rng.integers(0, 3, rows)},
            )
    return FeatureStore.open(tmp_path / "s")


@pytest.mark.parametrize("layer", ["h", "tok"])
@pytest.mark.parametrize(("batch_size", "start", "stop"), [(4, 0, None), (7, 3, 57), (60, 2, 60)])
def test_prefetched_batches_are_the_plain_readers(
    store: FeatureStore, layer: str, batch_size: int, start: int, stop: int | None
) -> None:
    plain = list(store.iter_batches(layer, batch_size, start=start, stop=stop, prefetch=0))
    assert len(plain) > 0
    for depth in (1, 2, 5):
        got = list(store.iter_batches(layer, batch_size, start=start, stop=stop, prefetch=depth))
        assert len(got) == len(plain)
        for a, b in zip(got, plain):
            if layer == "tok":
                assert isinstance(a, RaggedArray)
                np.testing.assert_array_equal(a.offsets, b.offsets)
                a, b = a.values, b.values
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    if layer == "h":
        np.testing.assert_array_equal(np.concatenate(plain), store.read("h")[start:stop])


def test_the_reading_runs_in_a_background_thread_that_ends_with_the_stream(
    store: FeatureStore,
) -> None:
    it = store.iter_batches("h", 4, prefetch=2)
    assert not _readers()  # nothing starts before the first batch is asked for
    next(it)
    assert len(_readers()) == 1
    rest = list(it)
    assert sum(len(b) for b in rest) == store.n_samples - 4
    assert not _readers()


def test_dtype_casts_each_batch(store: FeatureStore) -> None:
    batches = list(store.iter_batches("h", 8, dtype=np.float64))
    assert all(b.dtype == np.float64 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), store.read("h").astype(np.float64))
    tok = next(iter(store.iter_batches("tok", 8, dtype=np.float64)))
    assert tok.values.dtype == np.float64


@pytest.mark.parametrize("how", ["break", "close", "drop"])
def test_stopping_early_stops_the_thread(store: FeatureStore, how: str) -> None:
    if how == "break":  # the loop drops the generator it made: it is closed at once
        for i, _ in enumerate(store.iter_batches("h", 2, prefetch=3)):
            assert len(_readers()) == 1
            if i == 1:
                break
    else:
        it = store.iter_batches("h", 2, prefetch=3)
        assert isinstance(it, Generator)  # so that callers can close() it
        next(it)
        next(it)
        assert len(_readers()) == 1
        if how == "close":
            it.close()
        else:
            del it
            gc.collect()
    assert not _readers()


def test_a_shard_deleted_after_open_is_raised_in_the_caller(store: FeatureStore) -> None:
    reader = FeatureStore.open(store.path)
    (store.path / "layers" / "h" / "chunk-000004.safetensors").unlink()  # rows 27:48
    got: list[np.ndarray] = []
    with pytest.raises(CorruptStoreError, match="chunk-000004"):
        got.extend(reader.iter_batches("h", 9, prefetch=2))  # keeps what came before the error
    assert sum(len(b) for b in got) == 27  # every batch before the broken one came through
    np.testing.assert_array_equal(np.concatenate(got), store.read("h", np.arange(27)))


def test_a_corrupted_shard_is_raised_in_the_caller(store: FeatureStore) -> None:
    path = store.path / "layers" / "tok" / "chunk-000002.safetensors"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="checksum"):
        list(FeatureStore.open(store.path).iter_batches("tok", 5, prefetch=2))


@pytest.mark.parametrize("depth", [1, 3])
def test_at_most_depth_items_are_made_ahead_of_a_slow_consumer(depth: int) -> None:
    made = 0

    def source() -> Iterator[int]:
        nonlocal made
        for i in range(12):
            made += 1
            yield i

    leads = []
    for i, item in enumerate(prefetch(source(), depth)):
        assert item == i
        time.sleep(0.02)  # a slow consumer: the thread has time to fill its room
        leads.append(made - (i + 1))
    assert max(leads) == depth  # it does read ahead, up to depth items and never more
    assert made == 12


def test_an_error_in_the_source_comes_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise OSError("disk gone")

    got: list[int] = []
    with pytest.raises(OSError, match="disk gone"):
        got.extend(prefetch(source(), 2))
    assert got == [0, 1]


def test_moments_from_store_with_prefetch_equal_the_plain_reader(store: FeatureStore) -> None:
    for layer in ("h", "tok"):
        plain = Moments.from_store(store, layer, batch_size=6, prefetch=0)
        assert Moments.from_store(store, layer, batch_size=6) == plain
    labelled = Moments.from_store(store, "h", labels="label", batch_size=4, rows=(3, 50))
    assert labelled == Moments.from_store(store, "h", labels="label", batch_size=4,
                                          rows=(3, 50), prefetch=0)
    x = store.read("h")[3:50].astype(np.float64)
    np.testing.assert_allclose(labelled.mean, x.mean(0), rtol=1e-12)
    assert labelled.n == 47


def test_moments_from_a_real_store_with_prefetch(minilm_austen: Any) -> None:
    store = FeatureStore.open(minilm_austen.store)
    layer = store.layers[-1]
    fast = Moments.from_store(store, layer, labels="label", batch_size=256, prefetch=2)
    assert fast == Moments.from_store(store, layer, labels="label", batch_size=256, prefetch=0)
    assert fast.n == store.n_samples
