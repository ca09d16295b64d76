"""Adapters for Hugging Face ``transformers`` models and ``sentence-transformers`` models."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from repscope.exceptions import RepscopeTypeError
from repscope.extract._base import Batch, PreparedChunk, RowSource
from repscope.extract._text import TextBatcher
from repscope.extract._torch import TorchAdapter

if TYPE_CHECKING:
    import torch

__all__ = [
    "TransformersAdapter",
    "is_causal_lm",
    "is_sentence_transformer",
    "is_transformers_model",
    "sentence_transformer_adapter",
]


def is_transformers_model(model: Any) -> bool:
    """True for a ``transformers.PreTrainedModel`` (checked without importing transformers)."""
    return any(
        c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
        for c in type(model).__mro__
    )


def is_sentence_transformer(model: Any) -> bool:
    """True for a ``sentence_transformers.SentenceTransformer``."""
    return any(
        c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
        for c in type(model).__mro__
    )


def is_causal_lm(model: Any) -> bool:
    """True for a decoder-only language model (``...ForCausalLM`` or ``config.is_decoder``)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    return (
        type(model).__name__.endswith("ForCausalLM")
        or any(str(a).endswith("ForCausalLM") for a in archs)
        or bool(getattr(config, "is_decoder", False))
    )


class TransformersAdapter(TorchAdapter):
    """A Hugging Face ``transformers`` encoder or causal LM with its tokenizer; inputs are str.

    Texts are tokenised once per chunk, sorted by length within the chunk and right-padded per
    batch (results come back in input order). Layer names are module paths, e.g.
    ``encoder.layer.3`` (BERT) or ``model.layers.6`` (Llama); ``"blocks"`` expands to the
    embedding output (``embeddings`` / ``model.embed_tokens``, i.e. ``hidden_states[0]``)
    followed by every transformer block (``hidden_states[1:]``, except that transformers applies
    the final norm to its last entry while a hook sees the block's raw output). ``"output"`` is
    the model's first output (``last_hidden_state`` or ``logits``).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Encoder (e.g. ``BertModel``) or decoder-only LM (e.g. ``LlamaForCausalLM``).
    tokenizer : transformers tokenizer or tokenizers.Tokenizer
        Its tokenizer.
    max_length : int, optional
        Truncation length; default the tokenizer's ``model_max_length``.
    device : str or torch.device, optional
        Must be where the model is (``None``: there).
    model_id : str, optional
        Default ``model.config._name_or_path`` (or the class name).
    """

    kind: str = "transformers"
    has_mask: bool = True
    stop_early_safe: ClassVar[bool] = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        device: Any = None,
        model_id: str | None = None,
    ) -> None:
        if tokenizer is None:
            raise RepscopeTypeError(
                f"a transformers model ({type(model).__name__}) needs its tokenizer: pass "
                "tokenizer=AutoTokenizer.from_pretrained(...) to extract, or a zoo model."
            )
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or None
        super().__init__(model, device=device, model_id=model_id or name)
        self.causal = is_causal_lm(model)
        if self.causal:
            self.kind = "causal-lm"
        self.text = TextBatcher(tokenizer, max_length)
        params = inspect.signature(model.forward).parameters
        self._accepts = set(params)

    def _embedding_layer(self) -> str | None:
        """Path of the module whose output is ``hidden_states[0]``."""
        get = getattr(self.module, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        if emb is None:
            return None
        paths = {id(m): n for n, m in self.module.named_modules()}
        name = paths.get(id(emb))
        if name is None:
            return None
        parent = name.rpartition(".")[0]
        if parent:
            pm = self.module.get_submodule(parent)
            if "embedding" in type(pm).__name__.lower():
                return parent  # BertEmbeddings: word + position + type embeddings + LayerNorm
        return name

    def _default_blocks(self) -> list[str]:
        """Embedding output followed by the transformer blocks."""
        emb = self._embedding_layer()
        blocks = super()._default_blocks()
        return ([emb] if emb else []) + blocks

    def rows(self, inputs: Any) -> RowSource:
        return RowSource(inputs, batched=False)

    def _accepts_kw(self, name: str) -> bool:
        return name in self._accepts

    def prepare(self, items: Any, batch_size: int) -> PreparedChunk:
        import torch

        encoded, order = self.text.batches(items, batch_size)
        batches = []
        for enc in encoded:
            inputs: dict[str, Any] = {
                k: torch.from_numpy(v).to(self.device)
                for k, v in enc.items()
                if k != "token_type_ids" or self._accepts_kw(k)
            }
            if self._accepts_kw("use_cache"):
                inputs["use_cache"] = False
            mask = inputs["attention_mask"].bool()
            batches.append(Batch(inputs, mask, int(mask.shape[0])))
        return PreparedChunk(batches, order)

    def _forward(self, batch: Batch) -> Any:
        return self.module(**batch.inputs)

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": self.kind,
            "class": type(self.module).__name__,
            "max_length": self.text.max_length,
        }


def sentence_transformer_adapter(
    model: Any, *, max_length: int | None = None, device: Any = None, model_id: str | None = None
) -> TransformersAdapter:
    """A :class:`TransformersAdapter` over the transformer inside a ``SentenceTransformer``.

    It uses the model's tokenizer and ``max_seq_length`` (truncation), and the inner model's
    layer names (``encoder.layer.3``, ``embeddings``); the Pooling/Normalize modules are not
    run: choose ``pooling=`` (``"mean"`` reproduces mean-pooling models before normalisation).
    """
    inner = None
    for m in model.modules():
        auto = getattr(m, "auto_model", None)
        if auto is not None and is_transformers_model(auto):
            inner = auto
            break
    tokenizer = getattr(model, "tokenizer", None)
    if inner is None or tokenizer is None:
        raise RepscopeTypeError(
            "this SentenceTransformer has no Hugging Face transformer module with a tokenizer "
            "(e.g. a static-embedding or CLIP model); repscope supports transformer-based "
            "sentence-transformers models."
        )
    if max_length is None:
        ml = getattr(model, "max_seq_length", None)
        max_length = int(ml) if isinstance(ml, int) and ml < 1_000_000 else None
    if model_id is None:
        card = getattr(model, "model_card_data", None)
        model_id = getattr(card, "base_model", None) or getattr(
            getattr(inner, "config", None), "_name_or_path", None
        )
    adapter = TransformersAdapter(
        inner, tokenizer, max_length=max_length, device=device, model_id=model_id
    )
    adapter.kind = "sentence-transformers"
    return adapter
