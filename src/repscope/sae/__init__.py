"""Sparse autoencoders: every architecture behind one tensor-first interface.

Architectures (:mod:`repscope.sae.archs`, one module each, registered by name in
:data:`architectures`, all registered on import): ``topk`` (AuxK, sparse kernels),
``batchtopk`` (exports to JumpReLU), ``matryoshka_batchtopk``, ``jumprelu``, ``relu`` (L1,
SAELens ``standard``), ``gated``, ``matching_pursuit``, ``poly`` (PolySAE), ``group_sparse``
(paired modalities). :func:`fit` / :func:`sweep` (:mod:`repscope.sae.training`) train on
tensors, memmaps, FeatureStore layers or iterators (several SAEs in one pass; DDP);
:mod:`repscope.sae.metrics` (:mod:`repscope.sae.evaluation`) evaluates; :func:`save_sae` /
:func:`load_sae` (:mod:`repscope.sae.io`) read and write SAELens's format and load sparsify
and dictionary_learning checkpoints.
"""

from typing import Any

from repscope.sae.archs import (
    MPSAE,
    BatchTopKConfig,
    BatchTopKSAE,
    GatedConfig,
    GatedSAE,
    GroupSparseConfig,
    GroupSparseSAE,
    JumpReLUConfig,
    JumpReLUSAE,
    MatryoshkaConfig,
    MatryoshkaSAE,
    MPConfig,
    PolyConfig,
    PolySAE,
    ReLUConfig,
    ReLUSAE,
    SAEConfig,
    SAELoss,
    SAEOutput,
    SparseAutoencoder,
    TiedAutoencoder,
    TiedFit,
    TopKConfig,
    TopKSAE,
    TrainState,
    architectures,
    create_sae,
    geometric_median,
    register_architecture,
    train_tied_autoencoder,
)
from repscope.sae.evaluation import LossRecovered, TopActivations, spliced_lm_loss, top_activations
from repscope.sae.io import load_dictionary_learning, load_sae, load_sparsify, save_sae
from repscope.sae.training import (
    SAETrainingError,
    TrainResult,
    TrainSettings,
    default_lr,
    fit,
    sweep,
)

__all__ = [
    "MPSAE",
    "BatchTopKConfig",
    "BatchTopKSAE",
    "GatedConfig",
    "GatedSAE",
    "GroupSparseConfig",
    "GroupSparseSAE",
    "JumpReLUConfig",
    "JumpReLUSAE",
    "LossRecovered",
    "MPConfig",
    "MatryoshkaConfig",
    "MatryoshkaSAE",
    "PolyConfig",
    "PolySAE",
    "ReLUConfig",
    "ReLUSAE",
    "SAEConfig",
    "SAELoss",
    "SAEOutput",
    "SAETrainingError",
    "SAETransformer",
    "SparseAutoencoder",
    "TiedAutoencoder",
    "TiedFit",
    "TopActivations",
    "TopKConfig",
    "TopKSAE",
    "TrainResult",
    "TrainSettings",
    "TrainState",
    "architectures",
    "create_sae",
    "default_lr",
    "fit",
    "geometric_median",
    "load_dictionary_learning",
    "load_sae",
    "load_sparsify",
    "register_architecture",
    "save_sae",
    "spliced_lm_loss",
    "sweep",
    "top_activations",
    "train_tied_autoencoder",
]


def __getattr__(name: str) -> Any:
    # SAETransformer is a scikit-learn estimator: importing scikit-learn costs ~2.5 s, which
    # users of the rest of repscope.sae should not pay
    if name == "SAETransformer":
        from repscope.sae._estimator import SAETransformer

        return SAETransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
