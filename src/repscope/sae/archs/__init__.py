"""SAE architectures: the :class:`SparseAutoencoder` contract and one module per architecture.

:mod:`._base` holds the contract every architecture implements (config dataclass, forward in
the normalised space, loss, optimiser post-steps, SAELens-compatible folded weights) and the
registry :data:`architectures`; :mod:`._sparse` the sparse decode kernels the TopK family
shares. Each public module (:mod:`.topk`, :mod:`.batchtopk`, :mod:`.matryoshka`,
:mod:`.jumprelu`, :mod:`.relu`, :mod:`.gated`, :mod:`.matching_pursuit`, :mod:`.poly`,
:mod:`.group_sparse`) registers its architecture when imported, and this package imports them
all, so the registry is complete whenever :mod:`repscope.sae` is imported. :mod:`.bows` is the
tied autoencoder of the BOWS paper (trained by its own loop, not registered).
"""

from repscope.sae.archs._base import (
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
from repscope.sae.archs.batchtopk import BatchTopKConfig, BatchTopKSAE
from repscope.sae.archs.bows import TiedAutoencoder, TiedFit, train_tied_autoencoder
from repscope.sae.archs.gated import GatedConfig, GatedSAE
from repscope.sae.archs.group_sparse import GroupSparseConfig, GroupSparseSAE
from repscope.sae.archs.jumprelu import JumpReLUConfig, JumpReLUSAE
from repscope.sae.archs.matching_pursuit import MPSAE, MPConfig
from repscope.sae.archs.matryoshka import MatryoshkaConfig, MatryoshkaSAE
from repscope.sae.archs.poly import PolyConfig, PolySAE
from repscope.sae.archs.relu import ReLUConfig, ReLUSAE
from repscope.sae.archs.topk import TopKConfig, TopKSAE

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
    "SparseAutoencoder",
    "TiedAutoencoder",
    "TiedFit",
    "TopKConfig",
    "TopKSAE",
    "TrainState",
    "architectures",
    "create_sae",
    "geometric_median",
    "register_architecture",
    "train_tied_autoencoder",
]
