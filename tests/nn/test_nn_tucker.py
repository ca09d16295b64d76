"""HOSVD / HOOI Tucker decompositions of activation tensors.

tensorly is not installed here, so the reference is a naive numpy implementation written from
Kolda & Bader (2009): the mode-n unfolding, its SVD, and the core by successive mode products.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from repscope._threads import single_thread
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._tucker import hosvd, tucker, tucker_of_tokens
from repscope.store._ragged import PaddedArray, RaggedArray


@pytest.fixture(autouse=True)
def _one_thread():
    """The decompositions are small: threads only contend on the shared 2-core machine."""
    with single_thread():
        yield


def _unfold(x: np.ndarray, n: int) -> np.ndarray:
    return np.moveaxis(x, n, 0).reshape(x.shape[n], -1)


def _mode_dot(x: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    """x x_n m for m of shape (J, I_n), through the unfolding: Y_(n) = m X_(n)."""
    rest = [s for i, s in enumerate(x.shape) if i != n]
    y = (m @ _unfold(x, n)).reshape([m.shape[0], *rest])
    return np.moveaxis(y, 0, n)


def _fix_signs(u: np.ndarray) -> np.ndarray:
    idx = np.abs(u).argmax(axis=0)
    return u * np.sign(u[idx, np.arange(u.shape[1])])


def _ref_hosvd(x: np.ndarray, ranks) -> tuple[np.ndarray, list[np.ndarray]]:
    factors = [_fix_signs(np.linalg.svd(_unfold(x, n), full_matrices=False)[0][:, :r])
               for n, r in enumerate(ranks)]
    core = x
    for n, u in enumerate(factors):
        core = _mode_dot(core, u.T, n)
    return core, factors


def _ref_hooi(x: np.ndarray, ranks, sweeps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    _, factors = _ref_hosvd(x, ranks)
    for _ in range(sweeps):
        for n, r in enumerate(ranks):
            y = x
            for m, u in enumerate(factors):
                if m != n:
                    y = _mode_dot(y, u.T, m)
            factors[n] = _fix_signs(np.linalg.svd(_unfold(y, n), full_matrices=False)[0][:, :r])
    core = x
    for n, u in enumerate(factors):
        core = _mode_dot(core, u.T, n)
    return core, factors


def _max_principal_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle between the column spaces of two orthonormal bases."""
    s = np.linalg.svd(a.T @ b, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(s.min(), -1.0, 1.0))))


def _planted(rng: np.random.Generator, shape=(30, 40, 50), snr: float = 10.0):
    """A rank-(2, 2, 2) tensor plus Gaussian noise with ||signal||^2 / ||noise||^2 = snr."""
    bases = [np.linalg.qr(rng.standard_normal((s, 2)))[0] for s in shape]
    core = np.zeros((2, 2, 2))
    core[0, 0, 0], core[1, 1, 1] = 1.0, 0.7
    core += 0.2 * rng.standard_normal((2, 2, 2))
    signal = core
    for n, b in enumerate(bases):
        signal = _mode_dot(signal, b, n)
    noise = rng.standard_normal(shape)
    noise *= np.linalg.norm(signal) / (np.sqrt(snr) * np.linalg.norm(noise))
    return signal + noise, bases


def test_hosvd_and_hooi_recover_planted_rank_2_subspaces_at_snr_10():
    x, bases = _planted(np.random.default_rng(0))
    for res in (hosvd(x, 2), tucker(x, (2, 2, 2))):
        angles = [_max_principal_angle_deg(u, b) for u, b in zip(res.factors, bases, strict=True)]
        assert max(angles) < 5.0, (res.method, angles)
        assert res.fit == pytest.approx(10 / 11, abs=0.02)  # the signal's share of the energy
    # the same noise level hides a random subspace: the recovered one is not an accident
    rng = np.random.default_rng(1)
    unrelated = np.linalg.qr(rng.standard_normal((30, 2)))[0]
    assert _max_principal_angle_deg(unrelated, bases[0]) > 45.0


