"""Sparse autoencoders: every architecture behind one tensor-first interface."""

from repscope.sae._base import (
    SAEConfig,
    SAELoss,
    SAEOutput,
    SparseAutoencoder,
    TrainState,
    architectures,
    create_sae,
    geometric_median,
    register_architecture,
)
from repscope.sae.topk import TopKConfig, TopKSAE
from repscope.sae.trainer import SAETrainingError, TrainResult, default_lr, fit, sweep

__all__ = [
    "SAEConfig",
    "SAELoss",
    "SAEOutput",
    "SAETrainingError",
    "SparseAutoencoder",
    "TopKConfig",
    "TopKSAE",
    "TrainResult",
    "TrainState",
    "architectures",
    "create_sae",
    "default_lr",
    "fit",
    "geometric_median",
    "register_architecture",
    "sweep",
]
