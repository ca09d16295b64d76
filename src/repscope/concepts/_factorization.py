"""Linear factorization of embeddings over several concepts (Uselis, Dittadi & Oh, 2026, §4).

The method (from the authors' code ``analyse_embeddings_probes.py``;
checked against the abstract: "compositional generalization requires linear, orthogonal
representations"): centre ``X`` globally; concept-value means :math:`u_{h,v} = E[x \\mid y_h =
v]`; the additive reconstruction :math:`\\hat x_i = \\sum_h u_{h, y_h(i)}` and its

.. math:: R^2 = 1 - \\lVert X - \\hat X\\rVert_F^2 / \\lVert X\\rVert_F^2,

raw and after whitening by :math:`V\\,\\mathrm{diag}(\\lambda + \\varepsilon)^{-1/2} V^\\top`
(:math:`\\varepsilon = 10^{-9}`); per-concept rank k95 (singular values of the value-mean
matrix reaching 95 % of the squared-singular-value energy); mean :math:`|\\cos|` between value
means of different concepts vs of the same concept; probe-span R² (X and the means projected on
the row span of the probes' weights, jointly and per concept); probes trained on a fraction of
the value combinations and scored on the unseen ones. The means and the additive R² are
:func:`repscope.sae.evaluation._interpret.supervised_mean_dictionary` /
``MeanDictionaryResult.r2`` (the same object as Makelov et al.'s supervised dictionary).

Added here: the **binding term**, the variance share that the full-combination cell means
explain beyond the additive model (``r2_cells - r2``); for a balanced design
``r2 + binding + noise share = 1``. The recipe's probes are Adam-trained softmax heads (500
epochs, 5 % of combinations); ours are :class:`~repscope.probe.LinearProbe` (L-BFGS, fixed
``C``), with ``train_fraction`` of the combinations (default 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._array import as_float64_numpy
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_features, check_labels, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["FactorizationResult", "concept_ranks", "linear_factorization"]


def _check_concepts(concepts: Any, n: int, caller: str) -> dict[str, np.ndarray]:
    if not isinstance(concepts, Mapping) or len(concepts) == 0:
        raise RepscopeTypeError(
            f"The 'concepts' parameter of {caller} must be a non-empty mapping from concept name "
            f"to labels of shape (n,). Got {type(concepts).__name__} instead."
        )
    out: dict[str, np.ndarray] = {}
    for name, labels in concepts.items():
        if not isinstance(name, str):
            raise RepscopeTypeError(
                f"The 'concepts' parameter of {caller} must have string keys. Got {name!r}."
            )
        y = check_labels(labels, n_samples=n, name=f"concepts[{name!r}]")
        k = np.unique(y).shape[0]
        if k < 2:
            raise RepscopeValueError(
                f"concepts[{name!r}] of {caller} must take at least 2 values (a concept with "
                f"one value has no factor); got {k} value."
            )
        out[name] = y
    return out


def concept_ranks(means: np.ndarray, threshold: float = 0.95) -> tuple[int, np.ndarray]:
    """k at ``threshold``: the fewest singular values of the (C, d) value-mean matrix whose
    squared sum reaches ``threshold`` of the total, and the singular values."""
    s = np.linalg.svd(np.asarray(means, dtype=np.float64), compute_uv=False)
    e = s**2
    tot = float(e.sum())
    if tot <= 0:
        return 0, s
    k = int(np.searchsorted(np.cumsum(e) / tot, threshold - 1e-12) + 1)
    return min(k, s.shape[0]), s


def _abs_cos(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(A, axis=1, keepdims=True)
    nb = np.linalg.norm(B, axis=1, keepdims=True)
    return np.abs((A / np.where(na > 0, na, 1.0)) @ (B / np.where(nb > 0, nb, 1.0)).T)


def _orthogonality(means: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Mean |cos| over value-mean pairs of different concepts, and of the same concept."""
    names = list(means)
    cross: list[np.ndarray] = []
    within: list[np.ndarray] = []
    for i, a in enumerate(names):
        c = _abs_cos(means[a], means[a])
        within.append(c[np.triu_indices(c.shape[0], 1)])
        for b in names[i + 1:]:
            cross.append(_abs_cos(means[a], means[b]).ravel())
    x = float(np.concatenate(cross).mean()) if cross else float("nan")
    w = float(np.concatenate(within).mean())
    return x, w


def _r2(X: np.ndarray, Xhat: np.ndarray) -> float:
    den = float((X**2).sum())
    return 1.0 - float(((X - Xhat) ** 2).sum()) / den if den > 0 else float("nan")


