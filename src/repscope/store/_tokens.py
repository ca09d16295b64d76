"""The token strings a store keeps beside a token layer, and how a view shows one in context.

Extraction writes each text sample's tokens (the tokenizer's own strings, ``[CLS]``, ``##ing``,
``Ġthe``, one per stored activation row) as a JSON array in the ``tokens`` metadata column, and
the text in the ``text`` column. :func:`token_context` turns the tokens around one position into
readable text: the token and up to ``window`` tokens either side, spaces restored the way the
tokenizer marks them (WordPiece ``##`` continuations, byte-level BPE ``Ġ``, SentencePiece ``▁``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TEXT_COLUMN",
    "TOKENS_COLUMN",
    "decode_tokens",
    "encode_tokens",
    "surface_tokens",
    "token_context",
]

#: Metadata column holding each sample's input text.
TEXT_COLUMN = "text"
#: Metadata column holding each sample's token strings (a JSON array per sample).
TOKENS_COLUMN = "tokens"


def encode_tokens(tokens: Sequence[str]) -> str:
    """One sample's token strings as the JSON array the ``tokens`` column stores."""
    return json.dumps([str(t) for t in tokens], ensure_ascii=False)


def decode_tokens(value: Any) -> list[str] | None:
    """The token strings of one ``tokens`` cell, or None when it holds none.

    A JSON array of strings (what extraction writes) gives its strings; a list or tuple is
    taken as it is; any other string (a column written by hand, one character per token) gives
    its characters.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(t) for t in value]
    s = str(value)
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(t) for t in parsed]
    return list(s)


#: WordPiece tokens written without a space before them.
_CLOSING = frozenset({".", ",", ";", ":", "!", "?", ")", "]", "%"})


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character -> byte (the inverse of bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _byte_level(token: str) -> str:
    table = _byte_decoder()
    if not all(ch in table for ch in token):
        return token  # a special token such as <|im_start|>
    return bytes(table[ch] for ch in token).decode("utf-8", errors="replace")


def surface_tokens(tokens: Sequence[str]) -> list[str]:
    """Each token as it reads in running text, with the space before it where there is one.

    WordPiece (no ``Ġ``/``▁`` marks in the sample): a space before every token but ``##``
    continuations (whose ``##`` is dropped) and closing punctuation (``.`` ``,`` ``;`` ...). Byte-level BPE (``Ġ`` marks): bytes decoded, ``Ġ``
    read as a space. SentencePiece (``▁`` marks): ``▁`` read as a space. The first token never
    starts with a space.
    """
    toks = [str(t) for t in tokens]
    if any("Ġ" in t or "Ċ" in t for t in toks):
        out = [_byte_level(t) for t in toks]
    elif any(t.startswith("▁") for t in toks):
        out = [t.replace("▁", " ") for t in toks]
    else:
        out = [
            t[2:] if t.startswith("##") and len(t) > 2 else t if t in _CLOSING else " " + t
            for t in toks
        ]
    if out:
        out[0] = out[0].lstrip(" ")
    return out


def token_context(
    tokens: Sequence[str], position: int, window: int = 8
) -> tuple[str, str, str]:
    """The token at ``position`` and up to ``window`` tokens of text either side.

    Returns
    -------
    before, token, after : str
        ``before`` ends with the space that precedes the token (if any) and starts with "…"
        when tokens were cut; ``token`` is the token's text without that space; ``after``
        ends with "…" when tokens were cut. Whitespace runs (newlines) read as one space.
    """
    surf = surface_tokens(tokens)
    if not 0 <= position < len(surf):
        raise IndexError(f"position {position} is outside the sample's {len(surf)} tokens")
    a, b = max(0, position - window), min(len(surf), position + window + 1)
    tok = surf[position]
    lead = tok[: len(tok) - len(tok.lstrip())]
    before = "".join(surf[a:position]) + (" " if lead else "")
    after = "".join(surf[position + 1 : b])
    before, after = _squash(before).lstrip(), _squash(after)
    if a > 0:
        before = "…" + before
    if b < len(surf):
        after += "…"
    return before, _squash(tok).strip() or tok, after


def _squash(s: str) -> str:
    """Runs of whitespace as one space (newlines in a window read as a space)."""
    out: list[str] = []
    space = False
    for ch in s:
        if ch.isspace():
            if not space:
                out.append(" ")
            space = True
        else:
            out.append(ch)
            space = False
    return "".join(out)
