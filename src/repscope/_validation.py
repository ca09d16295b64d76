"""Input validation shared by every public function.

Each checker returns the validated input in the caller's backend (numpy stays numpy, a torch
tensor stays a torch tensor on its device) and raises a :class:`~repscope.exceptions.RepscopeError`
subclass whose message names the argument, what was expected, what came, and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from repscope._array import get_namespace, is_torch, to_numpy
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = [
    "check_choice",
    "check_features",
    "check_labels",
    "check_paired",
    "check_positive_int",
    "check_scalar",
]

_FLOAT_KINDS = "fiub"


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _as_array(X: Any, name: str) -> Any:
    if is_torch(X):
        return X
    if isinstance(X, np.ndarray):
        return X
    if isinstance(X, (str, bytes)) or X is None:
        raise RepscopeTypeError(
            f"{name} must be a numpy array or torch tensor of numbers; got {type(X).__name__}."
        )
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as err:
        raise RepscopeTypeError(
            f"{name} must be a numpy array or torch tensor of numbers; got {type(X).__name__} "
            f"that numpy cannot convert ({err})."
        ) from None
    return arr


def check_features(
    X: Any,
    *,
    name: str = "X",
    ndim: int | Sequence[int] = 2,
    min_samples: int = 1,
    min_features: int = 1,
    allow_nonfinite: bool = False,
) -> Any:
    """Validate a feature array of shape ``(n_samples, n_features)`` (or ``(n, t, d)``).

    Parameters
    ----------
    X : array-like or torch.Tensor
        The features. Lists are converted to numpy.
    name : str
        The argument name used in error messages.
    ndim : int or sequence of int
        Allowed numbers of dimensions.
    min_samples, min_features : int
        Smallest allowed first and last dimension.
    allow_nonfinite : bool
        Skip the NaN/inf check (for callers that handle them).

    Returns
    -------
    The input, unchanged in backend and device (numpy for array-likes).

    Raises
    ------
    RepscopeTypeError
        Not an array of numbers.
    RepscopeValueError
        Wrong number of dimensions, too few samples or features, NaN or inf values.
    """
    X = _as_array(X, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if is_torch(X):
        if not (X.dtype.is_floating_point or not X.dtype.is_complex):
            raise RepscopeTypeError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    elif X.dtype.kind not in _FLOAT_KINDS:
        raise RepscopeTypeError(
            f"{name} must hold numbers; got dtype {X.dtype}. Convert it to a float array."
        )
    if X.ndim not in allowed:
        want = " or ".join(
            {2: "2-D (n_samples, n_features)", 3: "3-D (n_samples, n_tokens, n_features)"}.get(
                k, f"{k}-D"
            )
            for k in allowed
        )
        hint = " Use X.reshape(-1, 1) for a single feature." if X.ndim == 1 and 2 in allowed else ""
        raise RepscopeValueError(f"{name} must be {want}; got shape {_shape(X)}.{hint}")
    n = int(X.shape[0])
    if n < min_samples:
        raise RepscopeValueError(
            f"{name} must have at least {min_samples} sample(s) (rows); got shape {_shape(X)}."
            + (" It is empty." if n == 0 else "")
        )
    if int(X.shape[-1]) < min_features:
        raise RepscopeValueError(
            f"{name} must have at least {min_features} feature(s) (columns); got shape "
            f"{_shape(X)}."
        )
    if not allow_nonfinite:
        _check_finite(X, name)
    return X


def _check_finite(X: Any, name: str) -> None:
    if is_torch(X):
        import torch

        if not X.dtype.is_floating_point:
            return
        bad = ~torch.isfinite(X)
        if bool(bad.any()):
            nan = int(torch.isnan(X).sum())
            inf = int(bad.sum()) - nan
            first = tuple(int(i) for i in bad.nonzero()[0].tolist())
            _raise_nonfinite(name, nan, inf, first)
        return
    if X.dtype.kind != "f":
        return
    # A NaN or an infinity makes any sum that contains it non-finite, so finite sums clear
    # the array cheaply (column sums by one BLAS matrix-vector product for a C-ordered
    # float32/64 matrix, a third of the time of a float64 sum); a non-finite sum (also an
    # overflow of finite values) is confirmed element-wise.
    with np.errstate(over="ignore", invalid="ignore"):
        if X.ndim == 2 and X.dtype in (np.float32, np.float64) and X.flags.c_contiguous \
                and X.size:
            clear = bool(np.isfinite(np.ones(X.shape[0], dtype=X.dtype) @ X).all())
        else:
            clear = bool(np.isfinite(X.sum(dtype=np.float64)))
    if clear:
        return
    bad = ~np.isfinite(X)
    if bad.any():
        nan = int(np.isnan(X).sum())
        inf = int(bad.sum()) - nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        _raise_nonfinite(name, nan, inf, first)


def _raise_nonfinite(name: str, nan: int, inf: int, first: tuple[int, ...]) -> None:
    parts = []
    if nan:
        parts.append(f"{nan} NaN")
    if inf:
        parts.append(f"{inf} inf")
    raise RepscopeValueError(
        f"{name} must be finite; got {' and '.join(parts)} value(s), the first at index {first}. "
        "Drop or impute those samples first."
    )


def check_paired(
    X: Any,
    Y: Any,
    *,
    names: tuple[str, str] = ("X", "Y"),
    min_samples: int = 1,
    reject_constant: bool = False,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Validate two feature arrays computed on the same inputs (same n, any widths).

    ``reject_constant=True`` (what similarity measures need) also refuses an input whose rows
    are all equal: a similarity between representations needs variation across inputs.
    """
    get_namespace(X, Y)
    X = check_features(X, name=names[0], min_samples=min_samples, **kwargs)
    Y = check_features(Y, name=names[1], min_samples=min_samples, **kwargs)
    if X.shape[0] != Y.shape[0]:
        raise RepscopeValueError(
            f"{names[0]} and {names[1]} must have the same number of samples (rows); got "
            f"{names[0]}.shape={_shape(X)} and {names[1]}.shape={_shape(Y)}. Pass activations "
            "computed on the same inputs."
        )
    if reject_constant:
        for name, A in zip(names, (X, Y), strict=True):
            a = A.detach() if is_torch(A) else A
            first = a[:1]
            # Cheap in the usual case: the first rows already differ; the full scan runs only
            # when the first 64 rows are identical.
            if bool((a[:64] == first).all()) and bool((a == first).all()):
                raise RepscopeValueError(
                    f"{name} is constant (every row equals the first, shape {tuple(A.shape)}); "
                    "a similarity between representations needs variation across inputs."
                )
    return X, Y


