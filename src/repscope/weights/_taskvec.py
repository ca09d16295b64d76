"""Task vectors and their diagnostics: cosines, sign conflicts, the OrthoReg penalty and the
weight-disentanglement error; the results of the task-vector diagnosis and of merge evaluation.

A task vector is ``tau = theta_finetuned - theta_base`` (Ilharco et al., 2023), tensor by tensor
over the floating-point entries of a state dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "MergeResult",
    "TaskVectorResult",
    "diagnose_task_vectors",
    "disentanglement_error",
    "evaluate_merges",
    "orthoreg_penalty",
    "sign_conflict_rate",
    "task_vector",
    "task_vector_cosines",
]


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


# --------------------------------------------------------------------------- diagnostics
def _vector_list(vectors: Any) -> tuple[list[str], list[Mapping[str, torch.Tensor]]]:
    """Names and state dicts of a sequence (names "0", "1", ...) or a mapping of task vectors."""
    import torch

    if isinstance(vectors, Mapping) and vectors and not any(
            isinstance(v, (torch.Tensor, np.ndarray)) for v in vectors.values()):
        # name -> state dict, module or path (a mapping of tensors is one state dict)
        names = [str(k) for k in vectors]
        vecs = [_state(v, f"vectors[{k!r}]") for k, v in vectors.items()]
    elif isinstance(vectors, Sequence) and not isinstance(vectors, str):
        names = [str(i) for i in range(len(vectors))]
        vecs = [_state(v, f"vectors[{i}]") for i, v in enumerate(vectors)]
    elif isinstance(vectors, Mapping):
        raise RepscopeValueError(
            "vectors: expected several models or task vectors (a list, or a mapping of names to "
            "state dicts, modules or paths); got a single state dict.")
    else:
        raise RepscopeValueError(
            f"vectors: expected a list or a mapping of task vectors (state dicts), got a "
            f"{type(vectors).__name__}.")
    if len(vecs) < 2:
        raise RepscopeValueError(f"vectors: expected at least 2 task vectors, got {len(vecs)}.")
    for i in range(1, len(vecs)):
        _check_pair(vecs[0], vecs[i], (f"vectors[{names[0]}]", f"vectors[{names[i]}]"))
    return names, vecs


def gram_update(gram: np.ndarray, tensors: Sequence[torch.Tensor]) -> None:
    """Add the float64 inner products of one entry of each task vector to ``gram`` (n x n)."""
    import torch

    flat = torch.stack([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    gram += (flat @ flat.T).numpy()


def sign_update(counts: np.ndarray, tensors: Sequence[torch.Tensor]) -> None:
    """Add one entry's ``[conflicting, eligible]`` coordinate counts to ``counts`` (see
    :func:`sign_conflict_rate`)."""
    import torch

    flat = torch.stack([t.detach().reshape(-1) for t in tensors])
    pos = (flat > 0).sum(0)
    neg = (flat < 0).sum(0)
    counts[0] += int(((pos > 0) & (neg > 0)).sum())
    counts[1] += int(((pos + neg) >= 2).sum())


def cosines_from_gram(gram: np.ndarray) -> np.ndarray:
    """Cosine matrix from a Gram matrix; a zero vector's row and column are NaN."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = gram / np.outer(norms, norms)
    cos[norms == 0, :] = np.nan
    cos[:, norms == 0] = np.nan
    return np.clip(cos, -1.0, 1.0)


def _float_keys(sd: Mapping[str, torch.Tensor]) -> list[str]:
    from repscope.weights._state import is_float, tensor_meta

    return [k for k in sd if is_float(tensor_meta(sd, k)[1])]


def task_vector_cosines(vectors: Any) -> np.ndarray:
    """Cosine similarity of every pair of task vectors, each flattened over all its
    floating-point entries.

    Parameters
    ----------
    vectors : sequence or mapping of state dicts
        Task vectors (:func:`task_vector`) with the same keys, shapes and dtypes.

    Returns
    -------
    ndarray of float64, shape (n, n)
        Symmetric, 1 on the diagonal; NaN in the row and column of an all-zero vector.
    """
    _, vecs = _vector_list(vectors)
    gram = np.zeros((len(vecs), len(vecs)))
    for k in _float_keys(vecs[0]):
        gram_update(gram, [v[k] for v in vecs])
    return cosines_from_gram(gram)


def sign_conflict_rate(vectors: Any) -> float:
    """The share of coordinates where the non-zero entries of the task vectors disagree in sign.

    A coordinate (one entry of one tensor) is *eligible* when at least two task vectors are
    non-zero there, and *conflicting* when among those non-zero entries at least one is
    positive and at least one negative. The rate is conflicting / eligible over every
    floating-point entry (NaN when no coordinate is eligible). For two dense, independent
    vectors with symmetric entries it is about 0.5; for vectors that agree, 0. This is the
    interference TIES's sign election resolves.

    Parameters
    ----------
    vectors : sequence or mapping of state dicts
        Task vectors with the same keys, shapes and dtypes.

    Returns
    -------
    float
    """
    _, vecs = _vector_list(vectors)
    counts = np.zeros(2, dtype=np.int64)
    for k in _float_keys(vecs[0]):
        sign_update(counts, [v[k] for v in vecs])
    return float(counts[0] / counts[1]) if counts[1] else float("nan")


