"""Concept directions: difference of means, probe weights and a CAV with its significance test.

For a binary concept (``positive`` vs the rest), on a stratified train/test split:

- **difference of means** :math:`\\mu_+ - \\mu_-` of the training rows;
- **probe**: the weight vector of a :class:`~repscope.probe.LinearProbe` (concept vs rest);
- **CAV** (Kim et al., 2018, TCAV): the normal of a linear classifier separating the concept's
  training rows from as many *random* training rows (TCAV's random counterexamples).

Each direction is scored by the held-out AUC of the projection ``x . v`` for the concept vs the
rest. TCAV's gradient-based score needs a model's logits; on frozen features the score is this
AUC. Its significance is the TCAV test with two null distributions: AUCs of random unit
directions (``n_random_directions``), and AUCs of CAVs trained on random concept sets of the
same size against random counterexamples (``n_random``; TCAV's random-vs-random CAVs). The
p-values are ``(1 + #{null >= observed}) / (1 + n_null)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._array import as_float64_numpy
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_features, check_labels, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["DIRECTION_NAMES", "DirectionsResult", "concept_directions", "projection_auc"]

DIRECTION_NAMES = ("mean_difference", "probe", "cav")


def projection_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (Mann–Whitney, ties count half)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    n1, n0 = int(p.sum()), int((~p).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[p].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _aucs(directions: np.ndarray, X: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUC of each row of ``directions`` on ``X`` (vectorised ranks)."""
    from scipy.stats import rankdata

    S = X @ directions.T  # (n, m)
    R = rankdata(S, axis=0)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return np.asarray((R[positive].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class DirectionsResult(RecordedResult):
    """Concept directions and the CAV's significance (:func:`concept_directions`).

    Record keys (one record): ``positive`` (the concept value, as a string),
    ``auc_mean_difference``, ``auc_probe``, ``auc_cav`` (held-out AUC of the projection),
    ``cos_mean_difference_probe``, ``cos_mean_difference_cav``, ``cos_probe_cav``,
    ``p_random_directions``, ``p_random_concepts`` (the CAV's p-values against the two nulls),
    ``null_directions_q95``, ``null_concepts_q95`` (95th percentiles of the null AUCs),
    ``n_random``, ``n_random_directions``, ``n_train``, ``n_test``, ``n_features``.

    Attributes
    ----------
    positive : object
    directions : dict of str to ndarray of shape (d,)
        Unit vectors, keys :data:`DIRECTION_NAMES`.
    cosines : ndarray of shape (3, 3)
        Cosines between the directions, in :data:`DIRECTION_NAMES` order.
    auc : dict of str to float
    p_random_directions, p_random_concepts : float
    null_random_directions, null_random_concepts : ndarray
        The null AUCs.
    n_train, n_test, n_features : int
    """

    analysis: ClassVar[str] = "concepts_directions"

    positive: Any
    directions: dict[str, np.ndarray]
    cosines: np.ndarray
    auc: dict[str, float]
    p_random_directions: float
    p_random_concepts: float
    null_random_directions: np.ndarray
    null_random_concepts: np.ndarray
    n_train: int
    n_test: int
    n_features: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        c = self.cosines

        def q(a: np.ndarray) -> float:
            return float(np.quantile(a, 0.95)) if a.size else float("nan")

        return [("", {
            "positive": str(self.positive),
            "auc_mean_difference": self.auc["mean_difference"],
            "auc_probe": self.auc["probe"],
            "auc_cav": self.auc["cav"],
            "cos_mean_difference_probe": float(c[0, 1]),
            "cos_mean_difference_cav": float(c[0, 2]),
            "cos_probe_cav": float(c[1, 2]),
            "p_random_directions": self.p_random_directions,
            "p_random_concepts": self.p_random_concepts,
            "null_directions_q95": q(self.null_random_directions),
            "null_concepts_q95": q(self.null_random_concepts),
            "n_random": int(self.null_random_concepts.size),
            "n_random_directions": int(self.null_random_directions.size),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
        })]


def _cav(X: np.ndarray, concept_rows: np.ndarray, pool: np.ndarray, rng: np.random.Generator,
         C: float) -> np.ndarray:
    """Unit normal of a probe separating ``concept_rows`` from as many random rows of ``pool``."""
    from repscope.probe import LinearProbe

    neg = rng.choice(pool, size=concept_rows.shape[0], replace=pool.shape[0] < concept_rows.shape[0])
    Z = np.vstack([X[concept_rows], X[neg]])
    t = np.r_[np.ones(concept_rows.shape[0], dtype=np.int64), np.zeros(neg.shape[0], dtype=np.int64)]
    return _unit(np.atleast_2d(LinearProbe(C=C, max_iter=300).fit(Z, t).coef_)[0])


def concept_directions(
    X: Any,
    labels: Any,
    *,
    positive: Any = None,
    test_fraction: float = 0.3,
    n_random: int = 50,
    n_random_directions: int = 1000,
    C: float = 1.0,
    random_state: int = 0,
    progress: ProgressLike = False,
) -> DirectionsResult:
    """Difference-of-means, probe and CAV directions of a concept, their cosines, held-out AUCs
    and the CAV's significance against random directions and random concept sets.

    Parameters
    ----------
    X : array-like or Tensor of shape (n, d)
    labels : array-like of shape (n,)
        Labels; the concept is ``labels == positive``.
    positive : label, optional
        The concept's value; default: the larger of exactly two label values.
    test_fraction : float
        Stratified share of rows held out for the AUCs.
    n_random : int
        Random concept sets (CAVs trained on random rows) in the second null; 0 skips it.
    n_random_directions : int
        Random unit directions in the first null.
    C : float
        Inverse L2 strength of the probes and CAVs (scikit-learn's convention).
    random_state : int
    progress : bool or callable
        A bar over the random CAVs.

    Returns
    -------
    DirectionsResult
    """
    from repscope.concepts._erasure import _split
    from repscope.probe import LinearProbe

    caller = "concept_directions"
    check_scalar(n_random, "n_random", caller=caller, kind=int, min_value=0)
    check_scalar(n_random_directions, "n_random_directions", caller=caller, kind=int, min_value=1)
    check_scalar(C, "C", caller=caller, kind=float, min_value=0.0, include_min=False)
    x = as_float64_numpy(check_features(X, name="X", min_samples=4), name="X")
    y = check_labels(labels, n_samples=x.shape[0], name="labels")
    values = np.unique(y)
    if positive is None:
        if values.shape[0] != 2:
            raise RepscopeValueError(
                f"labels of {caller} must take exactly 2 values when 'positive' is not given; "
                f"got {values.shape[0]}. Pass positive=<the concept's value>."
            )
        positive = values[1]
    if not np.any(y == positive):
        raise RepscopeValueError(
            f"The 'positive' parameter of {caller} must be one of the label values "
            f"{values.tolist()[:10]}; got {positive!r}."
        )
    pos = y == positive
    if np.all(pos):
        raise RepscopeValueError(
            f"labels of {caller} must hold rows outside the concept {positive!r}; every row is "
            "in it."
        )
    tr, te = _split(pos.astype(np.int64), test_fraction, random_state, caller)
    xt, pt, xe, pe = x[tr], pos[tr], x[te], pos[te]
    rng = np.random.default_rng(random_state)

    dirs = {
        "mean_difference": _unit(xt[pt].mean(0) - xt[~pt].mean(0)),
        "probe": _unit(np.atleast_2d(
            LinearProbe(C=C, max_iter=300).fit(xt, pt.astype(np.int64)).coef_)[0]),
    }
    rows = np.arange(xt.shape[0])
    dirs["cav"] = _cav(xt, rows[pt], rows, rng, C)
    D = np.stack([dirs[k] for k in DIRECTION_NAMES])
    cos = D @ D.T
    auc_all = _aucs(D, xe, pe)
    auc = {k: float(a) for k, a in zip(DIRECTION_NAMES, auc_all)}

    R = rng.standard_normal((n_random_directions, x.shape[1]))
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    null_dir = _aucs(R, xe, pe)
    null_con = np.empty(n_random)
    k = int(pt.sum())
    with progress_for(progress, "random CAVs", n_random, prefix="concepts") as advance:
        for i in range(n_random):
            fake = rng.choice(rows, size=k, replace=False)
            null_con[i] = float(_aucs(_cav(xt, fake, rows, rng, C)[None, :], xe, pe)[0])
            advance(1)
    obs = auc["cav"]
    p_dir = float((1 + np.sum(null_dir >= obs)) / (1 + null_dir.size))
    p_con = float((1 + np.sum(null_con >= obs)) / (1 + n_random)) if n_random else float("nan")
    return DirectionsResult(
        positive=positive.item() if isinstance(positive, np.generic) else positive,
        directions=dirs, cosines=cos, auc=auc, p_random_directions=p_dir,
        p_random_concepts=p_con, null_random_directions=null_dir, null_random_concepts=null_con,
        n_train=int(tr.shape[0]), n_test=int(te.shape[0]), n_features=int(x.shape[1]),
    )
