"""A tiny causal LM and character tokenizer standing in for a zoo language model in SAE
evaluation tests (``sae eval --model``), installed over ``repscope.zoo``'s loaders."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch


def install_tiny_lm(monkeypatch: Any, d: int, texts: list[str], *,
                    embedding_seed: int | None = None) -> SimpleNamespace:
    """Make ``repscope.zoo.load_model`` return a tiny LM of width ``d`` (its ``block`` is the
    layer an SAE splices into) and ``load_dataset`` return ``texts``; returns the loaded model."""
    import repscope.zoo

    class TinyLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(20, d)
            if embedding_seed is not None:
                g = torch.Generator().manual_seed(embedding_seed)
                self.emb.weight.data = torch.randn(20, d, generator=g)
            self.block = torch.nn.Linear(d, d)
            self.head = torch.nn.Linear(d, 20)

        def forward(self, input_ids: Any, attention_mask: Any) -> SimpleNamespace:
            return SimpleNamespace(logits=self.head(torch.relu(self.block(self.emb(input_ids)))))

    class Tok:
        pad_token = "."

        def __call__(self, batch: list[str], *, max_length: int, **_k: Any) -> dict[str, Any]:
            ids = [[1 + ord(c) % 19 for c in t[:max_length]] for t in batch]
            width = max(len(s) for s in ids)
            pad = [s + [0] * (width - len(s)) for s in ids]
            mask = [[1] * len(s) + [0] * (width - len(s)) for s in ids]
            return {"input_ids": torch.tensor(pad), "attention_mask": torch.tensor(mask)}

    lm = SimpleNamespace(model=TinyLM().eval(), kind="causal-lm", tokenizer=Tok())
    monkeypatch.setattr(repscope.zoo, "load_model", lambda name, **_k: lm)
    monkeypatch.setattr(repscope.zoo, "load_dataset",
                        lambda name, n, seed: SimpleNamespace(inputs=texts[:n]))
    return lm