def disentanglement_error(model: nn.Module, base: Any, vectors: Sequence[Any],
                          alphas: Sequence[float], inputs: Sequence[Any]) -> float:
    """The weight-disentanglement error ``xi(alpha)`` of Ortiz-Jimenez et al. (NeurIPS 2023).

    ``xi = sum_t E_{x in D_t} [ 1{ argmax f(x; theta_0 + alpha_t tau_t)
    != argmax f(x; theta_0 + sum_i alpha_i tau_i) } ]``: for each task ``t``, on that task's
    inputs, the share of predictions that adding the *other* task vectors changes; summed over
    the tasks (0 when the tasks are perfectly disentangled, at most the number of tasks). The
    paper's ``dist`` is this prediction disagreement for classification.

    Parameters
    ----------
    model : nn.Module
        The architecture (its own weights are not used or changed; the weights are swapped in
        with ``torch.func.functional_call``).
    base : nn.Module, state dict or path
        ``theta_0``.
    vectors : sequence of state dicts
        The task vectors ``tau_t`` (:func:`task_vector`).
    alphas : sequence of float
        One coefficient per task vector.
    inputs : sequence of tensors
        ``inputs[t]``: inputs of task ``t`` (the examples along the first axis).

    Returns
    -------
    float
    """
    import torch
    from torch.func import functional_call

    n = len(vectors)
    if len(alphas) != n or len(inputs) != n:
        raise RepscopeValueError(
            f"alphas, inputs: expected one per task vector ({n}), got {len(alphas)} alphas "
            f"and {len(inputs)} input sets.")
    b = _state(base, "base")
    vecs = [_state(v, f"vectors[{i}]") for i, v in enumerate(vectors)]
    for i, v in enumerate(vecs):
        missing = [k for k in v if k not in b]
        if missing:
            raise RepscopeValueError(
                f"vectors[{i}]: key {missing[0]!r} is not in base; expected task vectors of it.")

    def weights(coefs: Sequence[float]) -> dict[str, torch.Tensor]:
        out = {k: t for k, t in b.items()}
        for c, v in zip(coefs, vecs):
            if c == 0:
                continue
            for k, d in v.items():
                out[k] = out[k] + float(c) * d.to(out[k].dtype)
        return out

    full = weights(alphas)
    xi = 0.0
    with torch.no_grad():
        for t in range(n):
            x = torch.as_tensor(inputs[t])
            single = weights([alphas[i] if i == t else 0.0 for i in range(n)])
            p_single = functional_call(model, single, (x,)).argmax(-1)
            p_full = functional_call(model, full, (x,)).argmax(-1)
            xi += float((p_single != p_full).double().mean())
    return xi


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TaskVectorResult(RecordedResult):
    """Task-vector diagnostics (analysis ``"weights_task_vectors"``).

    One record (layer ``""``) with the keys ``names`` (list of str), ``cosines`` (n x n list of
    float, NaN as "nan"), ``sign_conflict_rate`` (float), ``norms`` (list of float, the L2 norm
    of each task vector over all its floating-point entries).

    Attributes
    ----------
    names : tuple of str
    cosines : ndarray of float64, shape (n, n)
    sign_conflict_rate : float
    norms : ndarray of float64, shape (n,)
    """

    names: tuple[str, ...]
    cosines: np.ndarray
    sign_conflict_rate: float
    norms: np.ndarray
    analysis: ClassVar[str] = "weights_task_vectors"

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        from repscope.results import to_jsonable

        return [("", {"names": list(self.names), "cosines": to_jsonable(self.cosines),
                      "sign_conflict_rate": to_jsonable(float(self.sign_conflict_rate)),
                      "norms": to_jsonable(self.norms)})]


def diagnose_task_vectors(models: Any, base: Any, *, progress: bool = True) -> TaskVectorResult:
    """Cosines, sign-conflict rate and norms of the task vectors of fine-tunes of ``base``, in
    one pass over the tensors (one entry of each model in memory at a time).

    Parameters
    ----------
    models : sequence or mapping (name -> model) of nn.Module, state dict or path
        The fine-tuned models (at least 2).
    base : nn.Module, state dict or path
    progress : bool, default=True

    Returns
    -------
    TaskVectorResult
    """
    from repscope._progress import progress_for

    names, sds = _vector_list(models)
    b = _state(base, "base")
    for name, sd in zip(names, sds):
        _check_pair(b, sd, ("base", f"models[{name}]"))
    n = len(sds)
    gram = np.zeros((n, n))
    counts = np.zeros(2, dtype=np.int64)
    keys = _float_keys(b)
    with progress_for(progress, "task-vector diagnostics", len(keys)) as advance:
        for k in keys:
            bk = b[k].double()
            deltas = [sd[k].double() - bk for sd in sds]
            gram_update(gram, deltas)
            sign_update(counts, deltas)
            advance(1)
    rate = float(counts[0] / counts[1]) if counts[1] else float("nan")
    return TaskVectorResult(tuple(names), cosines_from_gram(gram), rate,
                            np.sqrt(np.clip(np.diag(gram), 0, None)))