def _cells(concepts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Combination index of every row (rows with the same value of every concept share one)."""
    codes = np.stack([np.unique(y, return_inverse=True)[1] for y in concepts.values()], axis=1)
    return np.unique(codes, axis=0, return_inverse=True)[1].ravel()


def _group_means(X: np.ndarray, g: np.ndarray) -> np.ndarray:
    k = int(g.max()) + 1
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, g, X)
    return sums / np.bincount(g, minlength=k)[:, None]


def _split_combinations(
    cells: np.ndarray, concepts: Mapping[str, np.ndarray], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/held-out combinations: a random ``fraction`` of them, topped up so every value of
    every concept is seen in training."""
    n_cells = int(cells.max()) + 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_cells)
    n_train = min(max(1, int(np.ceil(fraction * n_cells))), n_cells)
    train = np.zeros(n_cells, dtype=bool)
    train[order[:n_train]] = True
    first_row = np.zeros(n_cells, dtype=np.int64)
    first_row[cells[::-1]] = np.arange(cells.shape[0])[::-1]
    for y in concepts.values():
        cell_val = y[first_row]
        for v in np.unique(y):
            if not np.any(train & (cell_val == v)):
                cand = [c for c in order if cell_val[c] == v]
                train[cand[0]] = True
    return np.flatnonzero(train), np.flatnonzero(~train)


@dataclass(frozen=True)
class FactorizationResult(RecordedResult):
    """Linear factorization of embeddings over several concepts (:func:`linear_factorization`).

    Record keys (one record): ``concepts`` (list of names), ``n_values`` (dict concept -> number
    of values), ``r2`` (additive R²), ``r2_whitened``, ``r2_cells`` (R² of the full
    combination means), ``binding`` (``r2_cells - r2``: the interaction share),
    ``k95`` (dict concept -> rank), ``cross_abs_cos`` (mean |cos| between value means of
    different concepts), ``within_abs_cos`` (of the same concept), ``probe_span_r2`` (R² inside
    the joint row span of the probes), ``probe_span_cross_abs_cos``, ``probe_span_r2_by_concept``
    (dict), ``train_accuracy`` / ``heldout_accuracy`` / ``chance`` (dicts concept -> probe
    accuracy on seen / unseen combinations, majority share on unseen), ``n_combinations``,
    ``n_train_combinations``, ``n_heldout_combinations``, ``n_samples``, ``n_features``.

    Attributes
    ----------
    concepts : tuple of str
    values : dict of str to ndarray
    means : dict of str to ndarray of shape (n_values, d)
        Value means of the globally centred features.
    singular_values : dict of str to ndarray
    (the record keys above as attributes)
    """

    analysis: ClassVar[str] = "concepts_factorization"

    concepts: tuple[str, ...]
    values: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    singular_values: dict[str, np.ndarray]
    r2: float
    r2_whitened: float
    r2_cells: float
    binding: float
    k95: dict[str, int]
    cross_abs_cos: float
    within_abs_cos: float
    probe_span_r2: float
    probe_span_cross_abs_cos: float
    probe_span_r2_by_concept: dict[str, float]
    train_accuracy: dict[str, float]
    heldout_accuracy: dict[str, float]
    chance: dict[str, float]
    n_combinations: int
    n_train_combinations: int
    n_heldout_combinations: int
    n_samples: int
    n_features: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        return [("", {
            "concepts": list(self.concepts),
            "n_values": {c: int(self.values[c].shape[0]) for c in self.concepts},
            "r2": self.r2,
            "r2_whitened": self.r2_whitened,
            "r2_cells": self.r2_cells,
            "binding": self.binding,
            "k95": dict(self.k95),
            "cross_abs_cos": self.cross_abs_cos,
            "within_abs_cos": self.within_abs_cos,
            "probe_span_r2": self.probe_span_r2,
            "probe_span_cross_abs_cos": self.probe_span_cross_abs_cos,
            "probe_span_r2_by_concept": dict(self.probe_span_r2_by_concept),
            "train_accuracy": dict(self.train_accuracy),
            "heldout_accuracy": dict(self.heldout_accuracy),
            "chance": dict(self.chance),
            "n_combinations": self.n_combinations,
            "n_train_combinations": self.n_train_combinations,
            "n_heldout_combinations": self.n_heldout_combinations,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
        })]


