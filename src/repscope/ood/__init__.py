"""Out-of-distribution detection on frozen features.

Every detector is a scikit-learn style estimator, ``fit(X, y=None, *, logits=None)`` /
``score_samples(X, *, logits=None)``, and **a higher score means more in-distribution**,
everywhere. Detectors are registered by name with their paper and what they need
(:func:`get_detector`, :func:`list_detectors`, :func:`detector_info`) and are saved as
safetensors + JSON (:meth:`OODDetector.save`, :meth:`OODDetector.load`; no pickle).
Covariances divide by ``n`` (maximum likelihood) everywhere.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.ood._base import MissingLogitsError, OODDetector, SignedFeaturesError
    from repscope.ood._diagnostics import (
        OODDiagnosticsResult,
        OODSeparabilityResult,
        confident_ood_share,
        ood_linear_separability,
        scoring_level,
    )
    from repscope.ood._evaluate import (
        OODDetectorScoresResult,
        OODLayersResult,
        evaluate_detectors,
        probe_logits,
    )
    from repscope.ood._gmm import GMMDetector
    from repscope.ood._knn import KNNDetector
    from repscope.ood._logit import (
        EnergyDetector,
        EntropyDetector,
        GENDetector,
        MaxLogitDetector,
        MSPDetector,
    )
    from repscope.ood._mahalanobis import (
        MahalanobisDetector,
        MultiLayerMahalanobisDetector,
        RelativeMahalanobisDetector,
    )
    from repscope.ood._metrics import (
        EmptyScoresError,
        OODMetricsResult,
        OODThreshold,
        auroc,
        fit_threshold,
        fpr_at_tpr,
        ood_metrics,
        roc_curve,
    )
    from repscope.ood._registry import (
        DetectorInfo,
        detector_info,
        get_detector,
        get_transform,
        list_detectors,
        list_transforms,
        register_detector,
        register_transform,
    )
    from repscope.ood._transforms import ASH, SCALE, FeatureTransform, ReAct
    from repscope.ood._vim import ViMDetector

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "ASH",
    "SCALE",
    "DetectorInfo",
    "EmptyScoresError",
    "EnergyDetector",
    "EntropyDetector",
    "FeatureTransform",
    "GENDetector",
    "GMMDetector",
    "KNNDetector",
    "MSPDetector",
    "MahalanobisDetector",
    "MaxLogitDetector",
    "MissingLogitsError",
    "MultiLayerMahalanobisDetector",
    "OODDetector",
    "OODDetectorScoresResult",
    "OODDiagnosticsResult",
    "OODLayersResult",
    "OODMetricsResult",
    "OODSeparabilityResult",
    "OODThreshold",
    "ReAct",
    "RelativeMahalanobisDetector",
    "SignedFeaturesError",
    "ViMDetector",
    "auroc",
    "confident_ood_share",
    "detector_info",
    "evaluate_detectors",
    "fit_threshold",
    "fpr_at_tpr",
    "get_detector",
    "get_transform",
    "list_detectors",
    "list_transforms",
    "ood_linear_separability",
    "ood_metrics",
    "probe_logits",
    "register_detector",
    "register_transform",
    "roc_curve",
    "scoring_level",
]
