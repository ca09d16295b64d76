"""Sparse-dictionary generators with known ground truth (numpy, seeded).

Every generator draws ``x = codes @ dictionary (+ structure) + noise`` and returns a frozen
dataclass holding the data ``X`` (float32), the unit-norm ground-truth ``dictionary`` (float32,
one atom per row), the ground-truth ``codes`` as a :class:`scipy.sparse.csr_array` of float32
(rows are samples, columns atoms; only the active entries are stored, so wide dictionaries stay
cheap), and the generator's own fields. The same ``seed`` (an int, or a
:class:`numpy.random.Generator` used as is) gives the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from repscope._validation import check_choice, check_scalar
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
    orthonormal_rows,
    positive_int,
    sparse_matmul,
    unit_rows,
)

__all__ = [
    "CircleManifold",
    "Hierarchy",
    "SparseFeatures",
    "circle_manifold",
    "hierarchy",
    "sparse_features",
]


# ---------------------------------------------------------------------------- sparse_features


@dataclass(frozen=True, eq=False)
class SparseFeatures:
    """Data from :func:`sparse_features`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, d)
        ``codes @ dictionary + noise``.
    dictionary : ndarray of float32, shape (m, d)
        Unit-norm atoms (uniformly random directions).
    codes : scipy.sparse.csr_array of float32, shape (n, m)
        Active magnitudes (all positive).
    firing_prob : ndarray of float64, shape (m,)
        Each atom's firing probability (exact with ``p_fire``; with ``k``, the sampling weights
        scaled to sum to ``k``, which the empirical frequencies follow closely when
        ``k << m``). Atom 0 fires most often.
    """

    X: np.ndarray
    dictionary: np.ndarray
    codes: sp.csr_array
    firing_prob: np.ndarray


def sparse_features(
    n: int,
    d: int,
    m: int,
    *,
    k: int | None = None,
    p_fire: float | None = None,
    firing: Literal["zipf", "uniform"] = "zipf",
    zipf_exponent: float = 1.0,
    magnitude: float | tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> SparseFeatures:
    r"""Sparse superposition of ``m`` random unit atoms in ``R^d`` with Zipf firing rates.

    Atom ``i`` (0-based) has firing weight :math:`w_i = (i+1)^{-s}` (``firing="zipf"``, exponent
    ``s``) or 1 (``"uniform"``). Two sparsity modes:

    - ``k``: every sample has exactly ``k`` active atoms, drawn without replacement with
      probabilities proportional to ``w`` (successive sampling);
    - ``p_fire``: atoms fire independently, atom ``i`` with probability
      :math:`p_i = p_{fire}\, m\, w_i / \sum_j w_j` (so ``p_fire`` is the mean firing
      probability and :math:`p_i \propto (i+1)^{-s}` exactly).

    Active magnitudes are uniform on ``magnitude = (low, high)`` (one float: constant).

    Parameters
    ----------
    n, d, m : int
        Samples, dimension, atoms (``m > d`` gives superposition).
    k : int or None
        Exact number of active atoms per sample, in [1, m]. When neither ``k`` nor ``p_fire``
        is given, ``k = min(8, m)``.
    p_fire : float or None
        Mean firing probability in (0, 1]; every :math:`p_i` must stay <= 1.
    firing : {"zipf", "uniform"}
    zipf_exponent : float
        The exponent ``s >= 0`` of the Zipf weights.
    magnitude : float or (float, float)
    noise : float
        Standard deviation of the isotropic Gaussian noise per coordinate.
    seed : int or numpy.random.Generator

    Returns
    -------
    SparseFeatures

    Examples
    --------
    >>> data = sparse_features(1000, 16, 64, k=3, seed=0)
    >>> data.X.shape, data.codes.shape, int(data.codes.count_nonzero(axis=1).max())
    ((1000, 16), (1000, 64), 3)
    """
    caller = "sparse_features"
    n, d, m = (positive_int(v, name, caller) for v, name in ((n, "n"), (d, "d"), (m, "m")))
    firing = check_choice(firing, "firing", ("zipf", "uniform"), caller=caller)  # type: ignore[assignment]
    s = non_negative(zipf_exponent, "zipf_exponent", caller)
    lohi = magnitude_range(magnitude, "magnitude", caller)
    noise = non_negative(noise, "noise", caller)
    if k is not None and p_fire is not None:
        raise RepscopeValueError(
            f"Pass either 'k' or 'p_fire' to {caller}, not both. Got k={k!r} and p_fire={p_fire!r}."
        )
    rng = make_rng(seed, caller=caller)
    weights = np.arange(1, m + 1, dtype=np.float64) ** (-s) if firing == "zipf" else np.ones(m)
    weights = weights / weights.sum()
    dictionary = unit_rows(rng, m, d)
    if p_fire is None:
        k = min(8, m) if k is None else k
        k = int(check_scalar(k, "k", caller=caller, kind=int, min_value=1, max_value=m))
        idx = choose_k(rng, n, m, k, np.log(weights))
        codes = codes_from_indices(idx, draw_magnitudes(rng, idx.shape, lohi), m)
        firing_prob = weights * k
    else:
        p_fire = float(
            check_scalar(
                p_fire, "p_fire", caller=caller, min_value=0.0, include_min=False, max_value=1.0
            )
        )
        firing_prob = p_fire * m * weights
        if firing_prob.max() > 1.0:
            raise RepscopeValueError(
                f"The 'p_fire' parameter of {caller} gives atom 0 a firing probability of "
                f"{firing_prob.max():.3g} > 1 with zipf_exponent={s}; it must be at most "
                f"{1.0 / (m * weights.max()):.4g}. Lower p_fire or zipf_exponent, or pass k."
            )
        codes = _bernoulli_codes(rng, n, firing_prob, lohi)
    x = add_noise(rng, sparse_matmul(codes, dictionary), noise)
    return SparseFeatures(
        X=x.astype(np.float32),
        dictionary=dictionary.astype(np.float32),
        codes=codes,
        firing_prob=firing_prob,
    )


def _bernoulli_codes(
    rng: np.random.Generator, n: int, prob: np.ndarray, lohi: tuple[float, float]
) -> sp.csr_array:
    """CSR codes where atom ``i`` fires independently with probability ``prob[i]``."""
    m = prob.shape[0]
    blocks = []
    rows = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        fired = rng.random((stop - start, m)) < prob
        r, c = np.nonzero(fired)
        vals = draw_magnitudes(rng, r.shape[0], lohi).astype(np.float32)
        blocks.append(sp.csr_array((vals, (r, c)), shape=(stop - start, m)))
    out = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    return sp.csr_array(out, dtype=np.float32)


# ---------------------------------------------------------------------------- hierarchy


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """Data from :func:`hierarchy`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, d)
        ``alpha * parents[a] + beta * children[a, b] + noise``.
    parents : ndarray of float32, shape (n_parents, d)
        Unit parent directions.
    children : ndarray of float32, shape (n_parents, children_per_parent, d)
        Unit child directions, each orthogonal to its own parent.
    dictionary : ndarray of float32, shape (n_parents * (1 + children_per_parent), d)
        All atoms: the parents first, then the children in ``(a, b)`` row-major order (child
        ``(a, b)`` is row ``n_parents + a * children_per_parent + b``).
    codes : scipy.sparse.csr_array of float32, shape (n, n_atoms)
        Two entries per sample: ``alpha`` at the parent, ``beta`` at the child.
    parent_labels : ndarray of int64, shape (n,)
    child_labels : ndarray of int64, shape (n,)
        Global child index ``a * children_per_parent + b``.
    """

    X: np.ndarray
    parents: np.ndarray
    children: np.ndarray
    dictionary: np.ndarray
    codes: sp.csr_array
    parent_labels: np.ndarray
    child_labels: np.ndarray


def hierarchy(
    n: int,
    d: int = 64,
    n_parents: int = 32,
    children_per_parent: int = 4,
    *,
    alpha: float | tuple[float, float] = (0.2, 2.0),
    beta: float | tuple[float, float] = (0.2, 2.0),
    noise: float = 0.01,
    seed: int | np.random.Generator = 0,
) -> Hierarchy:
    r"""Parents with conditionally orthogonal children (the MP-SAE benchmark).

    Each parent :math:`p_a` is a random unit vector; each child :math:`c_{ab}` is a random
    unit vector orthogonal to its parent :math:`p_a` (not to the other parents). A sample
    picks a parent ``a`` and one of its children ``b`` uniformly and is

    .. math:: x = \alpha\, p_a + \beta\, c_{ab} + \varepsilon,

    with :math:`\alpha, \beta` drawn independently and uniformly on their ranges (the default,
    a wide range for both, makes a merged parent+child atom a poor fit, as in the MP-SAE toy
    benchmark) and :math:`\varepsilon` Gaussian.
    Once the parent is explained, the child is orthogonal to the residual's parent part: the
    *conditional orthogonality* that matching pursuit exploits and that a single linear
    threshold encoder cannot express.

    Parameters
    ----------
    n, d, n_parents, children_per_parent : int
        ``children_per_parent`` must be < d.
    alpha, beta : float or (float, float)
        Parent and child magnitudes (constant, or uniform on ``(low, high)``).
    noise : float
        Per-coordinate standard deviation of the noise.
    seed : int or numpy.random.Generator

    Returns
    -------
    Hierarchy
    """
    caller = "hierarchy"
    n, d, n_parents, cpp = (
        positive_int(v, name, caller)
        for v, name in (
            (n, "n"),
            (d, "d"),
            (n_parents, "n_parents"),
            (children_per_parent, "children_per_parent"),
        )
    )
    if d < 2:
        raise RepscopeValueError(
            f"The 'd' parameter of {caller} must be >= 2 (children live in the orthogonal "
            f"complement of their parent). Got {d!r} instead."
        )
    a_rng = magnitude_range(alpha, "alpha", caller)
    b_rng = magnitude_range(beta, "beta", caller)
    noise = non_negative(noise, "noise", caller)
    rng = make_rng(seed, caller=caller)
    parents = unit_rows(rng, n_parents, d)
    raw = rng.standard_normal((n_parents, cpp, d))
    raw -= np.einsum("abd,ad->ab", raw, parents)[..., None] * parents[:, None, :]
    children = raw / np.linalg.norm(raw, axis=-1, keepdims=True)
    parent_labels = rng.integers(0, n_parents, size=n)
    child_labels = parent_labels * cpp + rng.integers(0, cpp, size=n)
    a = draw_magnitudes(rng, n, a_rng)
    b = draw_magnitudes(rng, n, b_rng)
    flat_children = children.reshape(n_parents * cpp, d)
    x = a[:, None] * parents[parent_labels] + b[:, None] * flat_children[child_labels]
    x = add_noise(rng, x, noise)
    dictionary = np.concatenate([parents, flat_children], axis=0)
    idx = np.stack([parent_labels, n_parents + child_labels], axis=1)
    codes = codes_from_indices(idx, np.stack([a, b], axis=1), dictionary.shape[0])
    return Hierarchy(
        X=x.astype(np.float32),
        parents=parents.astype(np.float32),
        children=children.astype(np.float32),
        dictionary=dictionary.astype(np.float32),
        codes=codes,
        parent_labels=parent_labels.astype(np.int64),
        child_labels=child_labels.astype(np.int64),
    )


# ---------------------------------------------------------------------------- circle_manifold


@dataclass(frozen=True, eq=False)
class CircleManifold:
    """Data from :func:`circle_manifold`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, d)
        ``radius * (cos theta, sin theta) @ plane + codes @ dictionary + noise``.
    theta : ndarray of float64, shape (n,)
        The circle parameter, uniform on [0, 2 pi).
    plane : ndarray of float32, shape (2, d)
        Orthonormal rows spanning the circle's plane.
    dictionary : ndarray of float32, shape (n_discrete, d)
        Unit atoms of the discrete features.
    codes : scipy.sparse.csr_array of float32, shape (n, n_discrete)
        ``k_discrete`` active discrete features per sample.
    radius : float
    """

    X: np.ndarray
    theta: np.ndarray
    plane: np.ndarray
    dictionary: np.ndarray
    codes: sp.csr_array
    radius: float

    @property
    def circle(self) -> np.ndarray:
        """The circle component of each sample, float64 (n, d)."""
        return self.radius * np.stack([np.cos(self.theta), np.sin(self.theta)], 1) @ self.plane


def circle_manifold(
    n: int,
    d: int = 64,
    n_discrete: int = 200,
    *,
    k_discrete: int = 4,
    radius: float = 1.0,
    magnitude: float | tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    seed: int | np.random.Generator = 0,
) -> CircleManifold:
    r"""A circle in a random 2-D plane plus sparse discrete features (concept-manifold benchmark).

    .. math:: x = r (\cos\theta\, u_1 + \sin\theta\, u_2) + \sum_{i \in S} s_i d_i + \varepsilon,

    with :math:`\theta \sim U[0, 2\pi)`, :math:`(u_1, u_2)` a random orthonormal pair (the
    ``plane``), :math:`S` a uniformly random set of ``k_discrete`` of the ``n_discrete`` random
    unit atoms and :math:`s_i` uniform on ``magnitude``. A one-dimensional-feature SAE must
    tile the circle with several atoms or capture its plane with a small atom group.

    Parameters
    ----------
    n, d, n_discrete : int
        ``d >= 2``.
    k_discrete : int
        Active discrete features per sample, in [0, n_discrete].
    radius : float
    magnitude : float or (float, float)
    noise : float
    seed : int or numpy.random.Generator

    Returns
    -------
    CircleManifold
    """
    caller = "circle_manifold"
    n, d, n_discrete = (
        positive_int(v, name, caller)
        for v, name in ((n, "n"), (d, "d"), (n_discrete, "n_discrete"))
    )
    if d < 2:
        raise RepscopeValueError(
            f"The 'd' parameter of {caller} must be >= 2 (the circle needs a plane). Got {d!r} "
            "instead."
        )
    k_discrete = int(
        check_scalar(
            k_discrete, "k_discrete", caller=caller, kind=int, min_value=0, max_value=n_discrete
        )
    )
    radius = non_negative(radius, "radius", caller)
    lohi = magnitude_range(magnitude, "magnitude", caller)
    noise = non_negative(noise, "noise", caller)
    rng = make_rng(seed, caller=caller)
    plane = orthonormal_rows(rng, 2, d)
    dictionary = unit_rows(rng, n_discrete, d)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    if k_discrete > 0:
        idx = choose_k(rng, n, n_discrete, k_discrete)
        codes = codes_from_indices(idx, draw_magnitudes(rng, idx.shape, lohi), n_discrete)
    else:
        codes = sp.csr_array((n, n_discrete), dtype=np.float32)
    circle = radius * np.stack([np.cos(theta), np.sin(theta)], 1) @ plane
    x = add_noise(rng, circle + sparse_matmul(codes, dictionary), noise)
    return CircleManifold(
        X=x.astype(np.float32),
        theta=theta,
        plane=plane.astype(np.float32),
        dictionary=dictionary.astype(np.float32),
        codes=codes,
        radius=radius,
    )
