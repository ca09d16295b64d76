"""Ragged (per-sample variable-length) token arrays and their padded form."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from repscope.exceptions import RepscopeValueError

__all__ = ["PaddedArray", "RaggedArray", "concat_ranges", "pad_ragged"]


class RaggedArray(NamedTuple):
    """Token activations of ``k`` samples stored back to back.

    Attributes
    ----------
    values : ndarray of shape (n_tokens, *shape_tail)
        All tokens of all samples, sample after sample.
    offsets : ndarray of int64, shape (k + 1,)
        Sample ``i`` owns ``values[offsets[i]:offsets[i + 1]]``; ``offsets[0] == 0`` and
        ``offsets[-1] == n_tokens``.
    """

    values: np.ndarray
    offsets: np.ndarray

    @property
    def n_samples(self) -> int:
        """Number of samples ``k``."""
        return int(self.offsets.shape[0]) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample, int64 of shape (k,)."""
        return np.diff(self.offsets)

    def sample(self, i: int) -> np.ndarray:
        """The tokens of sample ``i``, shape (t_i, *shape_tail) (a view)."""
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]


class PaddedArray(NamedTuple):
    """Token activations padded to the longest sample, with a mask of the real tokens.

    Attributes
    ----------
    values : ndarray of shape (k, t_max, *shape_tail)
        Sample ``i``'s tokens in ``values[i, :t_i]``; padding positions hold ``pad_value``.
    mask : ndarray of bool, shape (k, t_max)
        True where a real token is.
    """

    values: np.ndarray
    mask: np.ndarray


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.cumsum(lengths) - lengths  # where each range begins in the output
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)


def pad_ragged(ragged: RaggedArray, *, pad_value: float = 0.0) -> PaddedArray:
    """Pad a :class:`RaggedArray` to ``(k, t_max, *shape_tail)`` with a boolean mask.

    Parameters
    ----------
    ragged : RaggedArray
        ``values`` of shape (n_tokens, *shape_tail) and ``offsets`` of shape (k + 1,).
    pad_value : float, default 0.0
        Value written at padding positions.

    Returns
    -------
    PaddedArray
        ``values`` of shape (k, t_max, *shape_tail) in the dtype of ``ragged.values`` and
        ``mask`` of shape (k, t_max); ``t_max`` is the longest sample (0 when all are empty).

    Examples
    --------
    >>> import numpy as np
    >>> r = RaggedArray(np.arange(6.0).reshape(3, 2), np.array([0, 1, 3]))
    >>> p = pad_ragged(r)
    >>> p.mask
    array([[ True, False],
           [ True,  True]])
    >>> p.values[0]
    array([[0., 1.],
           [0., 0.]])
    """
    values, offsets = ragged
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise RepscopeValueError(
            f"ragged.offsets must be 1-D of length k + 1 >= 1; got shape {offsets.shape}."
        )
    lengths = np.diff(offsets)
    k = lengths.shape[0]
    t_max = int(lengths.max()) if k else 0
    out = np.full((k, t_max, *values.shape[1:]), pad_value, dtype=values.dtype)
    mask = np.arange(t_max)[None, :] < lengths[:, None]
    rows = np.repeat(np.arange(k), lengths)
    cols = concat_ranges(np.zeros(k, dtype=np.int64), lengths)
    out[rows, cols] = values[offsets[0] : offsets[-1]]
    return PaddedArray(out, mask)
