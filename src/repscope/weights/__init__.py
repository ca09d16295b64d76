"""Weight space: interpolation and loss barriers, permutation alignment, merging, task vectors.

Everything works on state dicts (``Mapping[str, Tensor]``), on ``nn.Module`` objects and on
safetensors checkpoints (opened lazily, a tensor at a time; never unpickled):

* **Barriers** (Landscaping LMC): :func:`interpolate`, :func:`barrier_curve` (the standard
  definition, ``max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))``), :func:`layerwise_barriers`,
  :func:`reset_batchnorm` and the second-order :func:`taylor_barrier` (faithful for near pairs).
* **Permutation alignment** (Git Re-Basin, Ito et al.): :class:`PermutationSpec` from a traced
  graph (:func:`spec_from_model`), for Llama-family decoders (:func:`llama_spec`), for ReLU
  stacks (:func:`mlp_spec`) or by hand; :func:`weight_matching`, :func:`activation_matching`,
  :func:`align_to_reference`; :func:`alignment_diagnostics` (distance ratio, singular values,
  singular-vector alignment, CKA).
* **Merging** (mergekit-compatible methods, one function per tensor): :func:`merge_state_dicts`,
  :func:`merge_files` (streaming), task vectors and their diagnostics, reversible low-rank
  merging (:func:`reversible_merge`), learned block-wise coefficients (aTLAS), the OrthoReg
  penalty, and iterative merging of redundant units (:func:`merge_equivalent_units`).
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.weights._atlas import AtlasResult, compose, learn_blockwise_coefficients
    from repscope.weights._barrier import (
        BarrierResult,
        LayerBarrierResult,
        TaylorBarrierResult,
        barrier_curve,
        layerwise_barriers,
        reset_batchnorm,
        taylor_barrier,
    )
    from repscope.weights._diagnostics import (
        AlignmentDiagnosticsResult,
        alignment_diagnostics,
        sv_alignment,
    )
    from repscope.weights._lowrank import (
        ReversibleMerge,
        lowrank_factors,
        reversible_merge,
        reversible_merge_dense,
    )
    from repscope.weights._matching import (
        ActivationMatchingResult,
        MultiAlignmentResult,
        WeightMatchingResult,
        activation_matching,
        align_to_reference,
        weight_matching,
    )
    from repscope.weights._merge import (
        MERGE_METHODS,
        diagonal_fisher,
        merge_state_dicts,
        register_merge,
    )
    from repscope.weights._redundancy import (
        RedundancyResult,
        feature_complexity_curve,
        merge_equivalent_units,
    )
    from repscope.weights._spec import (
        Perm,
        PermutationSpec,
        apply_permutation,
        identity_permutation,
        llama_spec,
        mlp_spec,
        random_permutation,
    )
    from repscope.weights._state import (
        as_state_dict,
        check_compatible,
        interpolate,
        state_distance,
        state_norm,
    )
    from repscope.weights._stream import diagnose_files, merge_files
    from repscope.weights._taskvec import (
        MergeResult,
        TaskVectorResult,
        diagnose_task_vectors,
        disentanglement_error,
        evaluate_merges,
        orthoreg_penalty,
        sign_conflict_rate,
        task_vector,
        task_vector_cosines,
    )
    from repscope.weights._trace import spec_from_model

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "MERGE_METHODS",
    "ActivationMatchingResult",
    "AlignmentDiagnosticsResult",
    "AtlasResult",
    "BarrierResult",
    "LayerBarrierResult",
    "MergeResult",
    "MultiAlignmentResult",
    "Perm",
    "PermutationSpec",
    "RedundancyResult",
    "ReversibleMerge",
    "TaskVectorResult",
    "TaylorBarrierResult",
    "WeightMatchingResult",
    "activation_matching",
    "align_to_reference",
    "alignment_diagnostics",
    "apply_permutation",
    "as_state_dict",
    "barrier_curve",
    "check_compatible",
    "compose",
    "diagnose_files",
    "diagnose_task_vectors",
    "diagonal_fisher",
    "disentanglement_error",
    "evaluate_merges",
    "feature_complexity_curve",
    "identity_permutation",
    "interpolate",
    "layerwise_barriers",
    "learn_blockwise_coefficients",
    "llama_spec",
    "lowrank_factors",
    "merge_equivalent_units",
    "merge_files",
    "merge_state_dicts",
    "mlp_spec",
    "orthoreg_penalty",
    "random_permutation",
    "register_merge",
    "reset_batchnorm",
    "reversible_merge",
    "reversible_merge_dense",
    "sign_conflict_rate",
    "spec_from_model",
    "state_distance",
    "state_norm",
    "sv_alignment",
    "task_vector",
    "task_vector_cosines",
    "taylor_barrier",
    "weight_matching",
]
