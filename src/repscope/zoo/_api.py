"""The zoo's public functions: list, load, subsample."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from repscope.exceptions import DataNotFoundError, RepscopeTypeError, RepscopeValueError

# Importing the family modules registers their models and datasets.
from repscope.zoo import _austen, _data, _text, _vision  # noqa: F401
from repscope.zoo._registry import DATASETS, MODELS
from repscope.zoo._types import Dataset, DatasetInfo, LoadedModel, ModelInfo

__all__ = [
    "dataset_names",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "model_names",
    "stratified_indices",
]


def model_names(**where: Any) -> list[str]:
    """Registered model names, sorted; keyword filters on metadata (``modality``, ``kind``).

    Examples
    --------
    >>> "minilm-l6" in model_names(modality="text")
    True
    """
    return MODELS.names(**where)


def dataset_names(**where: Any) -> list[str]:
    """Registered dataset names, sorted; keyword filter ``modality``.

    Examples
    --------
    >>> dataset_names(modality="tabular")
    ['breast_cancer', 'digits', 'iris', 'wine']
    """
    return DATASETS.names(**where)


def _model_info(name: str) -> ModelInfo:
    spec = MODELS.get(name)
    why = spec.check()
    return dataclasses.replace(spec.info, available=not why, missing=why)


def _dataset_info(name: str) -> DatasetInfo:
    spec = DATASETS.get(name)
    why = spec.check()
    return dataclasses.replace(spec.info, available=not why, missing=why)


def list_models() -> list[ModelInfo]:
    """Every zoo model with its metadata and whether it can be loaded here.

    Checking availability imports nothing heavy (it looks for installed packages and files).

    Returns
    -------
    list of ModelInfo
        Sorted by name; ``available``/``missing`` describe this machine.

    Examples
    --------
    >>> infos = list_models()
    >>> sorted(i.kind for i in infos if i.name.startswith("minilm-l6"))
    ['sentence-transformers', 'transformers']
    """
    return [_model_info(n) for n in MODELS]


def list_datasets() -> list[DatasetInfo]:
    """Every zoo dataset with its metadata and whether its files are present.

    Returns
    -------
    list of DatasetInfo
        Sorted by name; ``available``/``missing`` describe this machine.
    """
    return [_dataset_info(n) for n in DATASETS]


def _check_options(kind: str, name: str, given: dict[str, Any], accepted: tuple[str, ...]) -> None:
    extra = sorted(set(given) - set(accepted))
    if extra:
        ok = ", ".join(accepted) if accepted else "none"
        raise RepscopeValueError(
            f"load_{kind}({name!r}) got unexpected option(s) {extra}; the options it accepts: "
            f"{ok}."
        )


def load_model(name: str, *, device: Any = "cpu", **options: Any) -> LoadedModel:
    """Load a zoo model, offline.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` (e.g. ``"minilm-l6"``, ``"efficientnet-lite0"``).
    device : str or torch.device, default "cpu"
        Where torch models are put (ONNX models are paths; choose the execution provider
        when running them).
    **options
        Model-specific options: ``resolution`` (int, default 112) for the EfficientNet-Lite
        models, the side length their ``preprocess`` resizes to.

    Returns
    -------
    LoadedModel
        ``model`` in eval mode, its ``tokenizer`` or ``preprocess``, and ``info``.

    Raises
    ------
    UnknownNameError
        ``name`` is not registered (the message lists the known names and the closest one).
    DataNotFoundError
        A package or file the model needs is missing; the message gives the command to run.
    RepscopeValueError
        An option the model does not accept.

    Examples
    --------
    >>> lm = load_model("efficientnet-lite0", resolution=64)  # doctest: +SKIP
    >>> lm.model.extract_features(lm.preprocess(images)).shape  # doctest: +SKIP
    torch.Size([n, 1280, 2, 2])
    """
    spec = MODELS.get(name)
    _check_options("model", name, options, spec.options)
    why = spec.check()
    if why:
        raise DataNotFoundError(f"model {name!r} cannot be loaded here: {why}")
    loaded = spec.load(device=device, **options)
    info = dataclasses.replace(loaded.info, available=True, missing="")
    return dataclasses.replace(loaded, info=info)


def stratified_indices(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a deterministic class-stratified subsample of size ``n``, in original order.

    Each class gets ``n * count / total`` samples rounded by largest remainder (ties to the
    lower label), drawn without replacement with ``np.random.default_rng(seed)``.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Integer labels.
    n : int
        Subsample size, 1 <= n <= n_samples.
    seed : int, default 0
        Seed of the draw; the same (labels, n, seed) always gives the same indices.

    Returns
    -------
    ndarray of shape (n,)
        Sorted int64 indices.

    Raises
    ------
    RepscopeValueError
        ``n`` out of range.

    Examples
    --------
    >>> stratified_indices([0, 0, 0, 0, 1, 1], 3, seed=0).size
    3
    """
    y = np.asarray(labels)
    total = int(y.shape[0])
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
        raise RepscopeValueError(
            f"The 'n' parameter must be an int in [1, {total}] (the dataset's size). Got {n!r} "
            "instead."
        )
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    left = int(n - quota.sum())
    if left:
        order = np.lexsort((np.arange(classes.size), -(exact - quota)))
        quota[order[:left]] += 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
        if q
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    inputs = ds.inputs
    new_inputs = [inputs[i] for i in idx] if isinstance(inputs, list) else np.asarray(inputs)[idx]
    return dataclasses.replace(
        ds,
        inputs=new_inputs,
        labels=np.asarray(ds.labels)[idx],
        ids=[ds.ids[i] for i in idx],
    )


def load_dataset(name: str, *, n: int | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Load a zoo dataset, or a deterministic class-stratified subsample of it.

    Parameters
    ----------
    name : str
        A name from :func:`list_datasets` (``"mnist"``, ``"fashion-mnist"``, ``"austen"``,
        ``"digits"``, ``"iris"``, ``"wine"``, ``"breast_cancer"``).
    n : int, optional
        Keep ``n`` samples drawn per class in proportion to the class sizes
        (:func:`stratified_indices`), in the dataset's order. ``None``: all of them.
    seed : int, default 0
        Seed of the subsample.
    **options
        Dataset-specific options: ``split`` ("all", "train", "test") for Fashion-MNIST.

    Returns
    -------
    Dataset
        Fresh arrays (safe to modify) with labels, label names, ids and ``info``.

    Raises
    ------
    UnknownNameError
        ``name`` is not registered (the message lists the known names and the closest one).
    DataNotFoundError
        Its files or packages are missing; the message gives the exact command to get them.
    RepscopeValueError
        A bad ``n`` or option.
    RepscopeTypeError
        ``seed`` is not an int.

    Examples
    --------
    >>> iris = load_dataset("iris", n=30, seed=1)
    >>> iris.inputs.shape, np.bincount(iris.labels).tolist()
    ((30, 4), [10, 10, 10])
    """
    spec = DATASETS.get(name)
    _check_options("dataset", name, options, spec.options)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise RepscopeTypeError(f"The 'seed' parameter of load_dataset must be an int. Got {seed!r} instead.")
    why = spec.check()
    if why:
        raise DataNotFoundError(f"dataset {name!r} is not available here: {why}")
    ds = spec.load(**options)
    ds = dataclasses.replace(ds, info=dataclasses.replace(ds.info, available=True, missing=""))
    idx = (
        np.arange(len(ds.ids), dtype=np.int64)
        if n is None
        else stratified_indices(ds.labels, n, seed)
    )
    return _subset(ds, idx)
