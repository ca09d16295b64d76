"""State dicts: one way in (module, mapping, safetensors file or folder), one compatibility
checker, linear interpolation, and float64 norms and distances.

Every weight-space function takes its inputs through :func:`as_state_dict` and checks pairs with
:func:`check_compatible`, so a bad pair fails with the same one-line message everywhere.
Nothing here mutates its inputs: :func:`interpolate` returns new tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

if TYPE_CHECKING:
    import torch

    from repscope.store._safetensors import TensorSpec

__all__ = [
    "LazyStateDict",
    "as_state_dict",
    "check_compatible",
    "interpolate",
    "is_float",
    "state_distance",
    "state_norm",
    "tensor_meta",
]


class LazyStateDict(Mapping[str, "torch.Tensor"]):
    """A read-only state dict over safetensors files: opening reads only the headers, and each
    ``sd[key]`` reads that one tensor from disk with a plain read into a fresh buffer (no memory
    map is kept, so reading a whole checkpoint key by key never holds more than one tensor;
    never unpickled; bfloat16 stays bfloat16).

    Streaming code (``weights._stream``) keeps one tensor per input in memory by indexing key by
    key; :meth:`meta` gives a tensor's shape and dtype and :meth:`nbytes` its size without
    reading its data.

    Parameters
    ----------
    paths : sequence of path
        The ``.safetensors`` files; a key in two of them is an error.
    name : str, default="state dict"
        The argument's name in error messages.

    Attributes
    ----------
    specs : dict of str to (Path, TensorSpec)
        Each key's file and header entry.
    folder : Path
        The folder of the (first) file: where its config files sit.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *,
                 name: str = "state dict") -> None:
        from repscope.store._safetensors import read_safetensors_header

        self.paths = tuple(Path(p) for p in paths)
        self.name = name
        self.folder = self.paths[0].parent if self.paths else Path(".")
        self.specs: dict[str, tuple[Path, TensorSpec]] = {}
        for path in self.paths:
            for key, spec in read_safetensors_header(path).items():
                if key in self.specs:
                    raise RepscopeValueError(
                        f"{name}: tensor {key!r} is in both {self.specs[key][0].name} and "
                        f"{path.name}; expected each tensor in one file.")
                self.specs[key] = (path, spec)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, name: str = "state dict") -> LazyStateDict:
        """A ``.safetensors`` file, or a folder of them (all its ``*.safetensors`` files)."""
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob("*.safetensors"))
            if not files:
                raise RepscopeValueError(
                    f"{name}: expected a .safetensors file or a folder holding some; the folder "
                    f"{p} has none.")
            out = cls(files, name=name)
            out.folder = p
            return out
        if p.is_file() and p.suffix == ".safetensors":
            return cls([p], name=name)
        what = "does not exist" if not p.exists() else "is not a .safetensors file"
        raise RepscopeValueError(
            f"{name}: expected a .safetensors file or a folder of them; {p} {what}.")

    def read(self, key: str) -> torch.Tensor:
        """Tensor ``key``, read from disk into a fresh tensor."""
        import numpy as np
        import torch

        from repscope.store._safetensors import DTYPES

        path, spec = self.specs[key]
        arr = np.empty(spec.shape, dtype=DTYPES[spec.dtype][1].newbyteorder("="))
        if math.prod(spec.shape):
            with open(path, "rb") as f:
                f.seek(spec.begin)
                n = f.readinto(arr.reshape(-1).data.cast("B"))
            if n != spec.end - spec.begin:
                raise RepscopeValueError(
                    f"{self.name}: tensor {key!r} in {path} is truncated ({n} of "
                    f"{spec.end - spec.begin} bytes).")
        t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if spec.dtype == "bfloat16" else t

    __getitem__ = read

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def nbytes(self, key: str) -> int:
        """Bytes of ``key`` on disk, from the header."""
        spec = self.specs[key][1]
        return spec.end - spec.begin

    def meta(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of ``key`` from the header alone."""
        spec = self.specs[key][1]
        return spec.shape, _TORCH_DTYPE[spec.dtype]()

    def __repr__(self) -> str:
        return f"LazyStateDict({len(self)} tensors in {len(self.paths)} file(s))"


def _dtype(name: str) -> Any:
    def get() -> Any:
        import torch

        return getattr(torch, name)

    return get


_TORCH_DTYPE = {name: _dtype(name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64")}


def as_state_dict(obj: Any, *, name: str = "state_dict") -> Mapping[str, torch.Tensor]:
    """The state dict of ``obj``.

    Parameters
    ----------
    obj : nn.Module, mapping of str to tensor, or path
        A module (its ``state_dict()``: detached tensors that share the module's memory, so
        treat them as read-only), a mapping of names to tensors (numpy arrays are wrapped
        without copying), or a ``.safetensors`` file or a folder of them, opened lazily as a
        :class:`LazyStateDict` (headers only; each tensor is read when indexed; never pickle).
    name : str, default="state_dict"
        The argument's name in error messages.

    Returns
    -------
    mapping of str to torch.Tensor
        A ``dict`` for modules and mappings, a :class:`LazyStateDict` for files.

    Raises
    ------
    RepscopeTypeError
        ``obj`` is none of the above, or a mapping holds a non-tensor.
    RepscopeValueError
        A path that is not a ``.safetensors`` file or a folder holding some.
    """
    import numpy as np
    import torch

    if isinstance(obj, LazyStateDict):
        return obj
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, (str, os.PathLike)):
        return LazyStateDict.open(obj, name=name)
    if isinstance(obj, Mapping):
        out: dict[str, torch.Tensor] = {}
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                out[str(key)] = value.detach()
            elif isinstance(value, np.ndarray):
                out[str(key)] = torch.from_numpy(value)
            else:
                raise RepscopeTypeError(
                    f"{name}: expected tensors as values; {key!r} is a "
                    f"{type(value).__name__}.")
        return out
    raise RepscopeTypeError(
        f"{name}: expected an nn.Module, a mapping of names to tensors, or a path to a "
        f".safetensors file or folder; got a {type(obj).__name__}.")


def tensor_meta(sd: Mapping[str, torch.Tensor], key: str) -> tuple[tuple[int, ...], torch.dtype]:
    """``(shape, dtype)`` of ``sd[key]``, from the header for a :class:`LazyStateDict`."""
    if isinstance(sd, LazyStateDict):
        return sd.meta(key)
    t = sd[key]
    return tuple(t.shape), t.dtype


def is_float(dtype: torch.dtype) -> bool:
    """Whether tensors of ``dtype`` are interpolated (floating point); others are copied."""
    return bool(dtype.is_floating_point)


def _first(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(k) for k in items[:n])
    return f"first: {shown}" if len(items) <= n else f"first: {shown}, ..."


def check_compatible(
    a: Any, b: Any, *, names: tuple[str, str] = ("a", "b"), finite: bool = True,
) -> None:
    """Check that two state dicts have the same keys, shapes and dtypes and finite weights.

    Shapes and dtypes of lazily opened files come from their headers; the finite check reads
    one tensor at a time.

    Parameters
    ----------
    a, b : nn.Module, mapping or path
        Anything :func:`as_state_dict` takes.
    names : (str, str), default=("a", "b")
        What the two are called in error messages (the caller's argument names).
    finite : bool, default=True
        Also refuse NaN or infinite values in floating-point tensors.

    Raises
    ------
    RepscopeValueError
        Different keys ("state dicts differ in keys: 3 only in a (first: 'fc.bias'), 0 only in
        b"), different shapes, or non-finite values; each message lists what differs, by
        tensor name.
    RepscopeTypeError
        Different dtypes.
    """
    na, nb = names
    sa, sb = as_state_dict(a, name=na), as_state_dict(b, name=nb)
    ka = list(sa)
    set_a, set_b = set(ka), set(sb)
    only_a = [k for k in ka if k not in set_b]
    only_b = [k for k in sb if k not in set_a]
    if only_a or only_b:
        parts = []
        for who, keys in ((na, only_a), (nb, only_b)):
            parts.append(f"{len(keys)} only in {who}" + (f" ({_first(keys)})" if keys else ""))
        raise RepscopeValueError(f"state dicts differ in keys: {', '.join(parts)}.")
    shapes, dtypes = [], []
    for key in ka:
        (sha, dta), (shb, dtb) = tensor_meta(sa, key), tensor_meta(sb, key)
        if sha != shb:
            shapes.append(f"{key!r} {list(sha)} vs {list(shb)}")
        elif dta != dtb:
            dtypes.append(f"{key!r} {_dtype_name(dta)} vs {_dtype_name(dtb)}")
    if shapes:
        raise RepscopeValueError(
            f"state dicts {na} and {nb} differ in the shapes of {len(shapes)} tensors "
            f"({na} vs {nb}): {'; '.join(shapes[:3])}{'; ...' if len(shapes) > 3 else ''}.")
    if dtypes:
        raise RepscopeTypeError(
            f"state dicts {na} and {nb} differ in the dtypes of {len(dtypes)} tensors "
            f"({na} vs {nb}): {'; '.join(dtypes[:3])}{'; ...' if len(dtypes) > 3 else ''}; "
            "cast one to the other's dtype first.")
    if finite:
        for who, sd in ((na, sa), (nb, sb)):
            _check_finite(sd, who)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_finite(sd: Mapping[str, torch.Tensor], who: str) -> None:
    import torch

    bad: list[str] = []
    for key in sd:
        _, dtype = tensor_meta(sd, key)
        if not is_float(dtype):
            continue
        t = sd[key]
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            bad.append(f"{key!r} ({n_nan} NaN, {n_inf} inf)")
    if bad:
        raise RepscopeValueError(
            f"state dict {who} has non-finite values in {len(bad)} tensors: "
            f"{'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''}; expected finite weights.")


def check_alpha(alpha: Any, *, name: str = "alpha") -> float:
    """``alpha`` as a finite float (values outside [0, 1] extrapolate and are allowed)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise RepscopeTypeError(f"{name}: expected a number; got {alpha!r}.") from None
    if not math.isfinite(value):
        raise RepscopeValueError(f"{name}: expected a finite number; got {value}.")
    return value


def check_keys(keys: Any, sd: Mapping[str, torch.Tensor], *, name: str = "keys") -> list[str]:
    """``keys`` (one name or several) as a list, each a key of ``sd``, in ``sd``'s order."""
    if isinstance(keys, str):
        keys = [keys]
    wanted = list(dict.fromkeys(str(k) for k in keys))
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise RepscopeValueError(
            f"{name}: {len(missing)} not in the state dict ({_first(missing)}); expected keys "
            f"such as {_first(list(sd))}.")
    chosen = set(wanted)
    return [k for k in sd if k in chosen]


def lerp_tensor(ta: torch.Tensor, tb: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) ta + alpha tb`` as a new tensor of ``ta``'s dtype; ``ta`` itself (a copy) at
    ``alpha == 0`` and ``tb`` at ``alpha == 1``, exactly. Half-precision tensors are combined in
    float32 and rounded once."""
    import torch

    if alpha == 0.0:
        return ta.clone()
    if alpha == 1.0:
        return tb.to(ta.dtype, copy=True)
    if ta.dtype in (torch.float16, torch.bfloat16):
        mixed = ta.float().mul_(1.0 - alpha).add_(tb.float(), alpha=alpha)
        return mixed.to(ta.dtype)
    return ta.mul(1.0 - alpha).add_(tb.to(ta.dtype), alpha=alpha)


def interpolate(
    a: Any, b: Any, alpha: float, *, keys: Sequence[str] | str | None = None, check: bool = True,
) -> dict[str, torch.Tensor]:
    """The state dict ``(1 - alpha) a + alpha b``, as new tensors.

    Floating-point tensors are interpolated; integer and boolean buffers (BatchNorm's
    ``num_batches_tracked``) are copied from ``a``. At ``alpha = 0`` the result equals ``a``
    and at ``alpha = 1`` it equals ``b`` exactly (floating-point tensors).

    Parameters
    ----------
    a, b : nn.Module, mapping or path
        Anything :func:`as_state_dict` takes, with the same keys, shapes and dtypes.
    alpha : float
        The weight of ``b``; values outside [0, 1] extrapolate.
    keys : str or sequence of str, optional
        Interpolate only these tensors (one block, for a layer-wise path); every other tensor
        is copied from ``a``.
    check : bool, default=True
        Run :func:`check_compatible` first (keys, shapes, dtypes, finite values); callers that
        already checked the pair pass False.

    Returns
    -------
    dict of str to torch.Tensor
        In ``a``'s key order.
    """
    sa, sb = as_state_dict(a, name="a"), as_state_dict(b, name="b")
    if check:
        check_compatible(sa, sb)
    value = check_alpha(alpha)
    chosen = set(check_keys(keys, sa) if keys is not None else sa)
    out: dict[str, torch.Tensor] = {}
    for key in sa:
        ta = sa[key]
        if key in chosen and is_float(ta.dtype):
            out[key] = lerp_tensor(ta, sb[key], value)
        else:
            out[key] = ta.clone()
    return out


def _float_keys(sd: Mapping[str, torch.Tensor], keys: Sequence[str] | str | None) -> list[str]:
    chosen = check_keys(keys, sd) if keys is not None else list(sd)
    return [k for k in chosen if is_float(tensor_meta(sd, k)[1])]


def state_norm(sd: Any, *, keys: Sequence[str] | str | None = None) -> float:
    """The L2 norm of the floating-point tensors of ``sd`` (all of them, or ``keys``) as if
    flattened into one vector; sums in float64.

    Parameters
    ----------
    sd : nn.Module, mapping or path
    keys : str or sequence of str, optional

    Returns
    -------
    float
    """
    import torch

    s = as_state_dict(sd, name="sd")
    total = 0.0
    for key in _float_keys(s, keys):
        total += float(torch.sum(s[key].to(torch.float64) ** 2))
    return math.sqrt(total)


def state_distance(a: Any, b: Any, *, keys: Sequence[str] | str | None = None) -> float:
    """``||a - b||``, the L2 distance between the floating-point tensors of two compatible
    state dicts (all of them, or ``keys``), flattened into one vector; sums in float64.

    Parameters
    ----------
    a, b : nn.Module, mapping or path
    keys : str or sequence of str, optional

    Returns
    -------
    float
    """
    import torch

    sa, sb = as_state_dict(a, name="a"), as_state_dict(b, name="b")
    check_compatible(sa, sb)
    total = 0.0
    for key in _float_keys(sa, keys):
        diff = sa[key].to(torch.float64) - sb[key].to(torch.float64)
        total += float(torch.sum(diff * diff))
    return math.sqrt(total)
