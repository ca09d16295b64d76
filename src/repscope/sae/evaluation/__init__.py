"""SAE evaluation: reconstruction, sparsity, ground-truth, interpretability and fidelity metrics.

:mod:`._metrics` (public as :mod:`repscope.sae.metrics`) streams :func:`evaluate` and gathers
the metric functions of :mod:`._ground_truth` (dictionary recovery), :mod:`._interpret`
(attributes, edits, modality split) and :mod:`._manifold` (manifold capture); :mod:`._fidelity`
splices an SAE into a language model (:func:`spliced_lm_loss`); :mod:`._inspect` finds the
inputs that activate each latent most (:func:`top_activations`).
"""

from repscope.sae.evaluation._fidelity import LossRecovered, spliced_lm_loss
from repscope.sae.evaluation._inspect import TopActivations, top_activations
from repscope.sae.evaluation._metrics import (
    AttributeF1,
    AttributeScores,
    DensityHistogram,
    ManifoldCapture,
    MeanDictionary,
    ModalitySplit,
    PrecisionRecall,
    RecoveryResult,
    SAEEvaluation,
    atom_groups,
    attribute_f1,
    dead_fraction,
    edit_success,
    evaluate,
    feature_precision_recall,
    fvu,
    gram_vs_cooccurrence,
    l0,
    manifold_capture,
    matched_cosines,
    modality_split,
    mse,
    recovery,
    sae_edit,
    seed_stability,
    supervised_mean_dictionary,
)

__all__ = [
    "AttributeF1",
    "AttributeScores",
    "DensityHistogram",
    "LossRecovered",
    "ManifoldCapture",
    "MeanDictionary",
    "ModalitySplit",
    "PrecisionRecall",
    "RecoveryResult",
    "SAEEvaluation",
    "TopActivations",
    "atom_groups",
    "attribute_f1",
    "dead_fraction",
    "edit_success",
    "evaluate",
    "feature_precision_recall",
    "fvu",
    "gram_vs_cooccurrence",
    "l0",
    "manifold_capture",
    "matched_cosines",
    "modality_split",
    "mse",
    "recovery",
    "sae_edit",
    "seed_stability",
    "spliced_lm_loss",
    "supervised_mean_dictionary",
    "top_activations",
]
