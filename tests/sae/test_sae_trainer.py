"""The SAE trainer: every data source trains the same SAE, sweeps equal separate fits, DDP
equals one process, defaults keep latents alive on un-centred data, NaN stops cleanly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from repscope._testing import run_distributed
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.sae import SAETrainingError, TopKConfig, TopKSAE, TrainSettings, fit, sweep
from repscope.sae.training._data import _shuffle_buffer
from repscope.store import FeatureStore


def _data(n: int = 4096, d: int = 16, m: int = 48, k: int = 3, seed: int = 0, offset: float = 0.0):
    g = np.random.default_rng(seed)
    D = g.standard_normal((m, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    S = np.zeros((n, m), np.float32)
    for i in range(n):
        j = g.choice(m, k, replace=False)
        S[i, j] = g.uniform(0.5, 2.0, k)
    X = (S @ D + offset + 0.01 * g.standard_normal((n, d))).astype(np.float32)
    return X, D


def _sae(seed: int = 0, **kw) -> TopKSAE:
    cfg = {"d_in": 16, "d_sae": 64, "k": 3, "seed": seed, **kw}
    return TopKSAE(TopKConfig(**cfg))


def _weights(sae: TopKSAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if tol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol)


def test_every_source_trains_the_same_sae(tmp_path: Path) -> None:
    X, _ = _data(n=2000)
    st = TrainSettings(n_steps=25, batch_size=128, shuffle=False, init_samples=4096)
    ref = _weights(fit(torch.from_numpy(X), _sae(), st).sae)

    _assert_same(ref, _weights(fit(X, _sae(), st).sae))
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    _assert_same(ref, _weights(fit(mm, _sae(), st).sae))
    batches = [X[a : a + 300] for a in range(0, 2000, 300)]
    _assert_same(ref, _weights(fit(batches, _sae(), st).sae))  # a list restarts per epoch
    with pytest.warns(RuntimeWarning, match="ran out after 16 steps"):
        fit(iter(batches), _sae(), st)
    # tokens: a (n, t, d) tensor is flattened
    _assert_same(ref, _weights(fit(torch.from_numpy(X).reshape(500, 4, 16), _sae(), st).sae))
    # a FeatureStore layer, dense and ragged (token rows in order)
    store = FeatureStore.create(tmp_path / "store", model_id="synthetic")
    store.append({"dense": X[:1200]})
    store.append({"dense": X[1200:]})
    _assert_same(ref, _weights(fit((store, "dense"), _sae(), st).sae))
    from repscope.store import RaggedArray

    rs = FeatureStore.create(tmp_path / "ragged", model_id="synthetic")
    lengths = np.full(500, 4)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rs.append({"tokens": RaggedArray(X, offsets)})
    _assert_same(ref, _weights(fit((rs, "tokens"), _sae(), st).sae))


def test_training_learns_the_dictionary_and_is_deterministic() -> None:
    X, D = _data(n=8192, offset=3.0)
    st = TrainSettings(n_epochs=8, batch_size=128, lr=5e-3, optimizer="adam")
    a = fit(X, _sae(seed=1), st)
    b = fit(X, _sae(seed=1), st)
    _assert_same(_weights(a.sae), _weights(b.sae))
    h = a.history
    assert h["fvu"][-1] < 0.2 < h["fvu"][0]
    assert h["l0"][-1] <= 3.0 + 1e-9
    assert set(h) >= {"step", "n_seen", "loss", "mse", "fvu", "l0", "dead_in_training", "never_fired",
                      "lr"}
    W = a.sae.folded_state_dict()["W_dec"].numpy()
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    recovered = (np.abs(D @ W.T).max(1) > 0.9).mean()
    assert recovered > 0.8, recovered


def test_sweep_equals_separate_fits() -> None:
    X, _ = _data(n=3000)
    configs = [_sae(seed=0, k=2), _sae(seed=5, k=4, d_sae=32)]
    st = TrainSettings(n_steps=30, batch_size=100, seed=3)
    swept = sweep(X, configs, replace(st, lr=(1e-3, 2e-3)))
    alone = [
        fit(X, _sae(seed=0, k=2), replace(st, lr=1e-3)),
        fit(X, _sae(seed=5, k=4, d_sae=32), replace(st, lr=2e-3)),
    ]
    for s, a in zip(swept, alone):
        _assert_same(_weights(s.sae), _weights(a.sae))
        assert s.history["loss"] == a.history["loss"]


def test_defaults_keep_latents_alive_on_uncentred_embeddings() -> None:
    # embeddings far from the origin: a zero decoder bias and no AuxK leaves most latents dead
    X, _ = _data(n=8192, offset=8.0, m=64)
    st = TrainSettings(n_epochs=4, batch_size=256, lr=2e-3, optimizer="adam")
    good = fit(X, _sae(d_sae=128, dead_after=2048), st)
    naive = fit(
        X,
        _sae(
            d_sae=128,
            b_dec_init="zeros",
            normalize_activations="none",
            aux_coefficient=0.0,
            tied_init=False,
        ),
        st,
    )
    dead_good = float((good.state.fire_count == 0).float().mean())
    dead_naive = float((naive.state.fire_count == 0).float().mean())
    assert dead_good < 0.1 < 0.5 < dead_naive, (dead_good, dead_naive)
    assert good.history["fvu"][-1] < naive.history["fvu"][-1]


def test_nan_mid_training_stops_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    X, _ = _data(n=4000)

    def stream():
        for i, a in enumerate(range(0, 4000, 100)):
            b = X[a : a + 100].copy()
            if i == 25:
                b[3, 5] = np.nan
            yield b

    with pytest.raises(SAETrainingError, match=r"NaN/inf input values.*restored to step 20") as e:
        fit(
            stream(),
            _sae(),
            TrainSettings(
                batch_size=100,
                check_every=10,
                shuffle=False,
                init_samples=1000,
                checkpoint_dir=tmp_path / "ck",
            ),
        )
    res = e.value.result
    assert res is not None and res.n_steps == 20
    assert all(torch.isfinite(p).all() for p in res.sae.parameters())
    # the same SAE trained for exactly 20 steps on the same batches
    ref = fit(
        iter([X[a : a + 100] for a in range(0, 2000, 100)]),
        _sae(),
        TrainSettings(batch_size=100, shuffle=False, init_samples=1000),
    )
    _assert_same(_weights(ref.sae), _weights(res.sae))
    assert (tmp_path / "ck" / "sae_0" / "cfg.json").exists()


def test_bad_arguments_are_named() -> None:
    X, _ = _data(n=300)
    with pytest.raises(RepscopeValueError, match=r"d_in is 8"):
        fit(X, TopKSAE(TopKConfig(d_in=8, d_sae=16, k=2)), TrainSettings(n_steps=2))
    with pytest.raises(RepscopeTypeError, match="'X' parameter must be"):
        fit(3.0, _sae(), TrainSettings(n_steps=2))
    with pytest.raises(RepscopeValueError, match="NaN or inf"):
        fit(np.full((100, 16), np.nan, np.float32), _sae(), TrainSettings(n_steps=2))
    with pytest.raises(RepscopeValueError, match="n_steps, or n_epochs=1"):
        fit(iter([X]), _sae(), TrainSettings(n_epochs=2))
    with pytest.raises(RepscopeValueError, match=r"'lr' parameter of sweep .* one per SAE \(2\)"):
        sweep(X, [_sae(), _sae()], TrainSettings(lr=(1e-3, 2e-3, 3e-3)))


def test_cosine_schedule_and_shuffle_buffer_keep_every_row() -> None:
    X, _ = _data(n=1000)
    st = TrainSettings(
        n_steps=40, batch_size=100, lr_schedule="cosine", warmup_steps=5, log_every=1
    )
    res = fit(X, _sae(), st)
    lrs = res.history["lr"]
    assert lrs[0] == pytest.approx(res.history["lr"][4] / 5)
    assert lrs[-1] < 0.01 * max(lrs)
    rows = torch.arange(5000, dtype=torch.float32)[:, None]
    chunks = iter(rows.split(700))
    out = torch.cat(list(_shuffle_buffer(chunks, 1024, torch.Generator().manual_seed(0))))
    assert torch.equal(out.sort(0).values, rows)
    assert not torch.equal(out, rows)


def _ddp_worker(rank: int, world: int):
    g = np.random.default_rng(0)
    X = (g.standard_normal((3000, 16)) ** 3 + 2).astype(np.float32)
    sae = TopKSAE(TopKConfig(d_in=16, d_sae=256, k=2, dead_after=300))
    st = TrainSettings(n_steps=40, batch_size=128 // world, lr=3e-3, check_every=5, seed=2,
                       optimizer="adam")
    res = fit(X, sae, st)
    if rank != 0:
        return None
    state = {k: v.contiguous() for k, v in res.sae.state_dict().items() if v.numel()}
    state["fire_count"] = res.state.fire_count
    state["auxk"] = torch.tensor(res.history["auxk"])
    return state


def test_two_process_ddp_equals_one_process() -> None:
    a = run_distributed(_ddp_worker, world_size=2, timeout=240)[0]
    b = run_distributed(_ddp_worker, world_size=1, timeout=240)[0]
    assert a["auxk"].numel() > 0 and float(a["auxk"].abs().sum()) > 0  # AuxK was active
    assert torch.equal(a["fire_count"], b["fire_count"])
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=2e-4, atol=2e-5)
