"""Array conventions: backend dispatch, dtype policy, conversion helpers.

Dtype policy (the one place it is written down)
------------------------------------------------
* Accepted inputs: float16, bfloat16, float32, float64 (integers and bools are promoted to the
  default float, ``float64`` for numpy and ``float32`` for torch).
* Reductions that feed a decomposition (sums, Gram matrices, covariances) accumulate in
  float64 (:data:`ACCUMULATE_DTYPE`); decompositions run in at least float32.
* Results come back in the input's backend, device and (floating) dtype.
* Half precision inputs are upcast for the computation; repscope warns once per process.

Backends: numpy and torch. A function calls :func:`get_namespace` on its inputs; mixing a
numpy array with a torch tensor, or tensors on two devices, raises
:class:`~repscope.exceptions.BackendMismatchError`. There is no global backend switch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from repscope.exceptions import BackendMismatchError, RepscopeTypeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACCUMULATE_DTYPE",
    "Backend",
    "as_float64_numpy",
    "from_numpy_like",
    "get_namespace",
    "is_torch",
    "to_numpy",
]

Backend = Literal["numpy", "torch"]

#: dtype every long sum is accumulated in.
ACCUMULATE_DTYPE = np.float64

_warned_upcast: set[str] = set()


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (without importing torch if it is not loaded)."""
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def get_namespace(*arrays: Any) -> tuple[Backend, str]:
    """Return ``(backend, device)`` shared by ``arrays`` (``None`` entries are ignored).

    Raises
    ------
    BackendMismatchError
        If numpy arrays and torch tensors are mixed, or tensors live on different devices.
    """
    backend: Backend | None = None
    device: str | None = None
    for a in arrays:
        if a is None:
            continue
        b: Backend = "torch" if is_torch(a) else "numpy"
        d = str(a.device) if b == "torch" else "cpu"
        if backend is None:
            backend, device = b, d
        elif b != backend:
            raise BackendMismatchError(
                f"inputs mix backends: got a {backend} array and a {b} array. Pass all inputs "
                "as numpy arrays or all as torch tensors."
            )
        elif d != device:
            raise BackendMismatchError(
                f"inputs live on different devices: {device} and {d}. Move them to one device "
                "first (repscope never moves your data)."
            )
    return (backend or "numpy"), (device or "cpu")


def to_numpy(x: Any, *, dtype: Any = None) -> np.ndarray:
    """Convert a numpy array, torch tensor or array-like to numpy (copying only when needed)."""
    if is_torch(x):
        t = x.detach()
        if t.dtype.is_floating_point and t.dtype not in _numpy_native_torch_dtypes():
            t = t.float()  # bfloat16 has no numpy dtype
        out = t.cpu().numpy()
    else:
        out = np.asarray(x)
    if dtype is not None:
        out = out.astype(dtype, copy=False)
    return out


def _numpy_native_torch_dtypes() -> tuple[Any, ...]:
    import torch

    return (torch.float16, torch.float32, torch.float64)


def as_float64_numpy(x: Any, *, name: str = "X") -> np.ndarray:
    """Convert to a float64 numpy array for accumulation; warn once when upcasting half floats."""
    if is_torch(x):
        import torch

        if x.dtype in (torch.float16, torch.bfloat16):
            _warn_upcast_once(str(x.dtype))
        return x.detach().to(dtype=torch.float64).cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.float16:
        _warn_upcast_once("float16")
    if arr.dtype.kind not in "fiub":
        raise RepscopeTypeError(
            f"{name} must hold numbers; got dtype {arr.dtype}. Convert it to a float array."
        )
    return arr.astype(np.float64, copy=False)


def _warn_upcast_once(dtype: str) -> None:
    if dtype in _warned_upcast:
        return
    _warned_upcast.add(dtype)
    warnings.warn(
        f"{dtype} input is upcast to float64 for accumulation (warned once per process).",
        UserWarning,
        stacklevel=3,
    )


def from_numpy_like(x: np.ndarray, like: Any) -> Any:
    """Return ``x`` in the backend, device and floating dtype of ``like``."""
    if is_torch(like):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x))
        dtype = like.dtype if like.dtype.is_floating_point else torch.get_default_dtype()
        return t.to(device=like.device, dtype=dtype)
    like_arr = np.asarray(like)
    if like_arr.dtype.kind == "f":
        return x.astype(like_arr.dtype, copy=False)
    return x


def torch_device(x: Any) -> torch.device | None:
    """The torch device of ``x`` or ``None`` for numpy input."""
    return x.device if is_torch(x) else None
