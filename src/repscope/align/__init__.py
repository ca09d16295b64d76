"""Maps that carry one representation space onto another, and how well they do it.

Estimators (scikit-learn style, ``fit(X, Y)`` on paired representations of the same inputs,
``transform(X)``, ``score(X, Y)``; ``fit_moments`` streams): :class:`OrthogonalMap`
(Procrustes with mean shift and scale), :class:`LinearMap` (ridge, GCV alpha),
:class:`SubspaceMap` (top-k CCA / PCA subspaces, then an orthogonal or affine map) with
:func:`sweep_k`. Metrics: :func:`paired_cosine`, :func:`retrieval_topk`,
:func:`matching_accuracy`, :func:`kernel_agreement`; :func:`transfer` applies a map fitted on one
modality to the paired other one; :func:`orthogonality_gap` asks whether a rotation is enough;
:func:`evaluate_alignment` fits on a train split and reports all of them held out.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.align._evaluate import (
        AlignmentEvaluation,
        AlignmentResult,
        evaluate_alignment,
        evaluate_alignment_ranks,
    )
    from repscope.align._maps import LinearMap, OrthogonalMap, paired_moments
    from repscope.align._metrics import (
        OrthogonalityGap,
        OrthogonalityGapResult,
        RetrievalResult,
        kernel_agreement,
        matching_accuracy,
        orthogonality_gap,
        paired_cosine,
        retrieval_topk,
        transfer,
    )
    from repscope.align._subspace import SubspaceMap, SubspaceSweep, SubspaceSweepResult, sweep_k

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "AlignmentEvaluation",
    "AlignmentResult",
    "LinearMap",
    "OrthogonalMap",
    "OrthogonalityGap",
    "OrthogonalityGapResult",
    "RetrievalResult",
    "SubspaceMap",
    "SubspaceSweep",
    "SubspaceSweepResult",
    "evaluate_alignment",
    "evaluate_alignment_ranks",
    "kernel_agreement",
    "matching_accuracy",
    "orthogonality_gap",
    "paired_cosine",
    "paired_moments",
    "retrieval_topk",
    "sweep_k",
    "transfer",
]
