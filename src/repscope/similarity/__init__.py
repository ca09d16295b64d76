"""Similarity between paired representations (same inputs, any widths).

Every measure is a pure function ``measure(X, Y, **opts) -> float`` registered with metadata
(direction, invariances, metric, symmetry); :func:`compare` returns a
:class:`~repscope.results.Score`; :class:`StreamingSimilarity` accumulates the Moments-based
ones exactly over batches.
"""

from repscope.similarity._cka import cka_from_moments, linear_cka, linear_cka_matrix
from repscope.similarity._dense import (
    ArtifactTokens,
    DenseComparisonResult,
    com_agreement,
    com_field,
    compare_dense,
    high_norm_tokens,
    patch_grid,
    resize_grid,
)
from repscope.similarity._knn_measures import cknna, knn_jaccard, mutual_knn
from repscope.similarity._layers import LayerMatrix, LayerMatrixResult, compare_layers
from repscope.similarity._measures.cca import canonical_correlations, cca_similarity, pwcca, svcca
from repscope.similarity._measures.cka import (
    MinibatchCKA,
    linear_cka_debiased,
    minibatch_cka,
    rbf_cka,
)
from repscope.similarity._measures.kernel import hsic, kjem
from repscope.similarity._measures.regression import (
    kernel_ridge_predictivity,
    linear_r2,
    ridge_predictivity,
)
from repscope.similarity._measures.rsa import rdm, rsa, rsa_euclidean
from repscope.similarity._measures.shape import procrustes_distance, shape_distance
from repscope.similarity._neurons import (
    SparsePredictability,
    SparsePredictabilityResult,
    UnitCoclusters,
    UnitCoclustersResult,
    UnitMatching,
    UnitMatchingResult,
    match_units,
    sparse_predictability,
    unit_coclusters,
    unit_correlation,
    unit_mutual_information,
)
from repscope.similarity._registry import (
    INVARIANCES,
    compare,
    get_measure,
    list_measures,
    measure_info,
    measures_with,
    register_measure,
)
from repscope.similarity._stats import (
    BootstrapResult,
    JackknifeResult,
    PermutationTestResult,
    bootstrap_ci,
    jackknife,
    null_calibrated,
    permutation_test,
)
from repscope.similarity._streaming import StreamingSimilarity

__all__ = [
    "INVARIANCES",
    "ArtifactTokens",
    "BootstrapResult",
    "DenseComparisonResult",
    "JackknifeResult",
    "LayerMatrix",
    "LayerMatrixResult",
    "MinibatchCKA",
    "PermutationTestResult",
    "SparsePredictability",
    "SparsePredictabilityResult",
    "StreamingSimilarity",
    "UnitCoclusters",
    "UnitCoclustersResult",
    "UnitMatching",
    "UnitMatchingResult",
    "bootstrap_ci",
    "canonical_correlations",
    "cca_similarity",
    "cka_from_moments",
    "cknna",
    "com_agreement",
    "com_field",
    "compare",
    "compare_dense",
    "compare_layers",
    "get_measure",
    "high_norm_tokens",
    "hsic",
    "jackknife",
    "kernel_ridge_predictivity",
    "kjem",
    "knn_jaccard",
    "linear_cka",
    "linear_cka_debiased",
    "linear_cka_matrix",
    "linear_r2",
    "list_measures",
    "match_units",
    "measure_info",
    "measures_with",
    "minibatch_cka",
    "mutual_knn",
    "null_calibrated",
    "patch_grid",
    "permutation_test",
    "procrustes_distance",
    "pwcca",
    "rbf_cka",
    "rdm",
    "register_measure",
    "resize_grid",
    "ridge_predictivity",
    "rsa",
    "rsa_euclidean",
    "shape_distance",
    "sparse_predictability",
    "svcca",
    "unit_coclusters",
    "unit_correlation",
    "unit_mutual_information",
]
