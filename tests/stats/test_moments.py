"""Moments: merge == one pass == two-pass float64 reference; cancellation; all_reduce; I/O."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._testing import run_distributed
from repscope.exceptions import CorruptStoreError, RepscopeError, RepscopeValueError
from repscope.stats import Moments


def _data(rng: np.random.Generator, n: int = 3000, d: int = 12, dy: int = 4, k: int = 5):
    A = rng.standard_normal((d, d))
    X = rng.standard_normal((n, d)) @ A + rng.standard_normal(d) * 3
    Y = X[:, :dy] * 0.5 + rng.standard_normal((n, dy))
    y = rng.integers(0, k, n)
    X[y == 2] += 1.5
    return X, Y, y


def _ref(X, Y, y):
    """Naive float64 two-pass reference."""
    n = len(X)
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    sw = sum((X[y == c] - means[i]).T @ (X[y == c] - means[i]) for i, c in enumerate(classes))
    sb = sum((y == c).sum() * np.outer(means[i] - mx, means[i] - mx) for i, c in enumerate(classes))
    return {
        "mean": mx,
        "cov": Xc.T @ Xc / (n - 1),
        "cross": Xc.T @ Yc / (n - 1),
        "cov_y": Yc.T @ Yc / (n - 1),
        "class_means": means,
        "sw": sw,
        "sb": sb,
        "class_var": np.stack([X[y == c].var(0, ddof=1) for c in classes]),
        "class_cov": np.stack([np.cov(X[y == c].T) for c in classes]),
    }


def _close(a, b, rel=1e-10):
    scale = max(np.abs(b).max(), 1e-300)
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= rel * scale


def test_one_pass_equals_two_pass_reference(rng):
    X, Y, y = _data(rng)
    m = Moments(class_cov="full").update(X, Y, y)
    r = _ref(X, Y, y)
    assert _close(m.mean, r["mean"])
    assert _close(m.covariance(), r["cov"])
    assert _close(m.cross_covariance(), r["cross"])
    assert _close(m.covariance_y(), r["cov_y"])
    assert _close(m.class_means, r["class_means"])
    assert _close(m.within_class_scatter(), r["sw"], 1e-9)
    assert _close(m.between_class_scatter(), r["sb"], 1e-9)
    assert _close(m.class_variances(), r["class_var"], 1e-9)
    assert _close(m.class_covariances(), r["class_cov"], 1e-9)
    assert _close(m.within_class_scatter() + m.between_class_scatter(), m.scatter(), 1e-9)
    np.testing.assert_allclose(m.correlation(), np.corrcoef(X.T), atol=1e-12)
    np.testing.assert_array_equal(m.class_counts, np.bincount(y))


@pytest.mark.parametrize("k", [2, 5, 11])
def test_merging_k_shards_with_different_shifts_equals_one_pass(rng, k):
    X, Y, y = _data(rng)
    one = Moments(class_cov="full").update(X, Y, y)
    cuts = np.sort(rng.choice(np.arange(1, len(X)), size=k - 1, replace=False))
    shards = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(X)])):
        # each shard gets its own, deliberately different, shift
        shift = X[a:b].mean(0) + rng.standard_normal(X.shape[1]) * (i + 1)
        shards.append(Moments(class_cov="full", shift=shift).update(X[a:b], Y[a:b], y[a:b]))
    merged = shards[0]
    for s in shards[1:]:
        merged.merge(s)
    assert merged.n == one.n
    for f in ("covariance", "cross_covariance", "within_class_scatter", "between_class_scatter",
              "class_covariances", "class_variances"):
        assert _close(getattr(merged, f)(), getattr(one, f)(), 1e-10), f
    assert _close(merged.mean, one.mean)
    assert _close(merged.class_means, one.class_means)


def test_merge_with_disjoint_classes_in_shards(rng):
    X, _Y, y = _data(rng, k=4)
    a = Moments().update(X[y < 2], labels=y[y < 2])
    b = Moments().update(X[y >= 2], labels=y[y >= 2])
    one = Moments().update(X, labels=y)
    a.merge(b)
    np.testing.assert_array_equal(a.classes, one.classes)
    assert _close(a.within_class_covariance(), one.within_class_covariance())


def test_no_digits_lost_when_mean_is_1e4_times_spread(rng):
    n, d = 20000, 6
    spread = 1.0
    X = 1e4 * spread + spread * rng.standard_normal((n, d))
    ref = np.cov(X.T)  # two-pass, float64
    m = Moments()
    for s in range(0, n, 1000):
        m.update(X[s : s + 1000])
    assert np.abs(m.covariance() - ref).max() < 1e-9
    # The textbook one-pass formula loses ~8 digits on the same data: the test can fail.
    naive = (X.T @ X - n * np.outer(X.mean(0), X.mean(0))) / (n - 1)
    assert np.abs(naive - ref).max() > 1e-6


def test_float32_and_torch_inputs_accumulate_in_float64(rng):
    torch = pytest.importorskip("torch")
    X = (rng.standard_normal((500, 8)) + 100).astype(np.float32)
    ref = np.cov(X.astype(np.float64).T)
    m_np = Moments().update(X)
    m_t = Moments().update(torch.from_numpy(X))
    assert m_np.covariance().dtype == np.float64
    np.testing.assert_allclose(m_np.covariance(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_t.covariance(), ref, rtol=1e-10, atol=1e-12)


def test_save_load_round_trip(tmp_path, rng):
    X, Y, y = _data(rng)
    labels = np.array(["cat", "dog", "emu", "fox", "gnu"])[y]
    m = Moments(class_cov="full").update(X, Y, labels)
    path = m.save(tmp_path / "m.safetensors")
    back = Moments.load(path)
    assert back == m
    np.testing.assert_array_equal(back.classes, m.classes)
    np.testing.assert_array_equal(back.within_class_scatter(), m.within_class_scatter())
    # a loaded accumulator keeps accumulating
    back.update(X[:10], Y[:10], labels[:10])
    assert back.n == m.n + 10


def test_load_rejects_other_and_corrupt_files(tmp_path):
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"a": np.zeros(3)}, str(other))
    with pytest.raises(CorruptStoreError, match="not a saved Moments"):
        Moments.load(other)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CorruptStoreError, match=r"bad\.safetensors"):
        Moments.load(bad)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.update(np.zeros(5)), r"X must be 2-D .*got shape \(5,\)"),
        (lambda m: m.update(np.array([[1.0, np.nan]])), "X must be finite; got 1 NaN"),
        (lambda m: m.update(np.array([[1.0, np.inf]])), "X must be finite; got 1 inf"),
        (lambda m: m.update(np.zeros((4, 2)), labels=[0, 1]), r"labels must have one entry per sample \(4\); got 2"),
        (lambda m: m.update(np.zeros((4, 2)), np.zeros((3, 1))), "same number of samples"),
        (lambda m: m.covariance(), "has seen no samples"),
        (lambda m: m.update(np.ones((3, 2))).update(np.ones((3, 4))), "X must have 2 features"),
        (lambda m: m.update(np.ones((3, 2))).class_means, "has no labels"),
        (lambda m: m.update(np.ones((3, 2))).cross_covariance(), "has no paired Y"),
        (lambda m: m.update(np.ones((1, 2))).covariance(), "need more than ddof=1 samples"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(RepscopeValueError, match=match):
        call(Moments())


def test_empty_and_string_input_errors():
    m = Moments()
    m.update(np.zeros((0, 3)))  # an empty batch is a no-op
    assert m.n == 0
    with pytest.raises(RepscopeError, match="X must hold numbers"):
        m.update(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="class_cov"):  # also a built-in ValueError
        Moments(class_cov="diagonal")  # type: ignore[arg-type]


def test_constant_feature_correlation_is_not_nan(rng):
    X = rng.standard_normal((100, 3))
    X[:, 1] = 7.0
    r = Moments().update(X).correlation()
    assert np.isfinite(r).all()
    assert r[1, 1] == 1.0
    assert r[0, 1] == 0.0


def _all_reduce_worker(rank: int, world: int):
    rng = np.random.default_rng(7)
    X = 500 + rng.standard_normal((1001, 9)) * 3
    Y = rng.standard_normal((1001, 2))
    y = np.array(list("abcd"))[rng.integers(0, 4, 1001)]
    part = slice(0, 400) if rank == 0 else slice(400, None)
    # rank 1 sees no class 'a' and has a different shift
    sel = np.arange(1001)[part]
    if rank == 1:
        sel = sel[y[sel] != "a"]
    m = Moments(class_cov="full").update(X[sel] , Y[sel], y[sel])
    return m.all_reduce()


def test_two_process_gloo_all_reduce_equals_single_process():
    r0, r1 = run_distributed(_all_reduce_worker, world_size=2)
    rng = np.random.default_rng(7)
    X = 500 + rng.standard_normal((1001, 9)) * 3
    Y = rng.standard_normal((1001, 2))
    y = np.array(list("abcd"))[rng.integers(0, 4, 1001)]
    keep = np.ones(1001, bool)
    keep[400:] = y[400:] != "a"
    single = Moments(class_cov="full").update(X[keep], Y[keep], y[keep])
    for m in (r0, r1):
        assert m.n == single.n
        np.testing.assert_array_equal(m.classes, single.classes)
        for f in ("covariance", "cross_covariance", "within_class_scatter", "class_covariances"):
            assert _close(getattr(m, f)(), getattr(single, f)(), 1e-10), f
        assert _close(m.class_means, single.class_means)


def test_class_cov_none_keeps_class_sums_only(rng):
    X, _Y, y = _data(rng)
    full = Moments().update(X, labels=y)
    a = Moments(class_cov="none").update(X[:1000], labels=y[:1000])
    b = Moments(class_cov="none", shift=X[1000:].mean(0) + 1).update(X[1000:], labels=y[1000:])
    lean = a.merge(b)
    assert _close(lean.within_class_scatter(), full.within_class_scatter())
    assert _close(lean.between_class_scatter(), full.between_class_scatter())
    assert _close(lean.class_means, full.class_means)
    with pytest.raises(RepscopeValueError, match="class_cov='none'"):
        lean.class_variances()


@pytest.mark.parametrize("n_labels", [1000, 299, 0])
def test_from_store_refuses_labels_of_another_length(tmp_path, n_labels):
    from repscope.store import FeatureStore

    rng = np.random.default_rng(0)
    store = FeatureStore.create(tmp_path / "s", "m")
    store.append({"layer": rng.standard_normal((300, 4)).astype(np.float32)})
    labels = rng.integers(0, 3, n_labels)
    with pytest.raises(RepscopeValueError, match=rf"'labels'.*300.*got {n_labels}") as err:
        Moments.from_store(store, "layer", labels=labels, batch_size=64)
    assert "\n" not in str(err.value)
    # the right length still streams, and equals the in-memory pass
    y = rng.integers(0, 3, 300)
    m = Moments.from_store(store, "layer", labels=y, batch_size=64)
    assert m.n == 300
    assert np.array_equal(m.classes, np.unique(y))


def test_pca_spectrum_of_no_samples_is_refused():
    from repscope.stats import pca_spectrum

    with pytest.raises(RepscopeValueError, match=r"no samples.*0 rows") as err:
        pca_spectrum(np.zeros((0, 5)))
    assert "\n" not in str(err.value)
    with pytest.raises(RepscopeValueError, match="no samples"):
        pca_spectrum(Moments())
    assert pca_spectrum(np.random.default_rng(0).standard_normal((5, 3))).effective_rank > 0


def test_second_moments_that_cannot_fit_are_refused_before_allocating(monkeypatch):
    """d = 200,000 needs ~600 GiB of d x d float64 matrices: refused with the estimate and a
    way out, instead of a MemoryError (or the OOM killer) from inside numpy."""
    from repscope.exceptions import InsufficientMemoryError

    with pytest.raises(InsufficientMemoryError, match=r"200000 x 200000\).*GiB.*PCA") as err:
        Moments().update(np.zeros((3, 200_000), dtype=np.float32))
    assert isinstance(err.value, MemoryError) and isinstance(err.value, RepscopeError)
    monkeypatch.setattr("repscope._memory.available_memory", lambda: 10**6)
    with pytest.raises(InsufficientMemoryError, match=r"1000 x 1000\) need 15\.3 MiB.*976\.6 KiB"):
        Moments().update(np.zeros((3, 1000)))
    with pytest.raises(InsufficientMemoryError, match=r"300 x 40 with the targets"):
        Moments().update(np.zeros((3, 300)), np.zeros((3, 40)))
    assert Moments().update(np.zeros((3, 100))).n == 3  # 160 KB fits
    with pytest.raises(InsufficientMemoryError, match=r"per-class.*20 float64 matrices"):
        Moments(class_cov="full").update(np.zeros((40, 100)), labels=np.arange(40) % 20)
    monkeypatch.setattr("repscope._memory.available_memory", lambda: None)  # unknown: no check
    assert Moments().update(np.zeros((3, 1000))).n_features == 1000


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_centring_in_place_never_writes_to_the_callers_rows(tmp_path, dtype):
    """Moments centre a float64 block in place when it is theirs (a cast copy, a store
    reader's batch): the caller's array and the store stay as they were, and the sums equal
    those of the copying path bit for bit."""
    from repscope.store import FeatureStore

    rng = np.random.default_rng(1)
    X = (3.0 + rng.standard_normal((300, 6))).astype(dtype)
    y = rng.integers(0, 3, 300)
    before = X.copy()
    m = Moments()
    for s in range(0, 300, 64):
        m.update(X[s : s + 64], labels=y[s : s + 64])
    np.testing.assert_array_equal(X, before)
    # the copying path: a read-only float64 view, which Moments must not write to
    ref = Moments()
    X64 = X.astype(np.float64)
    X64.flags.writeable = False
    for s in range(0, 300, 64):
        ref.update(X64[s : s + 64], labels=y[s : s + 64])
    assert m == ref
    store = FeatureStore.create(tmp_path / "s", "m")
    store.append({"layer": X})
    got = Moments.from_store(store, "layer", labels=y, batch_size=64)
    assert got == ref
    np.testing.assert_array_equal(FeatureStore.open(tmp_path / "s").read("layer"), before)
