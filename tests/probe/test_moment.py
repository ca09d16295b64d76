"""MomentProbe: first- plus second-order (token cross-covariance) probing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.probe._moment import MomentProbe, moment_features


def _covariance_only_tokens(n: int, seed: int, t: int = 16, d: int = 16):
    """Two classes with identical token means; channel j and j+8 correlate +0.8 in class 1
    and -0.8 in class 0, so only the (cross-)covariance tells them apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.standard_normal((n, t, d))
    rho = np.where(y == 1, 0.8, -0.8)[:, None, None]
    x = z.copy()
    x[:, :, d // 2:] = rho * z[:, :, : d // 2] + np.sqrt(1 - 0.64) * z[:, :, d // 2:]
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def cov_data():
    return _covariance_only_tokens(300, 0), _covariance_only_tokens(300, 1)


def test_moment_probe_beats_mean_probe_when_classes_differ_only_in_covariance(cov_data):
    (Xtr, ytr), (Xte, yte) = cov_data
    mean_acc = MomentProbe(second_order=False).fit(Xtr, ytr).score(Xte, yte)
    mp_acc = MomentProbe(n_heads=4, head_dim=4).fit(Xtr, ytr).score(Xte, yte)
    assert mean_acc < 0.62  # chance is 0.5
    assert mp_acc > 0.9
    assert mp_acc - mean_acc > 0.3


def test_learned_projection_trains_end_to_end(cov_data):
    (Xtr, ytr), (Xte, yte) = cov_data
    probe = MomentProbe(projection="learned", n_heads=2, head_dim=8, max_iter=25).fit(
        Xtr[:200], ytr[:200])
    assert probe.score(Xte, yte) > 0.85
    adam = MomentProbe(projection="learned", solver="adam", n_heads=2, head_dim=8, max_iter=15,
                       lr=0.02, batch_size=64).fit(Xtr[:200], ytr[:200])
    assert adam.score(Xte, yte) > 0.8


def test_moment_features_match_a_numpy_reference():
    rng = np.random.default_rng(3)
    tok = rng.standard_normal((3, 5, 6))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=bool)
    out = moment_features(torch.as_tensor(tok), torch.as_tensor(mask), n_heads=3,
                          pairing="near", layer_norm=False).numpy()
    ref = []
    for i in range(3):
        a = tok[i][mask[i]].reshape(-1, 3, 2)
        a = a - a.mean(0)
        feats = []
        for h in range(2):
            c = a[:, h].T @ a[:, h + 1] / a.shape[0]
            feats.append((c / np.linalg.norm(c, axis=1, keepdims=True)).ravel())
        ref.append(np.concatenate(feats))
    np.testing.assert_allclose(out, np.array(ref), atol=1e-10)
    assert moment_features(torch.as_tensor(tok), n_heads=3, pairing="all").shape == (3, 3 * 4)


def test_padding_tokens_do_not_change_the_prediction(cov_data):
    (Xtr, ytr), (Xte, _) = cov_data
    probe = MomentProbe(n_heads=4, head_dim=4).fit(Xtr, ytr)
    padded = np.concatenate([Xte[:20], 100 * np.ones((20, 4, 16), np.float32)], axis=1)
    mask = np.concatenate([np.ones((20, 16), bool), np.zeros((20, 4), bool)], axis=1)
    np.testing.assert_allclose(probe.predict_proba(padded, mask), probe.predict_proba(Xte[:20]),
                               atol=1e-5)


def test_fit_is_deterministic_and_accepts_torch(cov_data):
    (Xtr, ytr), _ = cov_data
    a = MomentProbe(n_heads=4, head_dim=4).fit(Xtr, ytr).predict_proba(Xtr[:10])
    b = MomentProbe(n_heads=4, head_dim=4).fit(torch.as_tensor(Xtr), ytr)
    pb = b.predict_proba(torch.as_tensor(Xtr[:10]))
    assert isinstance(pb, torch.Tensor)
    np.testing.assert_allclose(a, pb.numpy(), atol=1e-6)


def test_moment_probe_errors():
    from sklearn.exceptions import NotFittedError

    X = np.zeros((6, 3, 8), np.float32)
    with pytest.raises(ValueError, match="3-D"):
        MomentProbe().fit(np.zeros((6, 8)), [0, 1] * 3)
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        MomentProbe().fit(X, [0] * 6)
    with pytest.raises(ValueError, match="mask must have shape"):
        MomentProbe().fit(X, [0, 1] * 3, mask=np.ones((6, 4), bool))
    with pytest.raises(ValueError, match="all-False mask"):
        MomentProbe().fit(X, [0, 1] * 3, mask=np.zeros((6, 3), bool))
    with pytest.raises(ValueError, match="'projection' parameter of MomentProbe"):
        MomentProbe(projection="conv").fit(X, [0, 1] * 3)
    with pytest.raises(NotFittedError):
        MomentProbe().predict(X)


def test_moment_probe_on_minilm_tokens_at_least_matches_mean_probe(minilm_austen_tokens):
    values, mask = minilm_austen_tokens.tokens
    y = minilm_austen_tokens.y
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:450], perm[450:]
    mean = MomentProbe(second_order=False, alpha=1e-2).fit(values[tr], y[tr], mask=mask[tr])
    mp = MomentProbe(alpha=1e-2, n_heads=4, head_dim=16).fit(values[tr], y[tr], mask=mask[tr])
    mean_acc = mean.score(values[te], y[te], mask=mask[te])
    mp_acc = mp.score(values[te], y[te], mask=mask[te])
    assert mean_acc > 1 / 6 + 0.1
    # within noise: 150 test paragraphs -> one standard error is about 0.04
    assert mp_acc >= mean_acc - 0.05, (mp_acc, mean_acc)
