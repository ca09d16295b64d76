"""Load features that already exist on disk: ``.npy``, ``.safetensors`` or a FeatureStore.

People who already have embeddings never need a model adapter: every analysis command of the
CLI takes one of these, and :func:`load_features` gives ``{layer: array}`` for the library.
Nothing is unpickled (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repscope.exceptions import (
    CorruptStoreError,
    DataNotFoundError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.registry import closest_names

__all__ = ["load_features", "load_labels"]


def _pick(available: Sequence[str], wanted: Sequence[str] | None, path: Path) -> list[str]:
    if not wanted:
        return list(available)
    out = []
    for name in wanted:
        if name not in available:
            close = closest_names(name, list(available))
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown layer {name!r} in {path}.{hint} Known layers: {', '.join(available)}.",
                name=name,
                known=tuple(available),
            )
        out.append(name)
    return out


def load_features(
    path: str | Path, layers: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Read features from ``path``.

    Parameters
    ----------
    path : str or Path
        A ``.npy`` file (one 2-D array; the layer is named after the file stem), a
        ``.safetensors`` file (one tensor per layer), or a FeatureStore directory.
    layers : sequence of str, optional
        Which layers to read (default: all). Unknown names raise an error listing the known
        ones.

    Returns
    -------
    dict mapping layer name to an array of shape (n_samples, n_features). Token (ragged)
    layers of a store are mean-pooled per sample.
    """
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"no features at {p}: the file or directory does not exist.")
    if p.is_dir():
        from repscope.store import FeatureStore

        store = FeatureStore.open(p)
        out: dict[str, np.ndarray] = {}
        for name in _pick(store.layers, layers, p):
            if store.layer_info(name).ragged:
                r = store.read_ragged(name)
                offs = np.asarray(r.offsets)
                sums = np.add.reduceat(np.asarray(r.values, dtype=np.float64), offs[:-1], axis=0)
                out[name] = sums / np.diff(offs)[:, None]
            else:
                a = store.read(name)
                out[name] = a.reshape(a.shape[0], -1)
        return out
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise CorruptStoreError(f"cannot read {p} as a numeric .npy file: {err}") from None
        _pick([p.stem], layers, p)
        return {p.stem: _as_2d(arr, p)}
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="numpy") as f:
                keys = list(f.keys())
                return {k: _as_2d(f.get_tensor(k), p, k) for k in _pick(keys, layers, p)}
        except (UnknownNameError, RepscopeValueError):
            raise
        except Exception as err:
            raise CorruptStoreError(f"cannot read {p} as safetensors: {err}") from None
    raise RepscopeValueError(
        f"features must be a .npy file, a .safetensors file or a FeatureStore directory; got "
        f"{p.name!r}."
    )


def _as_2d(arr: Any, path: Path, key: str | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    where = f"{path}" + (f" [{key}]" if key else "")
    if arr.dtype.kind not in "fiu":
        raise RepscopeValueError(f"features in {where} must be numeric; got dtype {arr.dtype}.")
    if arr.ndim == 1:
        raise RepscopeValueError(
            f"features in {where} must be 2-D (n_samples, n_features); got shape {arr.shape}. "
            "Save a single feature as shape (n, 1)."
        )
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    return arr


def load_labels(source: str | Path, *, store: Any = None, n_samples: int | None = None) -> np.ndarray:
    """Labels from a ``.npy`` file, a text file (one label per line), or a metadata column of
    ``store`` named ``source``."""
    if store is not None and not Path(str(source)).exists():
        cols = store.metadata_columns
        if str(source) not in cols:
            close = closest_names(str(source), cols)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"no metadata column {str(source)!r} in the store.{hint} Columns: "
                f"{', '.join(cols) or '(none)'}.",
                name=str(source),
                known=tuple(cols),
            )
        y = np.asarray(store.metadata([str(source)])[str(source)])
    else:
        p = Path(source)
        if not p.exists():
            raise DataNotFoundError(f"no labels at {p}: the file does not exist.")
        if p.suffix.lower() == ".npy":
            y = np.load(p, allow_pickle=False)
        else:
            y = np.array([ln.strip() for ln in p.read_text().splitlines() if ln.strip()])
    if n_samples is not None and len(y) != n_samples:
        raise RepscopeValueError(
            f"labels must have one entry per sample ({n_samples}); got {len(y)} from {source}."
        )
    return y
