"""Task vectors and their diagnostics: cosines, sign conflicts, the OrthoReg penalty and the
weight-disentanglement error; the results of the task-vector diagnosis and of merge evaluation.

A task vector is ``tau = theta_finetuned - theta_base`` (Ilharco et al., 2023), tensor by tensor
over the floating-point entries of a state dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeValueError

if TYPE_CHECKING:
    import torch

__all__ = ["orthoreg_penalty", "task_vector"]


# --------------------------------------------------------------------------- inputs
def _state(x: Any, name: str) -> Mapping[str, torch.Tensor]:
    """``x`` (an ``nn.Module``, a state dict, a safetensors file or folder) as a state dict
    (W1's :func:`~repscope.weights._state.as_state_dict`; not copied, never written into)."""
    from repscope.weights._state import as_state_dict

    return as_state_dict(x, name=name)


def _check_pair(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                names: tuple[str, str]) -> None:
    """Same keys, shapes and dtypes, finite weights (W1's one checker)."""
    from repscope.weights._state import check_compatible

    check_compatible(a, b, names=names)


def _is_float(t: torch.Tensor) -> bool:
    return bool(t.is_floating_point())


def task_vector(finetuned: Any, base: Any) -> dict[str, torch.Tensor]:
    """The task vector ``tau = finetuned - base``, tensor by tensor.

    Parameters
    ----------
    finetuned, base : nn.Module, mapping of str to Tensor, or path
        Two models of one architecture (same keys, shapes and dtypes; finite weights).

    Returns
    -------
    dict of str to Tensor
        ``finetuned[k] - base[k]`` for every floating-point entry, new tensors (float32 for
        16-bit inputs, so small differences of bfloat16 weights are kept exactly; otherwise the
        inputs' dtype). Integer buffers (BatchNorm's ``num_batches_tracked``) have no task
        vector and are left out.

    Raises
    ------
    RepscopeValueError
        Different keys, shapes or dtypes, or a NaN/inf weight (named).
    """
    import torch

    ft, b = _state(finetuned, "finetuned"), _state(base, "base")
    _check_pair(ft, b, ("finetuned", "base"))
    out: dict[str, torch.Tensor] = {}
    for k, v in ft.items():
        if not _is_float(v):
            continue
        if v.dtype in (torch.float16, torch.bfloat16):
            out[k] = v.detach().float() - b[k].detach().float()
        else:
            out[k] = v.detach() - b[k].detach()
    return out


# --------------------------------------------------------------------------- OrthoReg
def orthoreg_penalty(delta_or_model: Any, base: Any = None, *,
                     squared: bool = False) -> torch.Tensor:
    """The OrthoReg loss ``sum_l ||G_l - I||_F`` over the 2-D weights (Liu et al., CVPR'26).

    ``G_l`` is the Gram matrix of ``dW_l = W_l - W0_l`` on its smaller side (``dW dW^T`` when
    ``dW`` has fewer rows than columns, otherwise ``dW^T dW``), so ``G_l`` is ``k x k`` with
    ``k = min(m, n)``. Each term is 0 exactly when ``dW_l`` has orthonormal rows (or columns) and
    is ``sqrt(k)`` at ``dW_l = 0``: the penalty pushes the singular values of every delta toward 1,
    a strong prior, so its weight in the total loss ``CE + lambda * penalty`` needs a sweep.

    Parameters
    ----------
    delta_or_model : nn.Module or mapping of str to Tensor
        With ``base=None``: the deltas themselves (a task vector). With ``base``: the model being
        fine-tuned (its trainable parameters, so the penalty is differentiable with respect to
        them) or its state dict.
    base : nn.Module, mapping or None
        The reference weights ``W0`` (detached; never receives gradients).
    squared : bool, default=False
        ``False`` sums the plain Frobenius norms, as the official code does (``modeling.py`` of
        the OrthoReg repositories); ``True`` sums their squares, as the LoRA README writes it.
        The plain norm has a gradient of bounded size; the squared one is smooth at ``G = I``.

    Returns
    -------
    Tensor
        A float scalar, differentiable with respect to the model's parameters (0-dim; ``0.0``
        when there is no 2-D weight). Computed in the weights' dtype, float32 at least.

    Raises
    ------
    RepscopeValueError
        ``base`` lacks a 2-D weight of the model, or their shapes differ.
    """
    import torch

    if base is None:
        deltas = _state(delta_or_model, "delta_or_model")
        pairs = [(k, v) for k, v in deltas.items() if v.ndim == 2 and _is_float(v)]
    else:
        w0 = _state(base, "base")
        if isinstance(delta_or_model, torch.nn.Module):
            current: dict[str, torch.Tensor] = {
                k: p for k, p in delta_or_model.named_parameters() if p.requires_grad}
        else:
            current = dict(_state(delta_or_model, "delta_or_model"))
        pairs = []
        for k, w in current.items():
            if w.ndim != 2 or not _is_float(w):
                continue
            if k not in w0:
                raise RepscopeValueError(
                    f"base: expected the reference weights of every 2-D weight of the model, "
                    f"but it has no {k!r}.")
            if tuple(w0[k].shape) != tuple(w.shape):
                raise RepscopeValueError(
                    f"base: weight {k!r} has shape {tuple(w0[k].shape)}, the model's has "
                    f"{tuple(w.shape)}.")
            pairs.append((k, w - w0[k].detach().to(device=w.device, dtype=w.dtype)))
    total: torch.Tensor | None = None
    for _, d in pairs:
        if d.dtype in (torch.float16, torch.bfloat16):
            d = d.float()
        m, n = d.shape
        gram = d @ d.T if m < n else d.T @ d
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        norm = torch.linalg.matrix_norm(gram - eye, ord="fro")  # gradient 0 (not NaN) at G = I
        term = norm * norm if squared else norm
        total = term if total is None else total + term
    if total is None:
        return torch.zeros((), dtype=torch.float32)
    return total
