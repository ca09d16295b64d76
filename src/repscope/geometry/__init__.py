"""Geometry and separability of representations: how separable, compressed, uniform and
shortcut-prone a layer is, with and without labels.

Every per-layer scalar measure is registered with its direction metadata
(:func:`list_geometry_measures`, :func:`geometry_info`); measures built on
:class:`~repscope.stats.Moments` stream from a store and all-reduce, the O(n^2)-time ones run
in O(n) memory and say so. :func:`geometry_layers` runs them at every layer.
"""

from typing import TYPE_CHECKING

from repscope._lazy import attach

if TYPE_CHECKING:
    from repscope.geometry._coding_rate import (
        ClusteringScores,
        CodingRateResult,
        clustering_scores,
        coding_rate,
        coding_rate_table,
        membership_clustering,
        rate_reduction,
    )
    from repscope.geometry._contrastive import (
        EffectiveNegativesResult,
        alignment,
        class_alignment,
        effective_negatives,
        hardness_weights,
        tolerance,
        uniformity,
    )
    from repscope.geometry._dimension import (
        FeatureWeightingResult,
        anisotropy,
        feature_weighting,
        mle_id,
        spectral_entropy,
        twonn,
    )
    from repscope.geometry._layers import GeometryLayersResult, geometry_layers
    from repscope.geometry._leakage import (
        LeakageResult,
        column_groups,
        cross_probe,
    )
    from repscope.geometry._persistence import (
        PersistenceResult,
        PersistenceTrackResult,
        h0_persistence,
        persistence_entropy,
        persistence_max_ratio,
        persistence_top_ratio,
        plateau_index,
        track,
    )
    from repscope.geometry._registry import (
        geometry_info,
        get_geometry_measure,
        list_geometry_measures,
        register_geometry_measure,
    )
    from repscope.geometry._sampling import (
        SubsetResult,
        dpp_subset,
        leverage_weighted_lstsq,
    )
    from repscope.geometry._separability import (
        calinski_harabasz,
        fisher_directions,
        fisher_ratio,
        fisher_trace_ratio,
        nc_equiangularity,
        nc_equinorm,
        nc_max_angle,
        nc_self_duality,
        nc_variability,
        silhouette,
        thornton_index,
    )
    from repscope.geometry._shortcut import (
        AvailabilityResult,
        ShortcutTask,
        availability_probe,
    )
    from repscope.geometry._subspace import (
        SubspaceClusteringResult,
        prune_top_k,
        self_expression,
        subspace_affinity,
        subspace_clustering,
        subspace_clustering_accuracy,
    )

__getattr__, __dir__, _ = attach(__name__, __file__)

__all__ = [
    "AvailabilityResult",
    "ClusteringScores",
    "CodingRateResult",
    "EffectiveNegativesResult",
    "FeatureWeightingResult",
    "GeometryLayersResult",
    "LeakageResult",
    "PersistenceResult",
    "PersistenceTrackResult",
    "ShortcutTask",
    "SubsetResult",
    "SubspaceClusteringResult",
    "alignment",
    "anisotropy",
    "availability_probe",
    "calinski_harabasz",
    "class_alignment",
    "clustering_scores",
    "coding_rate",
    "coding_rate_table",
    "column_groups",
    "cross_probe",
    "dpp_subset",
    "effective_negatives",
    "feature_weighting",
    "fisher_directions",
    "fisher_ratio",
    "fisher_trace_ratio",
    "geometry_info",
    "geometry_layers",
    "get_geometry_measure",
    "h0_persistence",
    "hardness_weights",
    "leverage_weighted_lstsq",
    "list_geometry_measures",
    "membership_clustering",
    "mle_id",
    "nc_equiangularity",
    "nc_equinorm",
    "nc_max_angle",
    "nc_self_duality",
    "nc_variability",
    "persistence_entropy",
    "persistence_max_ratio",
    "persistence_top_ratio",
    "plateau_index",
    "prune_top_k",
    "rate_reduction",
    "register_geometry_measure",
    "self_expression",
    "silhouette",
    "spectral_entropy",
    "subspace_affinity",
    "subspace_clustering",
    "subspace_clustering_accuracy",
    "thornton_index",
    "tolerance",
    "track",
    "twonn",
    "uniformity",
]
