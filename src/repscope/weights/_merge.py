"""One registry of merge methods, one function per tensor (as mergekit's decorator).

Every method is a function ``fn(tensors, base, *, key, **params) -> Tensor`` that merges one
tensor: ``tensors`` holds that entry of each model (same shape and dtype; a fresh list the
function may overwrite entries of, so a streamed input can be freed early, but never a tensor
it holds), ``base`` the base
model's entry or ``None``, ``key`` the state-dict key (DARE derives its random stream from it).
:func:`register_merge` records what a method needs (a base or not, how many models, its
parameters and defaults, the paper); :func:`merge_state_dicts` validates the parameters once and
runs the function over every key; ``weights._stream.merge_files`` runs the same functions over
safetensors files tensor by tensor.

The semantics follow mergekit 0.1.5 (``mergekit/merge_methods/*.py``, ``mergekit/sparsify.py``):

* **linear**: ``sum_i w_i x_i / sum_i w_i`` (``normalize=False``: no division).
* **task_arithmetic**: ``base + lambda * sum_i w_i tau_i`` with ``tau_i = x_i - base``
  (``normalize=True`` divides by ``sum_i w_i``, as mergekit; default off).
* **ties**: each ``tau_i`` keeps its ``k = max(1, int(density * numel))`` largest magnitudes
  (when magnitudes tie across the cut, torch's descending ``argsort`` picks, as in mergekit, so
  the kept set is mergekit's on the same torch build; that fallback sorts the whole tensor and
  is TIES's memory peak), is multiplied by ``w_i``; the elected sign is the sign of ``sum_i w_i tau_i`` (``>= 0`` is +); the
  entries agreeing with it are summed and divided by the sum of the weights of the agreeing
  models (``normalize=True``, the default), then multiplied by ``lambda``.
* **dare_linear** / **dare_ties**: each ``tau_i`` keeps every entry with probability ``density``
  and is rescaled (mergekit: so its L1 norm is unchanged, ``rescale="l1"``, the default; the
  DARE paper's ``1 / density`` is ``rescale="density"``), then combined as task arithmetic or
  with the TIES sign election (``normalize`` off by default, as mergekit).
  **Difference from mergekit:** mergekit draws every mask from torch's global generator, seeded
  once (``--random-seed``), so a mask depends on the order the executor happens to visit the
  tensors in. Here each (tensor, model) pair has its own generator seeded from ``seed``, the
  model's index and the key: the same seed gives the same merge whatever the order, streamed or
  in memory, but not mergekit's masks.
* **slerp**: two models, ``t`` from the first (0) to the second (1); the angle between the whole
  flattened tensors (each normalised, norms below ``eps = 1e-8`` taken as 1); when
  ``|cos| > 0.9995`` (mergekit's ``dot_threshold``) it falls back to linear interpolation.
* **model_stock** (Jang et al., 2024): per tensor, ``cos`` = the mean of the pairwise cosines
  of the fine-tunes' deltas from the base (norm products clamped at 1e-6, as mergekit),
  ``t = k cos / ((k - 1) cos + 1)`` for ``k`` fine-tunes (0 when the denominator is below 1e-6),
  result ``t * mean_i x_i + (1 - t) * base``.
* **fisher** (Matena & Raffel, 2022): ``sum_i w_i F_i x_i / sum_i w_i F_i`` with per-model
  diagonal Fisher estimates ``F_i`` (:func:`diagonal_fisher`) plus ``eps`` (default 1e-8), so
  entries without Fisher mass fall back to the weighted average; keys with no Fisher estimate
  (buffers) get the weighted average.

Arithmetic runs in float32 (float64 for float64 inputs), as mergekit; results come back in the
inputs' dtype. Entries that are not floating point (integer buffers) are taken from the base, or
from the first model without a base.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "MERGE_METHODS",
    "diagonal_fisher",
    "merge_state_dicts",
    "merge_tensor",
    "prepare_params",
    "register_merge",
]

MergeFn = Callable[..., "torch.Tensor"]

#: name -> per-tensor merge function; metadata: ``needs_base`` ("yes", "no", "optional"),
#: ``min_models``, ``max_models`` (None: any), ``params`` (name -> default; per-model
#: parameters marked in ``per_model``), ``tensor_params`` (parameters holding one state dict
#: per model, sliced per key), ``paper``.
MERGE_METHODS: Registry[MergeFn] = Registry("merge method", fold=lambda s: s.lower().replace("-", "_"))


def register_merge(
    name: str, *, needs_base: str, params: Mapping[str, Any], paper: str,
    per_model: tuple[str, ...] = (), tensor_params: tuple[str, ...] = (),
    min_models: int = 1, max_models: int | None = None,
) -> Callable[[MergeFn], MergeFn]:
    """Register a per-tensor merge function (decorator).

    Parameters
    ----------
    name : str
        The method's name (``merge_state_dicts("ties", ...)``).
    needs_base : {"yes", "no", "optional"}
        Whether the method takes a base model.
    params : mapping
        Every parameter the method takes and its default.
    paper : str
        Where the method comes from (a reference URL).
    per_model : tuple of str
        Parameters given per model (a number broadcasts to every model).
    tensor_params : tuple of str
        Parameters holding one state dict per model (Fisher estimates), sliced per key.
    min_models, max_models : int
        How many models (besides the base) the method merges.
    """
    if needs_base not in ("yes", "no", "optional"):
        raise RepscopeValueError(
            f"needs_base: expected 'yes', 'no' or 'optional', got {needs_base!r}.")
    return MERGE_METHODS.register(
        name, needs_base=needs_base, params=dict(params), paper=paper, per_model=per_model,
        tensor_params=tensor_params, min_models=min_models, max_models=max_models)


# --------------------------------------------------------------------------- helpers
def _work_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``max(1, int(density * numel))`` largest magnitudes of ``delta`` (in place;
    mergekit's ``magnitude``).

    The k-th largest magnitude is found by selection; only when several entries tie with it
    across the cut (deltas of float32 weights take discrete values, so this happens) is the
    kept set decided as mergekit does, by torch's descending ``argsort`` of the float32
    magnitudes, so the result is mergekit's on the same torch build."""
    import torch

    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return delta.zero_()
    n = delta.numel()
    k = max(1, int(density * n))
    mag = delta.abs().reshape(-1)
    if mag.dtype != torch.float32 and mag.dtype != torch.float64:
        mag = mag.float()
    threshold = torch.kthvalue(mag, n - k + 1).values
    keep = mag >= threshold
    if int(keep.sum()) != k:  # ties straddle the cut: mergekit's sort decides
        del keep
        order = torch.argsort(mag.float(), descending=True)[:k]
        keep = torch.zeros(n, dtype=torch.bool)
        keep[order] = True
        del order
    del mag
    return delta.mul_(keep.reshape(delta.shape))


