"""How a view shows a stored token in its context (``repscope.store._tokens``): spaces restored
the way each tokenizer family marks them, the window cut with "…", the JSON column round trip."""

from __future__ import annotations

import pytest

from repscope.store._tokens import decode_tokens, encode_tokens, surface_tokens, token_context


def test_wordpiece_joins_continuations_and_closing_punctuation():
    toks = ["[CLS]", "mrs", ".", "allen", "was", "mort", "##ifying", ",", "he", "said", "[SEP]"]
    assert "".join(surface_tokens(toks)) == "[CLS] mrs. allen was mortifying, he said [SEP]"
    assert token_context(toks, 6, 2) == ("…was mort", "ifying", ", he…")
    assert token_context(toks, 3, 8) == ("[CLS] mrs. ", "allen", " was mortifying, he said [SEP]")


def test_byte_level_bpe_and_sentencepiece_spaces_and_bytes():
    bpe = ["The", "Ġquick", "Ġbrown", "âĢĻ", "s", "Ġfox", "Ċ", "Ġran"]
    assert "".join(surface_tokens(bpe)) == "The quick brown’s fox\n ran"
    assert token_context(bpe, 2, 1) == ("…quick ", "brown", "’…")
    assert token_context(bpe, 7, 2) == ("…fox ", "ran", "")  # the newline reads as one space
    sp = ["▁The", "▁quick", "ly", "▁done"]
    assert "".join(surface_tokens(sp)) == "The quickly done"


def test_the_column_round_trips_and_positions_are_checked():
    toks = ["<s>", "a\"b", "Ġ[x]", "é"]
    assert decode_tokens(encode_tokens(toks)) == toks
    assert decode_tokens("abc") == ["a", "b", "c"]  # a column written by hand
    assert decode_tokens(None) is None
    with pytest.raises(IndexError, match="outside the sample's 4 tokens"):
        token_context(toks, 4)
