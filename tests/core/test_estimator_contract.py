"""The scikit-learn estimator contract of every estimator in repscope, checked by scikit-learn.

Every public estimator of :mod:`repscope.probe`, :mod:`repscope.align` and :mod:`repscope.sae`
runs scikit-learn's own ``parametrize_with_checks`` in one small configuration. Checks that
cannot pass by design are listed per estimator, each with its reason, and are strict: a listed
check that starts passing fails here, so the lists stay true. A second test finds the estimators
by scanning the packages' public names, so a new estimator cannot skip the contract.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from repscope._params import ParameterError, ValidatedEstimator
from repscope.align import LinearMap, OrthogonalMap, SubspaceMap
from repscope.exceptions import RepscopeError
from repscope.ood import (
    ASH,
    SCALE,
    EnergyDetector,
    EntropyDetector,
    GENDetector,
    GMMDetector,
    KNNDetector,
    MahalanobisDetector,
    MaxLogitDetector,
    MSPDetector,
    MultiLayerMahalanobisDetector,
    ReAct,
    RelativeMahalanobisDetector,
    ViMDetector,
)
from repscope.probe import (
    CrossAttentionReadout,
    EncodingModel,
    GaussianNBProbe,
    KNNProbe,
    LDAProbe,
    LinearProbe,
    MarginProbe,
    MomentProbe,
    MultiLevelProbe,
    RidgeProbe,
)
from repscope.sae import SAETransformer

PACKAGES = ("repscope.probe", "repscope.align", "repscope.sae", "repscope.ood")

#: One small, fast configuration of every estimator.
ESTIMATORS = [
    RidgeProbe(),
    LDAProbe(),
    GaussianNBProbe(),
    LinearProbe(max_iter=50),
    KNNProbe(k=3),
    MarginProbe(max_iter=300, embed_dim=8),
    MomentProbe(n_heads=2, head_dim=2, max_iter=10),
    CrossAttentionReadout(dim=4, n_components=4, max_iter=5, batch_size=16),
    EncodingModel(cv="gcv"),
    MultiLevelProbe(layers=("a",)),
    OrthogonalMap(),
    LinearMap(),
    SubspaceMap(n_components=1),
    SAETransformer("topk", d_sae=8, k=2, n_epochs=1.0, batch_size=64),
    MSPDetector(head="probe"),
    MaxLogitDetector(head="probe"),
    EnergyDetector(head="probe"),
    EntropyDetector(head="probe"),
    GENDetector(head="probe"),
    MahalanobisDetector(),
    RelativeMahalanobisDetector(),
    MultiLayerMahalanobisDetector(layers=("a",)),
    ViMDetector(head="probe"),
    KNNDetector(k=3),
    GMMDetector(),
    ReAct(),
    ASH(),
    SCALE(),
]

# ----------------------------------------------------------------------- expected failures
#: Every estimator validates arrays with repscope's own checker (``repscope._validation``):
#: its one-line messages follow repscope's template, not the wording these checks look for.
DENSE_INPUT = {
    "check_complex_data":
        "complex X raises repscope's RepscopeTypeError ('X must hold numbers'), not "
        "scikit-learn's 'Complex data not supported' ValueError.",
    "check_dtype_object":
        "an object-dtype X is rejected ('X must hold numbers; ... Convert it to a float "
        "array') instead of being converted silently.",
    "check_estimators_empty_data_messages":
        "an X without columns gets repscope's message ('X must have at least 1 feature(s)'), "
        "not scikit-learn's wording.",
    "check_estimator_sparse_tag":
        "sparse X is rejected by repscope's dense-array check, whose message does not say "
        "'sparse'.",
    "check_estimator_sparse_array":
        "sparse X is rejected by repscope's dense-array check, whose message does not say "
        "'sparse'.",
    "check_estimator_sparse_matrix":
        "sparse X is rejected by repscope's dense-array check, whose message does not say "
        "'sparse'.",
    "check_fit2d_predict1d":
        "a 1-D X gets repscope's message ('X must be 2-D ...; use X.reshape(-1, 1)'), not "
        "'Reshape your data'.",
}
WIDTH_MESSAGE = {
    "check_n_features_in_after_fitting":
        "a width mismatch at predict time raises repscope's message ('X must have d features "
        "(columns), as in fit'), not scikit-learn's 'X has n features, but ... is expecting'.",
}
SUPERVISED = {
    "check_fit2d_1sample":
        "fitting one sample fails with repscope's message (too few samples or classes), not "
        "scikit-learn's wording.",
    "check_requires_y_none":
        "y=None raises repscope's RepscopeTypeError ('y must be ...; got None'), not "
        "scikit-learn's ValueError wording.",
    "check_supervised_y_2d":
        "a column-vector y is rejected with a hint to ravel it, instead of a warning and a "
        "silent ravel.",
}
CLOSED_FORM = {**DENSE_INPUT, **WIDTH_MESSAGE, **SUPERVISED}


def _all(checks: list[str], reason: str) -> dict[str, str]:
    return dict.fromkeys(checks, reason)


#: Checks that feed the estimator sklearn's 2-D X and 1-D y: every one of them fails for an
#: estimator whose fit takes other inputs (token sets, a mapping of layers, a paired Y).
FIT_ON_XY = [
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_requires_y_none",
    "check_complex_data", "check_dtype_object", "check_estimators_empty_data_messages",
    "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
]
FIT_ON_XY_CLASSIFIER = [
    *FIT_ON_XY, "check_classifier_data_not_an_array", "check_classifiers_one_label",
    "check_classifiers_classes", "check_classifiers_train",
    "check_classifiers_regression_target", "check_supervised_y_2d",
]
PAIRED = {
    **DENSE_INPUT,
    **_all(
        [*(c for c in FIT_ON_XY if c not in DENSE_INPUT),
         "check_transformer_data_not_an_array", "check_transformer_general"],
        "paired estimator: fit(X, Y) takes Y as a 2-D representation (n_samples, d_y) of the "
        "same inputs in a second space, and the check passes a 1-D target.",
    ),
    "check_fit2d_1sample":
        "a map needs at least 3 paired samples, and says so in repscope's wording.",
    "check_transformer_preserve_dtypes":
        "paired estimator: there is no fit_transform, since fit needs the partner Y and "
        "transform maps X alone.",
}

DECISION_LOG_LIKELIHOOD = (
    "decision_function is the joint log-likelihood of shape (n_samples, n_classes), also for "
    "two classes (documented), where scikit-learn expects one column."
)
LOGITS = (
    "decision_function returns the logits of shape (n_samples, n_heads), (n_samples, 1) for "
    "two classes (documented), where scikit-learn expects a 1-D array."
)
ONE_TARGET_COLUMN = (
    "predict returns (n_samples, n_targets), so a 1-D target comes back as one column."
)

EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "RidgeProbe": CLOSED_FORM,
    "LDAProbe": CLOSED_FORM,
    "GaussianNBProbe": {
        **CLOSED_FORM,
        "check_classifiers_classes": DECISION_LOG_LIKELIHOOD,
        "check_classifiers_train": DECISION_LOG_LIKELIHOOD,
        "check_decision_proba_consistency": DECISION_LOG_LIKELIHOOD,
    },
    "LinearProbe": {
        **CLOSED_FORM,
        "check_classifiers_train": LOGITS,
        "check_all_zero_sample_weights_error":
            "an all-zero sample_weight is not rejected: the fit returns the zero head "
            "(kept; this contract changes no behaviour).",
        "check_sample_weight_equivalence_on_dense_data":
            "the check passes cv as a list of splits; LinearProbe's cv is a number of folds.",
        "check_non_transformer_estimators_n_iter":
            "n_iter_ counts L-BFGS iterations per path value, and a warm start that already "
            "meets tol takes 0.",
    },
    "KNNProbe": {**DENSE_INPUT, **SUPERVISED},
    "MarginProbe": {**DENSE_INPUT, **SUPERVISED, **WIDTH_MESSAGE},
    "MomentProbe": _all(
        [*FIT_ON_XY_CLASSIFIER, "check_non_transformer_estimators_n_iter",
         "check_decision_proba_consistency"],
        "MomentProbe takes token sets (n_samples, n_tokens, n_features); the check passes "
        "2-D X.",
    ),
    "CrossAttentionReadout": _all(
        ['check_complex_data', 'check_dict_unchanged', 'check_dont_overwrite_parameters',
         'check_dtype_object', 'check_estimator_sparse_array', 'check_estimator_sparse_matrix',
         'check_estimator_sparse_tag', 'check_estimators_dtypes',
         'check_estimators_empty_data_messages', 'check_estimators_fit_returns_self',
         'check_estimators_nan_inf', 'check_estimators_overwrite_params',
         'check_estimators_pickle', 'check_f_contiguous_array_estimator',
         'check_fit2d_1feature', 'check_fit2d_1sample', 'check_fit2d_predict1d',
         'check_fit_check_is_fitted', 'check_fit_idempotent', 'check_fit_score_takes_y',
         'check_methods_sample_order_invariance', 'check_methods_subset_invariance',
         'check_n_features_in', 'check_n_features_in_after_fitting',
         'check_non_transformer_estimators_n_iter', 'check_pipeline_consistency',
         'check_positive_only_tag_during_fit', 'check_readonly_memmap_input',
         'check_regressor_data_not_an_array', 'check_regressors_int',
         'check_regressors_no_decision_function', 'check_regressors_train',
         'check_requires_y_none', 'check_supervised_y_2d'],
        "CrossAttentionReadout takes token sets (n_samples, n_tokens, n_features); the check "
        "passes 2-D X.",
    ),
    "EncodingModel": {
        **DENSE_INPUT,
        **WIDTH_MESSAGE,
        "check_fit2d_1sample": SUPERVISED["check_fit2d_1sample"],
        "check_requires_y_none":
            "Y=None raises repscope's RepscopeTypeError ('Y must be a numpy array or torch "
            "tensor'), not scikit-learn's ValueError wording.",
        "check_supervised_y_2d":
            "a column-vector Y is a one-target matrix, not a 1-D target to ravel with a "
            "DataConversionWarning.",
        "check_regressors_train": ONE_TARGET_COLUMN,
        "check_regressor_data_not_an_array": ONE_TARGET_COLUMN,
    },
    "MultiLevelProbe": _all(
        [*FIT_ON_XY_CLASSIFIER, "check_supervised_y_no_nan", "check_fit1d",
         "check_transformer_data_not_an_array", "check_transformer_general",
         "check_transformer_preserve_dtypes"],
        "MultiLevelProbe takes a mapping {layer name: features}; the check passes one array.",
    ),
    "OrthogonalMap": PAIRED,
    "LinearMap": PAIRED,
    "SubspaceMap": PAIRED,
    "SAETransformer": {
        **DENSE_INPUT,
        "check_n_features_in_after_fitting":
            "a width mismatch raises repscope's message ('X has n features, but "
            "SAETransformer was fitted on d'), not scikit-learn's wording.",
    },
}


#: OOD detectors: fit(X, y) on ID features, score_samples(X) (higher = more in-distribution).
OOD_ONE_SAMPLE = {
    "check_fit2d_1sample":
        "one sample is too few for the detector (a probe or k neighbours), said in repscope's "
        "wording.",
}
# score_samples is not among the methods check_fit2d_predict1d calls
OOD_CLASS_STATS = {k: v for k, v in DENSE_INPUT.items() if k != "check_fit2d_predict1d"}
OOD_DETECTOR = {**OOD_CLASS_STATS, **OOD_ONE_SAMPLE}
OOD_TRANSFORM = {
    **DENSE_INPUT,
    "check_positive_only_tag_during_fit":
        "negative features raise SignedFeaturesError ('ReAct assumes non-negative (post-ReLU) "
        "features; X has a minimum of ...'), not scikit-learn's 'Negative values in data'.",
}
EXPECTED_FAILED_CHECKS.update({
    "MSPDetector": OOD_DETECTOR,
    "MaxLogitDetector": OOD_DETECTOR,
    "EnergyDetector": OOD_DETECTOR,
    "EntropyDetector": OOD_DETECTOR,
    "GENDetector": OOD_DETECTOR,
    "MahalanobisDetector": OOD_CLASS_STATS,
    "RelativeMahalanobisDetector": OOD_CLASS_STATS,
    "MultiLayerMahalanobisDetector": _all(
        [*FIT_ON_XY, "check_fit1d", "check_estimators_empty_data_messages"],
        "MultiLayerMahalanobisDetector takes a mapping {layer name: features}; the check "
        "passes one array.",
    ),
    "ViMDetector": {
        **OOD_DETECTOR,
        "check_fit2d_1feature":
            "ViM needs a principal subspace smaller than the width, so one feature is refused "
            "('n_components ... must be less than n_features (1)').",
    },
    "KNNDetector": OOD_DETECTOR,
    "GMMDetector": OOD_CLASS_STATS,
    "ReAct": OOD_TRANSFORM,
    "ASH": OOD_TRANSFORM,
    "SCALE": OOD_TRANSFORM,
})


def _expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS[type(estimator).__name__]


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ----------------------------------------------------------------------- coverage
#: Public base classes that are not estimators of their own (no constructor contract to check).
BASES = frozenset({"OODDetector", "FeatureTransform"})


def _public_estimators() -> dict[str, type]:
    found = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator) and name not in BASES:
                found[name] = obj
    return found


def test_every_public_estimator_is_checked_and_declares_its_contract():
    found = _public_estimators()
    checked = {type(est).__name__: type(est) for est in ESTIMATORS}
    assert found == checked, (
        f"estimators not in ESTIMATORS: {sorted(set(found) - set(checked))}; "
        f"checked but not public: {sorted(set(checked) - set(found))}"
    )
    assert set(EXPECTED_FAILED_CHECKS) == set(checked)
    for name, cls in found.items():
        assert issubclass(cls, ValidatedEstimator), f"{name} must subclass ValidatedEstimator"
        init = set(inspect.signature(cls.__init__).parameters) - {"self"}
        declared = set(cls._parameter_constraints)
        assert declared == init, (
            f"{name}._parameter_constraints must cover exactly its __init__ parameters: "
            f"missing {sorted(init - declared)}, unexpected {sorted(declared - init)}"
        )


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_bad_parameter_is_a_repscope_error_in_sklearn_wording(estimator):
    name = type(estimator).__name__
    param = sorted(estimator.get_params(deep=False))[0]
    bad = estimator.__class__(**{**estimator.get_params(deep=False), param: object()})
    with pytest.raises(ParameterError, match=rf"^The '{param}' parameter of {name} must be "
                                             r".* Got <object object at .*> instead\.$") as err:
        bad._validate_params()
    assert isinstance(err.value, RepscopeError)
    assert isinstance(err.value, InvalidParameterError)
    assert isinstance(err.value, ValueError) and isinstance(err.value, TypeError)


@pytest.mark.parametrize(("estimator", "match"), [
    (RidgeProbe(alphas=[1.0, float("inf")]),
     r"The 'alphas' parameter of RidgeProbe must be a non-empty sequence of finite"),
    (LDAProbe(shrinkage="path", shrinkages=()),
     r"The 'shrinkages' parameter of LDAProbe must be a non-empty sequence of floats in"),
    (LinearProbe(lambdas=[1.0, -1.0]),
     r"The 'lambdas' parameter of LinearProbe must be a positive finite number"),
    (LinearProbe(C=1.0, lambdas=[1.0]), r"either C .* or lambdas, not both"),
    (KNNProbe(k=[3, 0]), r"The 'k' parameter of KNNProbe must be a positive int or a non-empty"),
    (EncodingModel(alphas=[float("nan")]),
     r"The 'alphas' parameter of EncodingModel must be a non-empty sequence"),
    (LinearMap(alphas=[]), r"The 'alphas' parameter of LinearMap must be a non-negative float"),
])
def test_grid_checks_beyond_the_constraints(rng, estimator, match):
    # what _parameter_constraints cannot say (a grid's length and values) raises the same
    # ParameterError, in the same wording
    X = rng.standard_normal((30, 4))
    y = X if isinstance(estimator, (EncodingModel, LinearMap)) else (X[:, 0] > 0).astype(int)
    with pytest.raises(ParameterError, match=match):
        estimator.fit(X, y)
