"""Leakage between sub-spaces: the cross-probe matrix (SepCLR, Louiset et al., ICLR 2024).

For a representation split into feature groups (column blocks of one layer, two stores, SAE
feature groups, a steering subspace and its complement), probe every attribute from every
group. A clean split is block-diagonal: each group decodes its own attributes and the others
only at chance. Off-diagonal accuracy above chance is leakage. k-JEM (from
:mod:`repscope.similarity`) between the groups measures their statistical dependence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeValueError
from repscope.geometry._pairwise import features64
from repscope.results import RecordedResult

__all__ = ["LeakageResult", "column_groups", "cross_probe"]


def column_groups(X: Any, blocks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Split the columns of ``X`` into named groups.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    blocks : mapping of str to slice, (start, stop) or sequence of column indices

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_columns_in_group)
    """
    A = features64(X, caller="column_groups", min_samples=1)
    d = A.shape[1]
    out: dict[str, np.ndarray] = {}
    for name, spec in blocks.items():
        if isinstance(spec, slice):
            cols = np.arange(d)[spec]
        elif isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
            cols = np.arange(spec[0], spec[1])
        else:
            cols = np.asarray(spec, dtype=np.int64).ravel()
        if cols.size == 0 or cols.min() < 0 or cols.max() >= d:
            raise RepscopeValueError(
                f"group {name!r} must name columns in [0, {d}); got {spec!r}.")
        out[str(name)] = A[:, cols]
    return out