def check_labels(
    y: Any,
    *,
    n_samples: int | None = None,
    name: str = "labels",
    min_classes: int = 1,
    allow_strings: bool = True,
) -> np.ndarray:
    """Validate a 1-D label vector and return it as a numpy array.

    Integer and string labels are accepted (``allow_strings``); floats must be whole numbers.
    ``n_samples`` checks the length against the features.
    """
    if y is None:
        raise RepscopeTypeError(f"{name} must be a 1-D array of class labels; got None.")
    arr = to_numpy(y) if is_torch(y) else np.asarray(y)
    if arr.ndim != 1:
        raise RepscopeValueError(
            f"{name} must be 1-D with one label per sample; got shape {arr.shape}. "
            + ("Use y.ravel() for a column vector." if arr.ndim == 2 and arr.shape[1] == 1 else "")
        )
    if n_samples is not None and arr.shape[0] != n_samples:
        raise RepscopeValueError(
            f"{name} must have one entry per sample ({n_samples}); got {arr.shape[0]}. "
            "Pass labels for exactly the rows of the features."
        )
    kind = arr.dtype.kind
    if kind in "US O".replace(" ", ""):
        if not allow_strings:
            raise RepscopeTypeError(
                f"{name} must be integer class indices; got dtype {arr.dtype}. Encode them with "
                "np.unique(labels, return_inverse=True)[1]."
            )
        if kind == "O" and not all(isinstance(v, (str, int, np.integer)) for v in arr[:1000]):
            raise RepscopeTypeError(
                f"{name} must hold integers or strings; got objects of type "
                f"{type(arr[0]).__name__}."
            )
    elif kind == "f":
        if not np.all(np.isfinite(arr)):
            raise RepscopeValueError(f"{name} must be finite; got NaN or inf labels.")
        if not np.all(arr == np.round(arr)):
            raise RepscopeValueError(
                f"{name} must be class labels (integers or strings); got non-integer floats "
                f"such as {float(arr[arr != np.round(arr)][0])!r}. For continuous targets use a "
                "regression/encoding model."
            )
        arr = arr.astype(np.int64)
    elif kind not in "iub":
        raise RepscopeTypeError(f"{name} must hold integers or strings; got dtype {arr.dtype}.")
    if min_classes > 1:
        n_classes = len(np.unique(arr))
        if n_classes < min_classes:
            raise RepscopeValueError(
                f"{name} must contain at least {min_classes} distinct classes; got {n_classes}."
            )
    return arr


def check_scalar(
    value: Any,
    name: str,
    *,
    caller: str,
    kind: type | tuple[type, ...] = (int, float),
    min_value: float | None = None,
    max_value: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
) -> Any:
    """Validate a scalar parameter with scikit-learn's message template."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok_type = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        ok_type = ok_type or any(
            (k is int and isinstance(value, np.integer))
            or (k is float and isinstance(value, (np.floating, np.integer)))
            for k in kinds
        )
    if not ok_type:
        tnames = " or ".join(k.__name__ for k in kinds)
        raise RepscopeTypeError(
            f"The {name!r} parameter of {caller} must be of type {tnames}. Got {value!r} "
            f"({type(value).__name__}) instead."
        )
    lo_bad = min_value is not None and (value < min_value if include_min else value <= min_value)
    hi_bad = max_value is not None and (value > max_value if include_max else value >= max_value)
    if lo_bad or hi_bad or (isinstance(value, float) and not np.isfinite(value)):
        lo = "" if min_value is None else ("[" if include_min else "(") + f"{min_value}"
        hi = "" if max_value is None else f"{max_value}" + ("]" if include_max else ")")
        rng = f"in the range {lo or '(-inf'}, {hi or 'inf)'}"
        raise RepscopeValueError(
            f"The {name!r} parameter of {caller} must be {rng}. Got {value!r} instead."
        )
    return value


def check_positive_int(value: Any, name: str, *, caller: str) -> int:
    """A positive integer parameter."""
    return int(check_scalar(value, name, caller=caller, kind=int, min_value=1))


def check_choice(value: Any, name: str, choices: Iterable[str], *, caller: str) -> str:
    """A string parameter from a fixed set; the message suggests the closest option."""
    options = list(choices)
    if value in options:
        return str(value)
    from repscope.registry import closest_names

    close = closest_names(str(value), options)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RepscopeValueError(
        f"The {name!r} parameter of {caller} must be one of {options}. Got {value!r} instead."
        + hint
    )
