"""Concepts and interventions: concept directions and erasure on stored features, steering and
interchange interventions on models, local linear views and attention metrics — each with the
control that keeps it honest (random directions, random-init models, held-out combinations).
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.concepts._attention import (
        AttentionResult,
        attention_metrics,
        model_attention_metrics,
    )
    from repscope.concepts._cam import (
        CAMResult,
        cam_masking,
        class_activation_maps,
        grad_cam,
    )
    from repscope.concepts._das import (
        DASResult,
        das,
        das_hierarchical_equality,
        fit_das,
        interchange_intervention_accuracy,
        random_init_copy,
    )
    from repscope.concepts._directions import (
        DirectionsResult,
        concept_directions,
        projection_auc,
    )
    from repscope.concepts._erasure import (
        ErasureResult,
        INLPEraser,
        LeaceEraser,
        erasure,
        fit_inlp,
        fit_leace,
    )
    from repscope.concepts._factorization import (
        FactorizationResult,
        concept_ranks,
        linear_factorization,
    )
    from repscope.concepts._linearscope import LinearScopeResult, linear_scope
    from repscope.concepts._obsprop import (
        ObsPropResult,
        coupling,
        direct_logit_attribution,
        head_feature_vectors,
        observable,
        obsprop,
    )
    from repscope.concepts._steering import (
        SteeringResult,
        next_token_direction,
        steering_effect,
    )
    from repscope.concepts._tasks import hierarchical_equality, interchange_pairs
    from repscope.concepts._updates import LayerUpdatesResult, layer_updates

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "AttentionResult",
    "CAMResult",
    "DASResult",
    "DirectionsResult",
    "ErasureResult",
    "FactorizationResult",
    "INLPEraser",
    "LayerUpdatesResult",
    "LeaceEraser",
    "LinearScopeResult",
    "ObsPropResult",
    "SteeringResult",
    "attention_metrics",
    "cam_masking",
    "class_activation_maps",
    "concept_directions",
    "concept_ranks",
    "coupling",
    "das",
    "das_hierarchical_equality",
    "direct_logit_attribution",
    "erasure",
    "fit_das",
    "fit_inlp",
    "fit_leace",
    "grad_cam",
    "head_feature_vectors",
    "hierarchical_equality",
    "interchange_intervention_accuracy",
    "interchange_pairs",
    "layer_updates",
    "linear_factorization",
    "linear_scope",
    "model_attention_metrics",
    "next_token_direction",
    "observable",
    "obsprop",
    "projection_auc",
    "random_init_copy",
    "steering_effect",
]
