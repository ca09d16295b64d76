"""Permutation specs: which axes of which state-dict tensors one hidden-unit permutation moves.

A network's function does not change when the units of a hidden layer are reordered, provided
every tensor that reads or writes those units is reordered the same way (Entezari et al. 2022;
Ainsworth et al. 2023, "Git Re-Basin", whose ``PermutationSpec`` this follows). A
:class:`PermutationSpec` names each such permutation (:class:`Perm`) and lists, per state-dict
key, which permutation acts on each axis (``None``: the axis is fixed).

Specs come from :func:`mlp_spec` (``nn.Sequential`` of Linear/ReLU), from
:func:`~repscope.weights._trace.spec_from_model` (a traced graph), from :func:`llama_spec` (Llama-family decoders, which
do not trace) or by hand with :meth:`PermutationSpec.from_dict`.

Convention: ``perms[name][i]`` is the index of the item of the *input* that goes to position
``i``, so ``new = old[perm]`` along every axis the permutation acts on (blockwise when
``Perm.block > 1``: item ``i`` covers entries ``i*block ... (i+1)*block - 1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = [
    "Perm",
    "PermutationSpec",
    "apply_permutation",
    "identity_permutation",
    "llama_spec",
    "mlp_spec",
    "random_permutation",
]


@dataclass(frozen=True)
class Perm:
    """One permutation of ``size`` items.

    Attributes
    ----------
    name : str
    size : int
        Number of permuted items.
    block : int, default=1
        Contiguous entries per item on each axis the permutation acts on (``head_dim`` for
        attention heads); the axis has ``size * block`` entries.
    groups : tuple of tuple of int, or None
        When given, a partition of ``range(size)``: an item may move only to a position inside its
        own group (query heads stay with their key/value head).
    """

    name: str
    size: int
    block: int = 1
    groups: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise RepscopeValueError(
                f"Perm {self.name!r}: size must be a positive integer, got {self.size!r}.")
        if not isinstance(self.block, (int, np.integer)) or self.block < 1:
            raise RepscopeValueError(
                f"Perm {self.name!r}: block must be a positive integer, got {self.block!r}.")
        if self.groups is not None:
            groups = tuple(tuple(int(i) for i in g) for g in self.groups)
            flat = sorted(i for g in groups for i in g)
            if flat != list(range(self.size)) or any(len(g) == 0 for g in groups):
                raise RepscopeValueError(
                    f"Perm {self.name!r}: groups must partition the {self.size} items "
                    f"(each of 0..{self.size - 1} in exactly one non-empty group), got "
                    f"{len(flat)} entries in {len(groups)} groups.")
            object.__setattr__(self, "groups", groups)


@dataclass(frozen=True)
class PermutationSpec:
    """Permutations and the state-dict axes each acts on.

    Attributes
    ----------
    perms : Mapping[str, Perm]
        Permutations by name.
    axes : Mapping[str, tuple[str | None, ...]]
        State-dict key -> one entry per tensor axis: the name of the permutation acting on that
        axis, or ``None`` when it is fixed. Keys whose tensors no permutation touches may be left
        out (they are left unchanged by :func:`apply_permutation`).
    """

    perms: Mapping[str, Perm]
    axes: Mapping[str, tuple[str | None, ...]]
    _by_perm: dict[str, list[tuple[str, int]]] = field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        perms = dict(self.perms)
        for name, p in perms.items():
            if not isinstance(p, Perm):
                raise RepscopeTypeError(
                    f"PermutationSpec perms: expected Perm values, got {type(p).__name__} "
                    f"for {name!r}.")
            if p.name != name:
                raise RepscopeValueError(
                    f"PermutationSpec perms: key {name!r} holds Perm named {p.name!r}; "
                    "they must agree.")
        axes = {str(k): tuple(v) for k, v in self.axes.items()}
        by_perm: dict[str, list[tuple[str, int]]] = {n: [] for n in perms}
        for key, names in axes.items():
            for ax, n in enumerate(names):
                if n is None:
                    continue
                if n not in perms:
                    raise RepscopeValueError(
                        f"PermutationSpec axes: {key!r} axis {ax} names permutation {n!r}, "
                        f"which is not in perms (known: {sorted(perms)[:8]}).")
                by_perm[n].append((key, ax))
        object.__setattr__(self, "perms", perms)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "_by_perm", by_perm)

    def perm_axes(self, name: str) -> list[tuple[str, int]]:
        """The ``(key, axis)`` pairs that permutation ``name`` acts on, in ``axes`` order."""
        if name not in self.perms:
            raise RepscopeValueError(
                f"perm_axes: unknown permutation {name!r} (known: {sorted(self.perms)[:8]}).")
        return list(self._by_perm[name])

    def check(self, state_dict: Mapping[str, Any], *, argument: str = "state_dict") -> None:
        """Raise a named error unless every key exists with axes of ``size * block`` entries."""
        missing = [k for k in self.axes if k not in state_dict]
        if missing:
            raise RepscopeValueError(
                f"{argument}: {len(missing)} key(s) of the permutation spec are missing "
                f"(first: {missing[0]!r}).")
        for key, names in self.axes.items():
            shape = tuple(state_dict[key].shape)
            if len(shape) != len(names):
                raise RepscopeValueError(
                    f"{argument}: {key!r} has {len(shape)} axes {shape}, the permutation spec "
                    f"lists {len(names)}.")
            for ax, n in enumerate(names):
                if n is None:
                    continue
                p = self.perms[n]
                if shape[ax] != p.size * p.block:
                    raise RepscopeValueError(
                        f"{argument}: {key!r} axis {ax} has {shape[ax]} entries, permutation "
                        f"{n!r} expects {p.size * p.block} (size {p.size} x block {p.block}).")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], state_dict: Any) -> PermutationSpec:
        """A hand-written spec, checked against a model or state dict.

        Parameters
        ----------
        spec : Mapping
            ``{perm_name: {key: axis, ...}}`` or ``{perm_name: {"axes": {key: axis},
            "block": int, "groups": [[...], ...]}}``; ``axis`` may be an int or a list of ints
            (a square weight permuted on both axes). The size is read from the tensors:
            ``shape[axis] // block``.
        state_dict : nn.Module or Mapping[str, Tensor]
            Gives the shapes; every key must exist and every axis of one permutation must have
            the same length.

        Returns
        -------
        PermutationSpec

        Examples
        --------
        >>> PermutationSpec.from_dict({"P0": {"0.weight": 0, "0.bias": 0, "2.weight": 1}},
        ...                           model)  # doctest: +SKIP
        """
        sd = _as_state_dict(state_dict, "state_dict")
        if not isinstance(spec, Mapping) or not spec:
            raise RepscopeTypeError(
                f"from_dict spec: expected a non-empty mapping {{perm name: {{key: axis}}}}, "
                f"got {type(spec).__name__}.")
        perms: dict[str, Perm] = {}
        axes: dict[str, list[str | None]] = {}
        for pname, entry in spec.items():
            if not isinstance(entry, Mapping):
                raise RepscopeTypeError(
                    f"from_dict spec[{pname!r}]: expected a mapping of key -> axis, got "
                    f"{type(entry).__name__}.")
            if "axes" in entry:
                key_axes = entry["axes"]
                block = int(entry.get("block", 1))
                groups = entry.get("groups")
            else:
                key_axes, block, groups = entry, 1, None
            if not isinstance(key_axes, Mapping) or not key_axes:
                raise RepscopeValueError(
                    f"from_dict spec[{pname!r}]: expected at least one key -> axis entry.")
            length: tuple[str, int, int] | None = None
            for key, axs in key_axes.items():
                if key not in sd:
                    raise RepscopeValueError(
                        f"from_dict spec[{pname!r}]: key {key!r} is not in the state dict "
                        f"({len(sd)} keys; first: {next(iter(sd), None)!r}).")
                shape = tuple(sd[key].shape)
                for ax in ([axs] if isinstance(axs, (int, np.integer)) else list(axs)):
                    ax = int(ax)
                    if not -len(shape) <= ax < len(shape):
                        raise RepscopeValueError(
                            f"from_dict spec[{pname!r}]: {key!r} has {len(shape)} axes "
                            f"{shape}, axis {ax} does not exist.")
                    ax %= len(shape)
                    if length is None:
                        length = (key, ax, shape[ax])
                    elif shape[ax] != length[2]:
                        raise RepscopeValueError(
                            f"from_dict spec[{pname!r}]: sizes disagree: {key!r} axis {ax} has "
                            f"{shape[ax]} entries, {length[0]!r} axis {length[1]} has "
                            f"{length[2]}.")
                    row = axes.setdefault(key, [None] * len(shape))
                    if row[ax] is not None and row[ax] != pname:
                        raise RepscopeValueError(
                            f"from_dict spec: {key!r} axis {ax} is claimed by both {row[ax]!r} "
                            f"and {pname!r}.")
                    row[ax] = pname
            assert length is not None
            if block < 1 or length[2] % block:
                raise RepscopeValueError(
                    f"from_dict spec[{pname!r}]: block {block} does not divide the axis length "
                    f"{length[2]}.")
            perms[pname] = Perm(pname, length[2] // block, block,
                                None if groups is None else tuple(tuple(g) for g in groups))
        return cls(perms, {k: tuple(v) for k, v in axes.items()})


# ----------------------------------------------------------------------------- apply / draw


def _as_state_dict(obj: Any, argument: str) -> Mapping[str, Any]:
    """A model's ``state_dict()``, a mapping, or a safetensors file / folder (W1's one way in)."""
    from repscope.weights._state import as_state_dict

    return as_state_dict(obj, name=argument)


def _check_perm(p: Perm, arr: Any) -> np.ndarray:
    """``arr`` as an int64 permutation of ``range(p.size)`` respecting ``p.groups``."""
    a = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr)
    if a.ndim != 1 or a.shape[0] != p.size or not np.issubdtype(a.dtype, np.integer):
        raise RepscopeValueError(
            f"perms[{p.name!r}]: expected {p.size} integer indices, got shape {a.shape} "
            f"of {a.dtype}.")
    a = a.astype(np.int64)
    if not np.array_equal(np.sort(a), np.arange(p.size)):
        raise RepscopeValueError(
            f"perms[{p.name!r}]: not a permutation of 0..{p.size - 1} (repeated or out-of-range "
            "indices).")
    if p.groups is not None:
        for g in p.groups:
            if set(a[list(g)].tolist()) != set(g):
                raise RepscopeValueError(
                    f"perms[{p.name!r}]: moves an item out of its group {list(g)[:6]} "
                    "(items may move only inside their group).")
    return a


def _expand(perm: np.ndarray, block: int) -> np.ndarray:
    """Item permutation -> entry permutation for blocks of ``block`` contiguous entries."""
    if block == 1:
        return perm
    return (perm[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def apply_permutation(spec: PermutationSpec, perms: Mapping[str, Any],
                      state_dict: Any) -> dict[str, Any]:
    """Permute a state dict: ``new = old[perm]`` along every axis each permutation acts on.

    Parameters
    ----------
    spec : PermutationSpec
    perms : Mapping[str, ndarray or Tensor]
        ``perms[name][i]`` = index of the input item that goes to position ``i``; names left out
        are the identity. Each must be a permutation that keeps items inside their groups.
    state_dict : nn.Module, Mapping[str, Tensor] or .safetensors path
        Not modified.

    Returns
    -------
    dict[str, Tensor]
        New tensors for every key the spec lists; other keys pass through (sharing memory with
        the input).
    """
    import torch

    if not isinstance(spec, PermutationSpec):
        raise RepscopeTypeError(
            f"spec: expected a PermutationSpec, got {type(spec).__name__}.")
    if not isinstance(perms, Mapping):
        raise RepscopeTypeError(
            f"perms: expected a mapping of permutation name -> indices, got "
            f"{type(perms).__name__}.")
    unknown = [n for n in perms if n not in spec.perms]
    if unknown:
        raise RepscopeValueError(
            f"perms: {len(unknown)} name(s) not in the spec (first: {unknown[0]!r}; known: "
            f"{sorted(spec.perms)[:8]}).")
    sd = _as_state_dict(state_dict, "state_dict")
    spec.check(sd)
    idx: dict[str, np.ndarray] = {}
    for name, arr in perms.items():
        a = _check_perm(spec.perms[name], arr)
        if not np.array_equal(a, np.arange(a.shape[0])):
            idx[name] = _expand(a, spec.perms[name].block)
    out = dict(sd)
    for key, names in spec.axes.items():
        t = sd[key]
        changed = False
        for ax, n in enumerate(names):
            if n is None or n not in idx:
                continue
            t = t.index_select(ax, torch.as_tensor(idx[n], device=t.device))
            changed = True
        out[key] = t if changed else t.clone()
    return out


def identity_permutation(spec: PermutationSpec) -> dict[str, np.ndarray]:
    """``{name: arange(size)}`` for every permutation of ``spec``."""
    return {n: np.arange(p.size, dtype=np.int64) for n, p in spec.perms.items()}


def random_permutation(spec: PermutationSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """A uniformly random permutation per name, items shuffled only inside their groups."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for n in sorted(spec.perms):
        p = spec.perms[n]
        if p.groups is None:
            out[n] = rng.permutation(p.size).astype(np.int64)
        else:
            a = np.arange(p.size, dtype=np.int64)
            for g in p.groups:
                gi = np.asarray(g, dtype=np.int64)
                a[gi] = gi[rng.permutation(len(gi))]
            out[n] = a
    return {n: out[n] for n in spec.perms}


