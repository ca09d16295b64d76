"""SAE training: :func:`fit` / :func:`sweep` over any data source, one pass for many SAEs.

:class:`TrainSettings` (:mod:`._settings`) holds the data-independent settings, validated once;
:mod:`._optim` the optimisers (schedule-free sign-SGD, Adam, sign-SGD); :mod:`._trainer` holds
the loop (DDP, finiteness checks, snapshots); :mod:`._data` turns
tensors, memmaps, FeatureStore layers, :class:`RowReader` s and iterators into shuffled batches
(the batch rule under ``torch.distributed``); :mod:`._inputs` turns
a layer of features into the vectors of a range of samples (held out by sample, tokens without
their first one if asked) and describes one of them for a record.
"""

from repscope.sae.training._data import RowReader
from repscope.sae.training._inputs import LayerVectors
from repscope.sae.training._optim import ScheduleFreeSignSGD, SignSGD, default_lr
from repscope.sae.training._settings import TrainSettings
from repscope.sae.training._trainer import SAETrainingError, TrainResult, fit, sweep

__all__ = [
    "LayerVectors",
    "RowReader",
    "SAETrainingError",
    "ScheduleFreeSignSGD",
    "SignSGD",
    "TrainResult",
    "TrainSettings",
    "default_lr",
    "fit",
    "sweep",
]
