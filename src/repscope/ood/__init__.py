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
    "ReAct",
    "RelativeMahalanobisDetector",
    "SignedFeaturesError",
    "ViMDetector",
    "detector_info",
    "get_detector",
    "get_transform",
    "list_detectors",
    "list_transforms",
    "register_detector",
    "register_transform",
]