@dataclass(frozen=True)
class MergeResult(RecordedResult):
    """Merged models evaluated on each task (analysis ``"weights_merge"``).

    One record per (method, task), layer = the method, with the keys ``method`` (str),
    ``task`` (str), ``params`` (str, the method's parameters as JSON), ``loss_before``,
    ``accuracy_before`` (the task's own fine-tuned model on the task's data), ``loss_after``,
    ``accuracy_after`` (the merged model on the same data), ``loss_base``, ``accuracy_base``
    (the base model; NaN without a base). Losses are mean cross-entropies.

    Attributes
    ----------
    rows : tuple of dict
        The record values, in order.
    """

    rows: tuple[dict[str, Any], ...]
    analysis: ClassVar[str] = "weights_merge"

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        from repscope.results import to_jsonable

        return [(str(r["method"]), to_jsonable(dict(r))) for r in self.rows]


def _evaluate_state(model: nn.Module, sd: Mapping[str, torch.Tensor], X: Any,
                    y: Any) -> tuple[float, float]:
    import torch
    from torch.func import functional_call

    x = torch.as_tensor(X)
    t = torch.as_tensor(y)
    with torch.no_grad():
        logits = functional_call(model, dict(sd), (x,))
        loss = torch.nn.functional.cross_entropy(logits.double(), t)
        acc = (logits.argmax(-1) == t).double().mean()
    return float(loss), float(acc)


def evaluate_merges(model: nn.Module, models: Any, tasks: Mapping[str, tuple[Any, Any]],
                    methods: Mapping[str, Mapping[str, Any]] | Sequence[str], *,
                    base: Any = None, progress: bool = True) -> MergeResult:
    """Merge fine-tunes with several methods and evaluate each merge on every task.

    Parameters
    ----------
    model : nn.Module
        The architecture, a classifier returning logits (weights are swapped in with
        ``functional_call``; its own are not used or changed).
    models : sequence of nn.Module, state dict or path
        The fine-tuned models, one per task, in the order of ``tasks``.
    tasks : mapping of str to (X, y)
        Each task's held-out inputs and integer labels.
    methods : mapping of method name to parameters, or sequence of names
        The merges to evaluate (default parameters for a bare name). A method that takes no
        base gets none even when ``base`` is given.
    base : nn.Module, state dict, path or None
        The shared base (needed by task arithmetic, TIES, DARE, model stock).
    progress : bool, default=True
        A progress bar over the methods.

    Returns
    -------
    MergeResult
    """
    import json

    from repscope._progress import progress_for
    from repscope.weights._merge import MERGE_METHODS, merge_state_dicts

    sds = [_state(m, f"models[{i}]") for i, m in enumerate(models)]
    if len(sds) != len(tasks):
        raise RepscopeValueError(
            f"models, tasks: expected one fine-tuned model per task ({len(tasks)}), got "
            f"{len(sds)}.")
    plan = ({m: {} for m in methods} if not isinstance(methods, Mapping)
            else {m: dict(p) for m, p in methods.items()})
    b = _state(base, "base") if base is not None else None
    before = [_evaluate_state(model, sd, *tasks[name]) for name, sd in zip(tasks, sds)]
    at_base = ([_evaluate_state(model, b, *tasks[name]) for name in tasks] if b is not None
               else [(float("nan"), float("nan"))] * len(tasks))
    rows: list[dict[str, Any]] = []
    with progress_for(progress, "merges", len(plan)) as advance:
        for method, params in plan.items():
            use_base = b if MERGE_METHODS.meta(method)["needs_base"] != "no" else None
            merged = merge_state_dicts(method, sds, base=use_base, progress=False, **params)
            shown = {k: v for k, v in params.items() if not isinstance(v, (list, tuple))
                     or all(isinstance(x, (int, float)) for x in v)}
            for i, name in enumerate(tasks):
                loss, acc = _evaluate_state(model, merged, *tasks[name])
                rows.append({"method": method, "task": name,
                             "params": json.dumps(shown, sort_keys=True, default=str),
                             "loss_before": before[i][0], "accuracy_before": before[i][1],
                             "loss_after": loss, "accuracy_after": acc,
                             "loss_base": at_base[i][0], "accuracy_base": at_base[i][1]})
            advance(1)
    return MergeResult(tuple(rows))