# ----------------------------------------------------------------------------- MLP


_LINEAR_KEY = re.compile(r"^(\d+)\.weight$")


def mlp_spec(model_or_state_dict: Any) -> PermutationSpec:
    """Spec of an ``nn.Sequential`` of Linear layers with elementwise activations between them.

    Keys ``"<i>.weight"`` / ``"<i>.bias"`` (``_toy.make_mlp`` layout). Hidden layer ``j`` (output
    of the ``j``-th Linear, all but the last) gets permutation ``"P<j>"``: rows of its weight and
    its bias, columns of the next Linear's weight. Input and output units are fixed.

    Parameters
    ----------
    model_or_state_dict : nn.Sequential, Mapping[str, Tensor] or .safetensors path

    Returns
    -------
    PermutationSpec
    """
    import torch

    if isinstance(model_or_state_dict, torch.nn.Module):
        mods = list(model_or_state_dict.children()) if isinstance(
            model_or_state_dict, torch.nn.Sequential) else None
        if mods is None:
            raise RepscopeTypeError(
                f"mlp_spec: expected an nn.Sequential of Linear and activation layers, got "
                f"{type(model_or_state_dict).__name__}; use spec_from_model for other models.")
        for i, m in enumerate(mods):
            if not isinstance(m, (torch.nn.Linear, torch.nn.ReLU, torch.nn.GELU, torch.nn.Tanh,
                                  torch.nn.Sigmoid, torch.nn.LeakyReLU, torch.nn.SiLU,
                                  torch.nn.ELU, torch.nn.Dropout, torch.nn.Identity)):
                raise RepscopeValueError(
                    f"mlp_spec: layer {i} is {type(m).__name__}, not a Linear or an elementwise "
                    "activation; use spec_from_model for this model.")
    sd = _as_state_dict(model_or_state_dict, "model_or_state_dict")
    layers = sorted(int(g.group(1)) for k in sd if (g := _LINEAR_KEY.match(k)))
    extra = [k for k in sd if not _LINEAR_KEY.match(k)
             and not (k.endswith(".bias") and k[:-5].isdigit())]
    if extra:
        raise RepscopeValueError(
            f"mlp_spec: expected only '<i>.weight' / '<i>.bias' keys of an nn.Sequential, got "
            f"{len(extra)} other(s) (first: {extra[0]!r}).")
    if len(layers) < 2:
        raise RepscopeValueError(
            f"mlp_spec: expected at least two Linear layers, got {len(layers)}.")
    for i in layers:
        if sd[f"{i}.weight"].ndim != 2:
            raise RepscopeValueError(
                f"mlp_spec: {i}.weight has shape {tuple(sd[f'{i}.weight'].shape)}, expected a "
                "Linear weight (2 axes).")
    perms: dict[str, Perm] = {}
    axes: dict[str, tuple[str | None, ...]] = {}
    prev: str | None = None
    for j, i in enumerate(layers):
        w = sd[f"{i}.weight"]
        if prev is not None and w.shape[1] != perms[prev].size:
            raise RepscopeValueError(
                f"mlp_spec: {i}.weight reads {w.shape[1]} inputs, the previous Linear writes "
                f"{perms[prev].size}.")
        out = None if j == len(layers) - 1 else f"P{j}"
        if out is not None:
            perms[out] = Perm(out, int(w.shape[0]))
        axes[f"{i}.weight"] = (out, prev)
        if f"{i}.bias" in sd:
            axes[f"{i}.bias"] = (out,)
        prev = out
    return PermutationSpec(perms, axes)


