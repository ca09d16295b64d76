"""Retrieval, matching, paired cosine, kernel agreement; the canonicalization claim on real
MiniLM-L6 / MiniLM-L3 features."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._testing import random_orthogonal
from repscope.align import (
    OrthogonalMap,
    kernel_agreement,
    matching_accuracy,
    orthogonality_gap,
    paired_cosine,
    retrieval_topk,
    sweep_k,
)


def _dense_topk(A: np.ndarray, B: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    a = A / np.linalg.norm(A, axis=1, keepdims=True)
    b = B / np.linalg.norm(B, axis=1, keepdims=True)
    S = a @ b.T
    order = np.argsort(-S, axis=1, kind="stable")
    rank = np.argmax(order == np.arange(len(A))[:, None], axis=1)
    return {k: float((rank < k).mean()) for k in ks}


@pytest.mark.parametrize("block_size", [7, 64, 4096])
def test_retrieval_topk_blocked_equals_dense(block_size: int, rng) -> None:
    n, d = 300, 16
    A = rng.standard_normal((n, d))
    B = A + 1.2 * rng.standard_normal((n, d))
    ks = (1, 5, 10, 50)
    res = retrieval_topk(A, B, ks=ks, block_size=block_size)
    assert res.topk == pytest.approx(_dense_topk(A, B, ks))
    assert 0 < res.topk[1] < res.topk[10] < 1
    assert res.chance[5] == pytest.approx(5 / n)


def test_retrieval_and_matching_perfect_for_permuted_copy(rng) -> None:
    n, d = 200, 8
    A = rng.standard_normal((n, d))
    perm = rng.permutation(n)
    assert retrieval_topk(A, A.copy(), ks=(1,)).topk[1] == 1.0
    assert matching_accuracy(A[perm], A[perm].copy()) == 1.0
    # a shuffled gallery breaks the pairing: chance-level matching
    assert matching_accuracy(A, A[perm]) < 0.1


def test_matching_accuracy_beats_greedy_retrieval_when_rows_compete(rng) -> None:
    # two queries close to the same gallery item: nearest-neighbour fails one, matching does not
    B = np.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.1]])
    A = np.array([[1.0, 0.05], [0.95, 0.1], [-1.0, 0.0]])
    assert retrieval_topk(A, B, ks=(1,)).topk[1] == pytest.approx(2 / 3)
    assert matching_accuracy(A, B) == 1.0


def test_paired_cosine_and_kernel_agreement(rng) -> None:
    A = rng.standard_normal((100, 6))
    assert paired_cosine(A, 3 * A) == pytest.approx(1.0)
    assert paired_cosine(A, -A) == pytest.approx(-1.0)
    Q = random_orthogonal(6, rng)
    assert kernel_agreement(A, 2 * A @ Q + 1) == pytest.approx(1.0)
    assert kernel_agreement(A, rng.standard_normal((100, 6))) < 0.3


def test_metric_bad_input(rng) -> None:
    A = rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match="same number of columns"):
        retrieval_topk(A, A[:, :3])
    with pytest.raises(ValueError, match="same number of samples"):
        paired_cosine(A, A[:5])
    with pytest.raises(ValueError, match="'ks' parameter of retrieval_topk must be in the range"):
        retrieval_topk(A, A, ks=(11,))
    with pytest.raises(ValueError, match="exceeds max_n=5"):
        matching_accuracy(A, A, max_n=5)
    bad = A.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="A must be finite"):
        matching_accuracy(bad, A)


@pytest.fixture(scope="module")
def minilm_pairs(minilm_austen, minilm_l3_austen):
    assert minilm_l3_austen.y.tolist() == minilm_austen.y.tolist()  # same paragraphs, same order
    X = minilm_austen.X["encoder.layer.5"].astype(np.float64)
    Y = minilm_l3_austen.X[minilm_l3_austen.layers[0]].astype(np.float64)
    perm = np.random.default_rng(0).permutation(len(X))
    tr, te = perm[:500], perm[500:]
    return X[tr], Y[tr], X[te], Y[te]


def test_canonicalization_claim_minilm_l6_to_l3(minilm_pairs) -> None:
    """An orthogonal map fitted on 500 paired Austen paragraphs carries MiniLM-L6 onto
    MiniLM-L3: held-out top-1 retrieval near perfect and far above the unmapped baseline.

    Measured (seed 0, 700 held-out paragraphs): unmapped top-1 0.591 (the two MiniLMs share
    their BERT vocabulary and distillation lineage, so raw coordinates already partly agree),
    mapped 0.989; paired cosine 0.28 -> 0.69. The brief's "3x the baseline" cannot hold with a
    baseline of 0.59, so the claim is stated on the retrieval *error*: >= 10x lower."""
    Xtr, Ytr, Xte, Yte = minilm_pairs
    m = OrthogonalMap().fit(Xtr, Ytr)
    mapped = retrieval_topk(m.transform(Xte), Yte, ks=(1, 5))
    base = retrieval_topk(Xte, Yte, ks=(1, 5))
    assert mapped.topk[1] >= 0.95
    assert (1 - mapped.topk[1]) * 10 <= 1 - base.topk[1]
    assert mapped.topk[1] >= 1.5 * base.topk[1]
    assert paired_cosine(m.transform(Xte), Yte) > paired_cosine(Xte, Yte) + 0.3
    assert matching_accuracy(m.transform(Xte), Yte) >= 0.99


def test_real_models_need_more_than_a_rotation_but_subspaces_help(minilm_pairs) -> None:
    Xtr, Ytr, Xte, Yte = minilm_pairs
    g = orthogonality_gap(Xtr, Ytr, Xte, Yte)
    # a general linear map explains clearly more held-out variance (gap 0.16 measured)
    assert g.gap > 0.05
    assert g.linear_residual < g.orthogonal_residual
    s = sweep_k(Xtr, Ytr, Xte, Yte, ks=[8, 32, 128, 384], method="cca")
    top1 = dict(zip(s.ks, s.retrieval[1]))
    # Plato's-cave shape: intermediate k beats both a tiny subspace and full-width CCA
    assert top1[128] > top1[8]
    assert top1[128] > top1[384]
