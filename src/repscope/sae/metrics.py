"""SAE metrics (the documented public path; the code lives in :mod:`repscope.sae.evaluation`).

:func:`evaluate` streams an SAE over inputs into an :class:`SAEEvaluationResult`; :func:`fvu`,
:func:`mse`, :func:`l0` and :func:`dead_fraction` are the same quantities on tensors; the
ground-truth (:func:`recovery`, :func:`feature_precision_recall`, :func:`seed_stability`,
:func:`matched_cosines`), interpretability and control (:func:`attribute_f1`,
:func:`supervised_mean_dictionary`, :func:`edit_success`, :func:`sae_edit`,
:func:`modality_split`, :func:`gram_vs_cooccurrence`) and manifold (:func:`manifold_capture`,
:func:`atom_groups`) metrics complete it.
"""

from repscope.sae.evaluation._metrics import *  # noqa: F403  (the public path of the module)
from repscope.sae.evaluation._metrics import __all__ as __all__
