"""Sparse autograd kernels for the TopK family: gradients that only touch the k active latents.

A TopK SAE with ``d_sae`` latents and ``k`` active ones needs one dense matmul per step (the
encoder pre-activations, to choose the k). Everything else can be sparse:

- :func:`sparse_decode` — ``values @ W_dec[indices]`` as :func:`torch.nn.functional.embedding_bag`
  (``n k d`` multiply-adds instead of ``n d_sae d``); its backward computes the value gradient as a
  sampled dense-dense product (:func:`torch.sparse.sampled_addmm`) and the decoder gradient as a
  CSR product ``S^T @ grad`` over the active entries only.
- :func:`sparse_gather_linear` — the pre-activations ``(x @ W + b)[i, indices[i]]`` whose values
  were already computed (the forward is free); its backward builds the same CSR matrix of the
  incoming gradient and gives ``W``'s gradient as ``(S^T @ x)^T``, ``b``'s by ``bincount``, and
  ``x``'s as ``S @ W^T`` — again ``n k d`` work instead of ``n d_sae d``.

Both agree with the dense autograd reference to float32 rounding (tested to 1e-5).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["sparse_decode", "sparse_gather_linear"]


def _csr(rows: int, cols: int, indices: Tensor, values: Tensor) -> Tensor:
    """(rows, cols) CSR matrix with ``indices.shape[1]`` entries per row."""
    n, k = indices.shape
    crow = torch.arange(0, n * k + 1, k, device=indices.device, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            crow, indices.reshape(-1), values.reshape(-1), (rows, cols), check_invariants=False
        )


def _csr_transposed(n: int, m: int, indices: Tensor, values: Tensor) -> Tensor:
    """The (m, n) CSR matrix ``S^T`` of the (n, m) matrix ``S[i, indices[i, j]] += values[i, j]``."""
    k = indices.shape[1]
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=m)
    crow = torch.zeros(m + 1, dtype=torch.int64, device=indices.device)
    torch.cumsum(counts, 0, out=crow[1:])
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(
            crow, rows[order], values.reshape(-1)[order], (m, n), check_invariants=False
        )


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, values: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(values, indices, weight)
        return torch.nn.functional.embedding_bag(
            indices, weight, per_sample_weights=values.to(weight.dtype), mode="sum"
        )

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        values, indices, weight = ctx.saved_tensors
        n, _ = indices.shape
        m = weight.shape[0]
        grad = grad.contiguous()
        g_values = g_weight = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(n, m, indices, torch.zeros_like(values, dtype=grad.dtype))
            g_values = (
                torch.sparse.sampled_addmm(pattern, grad, weight.T, beta=0.0)
                .values()
                .reshape(indices.shape)
                .to(values.dtype)
            )
        if ctx.needs_input_grad[2]:
            st = _csr_transposed(n, m, indices, values.to(grad.dtype))
            g_weight = (st @ grad).to(weight.dtype)
        return g_values, None, g_weight


def sparse_decode(values: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
    """``sum_j values[i, j] * weight[indices[i, j]]`` for each row ``i``, with sparse gradients.

    Parameters
    ----------
    values : Tensor of shape (n, k)
    indices : Tensor of int64, shape (n, k)
    weight : Tensor of shape (m, d)

    Returns
    -------
    Tensor of shape (n, d)
    """
    out: Tensor = _SparseDecode.apply(values, indices, weight)
    return out


class _SparseGatherLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        shift: Tensor | None,
        indices: Tensor,
        gathered: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(x, weight, indices, shift)
        ctx.has_bias = bias is not None
        ctx.has_shift = shift is not None
        return gathered.clone()

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, None, None]:
        x, weight, indices, shift = ctx.saved_tensors
        n = x.shape[0]
        m = weight.shape[1]
        g_x = g_w = g_b = g_shift = None
        grad = grad.contiguous()
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        need_shift = ctx.has_shift and ctx.needs_input_grad[3]
        if ctx.needs_input_grad[1]:
            x_in = x - shift if ctx.has_shift else x
            st = _csr_transposed(n, m, indices, grad.to(x.dtype))
            g_w = (st @ x_in).T.to(weight.dtype)
        if need_b or need_shift:
            # per-latent sums of the incoming gradient: the bias gradient, and through
            # W the (summed) gradient of the input shift
            col = torch.bincount(
                indices.reshape(-1), weights=grad.reshape(-1).to(torch.float64), minlength=m
            )
            if need_b:
                g_b = col.to(weight.dtype)
            if need_shift:
                g_shift = -(weight @ col.to(weight.dtype))
        if ctx.needs_input_grad[0]:
            s = _csr(n, m, indices, grad.to(weight.dtype))
            g_x = (s @ weight.T).to(x.dtype)
        return g_x, g_w, g_b, g_shift, None, None


def sparse_gather_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    indices: Tensor,
    gathered: Tensor,
    *,
    shift: Tensor | None = None,
) -> Tensor:
    """``((x - shift) @ weight + bias).gather(1, indices)``, given its already computed value.

    The forward returns ``gathered`` (computed by the caller without gradient, typically by the
    top-k selection); the backward is the gradient of the expression above, computed through
    sparse products over the selected entries only. Passing the input shift (an SAE's decoder
    bias) separately makes its gradient a matrix-vector product instead of an (n, d) one.

    Parameters
    ----------
    x : Tensor of shape (n, d)
    weight : Tensor of shape (d, m)
    bias : Tensor of shape (m,) or None
    indices : Tensor of int64, shape (n, k)
    gathered : Tensor of shape (n, k)
        Must equal ``((x - shift) @ weight + bias).gather(1, indices)`` (not checked).
    shift : Tensor of shape (d,), optional
    """
    out: Tensor = _SparseGatherLinear.apply(x, weight, bias, shift, indices, gathered)
    return out
