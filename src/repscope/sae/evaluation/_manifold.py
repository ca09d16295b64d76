"""Concept-manifold capture (Bhalla et al., "Do Sparse Autoencoders Capture Concept Manifolds?") and
co-activation atom groups: how an SAE covers a continuous concept with a span of atoms (global) or
a tiling of selective atoms (local), and the dilution between the two."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._array import as_float64_numpy, is_torch, to_numpy
from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.results import Result
from repscope.sae.archs._base import SparseAutoencoder
from repscope.sae.evaluation._ground_truth import _active, _codes_numpy, _matrix, _unit_rows
from repscope.sae.evaluation._interpret import _eval_mode, _sae_batches

__all__ = ["ManifoldCapture",
    "ManifoldCaptureResult", "atom_groups", "manifold_capture"]


# ---------------------------------------------------------------------------- manifolds


@dataclass(frozen=True)
class ManifoldCaptureResult(Result):
    """How a dictionary captures a one-parameter concept manifold (:func:`manifold_capture`).

    Attributes
    ----------
    selected : ndarray of int64, shape (n_steps,)
        Atoms in greedy order (each maximises the span R² given the previous ones).
    r2_curve : ndarray of shape (n_steps,)
        Span R² of the first ``1 .. n_steps`` selected atoms.
    n_atoms_to_target : int or None
        Fewest greedy atoms whose span R² reaches ``var_target`` (None: not within
        ``max_atoms``).
    atoms : ndarray of int64, shape (n_tuned,)
        Atoms active on at least ``min_density`` of the samples (empty without codes).
    bin_centers : ndarray of shape (n_bins,)
        Centres of the theta bins (radians when periodic).
    tuning : ndarray of shape (n_tuned, n_bins)
        Tuning curves ``E[z_j | theta in bin]`` (NaN for an empty bin).
    width_fraction : ndarray of shape (n_tuned,)
        Share of the (non-empty) theta range where the curve exceeds half its maximum.
    widths : ndarray of shape (n_tuned,)
        The same in degrees (periodic) or in theta units (non-periodic).
    selective : ndarray of int64, shape (n_selective,)
        Atoms with ``width_fraction < 0.5`` (narrower than 180 degrees when periodic).
    dilution_index : float
        ``len(selective) / n_atoms_to_target``: selective atoms per atom the global span needs
        (0 for clean global capture, > 1 when the manifold is tiled by more atoms than it
        spans; NaN without codes or when the target is not reached).
    var_target : float
    periodic : bool
    """

    selected: np.ndarray
    r2_curve: np.ndarray
    n_atoms_to_target: int | None
    atoms: np.ndarray
    bin_centers: np.ndarray
    tuning: np.ndarray
    width_fraction: np.ndarray
    widths: np.ndarray
    selective: np.ndarray
    dilution_index: float
    var_target: float
    periodic: bool

    @property
    def n_selective(self) -> int:
        return int(self.selective.shape[0])


#: The former name of :class:`ManifoldCaptureResult` (kept for one release).
ManifoldCapture = ManifoldCaptureResult


def _greedy_span(
    A: np.ndarray, D: np.ndarray, cand: np.ndarray, max_atoms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward selection of atoms (rows of ``D``) maximising the span R² of centred ``A``."""
    _, s, vt = np.linalg.svd(A, full_matrices=False)
    keep = s > s[0] * 1e-12 if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    R = s[keep, None] * vt[keep]  # (r, d): same ||R y|| as A for every y
    total = float((s**2).sum())
    Dc = _unit_rows(D[cand])
    Q = np.zeros((D.shape[1], 0))
    chosen: list[int] = []
    curve: list[float] = []
    avail = np.linalg.norm(Dc, axis=1) > 0
    for _ in range(min(max_atoms, cand.shape[0])):
        perp = Dc - (Dc @ Q) @ Q.T
        nperp = (perp**2).sum(1)
        ok = avail & (nperp > 1e-10)
        if not ok.any():
            break
        gain = np.where(ok, ((R @ Dc.T) ** 2).sum(0) / np.where(ok, nperp, 1.0), -1.0)
        j = int(np.argmax(gain))
        e = perp[j] / math.sqrt(nperp[j])
        e -= Q @ (Q.T @ e)  # re-orthogonalise
        e /= np.linalg.norm(e)
        Q = np.column_stack([Q, e])
        R = R - np.outer(R @ e, e)
        avail[j] = False
        chosen.append(int(cand[j]))
        curve.append(1.0 - float((R**2).sum()) / total if total > 0 else math.nan)
    return np.asarray(chosen, dtype=np.int64), np.asarray(curve)


