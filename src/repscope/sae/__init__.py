"""Sparse autoencoders: every architecture behind one tensor-first interface.

Architectures (one module each, registered by name in :data:`architectures`): ``topk`` (AuxK,
sparse kernels), ``batchtopk`` (exports to JumpReLU), ``matryoshka_batchtopk``, ``jumprelu``,
``relu`` (L1, SAELens ``standard``), ``gated``, ``matching_pursuit``, ``poly`` (PolySAE),
``group_sparse`` (paired modalities). :func:`fit` / :func:`sweep` train on tensors, memmaps,
FeatureStore layers or iterators (several SAEs in one pass; DDP); :mod:`repscope.sae.metrics`
evaluates; :func:`save_sae` / :func:`load_sae` read and write SAELens's format and load
sparsify and dictionary_learning checkpoints.
"""

from typing import Any

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
from repscope.sae._fidelity import LossRecovered, spliced_lm_loss
from repscope.sae._foreign import load_dictionary_learning, load_sparsify
from repscope.sae._inspect import TopActivations, top_activations
from repscope.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from repscope.sae.bows import TiedAutoencoder, TiedFit, train_tied_autoencoder
from repscope.sae.gated import GatedConfig, GatedSAE
from repscope.sae.group_sparse import GroupSparseConfig, GroupSparseSAE
from repscope.sae.io import load_sae, save_sae
from repscope.sae.jumprelu import JumpReLUConfig, JumpReLUSAE
from repscope.sae.matching_pursuit import MPSAE, MPConfig
from repscope.sae.matryoshka import MatryoshkaConfig, MatryoshkaSAE
from repscope.sae.poly import PolyConfig, PolySAE
from repscope.sae.relu import ReLUConfig, ReLUSAE
from repscope.sae.topk import TopKConfig, TopKSAE
from repscope.sae.trainer import SAETrainingError, TrainResult, default_lr, fit, sweep

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