def linear_factorization(
    X: Any,
    concepts: Mapping[str, Any],
    *,
    threshold: float = 0.95,
    whiten_eps: float = 1e-9,
    train_fraction: float = 0.5,
    C: float = 1.0,
    rank_tol: float = 1e-6,
    random_state: int = 0,
    progress: ProgressLike = False,
) -> FactorizationResult:
    """How well a sum of per-concept value means explains the embeddings, and whether linear
    probes of each concept carry over to unseen value combinations.

    Parameters
    ----------
    X : array-like or Tensor of shape (n, d)
    concepts : mapping of str to array-like of shape (n,)
        Labels of each concept (ints or strings); each needs at least two values.
    threshold : float
        Energy share for the concept ranks (k95 at 0.95).
    whiten_eps : float
        :math:`\\varepsilon` of the whitening (the recipe's 1e-9).
    train_fraction : float
        Share of the value combinations the probes train on (topped up so every value is
        seen); the rest are held out. 1.0 trains on all (no held-out accuracy: NaN).
    C : float
        Inverse L2 strength of the probes (scikit-learn's convention).
    rank_tol : float
        Relative singular-value cut for the probes' row span.
    random_state : int
        Seed of the combination split.
    progress : bool or callable
        A bar over the concepts' probes.

    Returns
    -------
    FactorizationResult

    Raises
    ------
    RepscopeValueError
        A concept with one value, labels of the wrong length, non-finite features.
    """
    from repscope._kernels.eigenpath import eigh_psd
    from repscope.probe import LinearProbe
    from repscope.sae.evaluation._interpret import supervised_mean_dictionary

    caller = "linear_factorization"
    check_scalar(threshold, "threshold", caller=caller, kind=float, min_value=0.0, max_value=1.0,
                 include_min=False)
    check_scalar(whiten_eps, "whiten_eps", caller=caller, kind=float, min_value=0.0)
    check_scalar(train_fraction, "train_fraction", caller=caller, kind=float, min_value=0.0,
                 max_value=1.0, include_min=False)
    check_scalar(C, "C", caller=caller, kind=float, min_value=0.0, include_min=False)
    x = as_float64_numpy(check_features(X, name="X", min_samples=2), name="X")
    n, d = x.shape
    cons = _check_concepts(concepts, n, caller)
    names = tuple(cons)
    Xc = x - x.mean(0)

    md = supervised_mean_dictionary(Xc, cons)
    r2 = float(md.r2(Xc, cons))
    means = {c: md.directions[c] + md.mean for c in names}  # u_{h,v} of the centred X
    eig = eigh_psd(Xc.T @ Xc / n)
    W = (eig.vectors / np.sqrt(eig.values + whiten_eps)) @ eig.vectors.T
    Xw = Xc @ W
    r2_w = float(supervised_mean_dictionary(Xw, cons).r2(Xw, cons))
    cells = _cells(cons)
    r2_cells = _r2(Xc, _group_means(Xc, cells)[cells])

    k95: dict[str, int] = {}
    svals: dict[str, np.ndarray] = {}
    for c in names:
        k95[c], svals[c] = concept_ranks(means[c], threshold)
    cross, within = _orthogonality(means)

    # probes on a fraction of the combinations, scored on the unseen ones
    train_cells, held_cells = _split_combinations(cells, cons, train_fraction, random_state)
    tr = np.isin(cells, train_cells)
    te = ~tr
    train_acc: dict[str, float] = {}
    held_acc: dict[str, float] = {}
    chance: dict[str, float] = {}
    heads: dict[str, np.ndarray] = {}
    with progress_for(progress, "concept probes", len(names), prefix="concepts") as advance:
        for c in names:
            y = cons[c]
            probe = LinearProbe(C=C, max_iter=300).fit(Xc[tr], y[tr])
            heads[c] = np.atleast_2d(probe.coef_)
            train_acc[c] = float(probe.score(Xc[tr], y[tr]))
            if np.any(te):
                held_acc[c] = float(probe.score(Xc[te], y[te]))
                chance[c] = float(np.unique(y[te], return_counts=True)[1].max() / te.sum())
            else:
                held_acc[c] = chance[c] = float("nan")
            advance(1)

    def span(rows: np.ndarray) -> np.ndarray:
        _, s, vt = np.linalg.svd(rows, full_matrices=False)
        keep = s > rank_tol * max(float(s.max(initial=0.0)), 1e-300)
        return np.asarray(vt[keep])

    B = span(np.vstack([heads[c] for c in names]))
    Xp = Xc @ B.T
    md_p = supervised_mean_dictionary(Xp, cons)
    probe_r2 = float(md_p.r2(Xp, cons))
    probe_cross, _ = _orthogonality({c: means[c] @ B.T for c in names})
    by_concept: dict[str, float] = {}
    for c in names:
        Bc = span(heads[c])
        proj = Xc @ Bc.T
        by_concept[c] = _r2(proj, (means[c] @ Bc.T)[np.unique(cons[c], return_inverse=True)[1]])

    return FactorizationResult(
        concepts=names, values=dict(md.values), means=means, singular_values=svals, r2=r2,
        r2_whitened=r2_w, r2_cells=r2_cells, binding=r2_cells - r2, k95=k95,
        cross_abs_cos=cross, within_abs_cos=within, probe_span_r2=probe_r2,
        probe_span_cross_abs_cos=probe_cross, probe_span_r2_by_concept=by_concept,
        train_accuracy=train_acc, heldout_accuracy=held_acc, chance=chance,
        n_combinations=int(cells.max()) + 1, n_train_combinations=int(train_cells.shape[0]),
        n_heldout_combinations=int(held_cells.shape[0]), n_samples=n, n_features=d,
    )
