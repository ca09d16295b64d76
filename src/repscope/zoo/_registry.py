"""The two zoo registries and the records they hold (a loader, an availability check and the
static metadata of each model and dataset)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from repscope.registry import Registry
from repscope.zoo._types import Dataset, DatasetInfo, LoadedModel, ModelInfo

__all__ = ["DATASETS", "MODELS", "DatasetSpec", "ModelSpec", "add_dataset", "add_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: static ``info``; ``check()`` returns why it cannot load ("" when it
    can, cheap: no heavy imports); ``load(device=..., **options)`` loads it; ``options`` are
    the extra keywords ``load`` accepts."""

    info: ModelInfo
    check: Callable[[], str]
    load: Callable[..., LoadedModel]
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: static ``info``; ``check()`` as for models; ``load(**options)``
    returns the full dataset (subsampling happens in :func:`~repscope.zoo.load_dataset`)."""

    info: DatasetInfo
    check: Callable[[], str]
    load: Callable[..., Dataset]
    options: tuple[str, ...] = ()


MODELS: Registry[ModelSpec] = Registry("model")
DATASETS: Registry[DatasetSpec] = Registry("dataset")


def add_model(spec: ModelSpec) -> None:
    """Register a model under ``spec.info.name`` (metadata: modality, kind)."""
    MODELS.add(spec.info.name, spec, modality=spec.info.modality, kind=spec.info.kind)


def add_dataset(spec: DatasetSpec) -> None:
    """Register a dataset under ``spec.info.name`` (metadata: modality)."""
    DATASETS.add(spec.info.name, spec, modality=spec.info.modality)