@dataclass(frozen=True)
class LeakageResult(RecordedResult):
    """The cross-probe matrix: accuracy of a probe of each attribute on each feature group.

    Attributes
    ----------
    groups : tuple of str
    attributes : tuple of str
    accuracy : ndarray of shape (n_groups, n_attributes)
        Pooled held-out accuracy.
    ci_low, ci_high : ndarray of shape (n_groups, n_attributes)
        95% Wilson interval.
    chance : ndarray of shape (n_attributes,)
        Majority-class accuracy of each attribute.
    normalized : ndarray of shape (n_groups, n_attributes)
        ``(accuracy - chance) / (1 - chance)``: 0 = chance, 1 = perfect.
    above_chance : ndarray of bool, shape (n_groups, n_attributes)
        The interval's lower end is above chance.
    dependence : ndarray of shape (n_groups, n_groups) or None
        k-JEM between the groups (L2-normalised rows, tau = 0.5); None when not computed.
    n_features : tuple of int
    n_samples : int
    probe : str
    protocol : str
    """

    analysis: ClassVar[str] = "geometry_leakage"

    groups: tuple[str, ...]
    attributes: tuple[str, ...]
    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    chance: np.ndarray
    normalized: np.ndarray
    above_chance: np.ndarray
    dependence: np.ndarray | None
    n_features: tuple[int, ...]
    n_samples: int
    probe: str
    protocol: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry_leakage`` record per (group, attribute) cell."""
        rows = []
        for g, group in enumerate(self.groups):
            for a, attr in enumerate(self.attributes):
                rows.append(("", {
                    "group": group, "attribute": attr,
                    "accuracy": float(self.accuracy[g, a]), "ci_low": float(self.ci_low[g, a]),
                    "ci_high": float(self.ci_high[g, a]), "chance": float(self.chance[a]),
                    "normalized": float(self.normalized[g, a]),
                    "above_chance": bool(self.above_chance[g, a]),
                    "n_features": self.n_features[g], "n_samples": self.n_samples}))
        return rows

    def leakage(self, own: Mapping[str, Sequence[str]]) -> float:
        """The largest normalised accuracy of an attribute from a group that should not hold it.

        ``own`` maps each group to the attributes it is meant to encode; every other cell is
        leakage. 0 = a clean split.
        """
        worst = 0.0
        for g, group in enumerate(self.groups):
            mine = set(own.get(group, ()))
            for a, attr in enumerate(self.attributes):
                if attr not in mine:
                    worst = max(worst, float(self.normalized[g, a]))
        return worst


def cross_probe(
    groups: Mapping[str, Any],
    attributes: Mapping[str, Any],
    *,
    probe: Any = None,
    protocol: Any = None,
    dependence: bool = False,
    max_samples: int = 5000,
    progress: ProgressLike = False,
) -> LeakageResult:
    """Probe every attribute from every feature group.

    Parameters
    ----------
    groups : mapping of str to array-like of shape (n_samples, n_features_g)
        The sub-spaces, on the same samples (:func:`column_groups` splits one layer's columns;
        two stores' layers work as two groups).
    attributes : mapping of str to array-like of shape (n_samples,)
        Labels of each attribute.
    probe : estimator or callable, optional
        Default closed-form ridge (:func:`repscope.probe._layerwise.default_probe`).
    protocol : Holdout, KFold or FixedValidation, optional
        Default ``KFold(5)``.
    dependence : bool, default=False
        Also compute k-JEM between every pair of groups (``O(n^2)`` time; on the first
        ``max_samples`` rows).
    max_samples : int, default=5000
        Rows used for k-JEM.
    progress : bool or callable, default=False

    Returns
    -------
    LeakageResult
    """
    from repscope.probe._layerwise import _probe_name, default_probe
    from repscope.probe._protocols import DEFAULT_PROTOCOL, evaluate

    if not isinstance(groups, Mapping) or not groups:
        raise RepscopeValueError("groups of cross_probe must map at least one group name to "
                                 "features.")
    if not isinstance(attributes, Mapping) or not attributes:
        raise RepscopeValueError("attributes of cross_probe must map at least one attribute "
                                 "name to labels.")
    names = [str(g) for g in groups]
    feats = [features64(groups[g], name=f"group {g!r}", caller="cross_probe") for g in groups]
    n = feats[0].shape[0]
    for g, F in zip(names, feats, strict=True):
        if F.shape[0] != n:
            raise RepscopeValueError(
                f"group {g!r} has {F.shape[0]} samples but group {names[0]!r} has {n}; every "
                "group must hold the same inputs.")
    attrs = [str(a) for a in attributes]
    labels = []
    for a in attributes:
        lab = np.asarray(attributes[a])
        if lab.shape[0] != n:
            raise RepscopeValueError(
                f"attribute {a!r} has {lab.shape[0]} labels but the groups have {n} samples; "
                "pass one label per sample.")
        labels.append(lab)
    factory = probe if probe is not None else default_probe()
    proto = protocol if protocol is not None else DEFAULT_PROTOCOL
    G, A = len(names), len(attrs)
    acc, lo, hi = np.zeros((G, A)), np.zeros((G, A)), np.zeros((G, A))
    chance = np.zeros(A)
    with progress_for(progress, "probes", G * A, prefix="leakage") as advance:
        for gi, F in enumerate(feats):
            for ai, lab in enumerate(labels):
                r, _ = evaluate(factory, F, lab, proto)
                acc[gi, ai], lo[gi, ai], hi[gi, ai] = r.accuracy, r.ci_low, r.ci_high
                chance[ai] = r.chance
                advance(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(chance < 1, (acc - chance) / (1.0 - chance), 0.0)
    dep = None
    if dependence:
        from repscope.geometry._pairwise import l2_normalize
        from repscope.similarity import kjem

        sub = [l2_normalize(F[:max_samples]) for F in feats]
        dep = np.array([[kjem(sub[i], sub[j]) for j in range(G)] for i in range(G)])
    return LeakageResult(
        groups=tuple(names), attributes=tuple(attrs), accuracy=acc, ci_low=lo, ci_high=hi,
        chance=chance, normalized=norm, above_chance=lo > chance[None, :], dependence=dep,
        n_features=tuple(int(F.shape[1]) for F in feats), n_samples=n,
        probe=_probe_name(factory), protocol=repr(proto))
