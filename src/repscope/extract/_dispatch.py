"""Choosing the adapter for a model, and listing its layer names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._base import Adapter
from repscope.extract._onnx import OnnxAdapter, is_onnx_model
from repscope.extract._torch import TorchAdapter
from repscope.extract._transformers import (
    TransformersAdapter,
    is_sentence_transformer,
    is_transformers_model,
    sentence_transformer_adapter,
)

__all__ = ["SUPPORTED", "is_loaded_model", "list_layers", "make_adapter"]

#: What :func:`make_adapter` accepts, for error messages.
SUPPORTED = (
    "a repscope.zoo LoadedModel; a Hugging Face transformers model (with tokenizer=...); a "
    "sentence_transformers.SentenceTransformer; an ONNX model (.onnx path, onnx.ModelProto or "
    "onnxruntime.InferenceSession); any torch.nn.Module taking tensors; or a "
    "repscope.extract.Adapter"
)


def is_loaded_model(model: Any) -> bool:
    """True for a :class:`repscope.zoo.LoadedModel` (duck-typed: name, kind, model, tokenizer)."""
    return all(hasattr(model, a) for a in ("name", "kind", "model", "tokenizer")) and not (
        _is_torch_module(model)
    )


def _is_torch_module(model: Any) -> bool:
    return any(
        c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module"
        for c in type(model).__mro__
    )


def _from_loaded(
    lm: Any, *, max_length: int | None, device: Any, forward_fn: Callable[..., Any] | None
) -> Adapter:
    adapter = _adapter_of_loaded(lm, max_length=max_length, device=device, forward_fn=forward_fn)
    layers = getattr(getattr(lm, "info", None), "layers", None)
    if layers:
        adapter.blocks = tuple(str(x) for x in layers)
    return adapter


def _adapter_of_loaded(
    lm: Any, *, max_length: int | None, device: Any, forward_fn: Callable[..., Any] | None
) -> Adapter:
    model, tokenizer, name = lm.model, lm.tokenizer, str(lm.name)
    if is_sentence_transformer(model):
        return sentence_transformer_adapter(
            model, max_length=max_length, device=device, model_id=name
        )
    if is_transformers_model(model):
        return TransformersAdapter(
            model, tokenizer, max_length=max_length, device=device, model_id=name
        )
    preprocess = getattr(lm, "preprocess", None)
    if is_onnx_model(model):
        return OnnxAdapter(
            model,
            tokenizer,
            max_length=max_length,
            device=device,
            model_id=name,
            preprocess=preprocess,
            layer_names=getattr(getattr(lm, "info", None), "layer_names", None),
        )
    if _is_torch_module(model):
        if forward_fn is None and callable(getattr(model, "extract_features", None)):
            # EfficientNet-style classifiers: "output" is then the feature map, not the logits.
            forward_fn = model.extract_features
        return TorchAdapter(
            model, forward_fn=forward_fn, device=device, model_id=name, preprocess=preprocess
        )
    raise RepscopeTypeError(
        f"zoo model {name!r} (kind {lm.kind!r}) wraps a {type(model).__name__}, which repscope."
        f"extract cannot run. Supported: {SUPPORTED}."
    )


def make_adapter(
    model: Any,
    *,
    tokenizer: Any = None,
    forward_fn: Callable[..., Any] | None = None,
    max_length: int | None = None,
    device: Any = None,
    model_id: str | None = None,
) -> Adapter:
    """The adapter that runs ``model`` (dispatch on its type).

    Parameters
    ----------
    model : LoadedModel, transformers model, SentenceTransformer, ONNX model, nn.Module or Adapter
        See :func:`repscope.extract.extract`.
    tokenizer : optional
        Required for a bare transformers model; optional for an ONNX text graph.
    forward_fn : callable, optional
        For a plain torch module: called instead of ``model(batch)``.
    max_length : int, optional
        Truncation length of text models.
    device : str or torch.device, optional
        Compute device; must be the model's (models are never moved).
    model_id : str, optional
        Identifier recorded in stores.

    Returns
    -------
    Adapter

    Raises
    ------
    RepscopeTypeError
        ``model`` is none of the supported kinds.
    """
    if isinstance(model, Adapter):
        given = {
            "tokenizer": tokenizer,
            "forward_fn": forward_fn,
            "max_length": max_length,
            "device": device,
        }
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise RepscopeValueError(
                f"{extra} cannot be combined with an Adapter instance; pass them to the "
                "adapter's constructor instead."
            )
        if model_id is not None:
            model.model_id = model_id
        return model
    if is_loaded_model(model):
        adapter = _from_loaded(model, max_length=max_length, device=device, forward_fn=forward_fn)
    elif is_sentence_transformer(model):
        adapter = sentence_transformer_adapter(model, max_length=max_length, device=device)
    elif is_transformers_model(model):
        adapter = TransformersAdapter(model, tokenizer, max_length=max_length, device=device)
    elif is_onnx_model(model):
        adapter = OnnxAdapter(model, tokenizer, max_length=max_length, device=device)
    elif _is_torch_module(model):
        if tokenizer is not None:
            raise RepscopeValueError(
                f"tokenizer= was given with a plain torch module ({type(model).__name__}); "
                "repscope tokenises only for Hugging Face, sentence-transformers and ONNX "
                "models. Tokenise yourself and pass tensors, or drop tokenizer=."
            )
        adapter = TorchAdapter(model, forward_fn=forward_fn, device=device)
    else:
        raise RepscopeTypeError(
            f"repscope.extract cannot run a {type(model).__module__}.{type(model).__name__}. "
            f"Supported: {SUPPORTED}."
        )
    if forward_fn is not None and not isinstance(adapter, TorchAdapter):
        raise RepscopeValueError(
            f"forward_fn= applies to plain torch modules; {adapter.kind} models run their own "
            "forward."
        )
    if model_id is not None:
        adapter.model_id = model_id
    return adapter


def list_layers(model: Any, *, tokenizer: Any = None) -> list[str]:
    """Names of the layers :func:`~repscope.extract.extract` can capture from ``model``.

    Parameters
    ----------
    model : LoadedModel, transformers model, SentenceTransformer, ONNX model, nn.Module or Adapter
        For torch models (Hugging Face ones included) the names are module paths
        (``named_modules()``, e.g. ``encoder.layer.3``) in registration order, followed by
        ``"output"`` (the forward's return value) when no module has that path; for a
        sentence-transformers model, the paths inside its transformer. For an ONNX graph they
        are tensor names: node outputs in graph order (constants excluded), then the graph
        outputs.
    tokenizer : optional
        Not needed for listing; accepted for symmetry with :func:`extract`.

    Returns
    -------
    list of str

    Raises
    ------
    RepscopeTypeError
        ``model`` is none of the supported kinds.

    Examples
    --------
    >>> import torch
    >>> list_layers(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    ['0', '1', 'output']
    """
    if is_transformers_model(model) and tokenizer is None:
        return TorchAdapter(model).list_layers()
    return make_adapter(model, tokenizer=tokenizer).list_layers()
