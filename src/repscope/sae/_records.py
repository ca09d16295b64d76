"""The ``sae`` record: one trained SAE, its held-out evaluation, training curves and the top
examples of a few latents. The CLI (``repscope sae train|eval``) and the demo both build it
through :meth:`SAERunResult.to_records`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from repscope.results import RecordedResult

__all__ = ["SAERunResult"]


@dataclass(frozen=True)
class SAERunResult(RecordedResult):
    """A trained (or loaded) SAE and what was measured of it.

    Attributes
    ----------
    sae : SparseAutoencoder
    evaluation : SAEEvaluationResult
        Its evaluation (on held-out data).
    history : mapping of str to list of float, optional
        Training history; stored subsampled to <= 200 rows (default: ``training``'s).
    top_latents : list of dict, optional
        From ``top_latents_values`` (text snippets or image thumbnails per latent).
    extra : mapping
        More values (``path``, ``n_train``, ``n_eval``, ``seconds``, ``loss_recovered``, ...).
    training : TrainResult, optional
        The training run, whose firing counters give "dead in training" and "never fired in
        training" (the same counters its history's last row was logged from).
    """

    analysis: ClassVar[str] = "sae"

    sae: Any
    evaluation: Any
    history: Mapping[str, Sequence[float]] | None = None
    top_latents: list[dict[str, Any]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    training: Any = None

    def record_values(self) -> dict[str, Any]:
        """The values of the ``sae`` record (see ``sae_record_values`` for the keys)."""
        from repscope.sae.evaluation._inspect import sae_record_values

        return sae_record_values(self.sae, self.evaluation, history=self.history,
                                 top_latents=self.top_latents, training=self.training,
                                 **dict(self.extra))

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``sae`` record."""
        return [("", self.record_values())]
