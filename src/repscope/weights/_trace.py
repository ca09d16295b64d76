"""Derive a :class:`~repscope.weights._spec.PermutationSpec` from a traced graph.

The graph comes from ``torch.fx.symbolic_trace`` (shapes from ``ShapeProp`` on the example
input) or, where fx fails (Python control flow on the input, ``isinstance`` checks), from
``torch.export.export(model, args, strict=False)`` (ATen ops, shapes from the fake tensors).
Both are walked by one propagation: every tensor value carries at most one *tracked* axis (the
hidden-unit axis: last for Linear outputs, 1 for convolution outputs) and a union-find class of
that axis. Linear / convolution / embedding outputs open a new class; elementwise ops, BatchNorm,
LayerNorm, pooling, padding of other axes, reshapes that keep the axis whole and reductions over
other axes carry it; additions and products join the classes of their operands (residual
connections, squeeze-excitation gates); the model's inputs and outputs belong to the fixed class.
Each class left apart from the fixed one becomes one :class:`Perm`.

Supported: Linear, Conv1d/2d/3d (groups 1, or depthwise: groups == in == out channels, whose
output class is its input class), BatchNorm, LayerNorm / RMSNorm over the last axis, Embedding,
``nn.MultiheadAttention`` as a known leaf module (fx path only; residual axis of ``in_proj`` and
``out_proj`` permuted, heads kept fixed: q, k and v rows share one ``in_proj_weight`` tensor,
whose single permutation per axis cannot move three segments by one head permutation),
elementwise activations, dropout, residual add / sub / mul / div (broadcasting over size-1 axes),
pooling, spatial padding, flatten / view / squeeze that keep the channel axis whole, transpose
and permute, mean / sum / amax, concatenation along another axis.

Refused with :class:`RepscopeValueError` naming the module or op: anything else that touches an
axis that would be permuted (matmul, indexing, split, grouped convolution, GroupNorm, ...), and a
flatten that merges a permuted channel axis with spatial positions before a Linear (the
expansion needs a block per axis; pool to 1x1 first or write the spec by hand with
:meth:`PermutationSpec.from_dict`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.weights._spec import Perm, PermutationSpec

__all__ = ["spec_from_model"]

_FIXED = 0


@dataclass(frozen=True)
class _V:
    """A tensor value: its tracked axis (or None: nothing permuted) and the class of that axis."""

    axis: int | None
    var: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _P:
    """A parameter or buffer of the model, read in the graph."""

    key: str
    shape: tuple[int, ...]


_UNARY_ATEN = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "elu", "elu_", "leaky_relu", "leaky_relu_", "hardswish",
    "hardswish_", "hardsigmoid", "mish", "softplus", "dropout", "dropout_", "feature_dropout",
    "alpha_dropout", "clone", "alias", "detach", "_to_copy", "to", "contiguous", "exp", "abs",
    "neg", "sqrt", "rsqrt", "erf", "clamp", "clamp_min", "clamp_max", "clip", "softmax",
    "_softmax", "log_softmax", "_log_softmax", "pow", "square", "lift_fresh_copy", "type_as",
    "identity",
}
_BINARY_ATEN = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum",
                "minimum", "rsub"}
_POOL_ATEN = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
              "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
              "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
              "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "adaptive_max_pool3d"}
_RESHAPE_ATEN = {"view", "_unsafe_view", "reshape", "flatten", "squeeze", "squeeze_",
                 "unsqueeze", "unsqueeze_", "unflatten", "expand", "expand_as"}
_REDUCE_ATEN = {"mean", "sum", "amax", "amin"}
_META_ATEN = {"sym_size", "size", "dim", "numel", "sym_numel", "sym_stride", "stride"}


def _aten_name(target: Any) -> str | None:
    packet = getattr(target, "_overloadpacket", None)
    return None if packet is None else str(packet.__name__)


class _Walk:
    """Union-find over axis classes plus the (key, axis) -> class assignments."""

    def __init__(self, aliases: dict[str, list[str]], shapes: dict[str, tuple[int, ...]]):
        self.parent: list[int] = [_FIXED]
        self.origin: list[str] = [""]
        self.aliases = aliases
        self.shapes = shapes
        self.assigned: dict[str, list[int | None]] = {}
        self.pins: list[tuple[int, str]] = []

    # -- union-find
    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb == _FIXED or (ra != _FIXED and rb < ra):
            ra, rb = rb, ra
        self.parent[rb] = ra
        return ra

    def new(self, origin: str) -> int:
        self.parent.append(len(self.parent))
        self.origin.append(origin)
        return len(self.parent) - 1

    def assign(self, key: str, axis: int, var: int) -> None:
        for k in self.aliases.get(key, [key]):
            row = self.assigned.setdefault(k, [None] * len(self.shapes[k]))
            cur = row[axis]
            row[axis] = var if cur is None else self.union(cur, var)

    def pin(self, var: int, reason: str) -> None:
        """``var`` must end up fixed, else ``reason`` is the error."""
        self.pins.append((var, reason))


def _where_fx(node: Any, gm: Any) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return f"module '{node.target}' ({type(mod).__name__})"
    fn = getattr(node.target, "__name__", str(node.target))
    return f"op '{fn}' (graph node '{node.name}')"


def _where_export(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    op = str(node.target)
    if stack:
        path, cls = list(stack.values())[-1]
        cls = str(cls).rsplit(".", 1)[-1]
        return f"op {op} in module '{path or '<root>'}' ({cls})"
    return f"op {op} (graph node '{node.name}')"


class _Propagate:
    """The shape-aware rules, shared by the fx and export front ends."""

    def __init__(self, w: _Walk):
        self.w = w

    # -- helpers
    def val(self, s: Any) -> _V | None:
        """A tensor state as a value (parameters read as plain tensors are fixed)."""
        if isinstance(s, _V):
            return s
        if isinstance(s, _P):
            return _V(None, _FIXED, s.shape)
        return None

    def unknown(self, where: str, inputs: list[Any], out: Any, why: str = "") -> Any:
        for s in _flat(inputs):
            if isinstance(s, _V) and s.axis is not None:
                self.w.pin(s.var, f"cannot permute through {where}{why}: it reads a tensor "
                                  f"whose axis {s.axis} would be permuted; write the spec by "
                                  "hand (PermutationSpec.from_dict) for this model.")
        return _fixed_like(out)

    def opens(self, where: str, origin: str, x: _V | None, in_axis: int, w: Any, b: Any,
              w_in: int, w_out: int) -> int | None:
        """Linear / convolution: ``x`` axis ``in_axis`` is read by weight axis ``w_in``."""
        if not isinstance(w, _P) or (b is not None and not isinstance(b, _P)) or x is None:
            self.unknown(where, [x], None, " (its weight is not a parameter of the model)")
            return None
        if x.axis is not None and x.axis != in_axis:
            self.unknown(where, [x], None, f" (it reads axis {in_axis}, not the tracked axis)")
        self.w.assign(w.key, w_in, x.var if x.axis == in_axis else _FIXED)
        var = self.w.new(origin)
        self.w.assign(w.key, w_out, var)
        if b is not None:
            self.w.assign(b.key, 0, var)
        return var

    def linear(self, where: str, origin: str, x: Any, w: Any, b: Any, out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(w, _P) or len(w.shape) != 2:
            return self.unknown(where, [x], out_shape)
        var = self.opens(where, origin, xv, len(xv.shape) - 1, w, b, 1, 0)
        if not isinstance(var, int):
            return _fixed_like(out_shape)
        return _V(len(out_shape) - 1, var, tuple(out_shape))

    def conv(self, where: str, origin: str, x: Any, w: Any, b: Any, groups: int,
             out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(w, _P):
            return self.unknown(where, [x], out_shape)
        cin, cout = xv.shape[1], w.shape[0]
        if groups == 1:
            var = self.opens(where, origin, xv, 1, w, b, 1, 0)
            if not isinstance(var, int):
                return _fixed_like(out_shape)
            return _V(1, var, tuple(out_shape))
        if groups == cin == cout and w.shape[1] == 1:
            # depthwise: each output channel reads its own input channel -> the same class
            if xv.axis is not None and xv.axis != 1:
                self.unknown(where, [xv], None, " (it reads axis 1, not the tracked axis)")
            var = xv.var if xv.axis == 1 else _FIXED
            self.w.assign(w.key, 0, var)
            self.w.assign(w.key, 1, _FIXED)
            if isinstance(b, _P):
                self.w.assign(b.key, 0, var)
            return _V(1, var, tuple(out_shape))
        return self.unknown(where, [x], out_shape,
                            f" (grouped convolution with groups={groups})")

    def channel_norm(self, where: str, x: Any, params: list[Any], axis: int | None) -> Any:
        """BatchNorm (axis 1) / LayerNorm (last axis): per-channel params on the tracked axis."""
        xv = self.val(x)
        if xv is None:
            return self.unknown(where, [x], None)
        ax = (len(xv.shape) - 1) if axis is None else axis
        if xv.axis is not None and xv.axis != ax:
            return self.unknown(where, [xv], xv, f" (it normalises axis {ax}, not the tracked "
                                                  f"axis {xv.axis})")
        var = xv.var if xv.axis == ax else _FIXED
        for p in params:
            if isinstance(p, _P):
                self.w.assign(p.key, 0, var)
            elif p is not None:
                return self.unknown(where, [xv], xv, " (its weight is not a parameter)")
        return _V(ax if xv.axis is not None else None, var, xv.shape)

    def binary(self, where: str, a: Any, b: Any, out_shape: Any) -> Any:
        if not isinstance(out_shape, tuple):
            return self.unknown(where, [a, b], out_shape)
        r = len(out_shape)
        tracked = [(s.axis + r - len(s.shape), s) for s in (a, b)
                   if isinstance(s, _V) and s.axis is not None]
        if not tracked:
            return _V(None, _FIXED, out_shape)
        axes_ = {t[0] for t in tracked}
        if len(axes_) > 1:
            return self.unknown(where, [a, b], out_shape,
                                " (its operands' permuted axes differ)")
        ax = tracked[0][0]
        var = tracked[0][1].var
        for _, s in tracked[1:]:
            var = self.w.union(var, s.var)
        for s in (a, b):
            if isinstance(s, (_V, _P)) and not (isinstance(s, _V) and s.axis is not None):
                own = ax - (r - len(s.shape))
                if own < 0 or s.shape[own] == 1:
                    continue
                if isinstance(s, _P):
                    self.w.assign(s.key, own, var)
                else:
                    var = self.w.union(var, _FIXED)
        return _V(ax, var, out_shape)

    def carry(self, x: Any, out_shape: Any) -> Any:
        """Elementwise: the output keeps the input's tracked axis."""
        xv = self.val(x)
        if xv is None or not isinstance(out_shape, tuple):
            return _fixed_like(out_shape)
        if xv.axis is None:
            return _V(None, _FIXED, out_shape)
        return _V(xv.axis + len(out_shape) - len(xv.shape), xv.var, out_shape)

    def pool(self, where: str, x: Any, out: Any) -> Any:
        xv = self.val(x)
        if xv is None:
            return _fixed_like(out)
        if xv.axis not in (None, 1):
            return self.unknown(where, [xv], out, " (it pools with the tracked axis as a "
                                                  "spatial axis)")
        first = out[0] if isinstance(out, list) else out
        v = _V(xv.axis, xv.var, tuple(first))
        return [v, v] if isinstance(out, list) else v

    def reshape(self, where: str, x: Any, out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(out_shape, tuple):
            return self.unknown(where, [x], out_shape)
        if xv.axis is None:
            return _V(None, _FIXED, out_shape)
        s, k = xv.shape, xv.axis
        pre, c, rest = math.prod(s[:k]), s[k], math.prod(s[k + 1:])
        for j in range(len(out_shape)):
            if math.prod(out_shape[:j]) != pre:
                continue
            if out_shape[j] == c and math.prod(out_shape[j + 1:]) == rest:
                return _V(j, xv.var, out_shape)
        for j in range(len(out_shape)):
            if math.prod(out_shape[:j]) == pre and out_shape[j] % c == 0 and out_shape[j] > c:
                return self.unknown(
                    where, [xv], out_shape,
                    f" (it merges the permuted axis of {c} channels with {out_shape[j] // c} "
                    "positions after it, so the channel permutation would act on blocks of "
                    "positions there; pool to 1x1 before flattening)")
        return self.unknown(where, [xv], out_shape, " (it splits or moves the permuted axis)")

    def reduce(self, where: str, x: Any, dims: Any, keepdim: bool, out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(out_shape, tuple):
            return self.unknown(where, [x], out_shape)
        if xv.axis is None:
            return _V(None, _FIXED, out_shape)
        r = len(xv.shape)
        if dims is None or dims == [] or dims == ():
            ds = set(range(r))
        else:
            ds = {int(d) % r for d in ([dims] if isinstance(dims, int) else dims)}
        if xv.axis in ds:  # a sum over all units does not depend on their order
            return _V(None, _FIXED, out_shape)
        ax = xv.axis if keepdim else xv.axis - sum(1 for d in ds if d < xv.axis)
        return _V(ax, xv.var, out_shape)

    def transpose(self, x: Any, order: list[int], out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(out_shape, tuple):
            return _fixed_like(out_shape)
        if xv.axis is None:
            return _V(None, _FIXED, out_shape)
        r = len(xv.shape)
        order = [int(d) % r for d in order]
        return _V(order.index(xv.axis), xv.var, out_shape)

    def pad(self, where: str, x: Any, pads: Any, out_shape: Any) -> Any:
        xv = self.val(x)
        if xv is None or not isinstance(out_shape, tuple):
            return self.unknown(where, [x], out_shape)
        if xv.axis is not None:
            r, pads = len(xv.shape), list(pads)
            back = r - 1 - xv.axis  # pads[2*back], pads[2*back+1] pad the tracked axis
            if 2 * back + 1 < len(pads) and (pads[2 * back] or pads[2 * back + 1]):
                return self.unknown(where, [xv], out_shape, " (it pads the tracked axis)")
        return self.carry(xv, out_shape)

    def cat(self, where: str, xs: list[Any], dim: int, out_shape: Any) -> Any:
        if not isinstance(out_shape, tuple):
            return self.unknown(where, xs, out_shape)
        r = len(out_shape)
        dim %= r
        vals = [self.val(s) for s in xs]
        tracked = [v for v in vals if v is not None and v.axis is not None]
        if not tracked:
            return _V(None, _FIXED, out_shape)
        if any(v.axis == dim for v in tracked) or len({v.axis for v in tracked}) > 1:
            return self.unknown(where, xs, out_shape,
                                " (it concatenates along or across the tracked axis)")
        var = tracked[0].var
        for v in vals:
            var = self.w.union(var, v.var if v is not None and v.axis is not None else _FIXED)
        return _V(tracked[0].axis, var, out_shape)

    def embedding(self, where: str, origin: str, w: Any, out_shape: Any) -> Any:
        if not isinstance(w, _P) or not isinstance(out_shape, tuple):
            return self.unknown(where, [], out_shape)
        var = self.w.new(origin)
        self.w.assign(w.key, 1, var)
        self.w.assign(w.key, 0, _FIXED)
        return _V(len(out_shape) - 1, var, out_shape)

    def mha(self, where: str, prefix: str, mod: Any, q: Any, k: Any, v: Any, out: Any) -> Any:
        qv, kv, vv = self.val(q), self.val(k), self.val(v)
        if qv is None or kv is None or vv is None:
            return self.unknown(where, [q, k, v], out)
        for s in (qv, kv, vv):
            if s.axis is not None and s.axis != len(s.shape) - 1:
                return self.unknown(where, [q, k, v], out, " (the tracked axis is not last)")

        def cls(s: _V) -> int:
            return s.var if s.axis is not None else _FIXED

        if mod._qkv_same_embed_dim:
            self.w.assign(prefix + "in_proj_weight", 1, cls(qv))
            self.w.assign(prefix + "in_proj_weight", 1, cls(kv))
            self.w.assign(prefix + "in_proj_weight", 1, cls(vv))
            self.w.assign(prefix + "in_proj_weight", 0, _FIXED)
        else:
            for name, s in (("q", qv), ("k", kv), ("v", vv)):
                self.w.assign(f"{prefix}{name}_proj_weight", 1, cls(s))
                self.w.assign(f"{prefix}{name}_proj_weight", 0, _FIXED)
        var = self.w.new(prefix + "out_proj")
        self.w.assign(prefix + "out_proj.weight", 0, var)
        self.w.assign(prefix + "out_proj.weight", 1, _FIXED)
        if mod.out_proj.bias is not None:
            self.w.assign(prefix + "out_proj.bias", 0, var)
        first = out[0] if isinstance(out, list) else out
        o = _V(len(first) - 1, var, tuple(first))
        return [o, _fixed_like(out[1])] if isinstance(out, list) else o


def _flat(xs: Any) -> list[Any]:
    if isinstance(xs, (list, tuple)):
        return [y for x in xs for y in _flat(x)]
    if isinstance(xs, dict):
        return [y for x in xs.values() for y in _flat(x)]
    return [xs]


def _fixed_like(out: Any) -> Any:
    """A fixed state shaped like an output description (tuple shape, list of them, None)."""
    if isinstance(out, tuple):
        return _V(None, _FIXED, out)
    if isinstance(out, list):
        return [_fixed_like(o) for o in out]
    if isinstance(out, _V):
        return _V(None, _FIXED, out.shape)
    return None


def _shape_of(meta: Any) -> Any:
    """tuple (tensor), list (tuple/list of outputs) or None (not a tensor)."""
    import torch

    if meta is None:
        return None
    if isinstance(meta, (list, tuple)) and not hasattr(meta, "shape"):
        return [_shape_of(m) for m in meta]
    shape = getattr(meta, "shape", None)
    if shape is None or isinstance(meta, (int, float, torch.SymInt)):
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:
        return None


# ----------------------------------------------------------------------------- fx front end


def _fx_unary_functions() -> tuple[set[Any], set[str]]:
    import torch
    import torch.nn.functional as F

    fns = {torch.relu, F.relu, F.relu6, F.hardtanh, F.gelu, F.silu, F.elu, F.leaky_relu,
           F.hardswish, F.hardsigmoid, F.mish, F.softplus, F.dropout, F.sigmoid, torch.sigmoid,
           torch.tanh, F.tanh, torch.exp, torch.abs, operator.neg, torch.neg, torch.sqrt,
           torch.rsqrt, torch.erf, F.softmax, torch.softmax, F.log_softmax, torch.clamp,
           torch.clip, F.dropout1d, F.dropout2d, F.alpha_dropout}
    methods = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "contiguous", "clone", "detach",
               "float", "half", "double", "bfloat16", "to", "clamp", "softmax", "log_softmax",
               "sqrt", "rsqrt", "relu_", "sigmoid_", "tanh_", "type_as", "clip"}
    return fns, methods


def _walk_fx(gm: Any, w: _Walk) -> None:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    P = _Propagate(w)
    unary_fns, unary_methods = _fx_unary_functions()
    binary_fns = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add,
                  torch.sub, torch.mul, torch.div, operator.iadd, operator.imul, torch.maximum,
                  torch.minimum}
    pool_types = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                  nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                  nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
    unary_types = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
                   nn.ELU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Dropout,
                   nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                   nn.Softmax, nn.LogSoftmax, nn.Hardtanh)
    pool_fns = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                F.adaptive_max_pool3d}
    env: dict[Any, Any] = {}

    def st(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return [st(x) for x in a]
        return a

    def arg(node: Any, i: int, name: str, default: Any = None) -> Any:
        if len(node.args) > i:
            return node.args[i]
        return node.kwargs.get(name, default)

    for node in gm.graph.nodes:
        out = _shape_of(node.meta.get("tensor_meta"))
        where = _where_fx(node, gm)
        args = st(list(node.args))
        if node.op == "placeholder":
            env[node] = _fixed_like(out)
        elif node.op == "get_attr":
            env[node] = _P(node.target, out) if node.target in w.shapes else _fixed_like(out)
        elif node.op == "output":
            for s in _flat(args):
                if isinstance(s, _V) and s.axis is not None:
                    w.union(s.var, _FIXED)
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            pre = node.target + "."

            def p(name: str, mod: Any = mod, pre: str = pre) -> Any:
                t = getattr(mod, name, None)
                return None if t is None else _P(pre + name, tuple(t.shape))

            x = args[0] if args else None
            if isinstance(mod, nn.Linear):
                env[node] = P.linear(where, node.target, x, p("weight"), p("bias"), out)
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                env[node] = P.conv(where, node.target, x, p("weight"), p("bias"), mod.groups,
                                   out)
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                env[node] = P.channel_norm(where, x, [p("weight"), p("bias"),
                                                      p("running_mean"), p("running_var")], 1)
            elif isinstance(mod, (nn.LayerNorm, nn.RMSNorm)) and len(
                    tuple(mod.normalized_shape)) == 1:
                env[node] = P.channel_norm(where, x, [p("weight"), p("bias")], None)
            elif isinstance(mod, nn.Embedding):
                env[node] = P.embedding(where, node.target, p("weight"), out)
            elif isinstance(mod, unary_types):
                env[node] = P.carry(x, out)
            elif isinstance(mod, pool_types):
                env[node] = P.pool(where, x, out)
            elif isinstance(mod, (nn.Flatten, nn.Unflatten)):
                env[node] = P.reshape(where, x, out)
            elif isinstance(mod, nn.MultiheadAttention):
                q = x
                k = args[1] if len(args) > 1 else env[node.kwargs["key"]]
                v = args[2] if len(args) > 2 else env[node.kwargs["value"]]
                env[node] = P.mha(where, pre, mod, q, k, v, out)
            else:
                env[node] = P.unknown(where, args + st(list(node.kwargs.values())), out)
        elif node.op == "call_function":
            t = node.target
            if t is operator.getitem:
                base, idx = args[0], args[1]
                if isinstance(base, list) and isinstance(idx, int):
                    env[node] = base[idx]
                elif base is None or not isinstance(base, (_V, _P)):
                    env[node] = _fixed_like(out)
                else:
                    env[node] = P.unknown(where, [base], out, " (indexing)")
            elif t is getattr:
                env[node] = None if args[1] in ("shape", "dtype", "device", "ndim") else \
                    P.unknown(where, [args[0]], out)
            elif t in unary_fns:
                env[node] = P.carry(args[0], out)
            elif t in binary_fns:
                env[node] = P.binary(where, args[0], args[1], out)
            elif t in pool_fns:
                env[node] = P.pool(where, args[0], out)
            elif t in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze):
                env[node] = P.reshape(where, args[0], out)
            elif t in (torch.mean, torch.sum, torch.amax):
                env[node] = P.reduce(where, args[0], st(arg(node, 1, "dim")),
                                     bool(arg(node, 2, "keepdim", False)), out)
            elif t in (torch.transpose, torch.permute):
                x = args[0]
                if t is torch.permute:
                    order = list(st(arg(node, 1, "dims")))
                else:
                    xv = P.val(x)
                    order = _swap(len(xv.shape) if xv else 0, arg(node, 1, "dim0"),
                                  arg(node, 2, "dim1"))
                env[node] = P.transpose(x, order, out)
            elif t is torch.cat:
                env[node] = P.cat(where, list(args[0]), int(arg(node, 1, "dim", 0)), out)
            elif t is F.pad:
                env[node] = P.pad(where, args[0], st(arg(node, 1, "pad")), out)
            elif t is F.linear:
                env[node] = P.linear(where, node.name, args[0], st(arg(node, 1, "weight")),
                                     st(arg(node, 2, "bias")), out)
            elif t in (F.conv1d, F.conv2d, F.conv3d):
                env[node] = P.conv(where, node.name, args[0], st(arg(node, 1, "weight")),
                                   st(arg(node, 2, "bias")), int(arg(node, 6, "groups", 1)), out)
            elif t is F.batch_norm:
                env[node] = P.channel_norm(where, args[0], [
                    st(arg(node, 3, "weight")), st(arg(node, 4, "bias")),
                    st(arg(node, 1, "running_mean")), st(arg(node, 2, "running_var"))], 1)
            elif t is F.layer_norm and len(list(arg(node, 1, "normalized_shape", ()))) == 1:
                env[node] = P.channel_norm(where, args[0], [st(arg(node, 2, "weight")),
                                                            st(arg(node, 3, "bias"))], None)
            else:
                env[node] = P.unknown(where, args + st(list(node.kwargs.values())), out)
        elif node.op == "call_method":
            m = node.target
            x = args[0] if args else None
            if m in ("size", "dim", "numel", "stride"):
                env[node] = None
            elif m in unary_methods:
                env[node] = P.carry(x, out)
            elif m in ("add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_"):
                env[node] = P.binary(where, x, args[1], out)
            elif m in ("view", "reshape", "flatten", "squeeze", "unsqueeze", "expand",
                       "expand_as", "view_as", "reshape_as", "unflatten"):
                env[node] = P.reshape(where, x, out) if m.startswith(("v", "r", "f", "s", "un"))\
                    else P.carry(x, out)
            elif m in ("mean", "sum", "amax"):
                env[node] = P.reduce(where, x, st(arg(node, 1, "dim")),
                                     bool(arg(node, 2, "keepdim", False)), out)
            elif m in ("transpose", "permute"):
                if m == "permute":
                    order = [int(d) for d in _flat(args[1:])]
                else:
                    xv = P.val(x)
                    order = _swap(len(xv.shape) if xv else 0, args[1], args[2])
                env[node] = P.transpose(x, order, out)
            else:
                env[node] = P.unknown(where, args + st(list(node.kwargs.values())), out)


