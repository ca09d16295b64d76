"""TrainSettings: validated once, frozen; the deprecated keyword arguments of fit/sweep warn and
train exactly what the settings form trains; settings and keywords together are an error."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.sae import ReLUConfig, TopKConfig, TopKSAE, TrainResult, TrainSettings, fit, sweep


def _data(n: int = 1200, d: int = 16) -> np.ndarray:
    g = np.random.default_rng(0)
    return (g.standard_normal((n, d)) ** 3 + 1).astype(np.float32)


def _sae(seed: int = 0) -> TopKSAE:
    return TopKSAE(TopKConfig(d_in=16, d_sae=48, k=3, seed=seed))


def _assert_identical(a: TrainResult, b: TrainResult) -> None:
    sa, sb = a.sae.state_dict(), b.sae.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    drop = {"seconds"}
    assert {k: v for k, v in a.history.items() if k not in drop} == {
        k: v for k, v in b.history.items() if k not in drop
    }
    assert a.n_steps == b.n_steps


KWARGS = {
    "n_steps": 24,
    "batch_size": 100,
    "optimizer": "adam",  # the lr and the weight decay are Adam's
    "lr": 2e-3,
    "betas": (0.8, 0.99),
    "weight_decay": 1e-4,
    "lr_schedule": "cosine",
    "warmup_steps": 4,
    "max_grad_norm": 1.0,
    "shuffle_buffer": 500,
    "seed": 3,
    "init_samples": 600,
    "log_every": 5,
    "check_every": 7,
}


def test_fit_keyword_arguments_warn_and_train_the_same_weights() -> None:
    X = _data()
    new = fit(X, _sae(), TrainSettings(**KWARGS))
    with pytest.warns(DeprecationWarning, match=r"pass settings=TrainSettings\(\.\.\.\)") as rec:
        old = fit(X, _sae(), **KWARGS)
    assert len(rec) == 1
    assert rec[0].filename == __file__  # stacklevel: the warning points at the caller's line
    assert "n_steps, batch_size, optimizer, lr" in str(rec[0].message)
    _assert_identical(old, new)


def test_sweep_keyword_arguments_warn_and_train_the_same_weights() -> None:
    X = _data()
    configs = [TopKConfig(d_in=16, d_sae=48, k=3, seed=1), ReLUConfig(d_in=16, d_sae=32)]
    kw = {**KWARGS, "lr": [1e-3, 3e-3], "n_steps": None, "n_epochs": 2.0}
    new = sweep(X, configs, TrainSettings(**kw))
    with pytest.warns(DeprecationWarning, match="sweep") as rec:
        old = sweep(X, configs, **kw)
    assert rec[0].filename == __file__
    for a, b in zip(old, new):
        _assert_identical(a, b)


def test_settings_form_does_not_warn_and_defaults_match_no_settings() -> None:
    X = _data(n=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        a = fit(X, _sae(), TrainSettings(), callback=None, device="cpu")
        b = fit(X, _sae())
    _assert_identical(a, b)


def test_settings_and_keywords_together_are_an_error() -> None:
    X = _data(n=300)
    with pytest.raises(RepscopeTypeError, match=r"fit\(\) got both 'settings' and .* n_steps"):
        fit(X, _sae(), TrainSettings(n_steps=2), n_steps=3)
    with pytest.raises(RepscopeTypeError, match=r"sweep\(\) got both 'settings'"):
        sweep(X, [_sae()], TrainSettings(), batch_size=8)


def test_unknown_keyword_and_wrong_settings_type_are_named() -> None:
    X = _data(n=300)
    with pytest.raises(TypeError, match=r"fit\(\) got an unexpected keyword argument 'n_step'"):
        fit(X, _sae(), n_step=3)
    with pytest.raises(RepscopeTypeError, match="'settings' parameter of sweep must be a Train"):
        sweep(X, [_sae()], {"n_steps": 3})  # type: ignore[arg-type]


def test_deprecated_keywords_are_validated_like_settings() -> None:
    X = _data(n=300)
    with (
        pytest.warns(DeprecationWarning, match="batch_size"),
        pytest.raises(RepscopeValueError, match="'batch_size' parameter of TrainSettings"),
    ):
        fit(X, _sae(), batch_size=0)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("n_steps", 0, RepscopeValueError, r"'n_steps' parameter of TrainSettings must be in"),
        ("n_steps", 2.5, RepscopeTypeError, r"'n_steps' parameter of TrainSettings must be of"),
        ("n_epochs", 0, RepscopeValueError, r"'n_epochs' .* in the range \(0, inf\)"),
        ("n_epochs", float("nan"), RepscopeValueError, r"'n_epochs' parameter"),
        ("batch_size", 0, RepscopeValueError, r"'batch_size' .* in the range \[1, inf\)"),
        ("batch_size", True, RepscopeTypeError, r"'batch_size' .* of type int"),
        ("lr", 0.0, RepscopeValueError, r"'lr' parameter of TrainSettings must be in"),
        ("lr", -1e-3, RepscopeValueError, r"'lr' parameter"),
        ("lr", "1e-3", RepscopeTypeError, r"'lr' .* a float, a sequence of floats"),
        ("lr", [], RepscopeValueError, r"'lr' .* Got an empty list"),
        ("lr", [1e-3, "x"], RepscopeTypeError, r"'lr' .* must hold floats. Got 'x'"),
        ("lr", (1e-3, 0.0), RepscopeValueError, r"'lr' parameter"),
        ("betas", (0.9,), RepscopeTypeError, r"'betas' .* a pair of floats"),
        ("betas", (0.9, 1.0), RepscopeValueError, r"'betas' .* in the range \[0, 1\)"),
        ("weight_decay", -0.1, RepscopeValueError, r"'weight_decay' .* \[0, inf\)"),
        ("lr_schedule", "cosin", RepscopeValueError, r"'lr_schedule' .* Did you mean 'cosine'"),
        ("warmup_steps", -1, RepscopeValueError, r"'warmup_steps' .* \[0, inf\)"),
        ("max_grad_norm", 0.0, RepscopeValueError, r"'max_grad_norm' .* \(0, inf\)"),
        ("shuffle", "yes", RepscopeTypeError, r"'shuffle' parameter of TrainSettings must be a b"),
        ("shuffle_buffer", -1, RepscopeValueError, r"'shuffle_buffer' .* \[0, inf\)"),
        ("seed", -1, RepscopeValueError, r"'seed' .* \[0, inf\)"),
        ("init_samples", 0, RepscopeValueError, r"'init_samples' .* \[1, inf\)"),
        ("log_every", 0, RepscopeValueError, r"'log_every' parameter"),
        ("check_every", 1.0, RepscopeTypeError, r"'check_every' .* of type int"),
        ("checkpoint_dir", 3, RepscopeTypeError, r"'checkpoint_dir' .* a path"),
        ("progress", None, RepscopeTypeError, r"'progress' parameter of TrainSettings must be"),
    ],
)
def test_bad_settings_are_named(field: str, value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TrainSettings(**{field: value})  # type: ignore[arg-type]


def test_settings_are_normalised_frozen_and_serialisable(tmp_path: Path) -> None:
    s = TrainSettings(
        n_steps=np.int64(5),
        n_epochs=2,
        lr=np.array([1e-3, 2e-3]),
        betas=[0.8, 0.9],
        checkpoint_dir=tmp_path,
        shuffle=np.bool_(False),
    )
    assert s.n_steps == 5 and type(s.n_steps) is int
    assert s.n_epochs == 2.0 and type(s.n_epochs) is float
    assert s.lr == (1e-3, 2e-3) and s.betas == (0.8, 0.9)
    assert s.shuffle is False
    assert hash(s) == hash(dataclasses.replace(s))  # frozen and hashable: shareable
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 8  # type: ignore[misc]
    d = json.loads(json.dumps(s.to_dict()))
    assert d["lr"] == [1e-3, 2e-3] and d["checkpoint_dir"] == str(tmp_path)
    back = TrainSettings(**{**d, "lr": tuple(d["lr"]), "betas": tuple(d["betas"])})
    assert back == dataclasses.replace(s, checkpoint_dir=str(tmp_path))
    assert TrainSettings(lr=1).lr == 1.0 and TrainSettings(lr=np.float32(0.5)).lr == 0.5