# ----------------------------------------------------------------------------- Llama family


# Per-layer keys a Llama-family decoder may carry that no permutation here touches: per-head
# q/k RMSNorms over head_dim (Qwen3; shared by all heads, so a whole-head permutation leaves
# them unchanged) and the rotary frequencies.
_LLAMA_UNTOUCHED = ("self_attn.q_norm.weight", "self_attn.k_norm.weight",
                    "self_attn.rotary_emb.inv_freq")


def _config_get(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def llama_spec(model_or_config: Any, *, state_dict_keys: Any = None) -> PermutationSpec:
    """Permutation spec of a Llama-family decoder (transformers ``LlamaForCausalLM`` layout).

    ``torch.fx`` cannot trace these models, so the spec is written from the config, keyed by
    module path:

    - ``"residual"`` (``hidden_size`` items): one permutation of the residual stream shared by
      ``model.embed_tokens.weight`` (axis 1), ``lm_head.weight`` (axis 1; tied or not), every
      block's ``input_layernorm`` / ``post_attention_layernorm`` weights, the input axis of
      ``q_proj`` / ``k_proj`` / ``v_proj`` / ``gate_proj`` / ``up_proj``, the output axis of
      ``o_proj`` / ``down_proj`` (and their biases), and ``model.norm.weight``. RMSNorm divides by
      the root mean square over all units, which a permutation does not change.
    - ``"layers.<i>.mlp"`` (``intermediate_size`` items): the MLP hidden units of block ``i``
      (``gate_proj`` / ``up_proj`` axis 0 and biases, ``down_proj`` axis 1).
    - ``"layers.<i>.heads"`` (``num_attention_heads`` items, ``block = head_dim``): whole query
      heads of block ``i`` (``q_proj`` axis 0 and bias, ``o_proj`` axis 1), each only inside its
      key/value group (query heads ``g*r ... g*r + r - 1`` share key/value head ``g``, ``r =
      num_attention_heads / num_key_value_heads``; SmolLM2-135M: 9 heads on 3 key/value heads,
      groups of 3). A query head keeps its keys and values, so its output moves with it.

    Not permuted: the key/value heads (moving kv head ``g`` would have to move its whole group of
    query heads in step, a coupling between two permutations this spec format cannot express),
    and any order *inside* a head: rotary embeddings rotate q/k dimension pairs ``(j, j +
    head_dim/2)`` by position-dependent angles, so a permutation inside the rotary head dimension
    changes the logits; inside the value head dimension the group's query heads would again have
    to move in step.

    Parameters
    ----------
    model_or_config : transformers model, its config, or a config mapping (``config.json``)
    state_dict_keys : iterable of str, optional
        Keys of the state dict the spec will be applied to (e.g. a safetensors checkpoint's).
        Default: the model's ``state_dict()`` keys, or, from a config alone, the standard layout
        with ``lm_head.weight`` only when the embeddings are not tied. Biases enter where their
        keys exist. Keys of a layout this function does not know are refused by name.

    Returns
    -------
    PermutationSpec
    """
    import torch

    cfg = model_or_config
    keys: list[str] | None = None
    if isinstance(model_or_config, torch.nn.Module):
        cfg = getattr(model_or_config, "config", None)
        if cfg is None:
            raise RepscopeTypeError(
                f"llama_spec model_or_config: the {type(model_or_config).__name__} has no "
                "config; pass a transformers Llama-family model or its config.")
        keys = list(model_or_config.state_dict().keys())
    if state_dict_keys is not None:
        keys = [str(k) for k in state_dict_keys]
    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [n for n in need if _config_get(cfg, n) is None]
    if missing:
        raise RepscopeTypeError(
            f"llama_spec model_or_config: expected a Llama-family config with {', '.join(need)}"
            f"; got {type(cfg).__name__} without {', '.join(missing)}.")
    hidden = int(_config_get(cfg, "hidden_size"))
    inter = int(_config_get(cfg, "intermediate_size"))
    n_layers = int(_config_get(cfg, "num_hidden_layers"))
    n_heads = int(_config_get(cfg, "num_attention_heads"))
    n_kv = int(_config_get(cfg, "num_key_value_heads") or n_heads)
    head_dim = int(_config_get(cfg, "head_dim") or hidden // n_heads)
    tied = bool(_config_get(cfg, "tie_word_embeddings", False))
    if n_heads % n_kv:
        raise RepscopeValueError(
            f"llama_spec: num_attention_heads ({n_heads}) is not a multiple of "
            f"num_key_value_heads ({n_kv}).")
    if keys is None:
        keys = ["model.embed_tokens.weight", "model.norm.weight"]
        if not tied:
            keys.append("lm_head.weight")
        for i in range(n_layers):
            p = f"model.layers.{i}."
            keys += [p + s + ".weight" for s in (
                "input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj")]
            for s, flag in (("self_attn.q_proj", "attention_bias"),
                            ("self_attn.k_proj", "attention_bias"),
                            ("self_attn.v_proj", "attention_bias"),
                            ("self_attn.o_proj", "attention_bias"),
                            ("mlp.gate_proj", "mlp_bias"), ("mlp.up_proj", "mlp_bias"),
                            ("mlp.down_proj", "mlp_bias")):
                if _config_get(cfg, flag, False):
                    keys.append(p + s + ".bias")
    keyset = set(keys)
    if "model.embed_tokens.weight" in keyset:
        pre = "model."
    elif "embed_tokens.weight" in keyset:
        pre = ""
    else:
        raise RepscopeValueError(
            "llama_spec state_dict_keys: expected 'model.embed_tokens.weight' (or "
            f"'embed_tokens.weight') among {len(keys)} keys; first: "
            f"{keys[0] if keys else None!r}.")
    group = n_heads // n_kv
    heads_groups = tuple(tuple(range(g * group, (g + 1) * group)) for g in range(n_kv))
    R = "residual"
    perms: dict[str, Perm] = {R: Perm(R, hidden)}
    axes: dict[str, tuple[str | None, ...]] = {}

    def put(key: str, ax: tuple[str | None, ...], required: bool = True) -> None:
        if key in keyset:
            axes[key] = ax
        elif required:
            raise RepscopeValueError(
                f"llama_spec state_dict_keys: {key!r} is missing ({len(keys)} keys).")

    put(pre + "embed_tokens.weight", (None, R))
    put(pre + "norm.weight", (R,))
    put("lm_head.weight", (None, R), required=not tied)
    for i in range(n_layers):
        p = f"{pre}layers.{i}."
        H, M = f"layers.{i}.heads", f"layers.{i}.mlp"
        perms[H] = Perm(H, n_heads, head_dim, heads_groups)
        perms[M] = Perm(M, inter)
        put(p + "input_layernorm.weight", (R,))
        put(p + "post_attention_layernorm.weight", (R,))
        put(p + "self_attn.q_proj.weight", (H, R))
        put(p + "self_attn.q_proj.bias", (H,), False)
        for s in ("k_proj", "v_proj"):
            put(p + f"self_attn.{s}.weight", (None, R))
        put(p + "self_attn.o_proj.weight", (R, H))
        put(p + "self_attn.o_proj.bias", (R,), False)
        put(p + "mlp.gate_proj.weight", (M, R))
        put(p + "mlp.up_proj.weight", (M, R))
        put(p + "mlp.gate_proj.bias", (M,), False)
        put(p + "mlp.up_proj.bias", (M,), False)
        put(p + "mlp.down_proj.weight", (R, M))
        put(p + "mlp.down_proj.bias", (R,), False)
    known_fixed = {f"{pre}layers.{i}.{s}" for i in range(n_layers) for s in _LLAMA_UNTOUCHED}
    known_fixed |= {f"{pre}layers.{i}.self_attn.{s}.bias" for i in range(n_layers)
                    for s in ("k_proj", "v_proj")}
    known_fixed.add(pre + "rotary_emb.inv_freq")
    unknown = [k for k in keys if k not in axes and k not in known_fixed
               and not (tied and k == "lm_head.weight")]
    if unknown:
        raise RepscopeValueError(
            f"llama_spec state_dict_keys: {len(unknown)} key(s) outside the Llama layout "
            f"(first: {unknown[0]!r}); a tensor this spec does not place could break the "
            "permutation symmetry; write the spec by hand (PermutationSpec.from_dict).")
    return PermutationSpec(perms, axes)
