"""Per-sample labels for an analysis: from a file, or from a store's metadata column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from repscope.exceptions import DataNotFoundError, RepscopeValueError, UnknownNameError
from repscope.registry import closest_names

__all__ = ["load_labels"]


def load_labels(
    source: str | os.PathLike[str], *, store: Any = None, n_samples: int | None = None
) -> np.ndarray:
    """Labels from a ``.npy`` file, a text file (one label per line), or a metadata column.

    Parameters
    ----------
    source : str or PathLike
        A ``.npy`` file (read without unpickling), a text file with one label per non-empty
        line, or, when ``store`` is given and no such file exists, the name of a metadata
        column of ``store``.
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
        Not one label per sample.
    """
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
