"""Saving and loading fitted OOD detectors: one safetensors file, JSON in its header, no pickle.

Layout: every fitted numeric array (attributes ending in ``_``) is a tensor; the header's
``"repscope"`` entry is JSON with the format name and version, the registered detector name,
the constructor parameters (those that are plain values; a head or a ``Moments`` passed in is
consumed at fit into fitted arrays and saved as ``null``), the fitted scalars and string arrays
(class labels), and the fitted feature transform (its name, parameters and fitted values).
Loading rebuilds the detector from the registry by name, so a detector fitted today scores
identically tomorrow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from repscope.exceptions import RepscopeTypeError

__all__ = ["load_detector", "save_detector"]

_FORMAT = "repscope.OODDetector"
_VERSION = 1


def _jsonable(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    return False


def _split_state(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fitted attributes of ``obj``: numeric arrays into ``arrays`` (key ``prefix + name``),
    everything else into the returned JSON dict."""
    from repscope.ood._transforms import FeatureTransform

    meta: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "fiub":
                arrays[prefix + name] = np.ascontiguousarray(value)
                meta[name] = {"array": prefix + name}
            else:
                meta[name] = {"strings": [str(v) for v in value.tolist()]}
        elif isinstance(value, FeatureTransform):
            sub = _split_state(value, prefix + name + ".", arrays)
            meta[name] = {"transform": value.transform_name,
                          "params": value.get_params(deep=False), "state": sub}
        elif isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
            keys = {}
            for i, (k, v) in enumerate(value.items()):
                keys[str(k)] = f"{prefix}{name}.{i}"
                arrays[keys[str(k)]] = np.ascontiguousarray(v)
            meta[name] = {"dict": keys}
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            meta[name] = {"value": value.item()}
        elif _jsonable(value):
            meta[name] = {"value": value}
        else:
            raise RepscopeTypeError(
                f"cannot save the fitted attribute {name!r} of {type(obj).__name__} (a "
                f"{type(value).__name__}); only arrays, numbers and strings are saved.")
    return meta


def _restore(obj: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    from repscope.ood._registry import get_transform

    for name, entry in meta.items():
        if "array" in entry:
            value: Any = arrays[entry["array"]]
        elif "strings" in entry:
            value = np.asarray(entry["strings"])
        elif "dict" in entry:
            value = {k: arrays[key] for k, key in entry["dict"].items()}
        elif "transform" in entry:
            value = get_transform(entry["transform"], **entry["params"])
            _restore(value, entry["state"], arrays)
        else:
            value = entry["value"]
        setattr(obj, name, value)


def save_detector(detector: Any, path: str | Path) -> Path:
    """Write a fitted detector to ``path`` (a ``.safetensors`` file); returns the path."""
    from repscope._io import write_tagged_safetensors

    detector._check_fitted()
    arrays: dict[str, np.ndarray] = {}
    state = _split_state(detector, "", arrays)
    params: dict[str, Any] = {}
    from repscope.ood._transforms import FeatureTransform

    for key, value in detector.get_params(deep=False).items():
        if isinstance(value, FeatureTransform):
            params[key] = {"transform": value.transform_name,
                           "params": value.get_params(deep=False)}
        elif _jsonable(value):
            params[key] = {"value": value}
        else:  # a head or a Moments: consumed at fit, its content is in the fitted arrays
            params[key] = {"value": None}
    classes = state.get("classes_")
    meta = {
        "format": _FORMAT,
        "format_version": _VERSION,
        "detector": detector.detector_name,
        "class": type(detector).__name__,
        "params": params,
        "state": state,
        "classes_kind": (None if classes is None else
                         "str" if "strings" in classes else
                         str(arrays[classes["array"]].dtype)),
    }
    return write_tagged_safetensors(path, arrays, meta)


def load_detector(path: str | Path) -> Any:
    """Read a detector written by :func:`save_detector`."""
    from repscope._io import read_tagged_safetensors
    from repscope.ood._registry import get_detector, get_transform

    meta, arrays = read_tagged_safetensors(path, kind="OOD detector", fmt=_FORMAT,
                                           version=_VERSION,
                                           missing=f"no saved OOD detector at {path}.")
    params: dict[str, Any] = {}
    for key, entry in meta["params"].items():
        if "transform" in entry:
            params[key] = get_transform(entry["transform"], **entry["params"])
        else:
            value = entry["value"]
            params[key] = tuple(value) if isinstance(value, list) else value
    detector = get_detector(meta["detector"], **params)
    _restore(detector, meta["state"], arrays)
    return detector
