"""Feature drift between checkpoints (LP-FT diagnostics) on a tiny model fine-tuned here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from repscope.probe import (
    CheckpointMismatchError,
    checkpoint_drift,
    feature_drift,
    head_diagnostics,
    head_kernel,
)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(64, 48), nn.Linear(48, 32)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = torch.relu(self.l1(x))
        return {"l1": h1, "l2": torch.relu(self.l2(h1))}


def _train(net: _MLP, head: nn.Linear, X: torch.Tensor, y: torch.Tensor, steps: int,
           lr: float) -> None:
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (64,), generator=gen)
        loss = nn.functional.cross_entropy(head(net(X[idx])["l2"]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def _feats(net: _MLP, X: torch.Tensor) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in net(X).items()}


@pytest.fixture(scope="module")
def lpft_runs() -> dict[str, object]:
    """Pretrain on digits 0-4, then fine-tune on 5-9 from a zero head (FT) and from a
    logistic-regression head on the pre-trained features (LP-FT); same steps, batches and SGD
    learning rate. (With a much larger learning rate or a nearly unregularised LP head, LP-FT
    can move these features more than FT: the head norm also scales the backbone gradient.)"""
    from sklearn.linear_model import LogisticRegression

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a busy machine
    try:
        return _lpft_runs(LogisticRegression)
    finally:
        torch.set_num_threads(threads)


def _lpft_runs(LogisticRegression) -> dict[str, object]:
    torch.manual_seed(0)
    X, y = _digits()
    old, new = y < 5, y >= 5
    net0 = _MLP()
    _train(net0, nn.Linear(32, 5), torch.as_tensor(X[old]), torch.as_tensor(y[old]), 400, 0.05)
    Xn, yn = X[new], y[new] - 5
    rng = np.random.default_rng(0)
    perm = rng.permutation(yn.size)
    tr, te = perm[:600], perm[600:]
    base_tr, base_te = _feats(net0, torch.as_tensor(Xn[tr])), _feats(net0, torch.as_tensor(Xn[te]))
    lp = LogisticRegression(C=1.0, max_iter=2000).fit(base_tr["l2"], yn[tr])
    out: dict[str, object] = {"base_te": base_te, "base_tr": base_tr, "lp": lp, "y_tr": yn[tr]}
    for name in ("FT", "LP-FT"):
        net = _MLP()
        net.load_state_dict(net0.state_dict())
        head = nn.Linear(32, 5)
        with torch.no_grad():
            if name == "LP-FT":
                head.weight.copy_(torch.as_tensor(lp.coef_))
                head.bias.copy_(torch.as_tensor(lp.intercept_))
            else:
                head.weight.zero_()
                head.bias.zero_()
        _train(net, head, torch.as_tensor(Xn[tr]), torch.as_tensor(yn[tr]), 150, 0.01)
        f = _feats(net, torch.as_tensor(Xn[te]))
        with torch.no_grad():
            acc = float(np.mean(head(torch.as_tensor(f["l2"], dtype=torch.float32)).argmax(1)
                                .numpy() == yn[te]))
        out[name] = (acc, f)
    return out


def test_drift_measures_equal_hand_computation(lpft_runs):
    base, (_, after) = lpft_runs["base_te"], lpft_runs["FT"]
    A, B = base["l2"], after["l2"]
    r = feature_drift(A, B, layer="l2")
    cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if a.any() and b.any()
           else 0.0 for a, b in zip(A, B)]
    l2 = [float(np.linalg.norm(b - a)) for a, b in zip(A, B)]
    np.testing.assert_allclose(r.cosine, cos, atol=1e-12)
    np.testing.assert_allclose(r.l2, l2, atol=1e-12)
    assert r.cosine_mean == pytest.approx(np.mean(cos))
    assert r.relative_l2 == pytest.approx(np.mean(l2) / np.mean(np.linalg.norm(A, axis=1)))
    Ac, Bc = A - A.mean(0), B - B.mean(0)
    hsic = np.linalg.norm(Bc.T @ Ac) ** 2
    cka = hsic / (np.linalg.norm(Ac.T @ Ac) * np.linalg.norm(Bc.T @ Bc))
    assert r.linear_cka == pytest.approx(cka, rel=1e-9)
    Ka, Kb = head_kernel(A), head_kernel(B)
    np.testing.assert_allclose(Ka, A @ A.T)
    assert r.head_kernel_change == pytest.approx(np.linalg.norm(Kb - Ka) / np.linalg.norm(Ka))
    assert r.n_samples == A.shape[0] and r.width == 32
    # fine-tuning moved the features: not the identity
    assert r.relative_l2 > 0.05 and r.linear_cka < 0.999
    same = feature_drift(A, A)
    assert same.cosine_mean == pytest.approx(1.0) and same.l2_mean == 0.0
    assert same.linear_cka == pytest.approx(1.0) and same.head_kernel_change == 0.0
    # a layer that collapsed to one vector: CKA is undefined (NaN), the rest still measured
    dead = feature_drift(A, np.ones_like(A))
    assert np.isnan(dead.linear_cka) and dead.relative_l2 > 0


def test_lpft_moves_features_less_than_ft(lpft_runs):
    base = lpft_runs["base_te"]
    acc_ft, f_ft = lpft_runs["FT"]
    acc_lpft, f_lpft = lpft_runs["LP-FT"]
    d_ft, d_lpft = checkpoint_drift(base, f_ft), checkpoint_drift(base, f_lpft)
    assert [r.layer for r in d_ft] == ["l1", "l2"]
    for a, b in zip(d_ft, d_lpft):
        assert b.relative_l2 < a.relative_l2, a.layer
        assert b.linear_cka > a.linear_cka, a.layer
    assert min(acc_ft, acc_lpft) > 0.9  # both fine-tunings learnt the new task
    # why (Tomihari & Sato): the LP head already fits, so the CE gradient is small
    lp = lpft_runs["lp"]
    fitted = head_diagnostics(lp.coef_, lp.intercept_, lpft_runs["base_tr"]["l2"],
                              lpft_runs["y_tr"])
    zero = head_diagnostics(np.zeros_like(lp.coef_), np.zeros(5), lpft_runs["base_tr"]["l2"],
                            lpft_runs["y_tr"])
    assert fitted.ce_residual_norm < zero.ce_residual_norm
    assert fitted.ce_grad_norm < 0.1 * zero.ce_grad_norm


def test_different_architectures_are_a_named_error(lpft_runs):
    base = lpft_runs["base_te"]
    with pytest.raises(CheckpointMismatchError, match="only in the first: \\['l1'\\]"):
        checkpoint_drift(base, {"l2": base["l2"]})
    with pytest.raises(CheckpointMismatchError, match="same shape"):
        checkpoint_drift(base, {"l1": base["l1"][:, :40], "l2": base["l2"]})
    with pytest.raises(CheckpointMismatchError, match="same shape"):
        feature_drift(base["l2"], base["l2"][:-1])


def _save(path, layers: dict[str, np.ndarray]) -> str:
    path.mkdir()
    for k, v in layers.items():
        np.save(path / f"{k}.npy", v.astype(np.float32))
    return str(path)


def test_cli_table_records_and_report(lpft_runs, tmp_path):
    from repscope.cli import cli
    from repscope.db import ResultsDB
    from repscope.probe._report_drift import render_feature_drift

    db_path = tmp_path / "results.db"

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--db", str(db_path), "drift", *args])

    base, (_, f_lpft) = lpft_runs["base_te"], lpft_runs["LP-FT"]
    a = _save(tmp_path / "pre", base)
    b = _save(tmp_path / "lpft", f_lpft)
    res = invoke(a, b, "--json")
    assert res.exit_code == 0, res.output
    import json

    rows = json.loads(res.output)
    expect = checkpoint_drift({k: v.astype(np.float32) for k, v in base.items()},
                              {k: v.astype(np.float32) for k, v in f_lpft.items()})
    assert [r["layer"] for r in rows] == ["l1", "l2"]
    for row, e in zip(rows, expect):
        assert row["linear_cka"] == pytest.approx(e.linear_cka, rel=1e-6)
        assert row["relative_l2"] == pytest.approx(e.relative_l2, rel=1e-6)
    with ResultsDB(db_path) as db:
        records = db.query(analysis="feature_drift")
    assert [r.layer for r in records] == ["l1", "l2"]
    html = render_feature_drift(records)
    assert html.count("<svg") == 2 and "head-kernel change" in html and "l2" in html
    # another architecture: wider l2
    c = _save(tmp_path / "other", {"l1": base["l1"], "l2": np.hstack([base["l2"]] * 2)})
    res = invoke(a, c)
    assert res.exit_code != 0
    assert "layer 'l2' holds (32,) per sample in FEATURES_A but (64,) in FEATURES_B" in res.output
    d = _save(tmp_path / "fewer", {"l2": base["l2"]})
    res = invoke(a, d)
    assert res.exit_code != 0 and "layers only in A: l1" in res.output


def test_record_round_trip_renders_under_its_section(tmp_path):
    from repscope.capability import section_for
    from repscope.db import ResultsDB
    from repscope.report import fmt, render_report

    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 5))
    res = feature_drift(A, A + 0.3 * rng.standard_normal(A.shape), layer="blk")
    records = res.to_records(model="m", dataset="d", params={"a": "pre", "b": "post"})
    assert [r.analysis for r in records] == ["feature_drift"] and records[0].layer == "blk"
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_many(records)
        html = render_report(db, tmp_path / "r.html").read_text()
    assert section_for("feature_drift") is not None
    assert 'id="sec-feature-drift"' in html and "could not be rendered" not in html
    for v in (res.linear_cka, res.relative_l2, res.cosine_mean):
        assert fmt(v, 3) in html