@pytest.mark.parametrize("shape", [(5, 6, 7), (4, 3, 5, 6)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_full_ranks_reconstruct_the_tensor(shape, backend):
    x = np.random.default_rng(2).standard_normal(shape)
    data = torch.from_numpy(x) if backend == "torch" else x
    for res in (hosvd(data, [None] * len(shape)), tucker(data, list(shape))):
        rec = res.reconstruct()
        assert isinstance(rec, torch.Tensor) == (backend == "torch")
        np.testing.assert_allclose(np.asarray(rec), x, atol=1e-10)
        assert res.fit == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(res.mode_energy, 1.0, atol=1e-12)
        for u in res.factors:
            np.testing.assert_allclose(np.asarray(u).T @ np.asarray(u), np.eye(u.shape[1]),
                                       atol=1e-12)


def test_hooi_error_is_at_most_hosvd_error_and_never_rises():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 10, 8, 6))
    x += 3 * np.einsum("i,j,k,l->ijkl", *(rng.standard_normal(s) for s in x.shape))
    ranks = (3, 2, 4, 2)
    h = hosvd(x, ranks)
    fits = [tucker(x, ranks, n_iter=k, tol=0.0).fit for k in (1, 2, 5, 20)]
    assert h.fit <= fits[0] + 1e-12
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(fits))
    assert fits[-1] > h.fit + 1e-4  # HOOI improves on HOSVD here, not only ties
    rec = tucker(x, ranks, n_iter=20, tol=0.0).reconstruct()
    direct = np.linalg.norm(x - rec) / np.linalg.norm(x)
    assert direct == pytest.approx(np.sqrt(1 - fits[-1]), rel=1e-8)
    assert direct <= np.linalg.norm(x - h.reconstruct()) / np.linalg.norm(x)


def test_agrees_with_a_naive_numpy_unfolding_implementation():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 9, 5)) + 2 * np.einsum(
        "i,j,k->ijk", *(rng.standard_normal(s) for s in (7, 9, 5)))
    ranks = (3, 4, 2)
    for res, (core, factors) in ((hosvd(x, ranks), _ref_hosvd(x, ranks)),
                                 (tucker(x, ranks, n_iter=3, tol=0.0), _ref_hooi(x, ranks, 3))):
        for u, ref in zip(res.factors, factors, strict=True):
            np.testing.assert_allclose(u, ref, atol=1e-8)
        np.testing.assert_allclose(res.core, core, atol=1e-8)
        assert res.fit == pytest.approx(np.sum(core**2) / np.sum(x**2), rel=1e-10)
        energy = [np.sum((u.T @ _unfold(x, n)) ** 2) / np.sum(x**2)
                  for n, u in enumerate(factors)]
        np.testing.assert_allclose(res.mode_energy, energy, rtol=1e-10)
    spectrum = np.linalg.svd(_unfold(x, 1), compute_uv=False) ** 2 / np.sum(x**2)
    np.testing.assert_allclose(hosvd(x, ranks).mode_spectra[1], spectrum, atol=1e-12)


def test_torch_and_numpy_inputs_give_the_same_decomposition_in_their_own_dtype():
    x = np.random.default_rng(5).standard_normal((6, 8, 4)).astype(np.float32)
    a, b = tucker(x, (2, 3, 2)), tucker(torch.from_numpy(x), (2, 3, 2))
    assert a.core.dtype == np.float32 and b.core.dtype == torch.float32
    np.testing.assert_allclose(a.core, b.core.numpy(), rtol=1e-6)
    assert a.fit == b.fit
    (record,) = a.to_records(model="m", layer="l")
    assert record.analysis == "tucker" and record.values["ranks"] == [2, 3, 2]


def _ragged(rng: np.random.Generator) -> RaggedArray:
    lengths = np.array([5, 2, 4, 3, 5, 1])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return RaggedArray(rng.standard_normal((int(offsets[-1]), 6)) + 1.0, offsets)