def _swap(r: int, d0: int, d1: int) -> list[int]:
    order = list(range(r))
    if r:
        d0, d1 = d0 % r, d1 % r
        order[d0], order[d1] = order[d1], order[d0]
    return order


# ----------------------------------------------------------------------------- export front end


def _walk_export(ep: Any, w: _Walk) -> None:
    import torch

    P = _Propagate(w)
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    env: dict[Any, Any] = {}

    def st(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return [st(x) for x in a]
        return a

    def arg(node: Any, i: int, default: Any = None) -> Any:
        return st(node.args[i]) if len(node.args) > i else default

    for node in ep.graph.nodes:
        out = _shape_of(node.meta.get("val"))
        where = _where_export(node)
        if node.op == "placeholder":
            key = names.get(node.name)
            env[node] = _P(key, tuple(w.shapes[key])) if key in w.shapes else _fixed_like(out)
            continue
        args = st(list(node.args))
        if node.op == "output":
            user_out = args[0][len(args[0]) - len(sig.user_outputs):]
            for s in _flat(user_out):
                if isinstance(s, _V) and s.axis is not None:
                    w.union(s.var, _FIXED)
            continue
        if node.op != "call_function":
            env[node] = P.unknown(where, args, out)
            continue
        t = node.target
        if t is operator.getitem:
            base, idx = args[0], args[1]
            env[node] = base[idx] if isinstance(base, list) else P.unknown(where, [base], out)
            continue
        name = _aten_name(t)
        stack = node.meta.get("nn_module_stack") or {}
        origin = (list(stack.values())[-1][0] if stack else "") or node.name
        x = args[0] if args else None
        if name in _META_ATEN:
            env[node] = None
        elif name in _UNARY_ATEN:
            env[node] = P.carry(x, out)
        elif name == "native_dropout":
            env[node] = [P.carry(x, out[0]), _fixed_like(out[1])]
        elif name in _BINARY_ATEN:
            env[node] = P.binary(where, x, args[1], out)
        elif name in _POOL_ATEN:
            env[node] = P.pool(where, x, out)
        elif name in _RESHAPE_ATEN:
            env[node] = P.carry(x, out) if name.startswith("expand") else \
                P.reshape(where, x, out)
        elif name in _REDUCE_ATEN:
            env[node] = P.reduce(where, x, arg(node, 1), bool(arg(node, 2, False)), out)
        elif name in ("permute", "transpose", "t", "swapaxes"):
            xv = P.val(x)
            r = len(xv.shape) if xv else 0
            order = list(args[1]) if name == "permute" else \
                _swap(r, 0, 1) if name == "t" else _swap(r, args[1], args[2])
            env[node] = P.transpose(x, order, out)
        elif name in ("pad", "constant_pad_nd"):
            env[node] = P.pad(where, x, args[1], out)
        elif name == "cat":
            env[node] = P.cat(where, list(x or []), int(arg(node, 1, 0)), out)
        elif name == "linear":
            env[node] = P.linear(where, origin, x, args[1], arg(node, 2), out)
        elif name in ("conv1d", "conv2d", "conv3d"):
            env[node] = P.conv(where, origin, x, args[1], arg(node, 2), int(arg(node, 6, 1)),
                               out)
        elif name == "convolution" and not args[6]:
            env[node] = P.conv(where, origin, x, args[1], args[2], int(args[8]), out)
        elif name in ("batch_norm", "_native_batch_norm_legit_no_training",
                      "native_batch_norm", "_native_batch_norm_legit_functional",
                      "_native_batch_norm_legit"):
            r = P.channel_norm(where, x, args[1:5], 1)
            env[node] = [r] + [_fixed_like(o) for o in out[1:]] if isinstance(out, list) else r
        elif name in ("layer_norm", "native_layer_norm", "rms_norm") and len(args[1]) == 1:
            r = P.channel_norm(where, x, [arg(node, 2), arg(node, 3) if name != "rms_norm"
                                          else None], None)
            env[node] = [r] + [_fixed_like(o) for o in out[1:]] if isinstance(out, list) else r
        elif name == "embedding":
            env[node] = P.embedding(where, origin, x, out)
        else:
            env[node] = P.unknown(where, args, out)


# ----------------------------------------------------------------------------- entry point


def spec_from_model(model: Any, example_input: Any) -> Any:
    """Permutation spec of ``model`` derived from its traced graph.

    Parameters
    ----------
    model : nn.Module
        Traced in eval mode (its mode is restored afterwards); not modified.
    example_input : Tensor or tuple of Tensor
        Positional inputs of one forward call (e.g. a float ``(n, 3, 112, 112)`` batch); fixes
        the shapes that reshapes are read with.

    Returns
    -------
    PermutationSpec
        One permutation per class of hidden axes, named after the module that first writes it
        (``"_blocks.1._expand_conv"``); keys of every parameter and buffer on a permuted axis,
        with aliases of tied tensors listed under each of their names.

    Raises
    ------
    RepscopeValueError
        The model traces neither with ``torch.fx`` nor with ``torch.export``, or an op the
        tracer does not know touches an axis that would be permuted (named in the message).
    RepscopeTypeError
        ``model`` is not an ``nn.Module``.

    Notes
    -----
    The model's inputs and outputs are fixed. See the module docstring for what is supported;
    anything else is refused rather than guessed.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise RepscopeTypeError(
            f"spec_from_model model: expected a torch nn.Module, got {type(model).__name__}.")
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    full = model.state_dict(keep_vars=True)
    shapes = {k: tuple(v.shape) for k, v in full.items()}
    by_id: dict[int, list[str]] = {}
    for k, v in full.items():
        by_id.setdefault(id(v), []).append(k)
    aliases = {k: by_id[id(v)] for k, v in full.items()}
    w = _Walk(aliases, shapes)
    was_training = model.training
    model.eval()
    try:
        fx_error = None
        try:
            from torch.fx.passes.shape_prop import ShapeProp

            gm = torch.fx.symbolic_trace(model)
            with torch.no_grad():
                ShapeProp(gm).propagate(*args)
        except Exception as e:  # any fx failure falls back to export
            fx_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if fx_error is None:
            _walk_fx(gm, w)
        else:
            try:
                ep = torch.export.export(model, args, strict=False)
            except Exception as e:
                raise RepscopeValueError(
                    f"spec_from_model: {type(model).__name__} traces neither with torch.fx "
                    f"({fx_error}) nor with torch.export ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); write its spec by "
                    "hand with PermutationSpec.from_dict.") from e
            _walk_export(ep, w)
    finally:
        model.train(was_training)
    for var, reason in w.pins:
        if w.find(var) != w.find(_FIXED):
            raise RepscopeValueError(f"spec_from_model: {reason}")
    return _assemble(w, shapes)


def _assemble(w: _Walk, shapes: dict[str, tuple[int, ...]]) -> PermutationSpec:
    fixed = w.find(_FIXED)
    names: dict[int, str] = {}
    sizes: dict[int, tuple[int, str, int]] = {}
    axes: dict[str, tuple[str | None, ...]] = {}
    used: set[str] = set()
    for key, row in w.assigned.items():
        out: list[str | None] = []
        for ax, var in enumerate(row):
            root = None if var is None else w.find(var)
            if root is None or root == fixed:
                out.append(None)
                continue
            n = shapes[key][ax]
            if root not in names:
                base = w.origin[root] or f"P{len(names)}"
                name, i = base, 1
                while name in used:
                    i += 1
                    name = f"{base}#{i}"
                used.add(name)
                names[root] = name
                sizes[root] = (n, key, ax)
            elif sizes[root][0] != n:
                s = sizes[root]
                raise RepscopeValueError(
                    f"spec_from_model: one permutation ({names[root]!r}) would act on {key!r} "
                    f"axis {ax} ({n} entries) and {s[1]!r} axis {s[2]} ({s[0]} entries); the "
                    "graph joins axes of different sizes.")
            out.append(names[root])
        if any(o is not None for o in out):
            axes[key] = tuple(out)
    perms = {names[r]: Perm(names[r], sizes[r][0]) for r in names}
    return PermutationSpec(perms, axes)
