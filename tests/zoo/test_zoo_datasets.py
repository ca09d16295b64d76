"""Zoo datasets: shapes, dtypes and labels of every dataset; deterministic subsampling; the
file readers (IDX, R lazy-load) and the paragraph rule."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import warnings
import zlib

import numpy as np
import pytest

from repscope._testing import skip_or_fail
from repscope.exceptions import CorruptStoreError, RepscopeTypeError, RepscopeValueError
from repscope.zoo import (
    Dataset,
    dataset_names,
    list_datasets,
    load_dataset,
    preprocess_dinov2,
    preprocess_efficientnet,
    read_idx,
    read_lazyload,
    stratified_indices,
)
from repscope.zoo._austen import (
    BOOKS,
    MIN_WORDS,
    _decompress_entry,
    _fast_character_vector,
    paragraphs,
)

TABULAR = {  # name: (n_samples, n_features, n_classes)
    "breast_cancer": (569, 30, 2),
    "digits": (1797, 64, 10),
    "iris": (150, 4, 3),
    "wine": (178, 13, 3),
}


def _load_or_skip(name: str, **kw: object) -> Dataset:
    info = {i.name: i for i in list_datasets()}[name]
    if not info.available:
        skip_or_fail(f"dataset {name!r} is not installed here: {info.missing}")
    return load_dataset(name, **kw)


def _check_common(ds: Dataset, n: int, n_classes: int) -> None:
    assert len(ds) == n == len(ds.labels) == len(ds.ids)
    assert ds.labels.dtype == np.int64
    assert ds.n_classes == n_classes == ds.info.n_classes
    assert set(np.unique(ds.labels).tolist()) == set(range(n_classes))
    assert len(set(ds.ids)) == n
    assert ds.info.available
    assert ds.info.missing == ""


def test_registry_lists_every_dataset_with_metadata():
    names = dataset_names()
    assert names == sorted(
        ["austen", "breast_cancer", "digits", "fashion-mnist", "iris", "mnist", "wine"]
    )
    infos = list_datasets()
    assert [i.name for i in infos] == names
    for info in infos:
        d = info.to_dict()
        assert d["name"] == info.name
        assert isinstance(d["sample_shape"], list)
        assert info.licence
        assert info.description
        assert info.install
        assert info.available == (info.missing == "")


@pytest.mark.parametrize("name", sorted(TABULAR))
def test_tabular_dataset_shapes(name):
    n, d, k = TABULAR[name]
    ds = load_dataset(name)
    _check_common(ds, n, k)
    assert ds.modality == "tabular"
    assert ds.inputs.shape == (n, d)
    assert ds.inputs.dtype == np.float64
    assert np.isfinite(ds.inputs).all()


def test_mnist_is_5000_uint8_images_500_per_digit():
    ds = _load_or_skip("mnist")
    _check_common(ds, 5000, 10)
    assert ds.inputs.shape == (5000, 28, 28)
    assert ds.inputs.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert ds.label_names == [str(i) for i in range(10)]
    assert ds.inputs.max() == 255
    assert ds.inputs.min() == 0


def test_fashion_mnist_is_70000_images_and_splits():
    ds = _load_or_skip("fashion-mnist")
    _check_common(ds, 70000, 10)
    assert ds.inputs.shape == (70000, 28, 28)
    assert ds.inputs.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [7000] * 10
    assert ds.label_names[0] == "T-shirt/top"
    assert ds.label_names[9] == "Ankle boot"
    test = load_dataset("fashion-mnist", split="test")
    assert len(test) == 10000
    assert test.ids[0] == "test:00000"
    np.testing.assert_array_equal(test.inputs, ds.inputs[60000:])
    with pytest.raises(RepscopeValueError, match="'split' parameter"):
        load_dataset("fashion-mnist", split="validation")


def test_austen_is_six_books_of_paragraphs():
    ds = _load_or_skip("austen")
    assert ds.modality == "text"
    assert ds.label_names == [
        "Sense & Sensibility", "Pride & Prejudice", "Mansfield Park", "Emma",
        "Northanger Abbey", "Persuasion",
    ]
    _check_common(ds, ds.info.n_samples, 6)
    assert all(isinstance(t, str) and t.strip() == t and t for t in ds.inputs)
    assert min(len(t.split()) for t in ds.inputs) >= MIN_WORDS
    assert ds.inputs[0].startswith("The family of Dashwood had long been settled in Sussex.")
    assert ds.ids[0] == "sensesensibility:0000"
    # Books are contiguous, in publication order.
    assert (np.diff(ds.labels) >= 0).all()
    assert not any(t.upper().startswith("CHAPTER") for t in ds.inputs)


def test_subsample_is_deterministic_and_stratified():
    a = load_dataset("digits", n=100, seed=3)
    b = load_dataset("digits", n=100, seed=3)
    c = load_dataset("digits", n=100, seed=4)
    assert a.ids == b.ids
    assert np.array_equal(a.inputs, b.inputs)
    assert a.ids != c.ids
    counts = np.bincount(a.labels, minlength=10)
    assert counts.sum() == 100
    assert counts.min() >= 9
    assert counts.max() <= 11
    full = load_dataset("digits")
    pos = [full.ids.index(i) for i in a.ids]
    assert pos == sorted(pos)  # original order kept
    np.testing.assert_array_equal(full.inputs[pos], a.inputs)


def test_subsample_of_text_is_stratified_by_book():
    ds = _load_or_skip("austen", n=120, seed=0)
    again = load_dataset("austen", n=120, seed=0)
    assert ds.ids == again.ids
    assert ds.inputs == again.inputs
    full = load_dataset("austen")
    expected = 120 * np.bincount(full.labels) / len(full)
    assert np.abs(np.bincount(ds.labels) - expected).max() < 1


def test_stratified_indices_exact_quota_and_bounds():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    idx = stratified_indices(y, 10, seed=0)
    assert np.bincount(y[idx]).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(stratified_indices(y, 100), np.arange(100))
    for bad in (0, 101, 2.5, True):
        with pytest.raises(RepscopeValueError, match="'n' parameter must be an int in"):
            stratified_indices(y, bad)  # type: ignore[arg-type]


def test_load_dataset_rejects_unknown_options_and_bad_seed():
    with pytest.raises(RepscopeValueError, match=r"unexpected option\(s\) \['split'\]"):
        load_dataset("iris", split="train")
    with pytest.raises(RepscopeTypeError, match="'seed' parameter"):
        load_dataset("iris", n=10, seed=0.5)  # type: ignore[arg-type]


def test_returned_arrays_are_fresh_copies():
    ds = _load_or_skip("mnist", n=20)
    ds.inputs[:] = 0
    again = load_dataset("mnist", n=20)
    assert again.inputs.any()


def test_read_idx_plain_gzip_and_truncated(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 3, 4) + data.tobytes()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), data)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), data)
    ints = np.array([1, -2, 300], dtype=">i4")
    (tmp_path / "i").write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + ints.tobytes())
    assert read_idx(tmp_path / "i").tolist() == [1, -2, 300]
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(CorruptStoreError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(CorruptStoreError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_paragraph_rule_joins_lines_and_drops_short_ones():
    lines = [
        "CHAPTER 1", "", "  It is a truth universally acknowledged, that a single man ",
        "in possession of a good fortune, must be in want of a wife.", "", "",
        "Too short to keep here.", None, "These eight words make a paragraph long enough.",
    ]
    assert paragraphs(lines) == [
        "It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife.",
        "These eight words make a paragraph long enough.",
    ]


def _serialize_strsxp(items: list[str | None], version: int = 3) -> bytes:
    out = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        out += struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(items))
    for s in items:
        if s is None:
            out += struct.pack(">ii", 9, -1)
        else:
            b = s.encode()
            out += struct.pack(">ii", 9 | (1 << 3 << 12), len(b)) + b
    return out


@pytest.mark.parametrize("version", [2, 3])
def test_fast_character_vector_decoder_agrees_with_rdata(version):
    rdata = pytest.importorskip("rdata")
    items = ["Emma Woodhouse, handsome,", "", None, "caf\u00e9 \u2014 na\u00efve"]
    raw = _serialize_strsxp(items, version)
    fast = _fast_character_vector(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = rdata.conversion.convert(rdata.parser.parse_data(raw))
    assert fast == items
    assert [None if r is None else str(r) for r in ref] == [
        None if s is None else s for s in items
    ]
    # Anything but a plain character vector is left to rdata.
    assert _fast_character_vector(raw[:2] + b"\x00" * 30) is None


def test_books_constant_matches_label_names():
    assert len(BOOKS) == 6
    assert len({k for k, _ in BOOKS}) == 6


def test_read_lazyload_rejects_garbage(tmp_path):
    pytest.importorskip("rdata")
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(b"not an R serialization"))
    (tmp_path / "Rdata.rdb").write_bytes(b"")
    with pytest.raises(CorruptStoreError, match="cannot decode the R lazy-load database"):
        read_lazyload(tmp_path / "Rdata")


def test_lazyload_entry_decompression_methods():
    body = b"X\n" + b"payload"
    size = struct.pack(">I", len(body))
    assert _decompress_entry(size + zlib.compress(body), 1, "e") == body
    assert _decompress_entry(size + b"2" + bz2.compress(body), 2, "e") == body
    assert _decompress_entry(size + b"Z" + lzma.compress(body), 3, "e") == body
    assert _decompress_entry(size + b"0" + body, 3, "e") == body
    with pytest.raises(CorruptStoreError, match="unknown compression type"):
        _decompress_entry(size + b"Q" + body, 3, "e")
    with pytest.raises(CorruptStoreError, match="expected 9 bytes"):
        _decompress_entry(size + zlib.compress(body[:-1]), 1, "e")
    with pytest.raises(CorruptStoreError, match="truncated"):
        _decompress_entry(b"\x00", 1, "e")


def test_preprocessing_shapes_and_errors():
    rgb = np.full((2, 10, 12, 3), 255, np.uint8)
    x = preprocess_efficientnet(rgb, resolution=16)
    assert tuple(x.shape) == (2, 3, 16, 16)
    np.testing.assert_allclose(x.numpy(), 1.0, atol=1e-6)  # white -> +1
    d = preprocess_dinov2(np.zeros((1, 28, 28, 1), np.uint8))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(d[0, :, 0, 0], -mean / std, rtol=1e-5)  # black, normalised
    with pytest.raises(RepscopeValueError, match=r"got shape \(2, 8, 8, 5\)"):
        preprocess_efficientnet(np.zeros((2, 8, 8, 5), np.uint8))
    with pytest.raises(RepscopeTypeError, match="got dtype torch.int32"):
        preprocess_dinov2(np.zeros((1, 4, 4), np.int32))
    with pytest.raises(RepscopeTypeError, match="got list"):
        preprocess_dinov2([[0]])
    with pytest.raises(RepscopeValueError, match="'resolution' parameter"):
        preprocess_efficientnet(rgb, resolution=0)
