"""SAE evaluation: reconstruction, sparsity, ground-truth, interpretability and fidelity metrics.

:mod:`._metrics` (public as :mod:`repscope.sae.metrics`) streams :func:`evaluate` and gathers
the metric functions of :mod:`._ground_truth` (dictionary recovery), :mod:`._interpret`
(attributes, edits, modality split) and :mod:`._manifold` (manifold capture); :mod:`._fidelity`
splices an SAE into a language model (:func:`spliced_lm_loss`); :mod:`._inspect` finds the
inputs that activate each latent most (:func:`top_activations`).
"""

from repscope.sae.evaluation import _metrics
from repscope.sae.evaluation._fidelity import (
    LossRecovered,
    LossRecoveredResult,
    spliced_lm_loss,
)
from repscope.sae.evaluation._inspect import (
    TopActivations,
    TopActivationsResult,
    top_activations,
)
from repscope.sae.evaluation._metrics import *  # noqa: F403  (every metric, one name list)

__all__ = ["LossRecovered", "LossRecoveredResult", "TopActivations", "TopActivationsResult",
           "spliced_lm_loss", "top_activations"]
__all__ += _metrics.__all__
