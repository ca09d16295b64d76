"""A TopK SAE on the SmolLM2-135M residual stream (layer 14 of 30, Austen paragraphs): held-out
FVU and dead fraction, the language-model loss with the reconstruction spliced in, stability
across seeds, and a sparse code that beats the best linear subspace of the same size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _realdata import SMOL_TOKEN_LAYER
from repscope.sae import TopKConfig, TopKSAE, TrainSettings, spliced_lm_loss, sweep
from repscope.sae.metrics import evaluate, seed_stability

N_TRAIN = 340  # paragraphs; the other 60 are held out
K = 32


@pytest.fixture(scope="module")
def residual(smollm2_austen):
    r = smollm2_austen.extra["ragged"][SMOL_TOKEN_LAYER]
    values, offsets = np.asarray(r.values, dtype=np.float32), np.asarray(r.offsets)
    # position 0 is an attention sink whose norm is ~40x the others': leave it out of the SAE
    # (and leave it untouched when splicing)
    keep = np.ones(len(values), dtype=bool)
    keep[offsets[:-1]] = False
    split = offsets[N_TRAIN]
    train = values[:split][keep[:split]]
    test = values[split:][keep[split:]]
    return train, test, smollm2_austen.texts[N_TRAIN:]


@pytest.fixture(scope="module")
def trained(residual):
    train, _, _ = residual
    d = train.shape[1]
    saes = [TopKSAE(TopKConfig(d_in=d, d_sae=4 * d, k=K, seed=s)) for s in (0, 1)]
    # both seeds in one pass over the data
    return sweep(train, saes, TrainSettings(n_epochs=8, batch_size=256, lr=1e-3, seed=0,
                                             optimizer="adam"))


def test_residual_sae_reconstructs_held_out_tokens(residual, trained):
    train, test, _ = residual
    ev = evaluate(trained[0].sae, test)
    print(
        f"\nSmolLM2 L14 TopK k={K} x4 ({train.shape[0]} train / {test.shape[0]} held-out tokens): "
        f"FVU {ev.fvu:.4f}, L0 {ev.l0:.1f}, dead {ev.dead_fraction:.4f}, "
        f"shrinkage {ev.shrinkage:.3f}"
    )
    assert ev.l0 <= K
    assert ev.fvu < 0.3
    assert ev.dead_fraction < 0.1
    # k sparse latents out of 4d beat the best k-dimensional linear subspace (PCA of the
    # training tokens, scored on the same held-out tokens)
    mu = train.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(train.astype(np.float64) - mu, full_matrices=False)
    basis = vt[:K]
    tc = test.astype(np.float64) - mu
    pca_fvu = ((tc - tc @ basis.T @ basis) ** 2).sum() / ((test - test.mean(0)) ** 2).sum()
    print(f"PCA-{K} held-out FVU {pca_fvu:.4f}")
    assert ev.fvu < pca_fvu


def test_spliced_reconstruction_recovers_most_of_the_lm_loss(residual, trained):
    from repscope.zoo import load_model

    _, _, texts = residual
    model = load_model("smollm2-135m")
    res = spliced_lm_loss(
        model, trained[0].sae, SMOL_TOKEN_LAYER, texts, max_length=64, positions="skip_first"
    )
    print(
        f"\nLM loss on {res.n_tokens} held-out tokens: clean {res.clean:.3f}, SAE-spliced "
        f"{res.spliced:.3f}, zero-ablated {res.zero_ablated:.3f}; fraction recovered "
        f"{res.fraction_recovered:.3f}"
    )
    assert res.clean < res.spliced < res.zero_ablated
    assert res.fraction_recovered > 0.8
    # an untrained SAE of the same shape recovers far less: the figure measures the SAE
    d = trained[0].sae.d_in
    fresh = TopKSAE(TopKConfig(d_in=d, d_sae=4 * d, k=K))
    with torch.no_grad():
        fresh.fit_normalizer(torch.from_numpy(residual[0][:4096]))
    base = spliced_lm_loss(model, fresh, SMOL_TOKEN_LAYER, texts[:10], positions="skip_first")
    assert base.fraction_recovered < res.fraction_recovered - 0.3


def test_two_seeds_learn_overlapping_dictionaries(trained):
    a, b = (t.sae.folded_state_dict()["W_dec"] for t in trained)
    stability = seed_stability(a, b)
    # against the same statistic for two random dictionaries of the same shape
    g = torch.Generator().manual_seed(0)
    chance = seed_stability(torch.randn(a.shape, generator=g), torch.randn(a.shape, generator=g))
    print(f"\nseed stability (mean matched cosine): {stability:.3f} (random {chance:.3f})")
    assert stability > chance + 0.1