def _seed_for(seed: int, index: int, key: str) -> int:
    digest = hashlib.blake2b(f"{int(seed)}/{index}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _dare_drop(delta: torch.Tensor, density: float, rescale: str, seed: int, index: int,
               key: str) -> torch.Tensor:
    """Keep each entry with probability ``density`` (its own generator), then rescale."""
    import torch

    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    gen = torch.Generator(device="cpu").manual_seed(_seed_for(seed, index, key))
    mask = torch.bernoulli(torch.full(delta.shape, float(density), dtype=delta.dtype), generator=gen)
    masked = delta * mask.to(delta.device)
    if rescale == "density":
        return masked / density
    if rescale == "l1":
        before, after = delta.abs().sum(), masked.abs().sum()
        if before < 1e-7 or after < 1e-7:  # mergekit's eps
            return masked
        return masked * (before / after)
    return masked


def _deltas_in_place(tensors: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    """Replace each entry of ``tensors`` (the caller's list, never the tensors themselves) by
    its delta from ``base`` in the working dtype, so a streamed input is freed as soon as its
    delta exists; returns the base in the working dtype."""
    b = base.to(_work_dtype(base))
    for i in range(len(tensors)):
        tensors[i] = tensors[i].to(b.dtype) - b
    return b


def _combine(deltas: list[torch.Tensor], weights: Sequence[float], *, consensus: bool,
             normalize: bool, lambda_: float) -> torch.Tensor:
    """mergekit's generalized task arithmetic: weight, elect signs, sum, divide, scale.

    The same float operations as mergekit's stacked version (products, then sums in model
    order), done in place on ``deltas`` (fresh tensors the caller owns; the list is emptied)
    so that one tensor per model plus two running ones are held."""
    import torch

    n = len(deltas)
    for d, w in zip(deltas, weights):
        d.mul_(float(w))
    if not consensus:
        mixed = deltas[0]
        for i in range(1, n):
            mixed.add_(deltas[i])
            deltas[i] = torch.empty(0)
        deltas.clear()
        total_w = float(torch.tensor(list(weights), dtype=mixed.dtype).sum())
        if normalize:
            mixed.div_(total_w if abs(total_w) >= 1e-8 else 1.0)
    else:
        majority = deltas[0].clone()
        for i in range(1, n):
            majority.add_(deltas[i])
        zero = majority == 0
        majority.sign_()
        majority[zero] = 1  # a sum >= 0 elects +
        del zero
        div = torch.zeros_like(majority)
        for d, w in zip(deltas, weights):
            agree = d.sign() == majority
            d.mul_(agree)
            div.add_(agree.to(div.dtype), alpha=float(w))
            del agree
        del majority
        mixed = deltas[0]
        for i in range(1, n):
            mixed.add_(deltas[i])
            deltas[i] = torch.empty(0)
        deltas.clear()
        div[div == 0] = 1
        if normalize:
            mixed.div_(div)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed


# --------------------------------------------------------------------------- methods
@register_merge("linear", needs_base="no", params={"weights": 1.0, "normalize": True},
                per_model=("weights",), paper="https://arxiv.org/abs/2203.05482")
def _linear(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
            weights: Sequence[float], normalize: bool) -> torch.Tensor:
    import torch

    dt = _work_dtype(tensors[0])
    out = torch.zeros(tensors[0].shape, dtype=dt)
    for t, w in zip(tensors, weights):
        out.add_(t.to(dt), alpha=float(w))
    if normalize:
        out.div_(float(sum(weights)))
    return out


@register_merge("task_arithmetic", needs_base="yes",
                params={"weights": 1.0, "lambda_": 1.0, "normalize": False},
                per_model=("weights",), paper="https://arxiv.org/abs/2212.04089")
def _task_arithmetic(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
                     weights: Sequence[float], lambda_: float, normalize: bool) -> torch.Tensor:
    assert base is not None
    b = _deltas_in_place(tensors, base)
    return _combine(tensors, weights, consensus=False, normalize=normalize,
                    lambda_=lambda_).add_(b)


@register_merge("ties", needs_base="yes",
                params={"weights": 1.0, "density": 1.0, "lambda_": 1.0, "normalize": True},
                per_model=("weights", "density"), paper="https://arxiv.org/abs/2306.01708")
def _ties(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
          weights: Sequence[float], density: Sequence[float], lambda_: float,
          normalize: bool) -> torch.Tensor:
    assert base is not None
    b = base.to(_work_dtype(base))
    for i, d in enumerate(density):  # one input at a time: trimmed before the next is read
        tensors[i] = _magnitude(tensors[i].to(b.dtype) - b, float(d))
    return _combine(tensors, weights, consensus=True, normalize=normalize,
                    lambda_=lambda_).add_(b)


def _dare(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str, consensus: bool,
          weights: Sequence[float], density: Sequence[float], lambda_: float, normalize: bool,
          rescale: str, seed: int) -> torch.Tensor:
    assert base is not None
    if rescale not in ("l1", "density", "none"):
        raise RepscopeValueError(
            f"rescale: expected 'l1' (mergekit), 'density' (1/density, the DARE paper) or "
            f"'none', got {rescale!r}.")
    b = base.to(_work_dtype(base))
    for i, d in enumerate(density):
        tensors[i] = _dare_drop(tensors[i].to(b.dtype) - b, float(d), rescale, seed, i, key)
    return _combine(tensors, weights, consensus=consensus, normalize=normalize,
                    lambda_=lambda_).add_(b)


_DARE_PARAMS = {"weights": 1.0, "density": 1.0, "lambda_": 1.0, "normalize": False,
                "rescale": "l1", "seed": 0}


@register_merge("dare_linear", needs_base="yes", params=_DARE_PARAMS,
                per_model=("weights", "density"), paper="https://arxiv.org/abs/2311.03099")
def _dare_linear(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
                 **params: Any) -> torch.Tensor:
    return _dare(tensors, base, key=key, consensus=False, **params)


@register_merge("dare_ties", needs_base="yes", params=_DARE_PARAMS,
                per_model=("weights", "density"), paper="https://arxiv.org/abs/2311.03099")
def _dare_ties(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
               **params: Any) -> torch.Tensor:
    return _dare(tensors, base, key=key, consensus=True, **params)


@register_merge("slerp", needs_base="no", params={"t": 0.5}, min_models=2, max_models=2,
                paper="https://dl.acm.org/doi/10.1145/325165.325242")
def _slerp(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
           t: float) -> torch.Tensor:
    import torch

    dt = _work_dtype(tensors[0])
    a, b = tensors[0].to(dt).reshape(-1), tensors[1].to(dt).reshape(-1)
    t = float(t)
    if a.numel() == 0:
        return ((1 - t) * a + t * b).reshape(tensors[0].shape)
    eps, threshold = 1e-8, 0.9995
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
    if abs(dot) > threshold:
        out = (1 - t) * a + t * b
    else:
        theta = torch.acos(torch.tensor(dot, dtype=dt))
        s = torch.sin(theta)
        out = (torch.sin((1 - t) * theta) / s) * a + (torch.sin(t * theta) / s) * b
    return out.reshape(tensors[0].shape)


@register_merge("model_stock", needs_base="yes", params={}, min_models=2,
                paper="https://arxiv.org/abs/2403.19522")
def _model_stock(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
                 key: str) -> torch.Tensor:
    import torch

    assert base is not None
    dt = _work_dtype(base)
    w0 = base.to(dt).reshape(-1)
    ws = [t.to(dt).reshape(-1) for t in tensors]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, oa in enumerate(offsets):
        for ob in offsets[i + 1:]:
            norm = torch.linalg.vector_norm(oa) * torch.linalg.vector_norm(ob)
            cosines.append(((oa * ob).sum() / norm.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean()
    k = len(ws)
    denom = 1 + (k - 1) * cos
    tt = torch.zeros_like(cos) if float(denom.abs()) < 1e-6 else k * cos / denom
    average = sum(ws[1:], ws[0]) / k
    return (tt * average + (1 - tt) * w0).reshape(base.shape)


@register_merge("fisher", needs_base="no", params={"fishers": None, "weights": 1.0, "eps": 1e-8},
                per_model=("weights",), tensor_params=("fishers",),
                paper="https://arxiv.org/abs/2111.09832")
def _fisher(tensors: list[torch.Tensor], base: torch.Tensor | None, *, key: str,
            fishers: Sequence[torch.Tensor] | None, weights: Sequence[float],
            eps: float) -> torch.Tensor:
    import torch

    dt = _work_dtype(tensors[0])
    if fishers is None:
        return _linear(tensors, None, key=key, weights=weights, normalize=True)
    num = torch.zeros(tensors[0].shape, dtype=dt)
    den = torch.zeros(tensors[0].shape, dtype=dt)
    for t, f, w in zip(tensors, fishers, weights):
        fw = (f.to(dt) + eps) * float(w)
        num.add_(fw * t.to(dt))
        den.add_(fw)
    return num / den


# --------------------------------------------------------------------------- driver
def prepare_params(method: str, n_models: int, has_base: bool,
                   params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check ``params`` against the method's metadata and fill the defaults.

    Returns the canonical method name and the full parameters (per-model ones as lists of
    ``n_models`` numbers). ``lambda`` is accepted for ``lambda_`` (mergekit's spelling).

    Raises
    ------
    UnknownNameError
        An unknown method.
    RepscopeValueError
        An unknown parameter, a per-model list of the wrong length, a missing or unexpected
        base, or too few / too many models.
    """
    name = MERGE_METHODS.canonical(method)
    meta = MERGE_METHODS.meta(name)
    given = dict(params)
    if "lambda" in given:
        given["lambda_"] = given.pop("lambda")
    unknown = sorted(set(given) - set(meta["params"]))
    if unknown:
        known = ", ".join(sorted(meta["params"])) or "none"
        raise RepscopeValueError(
            f"merge method {name!r}: unknown parameter {unknown[0]!r} (it takes: {known}).")
    if meta["needs_base"] == "yes" and not has_base:
        raise RepscopeValueError(f"base: merge method {name!r} needs a base model, none came.")
    if meta["needs_base"] == "no" and has_base:
        raise RepscopeValueError(
            f"base: merge method {name!r} does not use a base model; leave it out.")
    lo, hi = meta["min_models"], meta["max_models"]
    if n_models < lo or (hi is not None and n_models > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
        raise RepscopeValueError(
            f"models: merge method {name!r} merges {want} models, {n_models} came.")
    full = {**meta["params"], **given}
    for p in meta["per_model"]:
        v = full[p]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            full[p] = [float(v)] * n_models
        else:
            vals = [float(x) for x in v]
            if len(vals) != n_models:
                raise RepscopeValueError(
                    f"{p}: expected one number per model ({n_models}), got {len(vals)}.")
            full[p] = vals
    if "density" in full and any(not 0 <= d <= 1 for d in full["density"]):
        raise RepscopeValueError(f"density: expected numbers in [0, 1], got {full['density']}.")
    if name == "linear" and full["normalize"] and abs(sum(full["weights"])) < 1e-12:
        raise RepscopeValueError("weights: with normalize, the weights must not sum to 0.")
    for p in meta["tensor_params"]:
        if full[p] is not None and len(full[p]) != n_models:
            raise RepscopeValueError(
                f"{p}: expected one state dict per model ({n_models}), got {len(full[p])}.")
    return name, full


def merge_tensor(name: str, key: str, tensors: list[torch.Tensor], base: torch.Tensor | None,
                 params: Mapping[str, Any]) -> torch.Tensor:
    """Merge one entry with a method and parameters from :func:`prepare_params`; the result
    has the inputs' dtype. Non-floating entries come from the base (or the first model)."""
    ref = base if base is not None else tensors[0]
    if not ref.is_floating_point():
        return ref.clone()
    meta = MERGE_METHODS.meta(name)
    call = dict(params)
    for p in meta["tensor_params"]:
        if call[p] is not None:
            per = [m.get(key) for m in call[p]]
            call[p] = None if any(x is None for x in per) else per
    out = MERGE_METHODS.get(name)(tensors, base, key=key, **call)
    return out.to(ref.dtype).contiguous()


def merge_state_dicts(method: str, models: Sequence[Any], *, base: Any = None,
                      progress: bool = True, **params: Any) -> dict[str, torch.Tensor]:
    """Merge models with a registered method, tensor by tensor.

    Parameters
    ----------
    method : str
        A name in :data:`MERGE_METHODS`: linear, task_arithmetic, ties, dare_linear, dare_ties,
        slerp, model_stock, fisher.
    models : sequence of nn.Module, state dict or path
        The models to merge (same keys, shapes and dtypes; finite weights).
    base : nn.Module, state dict, path or None
        The base the task vectors are taken from (methods that need one).
    progress : bool, default=True
        Show a progress bar over the tensors.
    **params
        The method's parameters (``MERGE_METHODS.meta(method)["params"]`` lists them with their
        defaults); per-model ones (``weights``, ``density``) take a number or one per model.

    Returns
    -------
    dict of str to Tensor
        The merged state dict (new tensors; the inputs are not modified).

    Raises
    ------
    RepscopeValueError
        Incompatible models (keys, shapes, dtypes), NaN/inf weights, or bad parameters.
    """
    from repscope._progress import progress_for
    from repscope.weights._taskvec import _check_pair, _state

    if isinstance(models, Mapping) or not isinstance(models, Sequence) or isinstance(models, str):
        raise RepscopeTypeError(
            f"models: expected a list of models or state dicts, got {type(models).__name__}.")
    sds = [_state(m, f"models[{i}]") for i, m in enumerate(models)]
    b = _state(base, "base") if base is not None else None
    name, full = prepare_params(method, len(sds), b is not None, params)
    ref, ref_name = (b, "base") if b is not None else (sds[0], "models[0]")
    for i, sd in enumerate(sds):
        if sd is not ref:
            _check_pair(ref, sd, (ref_name, f"models[{i}]"))
    if len(sds) == 1 and b is None:
        _check_pair(sds[0], sds[0], ("models[0]", "models[0]"))
    out: dict[str, torch.Tensor] = {}
    with progress_for(progress, f"merging ({name})", len(ref)) as advance:
        for key in ref:
            out[key] = merge_tensor(name, key, [sd[key] for sd in sds],
                                    b[key] if b is not None else None, full)
            advance(1)
    return out


# --------------------------------------------------------------------------- Fisher
def diagonal_fisher(model: nn.Module, batches: Iterable[tuple[Any, Any]],
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of ``model``'s trainable parameters.

    ``F = mean over examples of (d loss(x, y) / d theta)^2``, with per-example gradients
    (``torch.func``: ``vmap`` of ``grad`` over each batch), as Fisher-weighted averaging uses
    (Matena & Raffel, 2022; the empirical Fisher, with the given labels).

    Parameters
    ----------
    model : nn.Module
        Its parameters are read, not changed (evaluation mode is not switched).
    batches : iterable of (inputs, targets)
        Tensors with the examples along the first axis.
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar`` called on one example at a time (a batch of 1),
        e.g. ``torch.nn.functional.cross_entropy``.
    progress : bool, default=True
        A progress bar over the batches.

    Returns
    -------
    dict of str to Tensor
        One float32 tensor per trainable parameter, same shape.
    """
    import torch
    from torch.func import functional_call, grad, vmap

    from repscope._progress import progress_for

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    if not params:
        raise RepscopeValueError("model: expected trainable parameters, it has none.")

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    sums = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in params.items()}
    n = 0
    total = len(batches) if isinstance(batches, Sequence) else None
    with progress_for(progress, "Fisher batches", total) as advance:
        for x, y in batches:
            g = per_example(params, x, y)
            for k, v in g.items():
                sums[k] += (v.double() ** 2).sum(0)
            n += int(x.shape[0])
            advance(1)
    if n == 0:
        raise RepscopeValueError("batches: expected at least one example, none came.")
    return {k: (v / n).float() for k, v in sums.items()}