def manifold_capture(
    X_c: Any,
    theta: Any,
    sae_or_dictionary: Any,
    *,
    codes: Any = None,
    max_atoms: int = 16,
    var_target: float = 0.9,
    periodic: bool = True,
    n_bins: int = 36,
    min_density: float = 0.01,
) -> ManifoldCaptureResult:
    r"""Global (span) vs local (tiling) capture of a concept manifold by dictionary atoms.

    *Global capture*: with :math:`A = X_c - \bar X_c`, greedily pick atoms ``S`` maximising
    :math:`R^2(S) = \lVert A P_S \rVert_F^2 / \lVert A \rVert_F^2`, ``P_S`` the orthogonal
    projector on ``span(D_S)``; ``r2_curve`` is :math:`R^2` against ``|S|``. Candidates are the
    atoms that fire on ``X_c`` when codes are known, all atoms otherwise.

    *Local capture*: for every atom firing on at least ``min_density`` of the samples, the
    tuning curve :math:`E[z_j \mid \theta \in \text{bin}]` over ``n_bins`` bins of theta; its
    width is the share of the theta range (non-empty bins) where the curve exceeds half its
    maximum (in degrees when periodic, total measure if the set is not one arc), and an atom is
    *selective* when that share is below one half (180 degrees).

    *Dilution index*: ``n_selective / n_atoms_to_target``, with ``n_atoms_to_target`` the
    atoms the greedy span needs for ``var_target``.

    Parameters
    ----------
    X_c : array-like or Tensor of shape (n, d)
        Activations of the concept's samples (raw space).
    theta : array-like of shape (n,)
        The concept's parameter per sample (radians when ``periodic``).
    sae_or_dictionary : SparseAutoencoder or array-like of shape (m, d)
        An SAE (its decoder rows in the raw space, from :meth:`folded_state_dict`, and its
        codes of ``X_c`` when ``codes`` is None) or a dictionary of atoms.
    codes : array-like, Tensor or SAEOutput of shape (n, m), optional
        Codes of ``X_c``; without them (and without an SAE) only the span part is computed.
    max_atoms : int, default=16
        Greedy steps.
    var_target : float, default=0.9
        Span R² defining ``n_atoms_to_target``, in (0, 1].
    periodic : bool, default=True
        Theta is an angle (bins over [0, 2 pi)); else bins span [min, max] of theta.
    n_bins : int, default=36
        Tuning-curve bins (10 degrees each by default).
    min_density : float, default=0.01
        Smallest firing frequency on ``X_c`` for an atom to get a tuning curve.

    Returns
    -------
    ManifoldCaptureResult
    """
    caller = "manifold_capture"
    max_atoms = check_positive_int(max_atoms, "max_atoms", caller=caller)
    n_bins = check_positive_int(n_bins, "n_bins", caller=caller)
    check_scalar(
        var_target,
        "var_target",
        caller=caller,
        kind=(int, float),
        min_value=0,
        max_value=1,
        include_min=False,
    )
    check_scalar(
        min_density, "min_density", caller=caller, kind=(int, float), min_value=0, max_value=1
    )
    X = _matrix(X_c, "X_c", min_samples=2)
    n = X.shape[0]
    th = as_float64_numpy(to_numpy(theta) if is_torch(theta) else np.asarray(theta), name="theta")
    if th.shape != (n,) or not np.all(np.isfinite(th)):
        raise RepscopeValueError(
            f"theta must be a finite 1-D array with one value per row of X_c ({n}); got shape "
            f"{th.shape}{'' if np.all(np.isfinite(th)) else ' with NaN or inf'}."
        )
    if isinstance(sae_or_dictionary, SparseAutoencoder):
        sae = sae_or_dictionary
        D = as_float64_numpy(sae.folded_state_dict()["W_dec"], name="W_dec")
        if codes is None:
            t = torch.from_numpy(X).to(device=sae.device, dtype=sae.dtype)
            with torch.no_grad(), _eval_mode(sae):
                codes = torch.cat([out.dense().cpu() for _, _, out in _sae_batches(sae, t)])
    else:
        D = _matrix(sae_or_dictionary, "sae_or_dictionary")
    if D.shape[1] != X.shape[1]:
        raise RepscopeValueError(
            f"sae_or_dictionary must have atoms of dimension {X.shape[1]} (X_c's columns); got "
            f"atoms of shape {D.shape}."
        )
    Z = None if codes is None else _codes_numpy(codes, "codes")
    if Z is not None and Z.shape != (n, D.shape[0]):
        raise RepscopeValueError(
            f"codes must have shape (n, m) = ({n}, {D.shape[0]}) (one code per sample and atom); "
            f"got shape {Z.shape}."
        )
    cand = np.arange(D.shape[0]) if Z is None else np.flatnonzero((Z != 0).any(0))
    selected, curve = _greedy_span(X - X.mean(0), D, cand, max_atoms)
    reached = np.flatnonzero(curve >= var_target - 1e-12)
    n_target = int(reached[0]) + 1 if reached.size else None

    if periodic:
        lo, hi = 0.0, 2 * math.pi
        u = np.mod(th, 2 * math.pi) / (2 * math.pi)
    else:
        lo, hi = float(th.min()), float(th.max())
        u = (th - lo) / (hi - lo) if hi > lo else np.zeros_like(th)
    bins = np.clip((u * n_bins).astype(np.int64), 0, n_bins - 1)
    edges = np.linspace(lo, hi, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    if Z is None:
        atoms = np.zeros(0, dtype=np.int64)
        tuning = np.zeros((0, n_bins))
    else:
        atoms = np.flatnonzero((Z != 0).mean(0) >= max(min_density, 1e-300))
        counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
        sums = np.zeros((n_bins, atoms.shape[0]))
        np.add.at(sums, bins, Z[:, atoms])
        with np.errstate(invalid="ignore", divide="ignore"):
            tuning = (sums / counts[:, None]).T
    valid = ~np.isnan(tuning)
    peak = np.where(valid, tuning, -np.inf).max(1, initial=-np.inf)
    above = valid & (tuning > (peak / 2)[:, None])
    frac = np.where(peak > 0, above.sum(1) / np.maximum(valid.sum(1), 1), 1.0)
    widths = frac * (360.0 if periodic else (hi - lo))
    selective = atoms[frac < 0.5]
    if Z is None or n_target is None:
        dilution = math.nan
    else:
        dilution = selective.shape[0] / n_target
    return ManifoldCaptureResult(
        selected=selected,
        r2_curve=curve,
        n_atoms_to_target=n_target,
        atoms=atoms,
        bin_centers=centers,
        tuning=tuning,
        width_fraction=frac,
        widths=widths,
        selective=selective,
        dilution_index=float(dilution),
        var_target=float(var_target),
        periodic=bool(periodic),
    )


def atom_groups(
    codes: Any,
    W_dec: Any,
    *,
    n_groups: int | None = None,
    threshold: float = 0.5,
    coactivation_weight: float = 0.5,
    min_size: int = 2,
    random_state: int = 0,
) -> list[np.ndarray]:
    r"""Groups of atoms that fire together and point alike (candidate manifold groups).

    Over the latents that fire at least once, the affinity of latents ``i`` and ``j`` is

    .. math:: A_{ij} = w \frac{|F_i \cap F_j|}{\sqrt{|F_i|\,|F_j|}}
        + (1 - w) \max(\cos(d_i, d_j), 0),

    the co-firing (Ochiai) coefficient of their firing sets ``F`` mixed with the positive part
    of their decoder cosine. With ``n_groups`` the latents are split by spectral clustering of
    ``A`` (:func:`repscope._kernels.spectral.spectral_cocluster`); otherwise groups are the
    connected components of the graph ``A_{ij} > threshold``. Memory is ``O(m_alive^2)``.

    Parameters
    ----------
    codes : SAEOutput, array-like or Tensor of shape (n, m)
    W_dec : array-like or Tensor of shape (m, d)
        Decoder rows.
    n_groups : int, optional
        Number of spectral clusters (in [2, m_alive]); None: threshold components.
    threshold : float, default=0.5
        Affinity above which two latents are linked (components mode), in [0, 1].
    coactivation_weight : float, default=0.5
        ``w`` above, in [0, 1]: 1 uses co-activation only, 0 decoder similarity only.
    min_size : int, default=2
        Smallest group returned.
    random_state : int, default=0
        Seed of the spectral k-means.

    Returns
    -------
    list of ndarray of int64
        Latent indices of each group (sorted), largest group first.
    """
    caller = "atom_groups"
    check_scalar(threshold, "threshold", caller=caller, kind=(int, float), min_value=0, max_value=1)
    check_scalar(
        coactivation_weight,
        "coactivation_weight",
        caller=caller,
        kind=(int, float),
        min_value=0,
        max_value=1,
    )
    min_size = check_positive_int(min_size, "min_size", caller=caller)
    fires = _active(codes, "codes")
    W = _matrix(W_dec, "W_dec")
    if W.shape[0] != fires.shape[1]:
        raise RepscopeValueError(
            f"W_dec must have one row per latent of codes ({fires.shape[1]}); got shape {W.shape}."
        )
    alive = np.flatnonzero(fires.any(0))
    if alive.size == 0:
        return []
    F = fires[:, alive].astype(np.float64)
    cnt = F.sum(0)
    co = (F.T @ F) / np.sqrt(np.outer(cnt, cnt))
    dec = np.clip(_unit_rows(W[alive]) @ _unit_rows(W[alive]).T, 0.0, None)
    w = float(coactivation_weight)
    A = w * co + (1 - w) * dec
    np.fill_diagonal(A, 1.0)
    if n_groups is not None:
        k = check_positive_int(n_groups, "n_groups", caller=caller)
        if not 2 <= k <= alive.size:
            raise RepscopeValueError(
                f"The 'n_groups' parameter of atom_groups must be in [2, {alive.size}] (the "
                f"latents that fire). Got {n_groups!r} instead."
            )
        from repscope._kernels.spectral import spectral_cocluster

        labels = spectral_cocluster(A, k, random_state=random_state).row_labels
    else:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components

        _, labels = connected_components(csr_matrix(threshold < A), directed=False)
    groups = [np.sort(alive[labels == g]).astype(np.int64) for g in np.unique(labels)]
    groups = [g for g in groups if g.size >= min_size]
    groups.sort(key=lambda g: (-g.size, int(g[0])))
    return groups