def test_tucker_of_tokens_zero_pads_every_input_form_alike():
    ragged = _ragged(np.random.default_rng(6))
    k, t, c = ragged.n_samples, int(ragged.lengths.max()), 6
    dense = np.zeros((k, t, c))
    for i in range(k):
        dense[i, : ragged.lengths[i]] = ragged.sample(i)
    mask = np.arange(t)[None, :] < ragged.lengths[:, None]
    expected = tucker(dense, (3, 2, 4))
    junk = np.where(mask[..., None], dense, 7.0)  # padding that must be ignored
    for res in (tucker_of_tokens(ragged, (3, 2, 4)),
                tucker_of_tokens(PaddedArray(junk, mask), (3, 2, 4)),
                tucker_of_tokens(junk, (3, 2, 4), mask=mask),
                tucker_of_tokens(torch.from_numpy(junk), (3, 2, 4), mask=mask)):
        np.testing.assert_allclose(np.asarray(res.core), expected.core, atol=1e-10)
    mean = dense[mask].mean(axis=0)
    centred = np.where(mask[..., None], dense - mean, 0.0)
    for res in (tucker_of_tokens(ragged, (3, 2, 4), center=True),
                tucker_of_tokens(torch.from_numpy(junk), (3, 2, 4), mask=mask, center=True)):
        np.testing.assert_allclose(np.asarray(res.core), tucker(centred, (3, 2, 4)).core,
                                   atol=1e-10)


def test_tucker_of_minilm_token_activations_on_austen(minilm_austen_tokens):
    values, mask = minilm_austen_tokens.tokens
    values, mask = values[:200], mask[:200]
    ranks = (8, 8, 16)
    res = tucker_of_tokens(values, ranks, mask=mask, center=True, n_iter=10)
    base = hosvd(np.where(mask[..., None], values - values[mask].mean(0), 0.0), ranks)
    assert base.fit <= res.fit + 1e-9 <= 1.0 + 1e-9
    # projecting one mode keeps at least what projecting all three keeps
    assert np.all(res.mode_energy >= res.fit - 1e-9)
    # 16 of 384 channel directions would keep about 4 % of isotropic noise; the real tokens
    # concentrate far more of their variation there
    assert res.mode_energy[2] > 3 * 16 / values.shape[2]
    # later positions are reached by fewer paragraphs, so they carry less energy
    position_energy = np.sum(np.where(mask[..., None], values - values[mask].mean(0), 0) ** 2,
                             axis=(0, 2))
    assert position_energy[-1] < position_energy[0]


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: hosvd(np.zeros((4, 5, 6)), (2, 6, 2)), RepscopeValueError,
     r"ranks\[1\] must be in \[1, 5\] \(the size of mode 1\); got 6"),
    (lambda: hosvd(np.ones((4, 5, 6)), 0), RepscopeValueError, r"ranks\[0\] must be in \[1, 4\]"),
    (lambda: hosvd(np.ones((4, 5, 6)), (2, 2)), RepscopeValueError,
     r"one entry per mode of the tensor \(3 for shape \(4, 5, 6\)\); got 2"),
    (lambda: hosvd(np.ones((4, 5)), (2, 2.5)), RepscopeTypeError, r"ranks\[1\] must be an int"),
    (lambda: hosvd(np.ones((4, 5)), "2"), RepscopeTypeError, "ranks must be an int or a sequence"),
    (lambda: hosvd(np.ones(4), 1), RepscopeValueError, r"at least 2 modes .*got shape \(4,\)"),
    (lambda: hosvd(np.full((2, 2), np.nan), 1), RepscopeValueError, "NaN or inf"),
    (lambda: tucker(np.ones((3, 3)), 1, n_iter=0), RepscopeValueError,
     "n_iter must be a positive integer; got 0"),
    (lambda: tucker_of_tokens(np.ones((3, 4)), 1), RepscopeValueError,
     r"\(n_samples, n_tokens, n_channels\); got shape \(3, 4\)"),
    (lambda: tucker_of_tokens(np.ones((3, 4, 2)), 1, mask=np.ones((3, 5), bool)),
     RepscopeValueError, r"mask must have shape \(n_samples, n_tokens\) = \(3, 4\); got \(3, 5\)"),
    (lambda: tucker_of_tokens(PaddedArray(np.ones((2, 2, 2)), np.ones((2, 2), bool)), 1,
                              mask=np.ones((2, 2), bool)),
     RepscopeValueError, "mask must not be given with a PaddedArray"),
])
def test_bad_input_raises_named_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
