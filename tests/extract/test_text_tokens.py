"""Text with the tokens (issue 12, item 12): extraction keeps each sample's text and, beside token
layers, the tokenizer's own token strings, so an SAE's top activations on MiniLM show the token
highlighted in its context instead of ``4.34 · pos 40 id northangerabbey:0761``."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record
from repscope.extract import extract_to_store
from repscope.sae import LayerVectors
from repscope.sae._report import render_sae
from repscope.store import FeatureStore
from repscope.store._tokens import decode_tokens, token_context

LAYER = "encoder.layer.5"


@pytest.fixture(scope="module")
def l6_tokens(minilm, austen, tmp_path_factory):
    """40 Austen paragraphs (six novels) through MiniLM-L6, the last layer kept per token (64
    tokens at most)."""
    texts = list(austen.inputs)
    path = tmp_path_factory.mktemp("l6") / "tok"
    store = extract_to_store(minilm, texts, path, [LAYER], "tokens", batch_size=8, chunk_size=16,
                             max_length=64, progress=False,
                             metadata={"id": austen.ids, "label": austen.labels})
    return store, texts, list(austen.ids)


def test_minilm_l6_store_keeps_the_text_and_the_tokenizers_own_tokens(minilm, l6_tokens):
    store, texts, ids = l6_tokens
    meta = store.metadata()
    assert list(meta) == ["id", "label", "text", "tokens"]
    assert list(meta["text"]) == texts and list(meta["id"]) == ids
    counts = np.diff(store.read_ragged(LAYER).offsets)
    for i, text in enumerate(texts):
        want = minilm.tokenizer.convert_ids_to_tokens(
            minilm.tokenizer(text, truncation=True, max_length=64)["input_ids"])
        got = decode_tokens(meta["tokens"][i])
        assert got == want and len(got) == counts[i]  # one string per stored activation row
        assert got[0] == "[CLS]" and got[-1] == "[SEP]"
    assert store.attrs["extract"]["tokenizer"] == minilm.tokenizer.name_or_path  # whose tokens


def test_minilm_l3_onnx_store_keeps_the_tokens_of_its_tokenizer(minilm_onnx, austen, tmp_path):
    texts = list(austen.inputs[:6])
    store = extract_to_store(minilm_onnx, texts, tmp_path / "l3", None, "tokens", batch_size=3,
                             progress=False)
    meta = store.metadata()
    assert list(meta["text"]) == texts
    layer = store.layers[-1]
    if not store.layer_info(layer).ragged:
        pytest.skip(f"the graph's output {layer!r} is not a token layer")
    counts = np.diff(store.read_ragged(layer).offsets)
    for i, text in enumerate(texts):
        want = minilm_onnx.tokenizer.encode(text).tokens  # truncated at 128 like the graph
        assert decode_tokens(meta["tokens"][i]) == want and len(want) == counts[i]


def test_pooled_layers_keep_the_text_only_and_old_stores_stay_as_they_were(minilm, austen,
                                                                        tmp_path, monkeypatch):
    texts = list(austen.inputs[:6])
    pooled = extract_to_store(minilm, texts, tmp_path / "mean", [LAYER], "mean", batch_size=3,
                              progress=False)
    assert pooled.metadata_columns == ["text"]  # no token layer: no token strings
    # a store begun without text (as before this version) is resumed without adding columns
    import repscope.extract._extract as ex

    real = ex._kept_text
    monkeypatch.setattr(ex, "_kept_text", lambda job, fs, start: (False, False))

    def stop_after_four():
        for i, t in enumerate(texts):
            if i == 4:
                raise RuntimeError("stop")
            yield t

    with pytest.raises(RuntimeError, match="stop"):
        extract_to_store(minilm, stop_after_four(), tmp_path / "old", [LAYER], "tokens",
                         batch_size=2, chunk_size=2, progress=False)
    monkeypatch.setattr(ex, "_kept_text", real)
    old = extract_to_store(minilm, texts, tmp_path / "old", [LAYER], "tokens", batch_size=2,
                           chunk_size=2, progress=False)
    assert old.n_samples == 6 and old.metadata_columns == []
    v = LayerVectors(tmp_path / "old")
    assert set(v.describe(3)) == {"position", "index"}  # readable, described by position


def test_sae_views_show_each_token_in_its_context(l6_tokens, tmp_path):
    store, texts, ids = l6_tokens
    args = ["--db", str(tmp_path / "r.db"), "sae", "train", str(store.path), "--k", "4",
            "--expansion", "2", "--steps", "30", "--batch-size", "256", "--holdout", "0.25",
            "--out", str(tmp_path / "sae"), "--no-progress"]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)
    meta = store.metadata()
    examples = [e for t in v["top_latents"] for e in t["examples"]]
    assert examples
    for e in examples:
        toks = decode_tokens(meta["tokens"][e["index"]])
        assert e["id"] == ids[e["index"]] and e["token"] == toks[e["position"]]
        assert e["context"] == list(token_context(toks, e["position"], 8))
        before, tok, after = e["context"]
        plain = " ".join(texts[e["index"]].lower().split())
        if tok not in ("[CLS]", "[SEP]") and not before.startswith("…"):
            assert (before + tok).strip().lower() in plain.replace("  ", " ") or tok in plain

    # the report: the token in <mark>, its context around it, HTML-escaped
    html = str(render_sae([Record("sae", v, model="minilm-l6", dataset="austen", layer=LAYER)]))
    e = examples[0]
    before, tok, after = e["context"]
    from repscope.report._sections import esc

    assert f"{esc(before)}<mark>{esc(tok)}</mark>{esc(after)}" in html
    assert "Text not stored" not in html and "pos " not in html

    # the command line's table is followed by the top inputs, the token in [brackets]
    res = CliRunner().invoke(cli, [*args[:-2], str(tmp_path / "sae2"), "--no-progress"])
    assert res.exit_code == 0, res.output
    lines = re.findall(r"^  \S+  (.*\[.+\].*)$", res.stdout, flags=re.M)
    assert lines, res.stdout
    assert any(f"{b}[{t}]{a}" in res.stdout for t_ in v["top_latents"]
               for (b, t, a) in [x["context"] for x in t_["examples"]])


def test_the_held_out_split_is_random_by_novel(l6_tokens):
    store, _, ids = l6_tokens
    novels = np.array([i.split(":")[0] for i in ids])
    held_sets = set()
    for seed in range(5):
        train, held = LayerVectors(store.path, skip_first=True).split(0.25, seed=seed)
        a, b = set(novels[train.samples()]), set(novels[held.samples()])
        assert a and b and not a & b  # no novel on both sides
        assert held.split_info["held_out_documents"] == sorted(b)
        held_sets.add(tuple(sorted(b)))
    last = tuple(sorted(set(novels[-round(0.1 * len(ids)):])))
    assert len(held_sets) > 1 and held_sets != {last}  # drawn, not the last 10 %


def test_an_old_token_store_says_text_not_stored_once(tmp_path):
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((n, 8)).astype(np.float32) for n in rng.integers(5, 15, 40)]
    fs = FeatureStore.create(tmp_path / "old", model_id="lm")
    fs.append({"tok": samples}, metadata={"id": [f"emma:{i:04d}" for i in range(40)]})
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "sae", "train",
                                   str(tmp_path / "old"), "--k", "2", "--width", "16", "--steps",
                                   "20", "--out", str(tmp_path / "sae"), "--holdout", "0",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("text not stored") == 1
    assert re.search(r"pos \d+  id emma:\d{4}", res.stdout)
