"""Probes on frozen features.

Closed-form probes from :class:`~repscope.stats.Moments` (ridge, LDA, Gaussian naive Bayes: a
whole regularisation path from one eigendecomposition, streaming and all-reduce ready); a
softmax ``LinearProbe`` path (L-BFGS, warm starts, convergence reported); ``MomentProbe`` for
token sets; a DINO-style ``KNNProbe``; protocols (holdout, k-fold, few-shot, learning curves);
calibration (temperature scaling, ECE); probe controls (selectivity, MDL); layer-wise and
multi-level probing; linear encoding models; metrics.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.probe._calibration import (
        CalibrationResult,
        HeadDiagnostics,
        HeadDiagnosticsResult,
        ReliabilityDiagram,
        ReliabilityDiagramResult,
        TemperatureScaler,
        brier_score,
        calibration_report,
        ece,
        fit_temperature,
        head_diagnostics,
        nll,
        reliability_diagram,
    )
    from repscope.probe._controls import (
        MDLResult,
        SelectivityResult,
        control_task_labels,
        kmeans_types,
        mdl_online,
        selectivity,
    )
    from repscope.probe._dense import (
        PointLabelShapeError,
        PointOutOfRangeError,
        PointProbeResult,
        mean_iou,
        pixel_point_labels,
        probe_points,
        sample_levels,
        sample_points,
    )
    from repscope.probe._drift import (
        CheckpointMismatchError,
        FeatureDriftResult,
        checkpoint_drift,
        feature_drift,
        head_kernel,
    )
    from repscope.probe._encoding import EncodingModel
    from repscope.probe._generative import (
        GaussianNBProbe,
        LDAProbe,
        ledoit_wolf_shrinkage,
        oas_shrinkage,
    )
    from repscope.probe._knn import KNNProbe
    from repscope.probe._layerwise import LayerwiseResult, MultiLevelProbe, probe_layers
    from repscope.probe._logistic import C_from_lambda, LinearProbe, lambda_from_C
    from repscope.probe._logistic_common import PathPoint, PathPointResult
    from repscope.probe._margin import (
        MarginComparisonResult,
        MarginProbe,
        angular_margins,
        compare_margins,
    )
    from repscope.probe._metrics import (
        accuracy,
        average_precision,
        balanced_accuracy,
        macro_f1,
        mean_average_precision,
        top_k_accuracy,
    )
    from repscope.probe._moment import MomentProbe, moment_features
    from repscope.probe._protocols import (
        EvaluationResult,
        FewShotResult,
        FixedValidation,
        Holdout,
        KFold,
        LearningCurveResult,
        evaluate,
        few_shot,
        learning_curve,
    )
    from repscope.probe._readout import (
        CrossAttentionReadout,
        ReadoutResult,
        readout_comparison,
        region_mass,
    )
    from repscope.probe._ridge import RidgeProbe

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "C_from_lambda",
    "CalibrationResult",
    "CheckpointMismatchError",
    "CrossAttentionReadout",
    "EncodingModel",
    "EvaluationResult",
    "FeatureDriftResult",
    "FewShotResult",
    "FixedValidation",
    "GaussianNBProbe",
    "HeadDiagnostics",
    "HeadDiagnosticsResult",
    "Holdout",
    "KFold",
    "KNNProbe",
    "LDAProbe",
    "LayerwiseResult",
    "LearningCurveResult",
    "LinearProbe",
    "MDLResult",
    "MarginComparisonResult",
    "MarginProbe",
    "MomentProbe",
    "MultiLevelProbe",
    "PathPoint",
    "PathPointResult",
    "PointLabelShapeError",
    "PointOutOfRangeError",
    "PointProbeResult",
    "ReadoutResult",
    "ReliabilityDiagram",
    "ReliabilityDiagramResult",
    "RidgeProbe",
    "SelectivityResult",
    "TemperatureScaler",
    "accuracy",
    "angular_margins",
    "average_precision",
    "balanced_accuracy",
    "brier_score",
    "calibration_report",
    "checkpoint_drift",
    "compare_margins",
    "control_task_labels",
    "ece",
    "evaluate",
    "feature_drift",
    "few_shot",
    "fit_temperature",
    "head_diagnostics",
    "head_kernel",
    "kmeans_types",
    "lambda_from_C",
    "learning_curve",
    "ledoit_wolf_shrinkage",
    "macro_f1",
    "mdl_online",
    "mean_average_precision",
    "mean_iou",
    "moment_features",
    "nll",
    "oas_shrinkage",
    "pixel_point_labels",
    "probe_layers",
    "probe_points",
    "readout_comparison",
    "region_mass",
    "reliability_diagram",
    "sample_levels",
    "sample_points",
    "selectivity",
    "top_k_accuracy",
]
