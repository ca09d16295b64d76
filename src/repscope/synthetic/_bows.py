r"""Synthetic bag-of-words (BOWS) data: binary features correlated through a latent curve.

Prieto, Stevinson, Barsbey, Mediano, Birdal, "From Data Statistics to Feature Geometry: How
Correlations Shape Superposition" (ICLR 2026): each of ``n_features`` binary features has a
position :math:`w_i` on a curve, a sample has a latent position :math:`\ell(\theta)` on the
same curve, and feature ``i`` is on with probability
:math:`\sigma(\text{sharpness} \langle w_i, \ell(\theta) \rangle + \text{base})`, so
features close on the curve co-occur. The ``"iid"`` structure draws independent features with
the same per-feature marginals, which removes the correlations and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit

from repscope._validation import check_choice, check_scalar
from repscope.synthetic._common import make_rng, positive_int

__all__ = ["BOWS", "bows"]

Structure = Literal["circular", "figure8", "sphere", "iid"]
_CURVES = ("circular", "figure8", "sphere")
#: Latent positions used to integrate the marginals of the iid structure.
_N_QUADRATURE = 20_000


@dataclass(frozen=True, eq=False)
class BOWS:
    r"""Data from :func:`bows`.

    Attributes
    ----------
    X : ndarray of float32, shape (n, n_features)
        Binary (0/1) features.
    theta : ndarray of float64, shape (n,) or (n, 2), or None
        The latent parameter: the angle on the curve (``"circular"``, ``"figure8"``), or
        (polar, azimuth) angles on the sphere; None for ``"iid"`` (no latent).
    latent : ndarray of float64, shape (n, q), or None
        The latent point :math:`\ell(\theta)` (q = 2, or 3 on the sphere); None for ``"iid"``.
    feature_positions : ndarray of float64, shape (n_features, q)
        The feature positions :math:`w_i` on the curve (those of ``matched_to`` for ``"iid"``).
    probabilities : ndarray of float64, shape (n, n_features)
        :math:`P(x_i = 1 \mid \theta)` per sample (the marginals, repeated, for ``"iid"``).
    marginals : ndarray of float64, shape (n_features,)
        :math:`P(x_i = 1)` integrated over the latent.
    structure : str
    """

    X: np.ndarray
    theta: np.ndarray | None
    latent: np.ndarray | None
    feature_positions: np.ndarray
    probabilities: np.ndarray
    marginals: np.ndarray
    structure: str


def _feature_positions(structure: str, f: int) -> np.ndarray:
    if structure == "sphere":  # Fibonacci lattice: near-uniform points on S^2
        i = np.arange(f, dtype=np.float64) + 0.5
        polar = np.arccos(1.0 - 2.0 * i / f)
        azim = np.pi * (1.0 + 5.0**0.5) * i
        return _sphere_point(polar, azim)
    return _curve_point(structure, 2.0 * np.pi * np.arange(f) / f)


def _curve_point(structure: str, t: np.ndarray) -> np.ndarray:
    if structure == "circular":
        return np.stack([np.cos(t), np.sin(t)], axis=-1)
    # figure8: the Lissajous curve (sin t, sin 2t)
    return np.stack([np.sin(t), np.sin(2.0 * t)], axis=-1)


def _sphere_point(polar: np.ndarray, azim: np.ndarray) -> np.ndarray:
    return np.stack(
        [np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim), np.cos(polar)], axis=-1
    )


def _draw_latent(structure: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(theta, latent point) for ``n`` samples uniform on the curve / sphere."""
    if structure == "sphere":
        polar = np.arccos(1.0 - 2.0 * rng.random(n))
        azim = rng.uniform(0.0, 2.0 * np.pi, size=n)
        return np.stack([polar, azim], axis=1), _sphere_point(polar, azim)
    t = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return t, _curve_point(structure, t)


def _quadrature_latent(structure: str) -> np.ndarray:
    """Deterministic latent points for integrating the marginals over the uniform latent."""
    q = _N_QUADRATURE
    if structure == "sphere":
        i = np.arange(q, dtype=np.float64) + 0.5
        return _sphere_point(np.arccos(1.0 - 2.0 * i / q), np.pi * (1.0 + 5.0**0.5) * i)
    return _curve_point(structure, 2.0 * np.pi * (np.arange(q) + 0.5) / q)


def bows(
    n: int = 10_000,
    structure: Structure = "circular",
    n_features: int = 12,
    *,
    sharpness: float = 10.0,
    base: float = 0.0,
    matched_to: Literal["circular", "figure8", "sphere"] = "circular",
    seed: int | np.random.Generator = 0,
) -> BOWS:
    r"""Binary features whose co-occurrence follows a latent curve (synthetic BOWS).

    .. math::
        P(x_i = 1 \mid \theta) = \sigma\big(\text{sharpness}\,
        \langle w_i, \ell(\theta) \rangle + \text{base}\big)

    with the latent uniform on the curve and the features evenly spaced on it:

    - ``"circular"``: :math:`\ell(\theta) = (\cos\theta, \sin\theta)` (months of the year);
    - ``"figure8"``: the Lissajous curve :math:`\ell(\theta) = (\sin\theta, \sin 2\theta)`;
    - ``"sphere"``: :math:`\ell` uniform on :math:`S^2`, features on a Fibonacci lattice;
    - ``"iid"``: independent features with the marginals :math:`P(x_i = 1)` of the
      ``matched_to`` structure (integrated on a fixed grid of latent points), i.e. the same
      feature frequencies without the correlations.

    Parameters
    ----------
    n : int
        Samples.
    structure : {"circular", "figure8", "sphere", "iid"}
    n_features : int
    sharpness : float
        Slope of the logit in the latent overlap (larger: sharper, more local co-occurrence).
    base : float
        Base log-odds (0: a marginal of one half on the circle).
    matched_to : {"circular", "figure8", "sphere"}
        Whose marginals the ``"iid"`` structure copies (ignored otherwise).
    seed : int or numpy.random.Generator

    Returns
    -------
    BOWS

    Examples
    --------
    >>> data = bows(2000, "circular", seed=0)
    >>> data.X.shape, sorted(set(data.X.ravel().tolist()))
    ((2000, 12), [0.0, 1.0])
    """
    caller = "bows"
    n = positive_int(n, "n", caller)
    f = positive_int(n_features, "n_features", caller)
    structure = check_choice(structure, "structure", (*_CURVES, "iid"), caller=caller)  # type: ignore[assignment]
    matched_to = check_choice(matched_to, "matched_to", _CURVES, caller=caller)  # type: ignore[assignment]
    sharpness = float(check_scalar(sharpness, "sharpness", caller=caller))
    base = float(check_scalar(base, "base", caller=caller))
    rng = make_rng(seed, caller=caller)
    curve = matched_to if structure == "iid" else structure
    positions = _feature_positions(curve, f)
    marginals = expit(sharpness * _quadrature_latent(curve) @ positions.T + base).mean(0)
    theta: np.ndarray | None
    latent: np.ndarray | None
    if structure == "iid":
        theta = latent = None
        probs = np.broadcast_to(marginals, (n, f)).copy()
    else:
        theta, latent = _draw_latent(structure, rng, n)
        probs = expit(sharpness * latent @ positions.T + base)
    x = (rng.random((n, f)) < probs).astype(np.float32)
    return BOWS(
        X=x,
        theta=theta,
        latent=latent,
        feature_positions=positions,
        probabilities=probs,
        marginals=marginals,
        structure=structure,
    )
