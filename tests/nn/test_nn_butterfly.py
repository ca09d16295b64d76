"""Butterfly factorisations: the exact Cooley–Tukey DFT and Sylvester–Hadamard constructions
against their closed forms, the O(N log N) apply against the dense weight, and fitting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from repscope._threads import single_thread
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._butterfly import (
    ButterflyLinear,
    bit_reversal_permutation,
    dft_butterfly,
    fit_butterfly,
    hadamard_butterfly,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


SIZES = [2**k for k in range(1, 11)]  # 2 .. 1024
PRECISION = [(torch.complex128, torch.float64, 1e-10), (torch.complex64, torch.float32, 1e-4)]


def dft_matrix(n: int) -> np.ndarray:
    j = np.arange(n)
    return np.exp(-2j * np.pi * (np.outer(j, j) % n) / n)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("cdtype", "rdtype", "tol"), PRECISION)
def test_dft_butterfly_equals_dft_matrix(n, cdtype, rdtype, tol):
    dense = dft_butterfly(n, dtype=cdtype).to_dense().detach()
    assert dense.dtype == cdtype
    assert np.abs(dense.numpy().astype(np.complex128) - dft_matrix(n)).max() < tol


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("cdtype", "rdtype", "tol"), PRECISION)
def test_hadamard_butterfly_equals_sylvester_hadamard(n, cdtype, rdtype, tol):
    dense = hadamard_butterfly(n, dtype=rdtype).to_dense().detach()
    assert dense.dtype == rdtype
    assert np.abs(dense.numpy().astype(np.float64) - scipy.linalg.hadamard(n)).max() < tol


@pytest.mark.parametrize("n", [8, 256, 1024])
def test_dft_butterfly_applies_like_torch_fft(n):
    x = torch.randn(5, n, dtype=torch.complex128, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        assert (dft_butterfly(n)(x) - torch.fft.fft(x)).abs().max() < 1e-9
        assert (dft_butterfly(n, normalized=True)(x)
                - torch.fft.fft(x, norm="ortho")).abs().max() < 1e-10
        assert (dft_butterfly(n, inverse=True)(x) - n * torch.fft.ifft(x)).abs().max() < 1e-9
        # a real input is promoted to the layer's complex dtype
        xr = x.real.contiguous()
        assert (dft_butterfly(n)(xr) - torch.fft.fft(xr)).abs().max() < 1e-9


def test_normalized_hadamard_is_orthogonal():
    H = hadamard_butterfly(64, normalized=True).to_dense().detach()
    assert torch.allclose(H @ H.T, torch.eye(64, dtype=torch.float64), atol=1e-12)


def test_bit_reversal_permutation():
    assert bit_reversal_permutation(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    p = bit_reversal_permutation(1024)
    assert torch.equal(p[p], torch.arange(1024))  # an involution
    assert sorted(p.tolist()) == list(range(1024))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize(("n_in", "n_out"), [(16, 16), (10, 7), (5, 12), (1, 1)])
@pytest.mark.parametrize("permutation", ["bit_reversal", "identity"])
def test_butterfly_linear_equals_its_dense_weight(dtype, n_in, n_out, permutation):
    gen = torch.Generator().manual_seed(0)
    layer = ButterflyLinear(n_in, n_out, dtype=dtype, permutation=permutation, generator=gen)
    with torch.no_grad():
        layer.bias.normal_(generator=gen)
    x = torch.randn(4, 3, n_in, dtype=dtype, generator=gen)
    W = layer.to_dense()
    assert W.shape == (n_out, n_in)
    y = layer(x)
    assert y.shape == (4, 3, n_out)
    assert torch.allclose(y, x @ W.T + layer.bias_value(), atol=1e-12)


def test_butterfly_dense_weight_is_the_product_of_sparse_factors():
    """A naive reference: multiply the log2 N sparse factors (each I ⊗ B_k) and P densely."""
    n = 16
    layer = ButterflyLinear(n, bias=False, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(1))
    tw = layer.factors().detach().numpy()
    W = np.eye(n)[bit_reversal_permutation(n).numpy()]  # P: (P x)[i] = x[perm[i]]
    for level in range(layer.n_factors):
        k = 2 << level
        h = k // 2
        F = np.zeros((n, n))
        for j in range(n // k):
            for i in range(h):
                a, b = j * k + i, j * k + i + h
                blk = tw[level, j * h + i]
                F[a, a], F[a, b], F[b, a], F[b, b] = blk[0, 0], blk[0, 1], blk[1, 0], blk[1, 1]
        W = F @ W
    assert np.allclose(layer.to_dense().detach().numpy(), W, atol=1e-12)


def test_butterfly_has_2n_log2n_parameters():
    layer = ButterflyLinear(1024, bias=False)
    assert sum(p.numel() for p in layer.parameters()) == 2 * 1024 * 10
    complex_layer = ButterflyLinear(1024, bias=False, dtype=torch.complex64)
    assert complex_layer.factors().numel() == 2 * 1024 * 10


def test_random_init_keeps_the_expected_norm():
    gen = torch.Generator().manual_seed(0)
    norms = []
    for _ in range(20):
        layer = ButterflyLinear(256, bias=False, dtype=torch.float64, generator=gen)
        norms.append(float(layer.to_dense().detach().pow(2).sum()) / 256)
    assert 0.7 < np.mean(norms) < 1.3  # E ||W e_i||^2 = 1


def test_fit_butterfly_learns_the_dft_from_samples():
    res = fit_butterfly(torch.fft.fft, n=8, dtype=torch.complex64, steps=600, seed=0)
    assert res.rmse < 1e-4
    assert res.max_abs_error < 1e-3
    dense = res.layer.to_dense().detach().numpy().astype(np.complex128)
    assert np.abs(dense - dft_matrix(8)).max() < 1e-3
    assert res.history[0] > 100 * res.history[-1]


def test_fit_butterfly_from_a_matrix_and_from_inputs():
    H = torch.from_numpy(scipy.linalg.hadamard(8).astype(np.float64))
    X = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = fit_butterfly(H, permutation="identity", steps=800, lr=0.05, tol=1e-6)
    res_x = fit_butterfly(lambda a: a @ H.T, inputs=X, permutation="identity", steps=800, lr=0.05)
    assert res.layer.dtype == torch.float64
    assert res.rmse < 1e-6 and res.n_steps < 800  # stopped at tol
    assert torch.allclose(res_x.layer.to_dense().detach(), H, atol=1e-3)


def test_non_power_of_two_is_a_named_error():
    with pytest.raises(RepscopeValueError, match=r"n must be a power of two.*got 12\. Pad .* 16"):
        dft_butterfly(12)
    with pytest.raises(RepscopeValueError, match="n must be a power of two"):
        hadamard_butterfly(1)
    with pytest.raises(RepscopeValueError, match="n must be a power of two"):
        fit_butterfly(torch.eye(6))
    with pytest.raises(RepscopeValueError, match="n must be a power of two"):
        bit_reversal_permutation(3)


def test_bad_arguments_are_named_errors():
    with pytest.raises(RepscopeTypeError, match="dtype of dft_butterfly must be complex"):
        dft_butterfly(8, dtype=torch.float64)
    with pytest.raises(RepscopeTypeError, match="dtype of ButterflyLinear"):
        ButterflyLinear(8, dtype=torch.int64)
    with pytest.raises(RepscopeValueError, match="'permutation' parameter of ButterflyLinear"):
        ButterflyLinear(8, permutation="random")
    with pytest.raises(RepscopeValueError, match="in_features=8 entries; got shape"):
        ButterflyLinear(8)(torch.zeros(2, 7))
    with pytest.raises(RepscopeValueError, match="square matrix"):
        fit_butterfly(torch.zeros(4, 8))
    with pytest.raises(RepscopeValueError, match="needs n"):
        fit_butterfly(torch.fft.fft)
    with pytest.raises(RepscopeValueError, match="outputs must have the inputs' shape"):
        fit_butterfly(lambda a: a[:, :2], n=4)
