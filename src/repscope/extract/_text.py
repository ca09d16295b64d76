"""Tokenisation for text models: one tokenizer call per chunk, length-sorted padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["TextBatcher"]

_HUGE = 1_000_000  # transformers' "no limit" model_max_length is ~1e30


class TextBatcher:
    """Tokenise texts and cut them into right-padded batches of similar length.

    Works with a ``transformers`` tokenizer (anything callable returning ``input_ids``) and with
    a ``tokenizers.Tokenizer`` (``encode_batch``); the latter is copied before its truncation
    and padding settings are changed, so the caller's object is untouched.

    Parameters
    ----------
    tokenizer : transformers tokenizer or tokenizers.Tokenizer
        The model's tokenizer.
    max_length : int, optional
        Truncate to this many tokens (special tokens included). ``None``: the tokenizer's
        ``model_max_length`` when it is a real limit, else no truncation.
    """

    def __init__(self, tokenizer: Any, max_length: int | None = None) -> None:
        self.fast = None
        if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "to_str"):
            from tokenizers import Tokenizer

            self.fast = Tokenizer.from_str(tokenizer.to_str())
            if max_length is None:
                trunc = tokenizer.truncation
                max_length = int(trunc["max_length"]) if trunc else None
            self.fast.no_padding()
            if max_length is not None:
                self.fast.enable_truncation(max_length)
            else:
                self.fast.no_truncation()
            pad = tokenizer.padding
            pad_id = pad["pad_id"] if pad else tokenizer.token_to_id("[PAD]")
            self.pad_id = int(pad_id) if pad_id is not None else 0
        elif callable(tokenizer):
            if max_length is None:
                ml = getattr(tokenizer, "model_max_length", None)
                max_length = int(ml) if isinstance(ml, int) and ml < _HUGE else None
            pad_id = getattr(tokenizer, "pad_token_id", None)
            if pad_id is None:
                pad_id = getattr(tokenizer, "eos_token_id", None)
            self.pad_id = int(pad_id) if isinstance(pad_id, int) else 0
        else:
            raise RepscopeTypeError(
                f"tokenizer must be a transformers tokenizer or a tokenizers.Tokenizer; got "
                f"{type(tokenizer).__name__}."
            )
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise RepscopeValueError(
                f"The 'max_length' parameter of extract must be a positive int or None. Got "
                f"{max_length!r} instead."
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        name = getattr(tokenizer, "name_or_path", None)
        #: The tokenizer's name (``name_or_path``), recorded in a store; None when it has none.
        self.name: str | None = str(name) if name else None

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        """Token ids (and token type ids when the tokenizer makes them) without padding."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise RepscopeTypeError(
                    f"inputs of a text model must be strings; inputs[{i}] is "
                    f"{type(t).__name__}. Pass a list of str."
                )
        if self.fast is not None:
            encs = self.fast.encode_batch(texts)
            return [e.ids for e in encs], [e.type_ids for e in encs]
        kwargs: dict[str, Any] = {"padding": False, "return_attention_mask": False}
        if self.max_length is not None:
            kwargs.update(truncation=True, max_length=self.max_length)
        enc = self.tokenizer(texts, **kwargs)
        return list(enc["input_ids"]), (
            list(enc["token_type_ids"]) if "token_type_ids" in enc else None
        )

    def token_strings(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's tokens as the tokenizer writes them (``[CLS]``, ``##ing``, ``Ġthe``): one
        string per token that :meth:`batches` feeds the model, truncation included."""
        ids, _ = self.encode(texts)
        if self.fast is not None:
            fast = self.fast
            return [[fast.id_to_token(int(i)) or "" for i in row] for row in ids]
        convert = self.tokenizer.convert_ids_to_tokens
        return [[str(t) for t in convert([int(i) for i in row])] for row in ids]

    def batches(
        self, texts: Sequence[str], batch_size: int
    ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """Padded batches, longest first, and ``order`` (batch row ``k`` is ``texts[order[k]]``).

        Each batch is ``{"input_ids", "attention_mask"[, "token_type_ids"]}`` of int64 arrays of
        shape (b, longest in batch); padding is on the right.
        """
        ids, types = self.encode(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if lengths.size and lengths.min() == 0:
            bad = int(np.argmin(lengths))
            raise RepscopeValueError(
                f"inputs[{bad}] ({texts[bad]!r}) has no tokens after tokenisation, so it has no "
                "activations. Drop empty texts first."
            )
        order = np.argsort(-lengths, kind="stable")
        out: list[dict[str, np.ndarray]] = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            tt = np.zeros((len(rows), width), dtype=np.int64) if types is not None else None
            for r, j in enumerate(rows):
                n = int(lengths[j])
                input_ids[r, :n] = ids[j]
                mask[r, :n] = 1
                if tt is not None and types is not None:
                    tt[r, :n] = types[j]
            batch = {"input_ids": input_ids, "attention_mask": mask}
            if tt is not None:
                batch["token_type_ids"] = tt
            out.append(batch)
        return out, order
