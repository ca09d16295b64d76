"""Generators with structure beyond independent atoms: multiplicative pair interactions
(PolySAE) and two modalities sharing codes across a gap (group-sparse SAE).

Same conventions as :mod:`repscope.synthetic._generators`: float32 ``X``, unit-norm float32
dictionaries, :class:`scipy.sparse.csr_array` float32 codes, seeded by ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.synthetic._common import (
    _CHUNK_ELEMENTS,
    add_noise,
    choose_k,
    codes_from_indices,
    draw_magnitudes,
    magnitude_range,
    make_rng,
    non_negative,
    positive_int,
    sparse_matmul,
    unit_rows,
)

__all__ = ["CompoundPairs", "PairedModalities", "compound_pairs", "paired_modalities"]


# ---------------------------------------------------------------------------- compound_pairs


@dataclass(frozen=True, eq=False)
class CompoundPairs:
    """Data from :func:`compound_pairs`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, d)
        ``codes @ dictionary + compound_codes @ compound_directions + noise``.
    dictionary : ndarray of float32, shape (m, d)
    codes : scipy.sparse.csr_array of float32, shape (n, m)
        ``k`` active atoms per sample.
    pairs : ndarray of int64, shape (n_pairs, 2)
        The compound pairs ``(i, j)``, disjoint.
    compound_directions : ndarray of float32, shape (n_pairs, d)
        The unit interaction direction ``e_ij`` of each pair.
    compound_codes : scipy.sparse.csr_array of float32, shape (n, n_pairs)
        ``compound_scale * s_i * s_j`` where both atoms of a pair are active.
    """

    X: np.ndarray
    dictionary: np.ndarray
    codes: sp.csr_array
    pairs: np.ndarray
    compound_directions: np.ndarray
    compound_codes: sp.csr_array


def compound_pairs(
    n: int,
    d: int = 64,
    m: int = 256,
    *,
    n_pairs: int = 32,
    k: int = 4,
    pair_prob: float = 0.5,
    compound_scale: float = 1.0,
    magnitude: float | tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> CompoundPairs:
    r"""Sparse features with multiplicative pair interactions (the PolySAE benchmark).

    .. math:: x = \sum_i s_i d_i + \sum_{(i,j) \in P} s_i s_j\, e_{ij} + \varepsilon

    ``P`` holds ``n_pairs`` disjoint random pairs of atoms; each :math:`e_{ij}` is a random unit
    direction (``compound_scale`` multiplies it). A sample has exactly ``k`` active atoms: with
    probability ``pair_prob`` one random pair of ``P`` is among them (so its interaction
    term is present) and the others are uniform without replacement; otherwise all ``k`` are
    uniform. A pair that co-fires by chance contributes its term too.

    Parameters
    ----------
    n, d, m : int
    n_pairs : int
        Number of pairs, ``2 * n_pairs <= m``.
    k : int
        Active atoms per sample, in [2, m] when ``pair_prob > 0``.
    pair_prob : float
        In [0, 1].
    compound_scale : float
    magnitude : float or (float, float)
    noise : float
    seed : int or numpy.random.Generator

    Returns
    -------
    CompoundPairs
    """
    caller = "compound_pairs"
    n, d, m, n_pairs = (
        positive_int(v, name, caller)
        for v, name in ((n, "n"), (d, "d"), (m, "m"), (n_pairs, "n_pairs"))
    )
    if 2 * n_pairs > m:
        raise RepscopeValueError(
            f"The 'n_pairs' parameter of {caller} must be at most m // 2 = {m // 2} (pairs are "
            f"disjoint). Got {n_pairs!r} instead."
        )
    pair_prob = float(
        check_scalar(pair_prob, "pair_prob", caller=caller, min_value=0.0, max_value=1.0)
    )
    k = int(
        check_scalar(
            k, "k", caller=caller, kind=int, min_value=2 if pair_prob > 0 else 1, max_value=m
        )
    )
    compound_scale = non_negative(compound_scale, "compound_scale", caller)
    lohi = magnitude_range(magnitude, "magnitude", caller)
    noise = non_negative(noise, "noise", caller)
    rng = make_rng(seed, caller=caller)
    dictionary = unit_rows(rng, m, d)
    directions = unit_rows(rng, n_pairs, d)
    pairs = rng.permutation(m)[: 2 * n_pairs].reshape(n_pairs, 2).astype(np.int64)
    with_pair = rng.random(n) < pair_prob
    which = rng.integers(0, n_pairs, size=n)
    # Force the chosen pair into the sample: give its atoms the smallest log-weight offset.
    idx = np.empty((n, k), dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        keys = rng.random((stop - start, m))
        sel = np.nonzero(with_pair[start:stop])[0]
        for col in (0, 1):
            keys[sel, pairs[which[start:stop][sel], col]] = -1.0
        idx[start:stop] = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < m else np.arange(m)
    codes = codes_from_indices(idx, draw_magnitudes(rng, idx.shape, lohi), m)
    # s_i * s_j for every pair of P whose atoms are both active (0 elsewhere).
    comp = sp.csr_array(
        codes[:, pairs[:, 0]].multiply(codes[:, pairs[:, 1]]) * compound_scale, dtype=np.float32
    )
    comp.eliminate_zeros()
    x = sparse_matmul(codes, dictionary)
    x = add_noise(rng, x + sparse_matmul(comp, directions), noise)
    return CompoundPairs(
        X=x.astype(np.float32),
        dictionary=dictionary.astype(np.float32),
        codes=codes,
        pairs=pairs,
        compound_directions=directions.astype(np.float32),
        compound_codes=comp,
    )


# ---------------------------------------------------------------------------- paired_modalities


@dataclass(frozen=True, eq=False)
class PairedModalities:
    """Data from :func:`paired_modalities`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, 2, d)
        ``X[:, 0]`` is modality a, ``X[:, 1]`` modality b, for the same underlying codes.
    dictionary : ndarray of float32, shape (m, d)
        The shared unit atoms.
    codes : scipy.sparse.csr_array of float32, shape (n, m)
        The shared sparse codes (``k`` active per pair).
    offsets : ndarray of float32, shape (2, d)
        The modality offsets ``m_a = +gap/2 g`` and ``m_b = -gap/2 g``.
    gap_direction : ndarray of float32, shape (d,)
        The unit direction ``g`` of the gap.
    """

    X: np.ndarray
    dictionary: np.ndarray
    codes: sp.csr_array
    offsets: np.ndarray
    gap_direction: np.ndarray


def paired_modalities(
    n: int,
    d: int = 64,
    m: int = 256,
    k: int = 4,
    *,
    gap: float = 2.0,
    magnitude: float | tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> PairedModalities:
    r"""Paired samples of two modalities sharing sparse codes, separated by a modality gap.

    .. math::
        x_a = D^\top s + \tfrac{\text{gap}}{2} g + \varepsilon_a, \qquad
        x_b = D^\top s - \tfrac{\text{gap}}{2} g + \varepsilon_b,

    with ``s`` sparse (``k`` uniformly random active atoms, magnitudes uniform on
    ``magnitude``), ``g`` a random unit direction, and independent noise per modality: the
    synthetic stand-in for aligned image/text embeddings with a modality gap (a CLIP-like
    "split dictionary" is what a per-modality SAE tends to learn).

    Parameters
    ----------
    n, d, m, k : int
        ``k <= m``.
    gap : float
        Distance ``||m_a - m_b||`` between the modality offsets.
    magnitude : float or (float, float)
    noise : float
    seed : int or numpy.random.Generator

    Returns
    -------
    PairedModalities
    """
    caller = "paired_modalities"
    n, d, m = (positive_int(v, name, caller) for v, name in ((n, "n"), (d, "d"), (m, "m")))
    k = int(check_scalar(k, "k", caller=caller, kind=int, min_value=1, max_value=m))
    gap = non_negative(gap, "gap", caller)
    lohi = magnitude_range(magnitude, "magnitude", caller)
    noise = non_negative(noise, "noise", caller)
    rng = make_rng(seed, caller=caller)
    dictionary = unit_rows(rng, m, d)
    g = unit_rows(rng, 1, d)[0]
    idx = choose_k(rng, n, m, k)
    codes = codes_from_indices(idx, draw_magnitudes(rng, idx.shape, lohi), m)
    shared = sparse_matmul(codes, dictionary)
    offsets = np.stack([0.5 * gap * g, -0.5 * gap * g])
    x = shared[:, None, :] + offsets[None]
    x = add_noise(rng, x, noise)
    return PairedModalities(
        X=x.astype(np.float32),
        dictionary=dictionary.astype(np.float32),
        codes=codes,
        offsets=offsets.astype(np.float32),
        gap_direction=g.astype(np.float32),
    )
