"""Structured linear maps and heads from the seed papers, as plain ``torch.nn.Module``s with
shape-documented ``forward``, and analyses of their structure beside them.

- Low rank: :class:`OrderedLowRankLinear` (Maestro: ordered dropout over the rank, truncation
  to any rank) and :func:`low_rank_spectrum` of any trained linear or convolution layer.
- Butterfly: :class:`ButterflyLinear`, the exact :func:`dft_butterfly` and
  :func:`hadamard_butterfly` factorisations, :func:`fit_butterfly`.
- Hyper-connections: :class:`SpectralSphereHyperConnection` (sHC, ``||H||_2 = 1``) and the
  doubly-stochastic :class:`BirkhoffHyperConnection`.
- Separable: :class:`CPSeparable` and :func:`separability_rank`.
- Tensors: :func:`hosvd`, :func:`tucker` (HOOI), :func:`tucker_of_tokens`.
- Embeddings and gates: :class:`UnifiedEmbedding` (one hashed table for many features),
  :func:`feature_orthogonality`, :class:`ContinuationGate` and :func:`select_features` (OptFS).
- Attention: :class:`NormAwareLinearAttention` (NaLaFormer), :class:`ReLULinearAttention`,
  :class:`CAREBlock` (cost), :class:`ULSAM`.
- Margin heads: :class:`MarginHead` (ArcFace, CosFace, ElasticFace); the matching probe is
  ``repscope probe --probe arcface`` (:class:`repscope.probe.MarginProbe`).

The names load on first use (torch with them), so importing the package itself is cheap.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.nn._butterfly import (
        ButterflyFitResult,
        ButterflyLinear,
        bit_reversal_permutation,
        dft_butterfly,
        fit_butterfly,
        hadamard_butterfly,
    )
    from repscope.nn._embedding import (
        FeatureOrthogonalityResult,
        UnifiedEmbedding,
        feature_orthogonality,
    )
    from repscope.nn._gates import (
        ContinuationGate,
        select_features,
    )
    from repscope.nn._hyperconn import (
        BirkhoffHyperConnection,
        MixingDiagnosticsResult,
        SpectralSphereHyperConnection,
        mixing_diagnostics,
        sinkhorn_doubly_stochastic,
    )
    from repscope.nn._linear_attention import (
        ULSAM,
        CAREBlock,
        CARECost,
        NormAwareLinearAttention,
        NormEntropyResult,
        ReLULinearAttention,
        attention_weights,
        kernel_linear_attention,
        nala_feature_maps,
        norm_aware_linear_attention,
        norm_entropy_correlation,
        relu_linear_attention,
        row_entropy,
        softmax_attention,
    )
    from repscope.nn._maestro import (
        LowRankSpectrumResult,
        OrderedLowRankLinear,
        low_rank_spectrum,
    )
    from repscope.nn._margin import (
        MARGIN_DEFAULTS,
        MarginHead,
        margin_logits,
    )
    from repscope.nn._separable import (
        CPSeparable,
        SeparabilityRankResult,
        fit_separable,
        separability_rank,
    )
    from repscope.nn._tucker import (
        TuckerResult,
        hosvd,
        tucker,
        tucker_of_tokens,
    )

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "MARGIN_DEFAULTS",
    "ULSAM",
    "BirkhoffHyperConnection",
    "ButterflyFitResult",
    "ButterflyLinear",
    "CAREBlock",
    "CARECost",
    "CPSeparable",
    "ContinuationGate",
    "FeatureOrthogonalityResult",
    "LowRankSpectrumResult",
    "MarginHead",
    "MixingDiagnosticsResult",
    "NormAwareLinearAttention",
    "NormEntropyResult",
    "OrderedLowRankLinear",
    "ReLULinearAttention",
    "SeparabilityRankResult",
    "SpectralSphereHyperConnection",
    "TuckerResult",
    "UnifiedEmbedding",
    "attention_weights",
    "bit_reversal_permutation",
    "dft_butterfly",
    "feature_orthogonality",
    "fit_butterfly",
    "fit_separable",
    "hadamard_butterfly",
    "hosvd",
    "kernel_linear_attention",
    "low_rank_spectrum",
    "margin_logits",
    "mixing_diagnostics",
    "nala_feature_maps",
    "norm_aware_linear_attention",
    "norm_entropy_correlation",
    "relu_linear_attention",
    "row_entropy",
    "select_features",
    "separability_rank",
    "sinkhorn_doubly_stochastic",
    "softmax_attention",
    "tucker",
    "tucker_of_tokens",
]
