"""Extractor diagnostics: the scattering baseline is non-expansive; per-layer Lipschitz ratio
and translation sensitivity of a zoo image model on a few real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._kernels.scattering import Scattering2D
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._diagnostics import ALL_LAYERS, extractor_diagnostics


@pytest.fixture(scope="module")
def digits(mnist):
    images, _ = mnist
    return images[:6]


def test_scattering_frame_bound_is_at_most_one():
    net = Scattering2D((28, 28), J=3, L=6)
    assert net.frame_bound <= 1.0 + 1e-12
    f = np.random.default_rng(0).standard_normal((2, 28, 28))
    energy = sum((layer**2).sum(axis=(1, 2, 3)) for layer in net.layers(f))
    assert np.all(energy <= (f**2).sum(axis=(1, 2)) + 1e-9)


def test_scattering_lipschitz_ratio_is_at_most_one(digits):
    res = extractor_diagnostics(Scattering2D((28, 28)), digits, shifts=(1, 2, 4))
    assert res.layers == ("scattering.0", "scattering.1", "scattering.2", ALL_LAYERS)
    assert max(res.lipschitz_max) <= 1.0 and max(res.local_lipschitz_max) <= 1.0
    noise = np.random.default_rng(1).standard_normal((6, 28, 28))
    assert extractor_diagnostics(Scattering2D((28, 28)), noise).lipschitz_max[-1] <= 1.0
    # and the translation sensitivity falls with depth (averaging after each modulus)
    sens = np.asarray(res.translation_sensitivity[:3])
    assert np.all(np.diff(sens, axis=0) < 0)
    assert np.all(np.diff(sens, axis=1) > 0)          # larger shifts move the output more


def test_lipschitz_ratio_exceeds_one_when_the_frame_bound_does(digits):
    net = Scattering2D((28, 28))
    psi, phi = net._bank
    object.__setattr__(net, "_bank", (4.0 * psi, 4.0 * phi))     # B = 16: not admissible
    assert extractor_diagnostics(net, digits, shifts=(1,)).lipschitz_max[-1] > 1.0


def test_efficientnet_lite0_layer_diagnostics_on_mnist(effnet, digits):
    layers = ["_blocks.0", "_blocks.8", "_blocks.15"]
    res = extractor_diagnostics(effnet, digits[:4], layers=layers, shifts=(1, 4))
    assert res.layers == (*layers, ALL_LAYERS) and res.model == "efficientnet-lite0"
    sens = np.asarray(res.translation_sensitivity)
    assert np.all(np.isfinite(sens)) and np.all(sens > 0)
    assert np.all(sens[:, 1] > sens[:, 0])
    # a trained CNN is not non-expansive, unlike the scattering baseline
    assert res.lipschitz_max[-1] > 1.0
    recs = res.to_records(model="efficientnet-lite0", dataset="mnist")
    assert [r.layer for r in recs] == [*layers, ALL_LAYERS]
    assert recs[1].values["translation_sensitivity"] == pytest.approx(list(sens[1]))
    assert {r.analysis for r in recs} == {"geometry_lipschitz"}


def test_extractor_diagnostics_bad_input(digits):
    net = Scattering2D((28, 28))
    with pytest.raises(RepscopeValueError, match="at least two images"):
        extractor_diagnostics(net, digits[:1])
    with pytest.raises(RepscopeValueError, match="duplicate inputs"):
        extractor_diagnostics(net, np.stack([digits[0], digits[0]]))
    with pytest.raises(RepscopeValueError, match="'epsilon' parameter"):
        extractor_diagnostics(net, digits, epsilon=0)
    with pytest.raises(RepscopeTypeError, match="Scattering2D, a zoo image model"):
        extractor_diagnostics("resnet", digits)
    with pytest.raises(RepscopeValueError, match="must have shape"):
        net.layers(np.zeros((2, 20, 20)))
    with pytest.raises(RepscopeValueError, match="'J' parameter"):
        Scattering2D((28, 28), J=0)


def test_lipschitz_cli_on_the_scattering_baseline(tmp_path):
    import json

    from click.testing import CliRunner

    from repscope.cli._common import Settings
    from repscope.cli.lipschitz import lipschitz

    res = CliRunner().invoke(lipschitz, ["scattering", "-n", "4", "--shifts", "1,3", "--json"],
                             obj=Settings(db_path=str(tmp_path / "r.db")))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["shifts"] == [1, 3] and max(out["lipschitz_max"]) <= 1.0
    assert out["layers"][-1] == ALL_LAYERS
