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

from typing import TYPE_CHECKING

from repscope._lazy import attach

# Lazy: ``import repscope.sae`` (the CLI builds its help from every package) costs no torch or
# scikit-learn import until a name is used. Any name of the registry's side (architectures,
# create_sae, load_sae, fit, ...) imports repscope.sae.archs, whose __init__ imports every
# architecture, so the registry is complete whenever it can be reached.
if TYPE_CHECKING:
    from repscope.sae._budget import plan_steps
    from repscope.sae._estimator import SAETransformer
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
    from repscope.sae.evaluation import (
        LossRecovered,
        LossRecoveredResult,
        TopActivations,
        TopActivationsResult,
        spliced_lm_loss,
        top_activations,
    )
    from repscope.sae.io import load_dictionary_learning, load_sae, load_sparsify, save_sae
    from repscope.sae.training import (
        LayerVectors,
        SAETrainingError,
        TrainResult,
        TrainSettings,
        default_lr,
        fit,
        sweep,
    )

__getattr__, __dir__, _ = attach(__name__, __file__)

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
    "LayerVectors",
    "LossRecovered",
    "LossRecoveredResult",
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
    "TopActivationsResult",
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
    "plan_steps",
    "register_architecture",
    "save_sae",
    "spliced_lm_loss",
    "sweep",
    "top_activations",
    "train_tied_autoencoder",
]
