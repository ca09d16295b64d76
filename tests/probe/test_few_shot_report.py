"""The few-shot section shows test ECE and NLL per shot count beside accuracy (records carry
them since few_shot reports calibration); older records without them show a dash."""

from __future__ import annotations

import re

import numpy as np
import pytest

from repscope.db._records import Record
from repscope.probe import few_shot
from repscope.probe._kinds import make_probe
from repscope.probe._report import render_probe_few_shot


def test_few_shot_section_tabulates_ece_and_nll():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    X = rng.standard_normal((180, 5)) + 2.0 * y[:, None]
    res = few_shot(make_probe("lda", seed=0, small=True), X, y, shots=(2, 8), n_tries=3)
    recs = res.to_records(model="m", dataset="d", layer="l", run_id="r1")
    html = render_probe_few_shot(recs)
    v = recs[0].values
    assert np.isfinite(v["ece"]).all() and np.isfinite(v["nll"]).all()
    table = html[html.index('<th scope="col">ECE</th>'):]
    cells = [float(c) for c in re.findall(r'<td class="num">([-0-9.e]+)</td>', table)]
    # rows: shots, accuracy, ECE, NLL (3 significant digits)
    assert cells[2::4] == pytest.approx(v["ece"], rel=5e-3)
    assert cells[3::4] == pytest.approx(v["nll"], rel=5e-3)
    assert '<th scope="col">ECE</th>' in html and '<th scope="col">NLL</th>' in html
    # accuracy intervals stay inside [0, 1] (a t interval of 3 tries reached 1.16)
    assert all(0.0 <= lo <= hi <= 1.0 for lo, hi in zip(v["ci_low"], v["ci_high"]))

    old = dict(v)
    old.pop("ece")
    old.pop("nll")
    legacy = Record(analysis="probe_few_shot", model="m", dataset="d", layer="l", run_id="r0",
                    values=old)
    html = render_probe_few_shot([legacy])
    assert "NaN" not in html and "—" in html
