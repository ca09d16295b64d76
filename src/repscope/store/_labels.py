"""Per-sample labels for an analysis: from a file, or from a store's metadata column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from repscope.exceptions import DataNotFoundError, RepscopeValueError, UnknownNameError
from repscope.registry import closest_names

__all__ = ["load_labels"]

#: ``column:NAME`` names a metadata column of the store, never a file.
COLUMN_PREFIX = "column:"


def _plain_name(source: str | os.PathLike[str]) -> bool:
    """True for a str without a folder part (``label``, ``y.npy``), which could name a file in
    the working directory or a metadata column; ``./label`` and PathLikes are files."""
    return isinstance(source, str) and os.sep not in source and "/" not in source and (
        os.altsep is None or os.altsep not in source)


def load_labels(
    source: str | os.PathLike[str], *, store: Any = None, n_samples: int | None = None
) -> np.ndarray:
    """Labels from a ``.npy`` file, a text file (one label per line), or a metadata column.

    Parameters
    ----------
    source : str or PathLike
        A ``.npy`` file (read without unpickling), a text file with one label per non-empty
        line, or the name of a metadata column of ``store``. A plain name (no folder part)
        that is both a file and a column is refused as ambiguous: write ``./name`` (or any
        path with a folder, or a ``PathLike``) for the file, ``column:name`` for the column.
    store : FeatureStore or LayerSource, optional
        Where to look for the column ``source``.
    n_samples : int, optional
        The number of labels expected (one per sample).

    Returns
    -------
    ndarray of shape (n_samples,)

    Raises
    ------
    UnknownNameError
        ``source`` is neither a file nor a column of ``store`` (the closest column is named).
    DataNotFoundError
        ``source`` is not a file and there is no ``store``.
    RepscopeValueError
        Not one label per sample; a plain name that is both a file and a column of
        ``store``; ``column:name`` without a ``store``.
    """
    text = str(source)
    column: str | None = None
    if isinstance(source, str) and source.startswith(COLUMN_PREFIX):
        column = source[len(COLUMN_PREFIX):]
        if store is None:
            raise RepscopeValueError(
                f"labels {source!r} names a metadata column, but there is no store to read it "
                "from; pass the features as a FeatureStore, or labels from a file."
            )
    elif store is not None and _plain_name(source):
        cols = store.metadata_columns
        if text in cols and Path(text).exists():
            raise RepscopeValueError(
                f"labels {text!r} is both a file ({Path(text).resolve()}) and a metadata column "
                f"of the store; pass './{text}' for the file or 'column:{text}' for the column."
            )
        if not Path(text).exists():
            column = text
    if column is not None:
        cols = store.metadata_columns
        if column not in cols:
            close = closest_names(column, cols)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"no metadata column {column!r} in the store.{hint} Columns: "
                f"{', '.join(cols) or '(none)'}.",
                name=column,
                known=tuple(cols),
            )
        y = np.asarray(store.metadata([column])[column])
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
