"""One call that fits a map on a train split and reports every held-out alignment metric.

Used by ``repscope align`` and the demo; :meth:`AlignmentResult.to_records` gives the
``alignment`` record the report renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope._array import as_float64_numpy
from repscope._validation import check_choice, check_paired, check_scalar
from repscope.align._maps import MIN_SAMPLES, LinearMap, OrthogonalMap
from repscope.align._metrics import (
    kernel_agreement,
    matching_accuracy,
    orthogonality_gap,
    paired_cosine,
    retrieval_topk,
)
from repscope.align._subspace import SubspaceMap, sweep_k
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult, make_record

if TYPE_CHECKING:
    from repscope.db import Record
    from repscope.distributed import DistContext

__all__ = ["AlignmentEvaluation", "AlignmentResult", "evaluate_alignment",
           "evaluate_alignment_ranks"]

MapKind = Literal["orthogonal", "linear", "subspace"]


@dataclass(frozen=True)
class AlignmentResult(RecordedResult):
    """Held-out quality of a map from space A onto space B.

    Attributes
    ----------
    map : str
        ``"orthogonal"``, ``"linear"`` or ``"subspace"`` (with its parameters in ``params``).
    retrieval, retrieval_unmapped : dict of int to float
        Top-k retrieval of B's partner from mapped A (and from raw A when the widths agree;
        empty otherwise).
    cosine, cosine_unmapped : float
        Mean paired cosine (NaN unmapped when the widths differ).
    r2 : float
        The map's held-out ``score``.
    matching : float
        Matching accuracy (Hungarian) of mapped A to B (NaN when skipped for large n).
    kernel_agreement : float
        Linear CKA of mapped A and B.
    orthogonality_gap : dict
        :class:`~repscope.align.OrthogonalityGapResult` as a dict.
    sweep : dict
        :class:`~repscope.align.SubspaceSweepResult` as a dict (empty when not run).
    n_train, n_test : int
    params : dict
    """

    analysis: ClassVar[str] = "alignment"

    map: str
    retrieval: dict[int, float]
    retrieval_unmapped: dict[int, float]
    cosine: float
    cosine_unmapped: float
    r2: float
    matching: float
    kernel_agreement: float
    orthogonality_gap: dict[str, Any]
    sweep: dict[str, Any]
    n_train: int
    n_test: int
    params: dict[str, Any] = field(default_factory=dict)

    def record_values(self) -> dict[str, Any]:
        """The values of an ``alignment`` record (JSON-ready)."""
        d = self.to_dict()
        d.pop("type", None)
        d.pop("params", None)
        return d

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``alignment`` record: every held-out metric."""
        return [("", self.record_values())]

    def to_records(
        self,
        *,
        model: str = "",
        dataset: str = "",
        layer: str = "",
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        model_a: str = "",
        model_b: str = "",
        layer_a: str = "",
        layer_b: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """The ``alignment`` record with the two sources and ``extra`` values (notes, timings).
        ``model`` defaults to ``"A vs B"``, ``layer`` to ``"layer_a -> layer_b"``; ``params``
        are added to the evaluation's own."""
        context = {"model_a": model_a, "model_b": model_b, "layer_a": layer_a,
                   "layer_b": layer_b, **dict(extra or {})}
        return [make_record(self.analysis, {**values, **context},
                            model=model or f"{model_a} vs {model_b}", dataset=dataset,
                            layer=layer or f"{layer_a} -> {layer_b}", run_id=run_id,
                            params={**self.params, **dict(params or {})})
                for _, values in self.record_rows()]


#: The former name of :class:`AlignmentResult` (kept for one release).
AlignmentEvaluation = AlignmentResult


def anchor_split(
    X: np.ndarray, n_train: int, anchors: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training (anchor) and test row indices: ``n_train`` random rows, or a projection-DPP
    choice of ``n_train`` diverse rows of ``X``; the test rows are the rest."""
    n = int(X.shape[0])
    if anchors == "dpp":
        from repscope.geometry import dpp_subset

        tr = np.sort(np.asarray(dpp_subset(X, n_train, seed=seed, max_samples=None).indices))
        te = np.setdiff1d(np.arange(n), tr)
        return tr, te
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train:]


def evaluate_alignment(
    X: Any,
    Y: Any,
    *,
    map: MapKind = "orthogonal",
    n_train: int | None = None,
    seed: int = 0,
    n_components: int = 32,
    method: Literal["cca", "pca"] = "cca",
    scale: bool = False,
    retrieval_ks: Sequence[int] = (1, 5, 10),
    sweep_ks: Sequence[int] | None = (),
    max_matching: int = 5000,
    anchors: Literal["random", "dpp"] = "random",
    retrieval: bool = True,
) -> AlignmentResult:
    """Split paired ``(X, Y)`` into train/test, fit a map on train, score it on test.

    Parameters
    ----------
    X, Y : array-like of shape (n_samples, d_x), (n_samples, d_y)
        Paired representations of the same inputs (row ``i`` of both is input ``i``).
    map : {"orthogonal", "linear", "subspace"}, default="orthogonal"
    n_train : int, optional
        Training pairs (a random subset, ``seed``); default half of the rows.
    seed : int, default=0
    n_components, method : int, str
        For ``map="subspace"``.
    scale : bool, default=False
        Isotropic scale for the orthogonal map.
    retrieval_ks : sequence of int, default=(1, 5, 10)
    sweep_ks : sequence of int or None, default=()
        Run :func:`~repscope.align.sweep_k` over these ``k`` (``None``: its default powers of
        two; empty: no sweep).
    max_matching : int, default=5000
        Skip the ``n x n`` matching accuracy above this many test pairs (NaN).
    anchors : {"random", "dpp"}, default="random"
        How the ``n_train`` anchor pairs are chosen: uniformly at random, or a projection DPP
        on ``X`` (:func:`repscope.geometry.dpp_subset`: pairs spread over the dominant
        directions of ``X``, the budget of annotated pairs spent on diverse inputs). The
        other rows are the test pairs either way.
    retrieval : bool, default=True
        Compute the metrics that compare every held-out pair with all the others (top-k
        retrieval, matching accuracy); False leaves them empty and NaN.

    Returns
    -------
    AlignmentEvaluation
    """
    caller = "evaluate_alignment"
    X, Y = check_paired(X, Y, min_samples=2 * MIN_SAMPLES)
    map = check_choice(map, "map", ("orthogonal", "linear", "subspace"), caller=caller)  # type: ignore[assignment]
    n = int(X.shape[0])
    n_tr = _split_args(n, n_train, caller)
    anchors = check_choice(anchors, "anchors", ("random", "dpp"), caller=caller)  # type: ignore[assignment]
    Xn, Yn = as_float64_numpy(X), as_float64_numpy(Y)
    tr, te = anchor_split(Xn, n_tr, anchors, seed)
    est: Any
    if map == "orthogonal":
        est = OrthogonalMap(scale=scale)
    elif map == "linear":
        est = LinearMap()
    else:
        est = SubspaceMap(n_components=n_components, method=method)
    est.fit(Xn[tr], Yn[tr])
    Xte, Yte = Xn[te], Yn[te]
    if map == "subspace":
        A, B = est.embed_x(Xte), est.embed_y(Yte)
    else:
        A, B = est.transform(Xte), Yte
    rks = tuple(k for k in (int(k) for k in retrieval_ks) if k <= len(te)) if retrieval else ()
    same_width = Xn.shape[1] == Yn.shape[1]
    gap = orthogonality_gap(Xn[tr], Yn[tr], Xte, Yte, scale=True)
    sweep: dict[str, Any] = {}
    if sweep_ks is None or len(sweep_ks):
        s = sweep_k(Xn[tr], Yn[tr], Xte, Yte, ks=sweep_ks, method=method, retrieval_ks=rks)
        sweep = s.to_dict()
        sweep.pop("type", None)
    return AlignmentResult(
        map=str(map),
        retrieval=retrieval_topk(A, B, ks=rks).topk if rks else {},
        retrieval_unmapped=retrieval_topk(Xte, Yte, ks=rks).topk if rks and same_width else {},
        cosine=paired_cosine(A, B),
        cosine_unmapped=paired_cosine(Xte, Yte) if same_width else float("nan"),
        r2=float(est.score(Xte, Yte)),
        matching=(matching_accuracy(A, B) if retrieval and len(te) <= max_matching
                  else float("nan")),
        kernel_agreement=kernel_agreement(A, B),
        orthogonality_gap={k: v for k, v in gap.to_dict().items() if k != "type"},
        sweep=sweep,
        n_train=int(n_tr),
        n_test=len(te),
        params={"map": str(map), "seed": int(seed), "scale": bool(scale),
                "n_components": int(n_components), "method": str(method),
                "anchors": str(anchors)},
    )


def _split_args(n: int, n_train: int | None, caller: str) -> int:
    """The number of training pairs of ``n`` (half by default), checked to leave a test set."""
    if n < 2 * MIN_SAMPLES:
        raise RepscopeValueError(
            f"{caller} needs at least {2 * MIN_SAMPLES} paired samples; got {n}.")
    n_tr = n // 2 if n_train is None else int(check_scalar(n_train, "n_train", caller=caller,
                                                            kind=int, min_value=MIN_SAMPLES))
    if n - n_tr < 2:
        raise RepscopeValueError(
            f"The 'n_train' parameter of {caller} must leave at least 2 test pairs; got "
            f"n_train={n_tr} of n={n}."
        )
    return n_tr


def _cosine_sum(A: np.ndarray, B: np.ndarray) -> float:
    """Sum of the paired rows' cosines (0 for a row of zero norm), as :func:`paired_cosine`."""
    den = np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1)
    dots = np.einsum("ij,ij->i", A, B)
    return float(np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0).sum())


