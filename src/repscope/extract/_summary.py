"""What an extraction wrote: the ``extraction`` record of the CLI and the demo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from repscope.results import RecordedResult

if TYPE_CHECKING:
    from repscope.store import FeatureStore

__all__ = ["ExtractionResult"]


@dataclass(frozen=True)
class ExtractionResult(RecordedResult):
    """A finished extraction into a store.

    Attributes
    ----------
    n_samples : int
    layers : tuple of str
    seconds : float
        Wall time of the extraction.
    store : str
        Absolute path of the store.
    details : mapping
        More values to record (e.g. the input ``resolution``).
    """

    analysis: ClassVar[str] = "extraction"

    n_samples: int
    layers: tuple[str, ...]
    seconds: float
    store: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_store(cls, store: FeatureStore, seconds: float, **details: Any) -> ExtractionResult:
        """The summary of ``store`` after an extraction that took ``seconds``."""
        return cls(n_samples=int(store.n_samples), layers=tuple(store.layers),
                   seconds=float(seconds), store=str(Path(store.path).resolve()),
                   details=dict(details))

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``extraction`` record: samples, layers, seconds, the store's path, details."""
        return [("", {
            "n_samples": self.n_samples, "layers": list(self.layers), "seconds": self.seconds,
            "store": self.store, **dict(self.details)})]
