"""Exact streaming for every Moments-based measure (torchmetrics' update/compute pattern).

The state is fixed-size (``d x d`` float64 moments, plus row-norm sums for debiased CKA, or one
set per fold for ridge predictivity); ``compute`` calls the same helper as the in-memory
function, so streaming over any split of the rows, or merging shards, gives the in-memory value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validation import check_paired
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.similarity._measures._common import PairStats
from repscope.similarity._measures._streaming_specs import stream_spec, streaming_measures
from repscope.similarity._registry import list_measures, resolve_measure

__all__ = ["StreamingSimilarity"]


def _stats_compute_linear_cka(s: PairStats, **opts: Any) -> float:
    from repscope.similarity._cka import cka_from_stats

    return cka_from_stats(s, debiased=bool(opts.get("debiased", False)))


class StreamingSimilarity:
    """Accumulate a Moments-based similarity over batches: ``update``, ``merge``, ``compute``.

    Parameters
    ----------
    measure : str, default="linear_cka"
        One of :meth:`available` (``linear_cka``, ``linear_cka_debiased``, ``cca``, ``svcca``,
        ``pwcca``, ``procrustes``, ``shape_angular``, ``shape_cca``, ``linear_r2``,
        ``ridge_predictivity``).
    **opts
        Options of the measure (as for the function).

    Examples
    --------
    >>> import numpy as np
    >>> from repscope.similarity import linear_cka
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((300, 4)), rng.standard_normal((300, 3))
    >>> acc = StreamingSimilarity("linear_cka")
    >>> for s in range(0, 300, 70):
    ...     _ = acc.update(X[s:s + 70], Y[s:s + 70])
    >>> bool(np.isclose(acc.compute(), linear_cka(X, Y)))
    True
    """

    def __init__(self, measure: str = "linear_cka", **opts: Any) -> None:
        measure = resolve_measure(measure)  # aliases too; unknown names raise UnknownNameError
        if measure not in self.available():
            raise RepscopeValueError(
                f"measure {measure!r} cannot be streamed exactly (it is not a function of "
                f"paired moments); streamable measures: {self.available()}. Compute it in "
                "memory, on a subsample, or with MinibatchCKA for CKA."
            )
        self.measure = measure
        self.opts = dict(opts)
        self.reset()

    @staticmethod
    def available() -> list[str]:
        """Names of the measures that stream exactly."""
        list_measures()
        return sorted({"linear_cka", "linear_cka_debiased", *streaming_measures()})

    def _row_norms(self) -> bool:
        return self.measure == "linear_cka_debiased" or (
            self.measure == "linear_cka" and bool(self.opts.get("debiased", False)))

    def _n_folds(self) -> int:
        spec = stream_spec(self.measure)
        if spec is None or spec.folds is None:
            return 0
        k = int(self.opts.get(spec.folds, 5))
        if k < 2:
            raise RepscopeValueError(f"the {spec.folds!r} option must be >= 2; got {k}.")
        return k

    def reset(self) -> None:
        """Forget every batch (the state goes back to empty)."""
        k = self._n_folds()
        self.n_seen = 0
        self.stats: PairStats | None = None if k else PairStats(row_norms=self._row_norms())
        self.folds: list[PairStats] = [PairStats() for _ in range(k)]

    def update(self, X: Any, Y: Any) -> StreamingSimilarity:
        """Add a batch of paired rows (numpy or torch)."""
        X, Y = check_paired(X, Y, min_samples=0)
        b = int(X.shape[0])
        if self.folds:
            idx = (self.n_seen + np.arange(b)) % len(self.folds)
            for f, st in enumerate(self.folds):
                rows = np.flatnonzero(idx == f)
                if rows.size:
                    st.update(X[rows], Y[rows])
        else:
            assert self.stats is not None
            self.stats.update(X, Y)
        self.n_seen += b
        return self

    def merge(self, other: StreamingSimilarity) -> StreamingSimilarity:
        """Add another accumulator's state (shards of one data set, possibly on other ranks).

        For ridge predictivity the fold assignment continues the row count, so a merge equals the
        concatenation when every shard but the last holds a multiple of ``folds`` rows."""
        if not isinstance(other, StreamingSimilarity) or other.measure != self.measure:
            raise RepscopeTypeError(
                f"can only merge a StreamingSimilarity of the same measure ({self.measure!r}); "
                f"got {other!r}."
            )
        if self.folds:
            for a, b in zip(self.folds, other.folds, strict=True):
                a.merge(b)
        else:
            assert self.stats is not None
            assert other.stats is not None
            self.stats.merge(other.stats)
        self.n_seen += other.n_seen
        return self

    def compute(self) -> float:
        """The measure on every row seen so far."""
        if self.n_seen < 3:
            raise RepscopeValueError(
                f"StreamingSimilarity({self.measure!r}) needs at least 3 samples; has seen "
                f"{self.n_seen}. Call update(X, Y) first."
            )
        if self.measure in ("linear_cka", "linear_cka_debiased"):
            assert self.stats is not None
            opts = {**self.opts, "debiased": self._row_norms()}
            return _stats_compute_linear_cka(self.stats, **opts)
        spec = stream_spec(self.measure)
        assert spec is not None
        opts = {**dict(spec.defaults), **self.opts}
        if self.folds:
            return float(spec.compute(self.folds, **opts))
        return float(spec.compute(self.stats, **opts))

    def __repr__(self) -> str:
        return f"StreamingSimilarity({self.measure!r}, n_seen={self.n_seen})"