def evaluate_alignment_ranks(
    X: Any,
    Y: Any,
    *,
    n_samples: int,
    start: int,
    dist: DistContext,
    map: Literal["orthogonal", "linear"] = "orthogonal",
    n_train: int | None = None,
    seed: int = 0,
    scale: bool = False,
    n_components: int = 32,
    method: Literal["cca", "pca"] = "cca",
) -> AlignmentResult:
    """:func:`evaluate_alignment` over ranks that each hold a contiguous share of the pairs.

    Every rank passes its rows ``start:start + len(X)`` of the ``n_samples`` paired rows
    (:meth:`~repscope.distributed.DistContext.share`). The random train/test split is the
    one :func:`evaluate_alignment` draws from ``seed`` (the same on every rank); the map is
    fitted from the all-reduced :class:`~repscope.stats.Moments` of the training pairs, and
    every held-out metric is a sum over the test pairs added across ranks: paired cosine,
    R^2, kernel agreement (linear CKA) and the orthogonality gap. Every rank returns what one
    process returns with ``retrieval=False`` (top-k retrieval and matching compare each pair
    with all the others and are not computed: empty and NaN), up to float64 rounding.
    ``n_components`` and ``method`` are only recorded in ``params`` (they shape subspace maps,
    which run on one process).

    Raises
    ------
    RepscopeValueError
        Fewer than 6 pairs, an ``n_train`` that leaves fewer than 2 test pairs, rows that do
        not fit in ``n_samples``, or a constant space.
    DistributedError
        Another rank stopped during a collective.
    """
    from repscope.similarity._cka import cka_from_moments
    from repscope.stats import Moments

    caller = "evaluate_alignment_ranks"
    map = check_choice(map, "map", ("orthogonal", "linear"), caller=caller)  # type: ignore[assignment]
    n = int(n_samples)
    n_tr = _split_args(n, n_train, caller)
    Xn, Yn = as_float64_numpy(X, name="X"), as_float64_numpy(Y, name="Y")
    if Xn.ndim != 2 or Yn.ndim != 2 or Xn.shape[0] != Yn.shape[0] or not (
            start >= 0 and start + Xn.shape[0] <= n):
        raise RepscopeValueError(
            f"{caller} needs 2-D X and Y with the same rows, a share start:start + len(X) of "
            f"the {n} pairs; got X {Xn.shape}, Y {Yn.shape}, start={start}.")
    perm = np.random.default_rng(seed).permutation(n)  # anchor_split's random split
    is_train = np.zeros(n, dtype=bool)
    is_train[perm[:n_tr]] = True
    tr = is_train[start:start + Xn.shape[0]]
    Xtr, Ytr, Xte, Yte = Xn[tr], Yn[tr], Xn[~tr], Yn[~tr]
    n_te = n - n_tr

    def reduced(m: Any, what: str) -> Any:
        if dist.is_distributed:
            with dist.collective(what):
                m.all_reduce(dist.group)
        return m

    train = reduced(Moments().update(Xtr, Ytr), "adding the training pairs' moments")
    est: Any = OrthogonalMap(scale=scale) if map == "orthogonal" else LinearMap()
    est.fit_moments(train)
    orth = OrthogonalMap(center=True, scale=True).fit_moments(train)
    lin = LinearMap().fit_moments(train)
    A = np.asarray(est.transform(Xte), dtype=np.float64) if len(Xte) else np.zeros((0, Yn.shape[1]))
    same_width = Xn.shape[1] == Yn.shape[1]
    first = dist.all_sum(np.concatenate([
        [_cosine_sum(A, Yte), _cosine_sum(Xte, Yte) if same_width else 0.0],
        Yte.sum(axis=0)]), "adding the held-out cosines and means")
    mu_y = first[2:] / n_te

    def rss(est_: Any) -> float:
        return float(((Yte - est_.transform(Xte)) ** 2).sum()) if len(Xte) else 0.0

    sst, rss_e, rss_o, rss_l = (float(v) for v in dist.all_sum(
        [float(((Yte - mu_y) ** 2).sum()), rss(est), rss(orth), rss(lin)],
        "adding the held-out residuals"))
    if sst <= 0:
        raise RepscopeValueError("R^2 is undefined when Y is constant (zero variance).")
    test = reduced(Moments().update(A, Yte), "adding the held-out pairs' moments")
    ro, rl = 1.0 - (1.0 - rss_o / sst), 1.0 - (1.0 - rss_l / sst)
    return AlignmentResult(
        map=str(map),
        retrieval={},
        retrieval_unmapped={},
        cosine=float(first[0] / n_te),
        cosine_unmapped=float(first[1] / n_te) if same_width else float("nan"),
        r2=1.0 - rss_e / sst,
        matching=float("nan"),
        kernel_agreement=float(cka_from_moments(test)),
        orthogonality_gap={"orthogonal_residual": ro, "linear_residual": rl, "gap": ro - rl,
                           "alpha": float(lin.alpha_), "n_train": int(n_tr), "n_test": n_te},
        sweep={},
        n_train=int(n_tr),
        n_test=n_te,
        params={"map": str(map), "seed": int(seed), "scale": bool(scale),
                "n_components": int(n_components), "method": str(method),
                "anchors": "random"},
    )
