"""A real merge: SmolLM2-135M's last blocks fine-tuned on two Austen novels, then merged.

1. The Austen novels come from ``repscope.zoo`` (dataset ``"austen"``; ``make demo`` or
   ``scripts/fetch_system_data.sh --austen`` fetches them). Two novels are chosen (default
   *Pride & Prejudice* and *Persuasion*); each novel's paragraphs, in reading order, are
   tokenised into one stream and cut into sequences of ``--seq`` tokens; the last 10 % of each
   novel is held out.
2. Only the last ``--blocks`` decoder blocks are fine-tuned (the embeddings, tied to the LM
   head, the final norm and every earlier block are frozen). The frozen blocks therefore compute
   the same hidden states at every step, so they run once per sequence (their output is cached)
   and each training step runs only the tuned blocks, the norm and the LM head: a few hundred
   steps fit in a few minutes on 2 cores.
3. Two fine-tunes from the same base (AdamW, ``--steps`` steps each, same seed and
   hyper-parameters), one per novel; their tuned tensors are merged with
   ``repscope.weights._merge.merge_state_dicts``: task arithmetic (base + lambda * sum of task
   vectors, lambda = 0.5 and 1) and TIES (density 0.5, lambda 1), plus the plain average.
4. The LM loss (mean next-token cross-entropy, nats per token) on each novel's held-out text:
   base, each fine-tune, each merge.

Measured with the defaults (seed 0; held-out LM loss, nats per token, Pride & Prejudice /
Persuasion): base 4.127 / 4.570; fine-tuned on P&P 3.628 / 4.326; on Persuasion 3.895 / 3.975;
average (= task arithmetic lambda 0.5) 3.669 / 4.050; task arithmetic lambda 1 3.972 / 4.159;
TIES (density 0.5) 3.683 / 4.021. Each merge keeps most of each fine-tune's gain on its own
novel (P&P: 0.46 of 0.50 nats; Persuasion: 0.52-0.55 of 0.59) while one fine-tune alone gains
much less on the other novel; the plain sum (lambda 1) overshoots. The run took 19 minutes on a
2-core machine shared with other jobs (load 6-12; the frozen prefix alone 5 minutes); on idle
cores expect a few minutes.

Run: ``.venv/bin/python examples/merge_smollm_austen.py [--steps 150] [--blocks 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _sequences(tokenizer, paragraphs: list[str], seq: int) -> torch.Tensor:
    ids: list[int] = []
    for p in paragraphs:
        ids.extend(tokenizer(p + "\n\n", add_special_tokens=False)["input_ids"])
    n = len(ids) // seq
    return torch.tensor(ids[: n * seq], dtype=torch.long).view(n, seq)


def _split_layers(model, n_tuned: int):
    """(prefix, tail) views of the decoder: the prefix returns the (un-normalised) input of the
    first tuned block, the tail maps it to logits."""
    layers = model.model.layers
    return torch.nn.ModuleList(layers[: len(layers) - n_tuned]), torch.nn.ModuleList(
        layers[len(layers) - n_tuned:])


@torch.no_grad()
def _prefix_hidden(model, prefix, ids: torch.Tensor, batch: int = 16) -> torch.Tensor:
    full, norm = model.model.layers, model.model.norm
    model.model.layers, model.model.norm = prefix, torch.nn.Identity()
    try:
        out = [model.model(input_ids=ids[i:i + batch], use_cache=False).last_hidden_state
               for i in range(0, len(ids), batch)]
    finally:
        model.model.layers, model.model.norm = full, norm
    return torch.cat(out)


def _tail_loss(model, tail, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    full = model.model.layers
    model.model.layers = tail
    try:
        logits = model(inputs_embeds=hidden, use_cache=False).logits
    finally:
        model.model.layers = full
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


@torch.no_grad()
def _eval(model, tail, hidden: torch.Tensor, ids: torch.Tensor, batch: int = 16) -> float:
    total, count = 0.0, 0
    for i in range(0, len(ids), batch):
        loss = _tail_loss(model, tail, hidden[i:i + batch], ids[i:i + batch])
        n = ids[i:i + batch, 1:].numel()
        total += float(loss) * n
        count += n
    return total / count


def main() -> None:
    from repscope.weights._merge import merge_state_dicts
    from repscope.zoo import load_dataset, load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--books", nargs=2, default=["Pride & Prejudice", "Persuasion"])
    p.add_argument("--blocks", type=int, default=2, help="last decoder blocks to fine-tune")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--train-seqs", type=int, default=300, help="training sequences per novel")
    p.add_argument("--eval-seqs", type=int, default=32, help="held-out sequences per novel")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    loaded = load_model("smollm2-135m")
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    data = load_dataset("austen")
    labels = np.asarray(data.labels)
    prefix, tail = _split_layers(model, args.blocks)
    first = len(model.model.layers) - args.blocks
    tuned_keys = [k for k in model.state_dict() if k.startswith("model.layers.")
                  and int(k.split(".")[2]) >= first]
    base_tuned = {k: v.detach().clone() for k, v in model.state_dict().items()
                  if k in tuned_keys}

    sets = {}
    for book in args.books:
        label = list(data.label_names).index(book)
        paras = [t for t, y in zip(data.inputs, labels, strict=True) if y == label]
        cut = int(0.9 * len(paras))
        train = _sequences(tok, paras[:cut], args.seq)
        test = _sequences(tok, paras[cut:], args.seq)
        rng = np.random.default_rng(args.seed)
        train = train[torch.as_tensor(np.sort(rng.choice(len(train), min(args.train_seqs,
                                                                         len(train)),
                                                         replace=False)))]
        test = test[: args.eval_seqs]
        sets[book] = (train, _prefix_hidden(model, prefix, train), test,
                      _prefix_hidden(model, prefix, test))
    # the split is exact: the cached prefix plus the tail give the full model's loss
    ids = sets[args.books[0]][2][:2]
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
        full = float(torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)))
    split = _eval(model, tail, sets[args.books[0]][3][:2], ids)
    if abs(full - split) > 1e-3:
        raise SystemExit(f"prefix/tail split is not exact: loss {full:.5f} vs {split:.5f}")
    print(f"SmolLM2-135M, last {args.blocks} of {len(model.model.layers)} blocks tuned "
          f"({sum(v.numel() for v in base_tuned.values()) / 1e6:.1f}M parameters); "
          f"{args.train_seqs} x {args.seq} training / {args.eval_seqs} x {args.seq} held-out "
          f"tokens per novel; frozen prefix cached in {time.perf_counter() - t0:.0f} s")

    def losses(state: dict[str, torch.Tensor]) -> list[float]:
        model.load_state_dict(state, strict=False)
        out = [_eval(model, tail, sets[b][3], sets[b][2]) for b in args.books]
        model.load_state_dict(base_tuned, strict=False)
        return out

    rows = [("base", losses(base_tuned))]
    tuned: list[dict[str, torch.Tensor]] = []
    for book in args.books:
        t1 = time.perf_counter()
        model.load_state_dict(base_tuned, strict=False)
        params = [q for n, q in model.named_parameters() if n in tuned_keys]
        for q in params:
            q.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(args.seed)
        ids, hidden = sets[book][0], sets[book][1]
        model.train()
        for _ in range(args.steps):
            idx = torch.randint(len(ids), (args.batch,), generator=gen)
            opt.zero_grad()
            _tail_loss(model, tail, hidden[idx], ids[idx]).backward()
            opt.step()
        model.eval()
        for q in params:
            q.requires_grad_(False)
        tuned.append({k: v.detach().clone() for k, v in model.state_dict().items()
                      if k in tuned_keys})
        model.load_state_dict(base_tuned, strict=False)
        print(f"fine-tuned on {book}: {args.steps} steps in {time.perf_counter() - t1:.0f} s")
        rows.append((f"fine-tuned on {book}", losses(tuned[-1])))

    merges = {
        "average (linear)": ("linear", {}),
        "task arithmetic, lambda 0.5": ("task_arithmetic", {"lambda_": 0.5}),
        "task arithmetic, lambda 1": ("task_arithmetic", {"lambda_": 1.0}),
        "TIES, density 0.5, lambda 1": ("ties", {"density": 0.5, "lambda_": 1.0}),
    }
    for name, (method, params) in merges.items():
        merged = merge_state_dicts(method, tuned, base=None if method == "linear" else base_tuned,
                                   progress=False, **params)
        rows.append((f"merged: {name}", losses(merged)))

    print()
    print(f"| model | held-out loss {args.books[0]} | held-out loss {args.books[1]} | mean |")
    print("|---|---|---|---|")
    for name, (a, b) in rows:
        print(f"| {name} | {a:.4f} | {b:.4f} | {(a + b) / 2:.4f} |")
    print(f"\n(total {time.perf_counter() - t0:.0f} s, {args.threads} threads)")


if __name__ == "__main__":
    main()
