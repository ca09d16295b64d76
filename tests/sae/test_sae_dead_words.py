"""One definition per name for a "dead" SAE latent (issue 12, item 11).

"dead in training" (no firing in the trainer's last ``dead_after`` vectors), "never fired in
training" (no firing over all of training) and "not firing on the evaluation set" are recounted
here directly (every training step's firings, the held-out codes) and compared with the
record, the history's last point (what the curves draw), the report's table cells and the
density-histogram caption, on real EfficientNet-Lite0 features.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record
from repscope.report._sections import fmt
from repscope.sae import TopKConfig, TopKSAE, TrainSettings, fit
from repscope.sae._records import SAERunResult
from repscope.sae._report import render_sae
from repscope.sae.archs._base import firing_counts
from repscope.sae.metrics import evaluate

DEAD_AFTER = 4096  # vectors: a window short enough that latents die within the run
LAYER = "_blocks.15"  # the last MBConv block (320 features), as in the demo


class _Tables(HTMLParser):
    """Every table of a page as (headers, rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            headers, rows = self.tables[-1]
            if not headers:
                headers.extend(self._row)
            else:
                rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def trained(lite0_mnist):
    """A TopK SAE on Lite0's last block (800 training / 200 held-out images), with every
    training step's firing counts recorded as it trained."""
    X = lite0_mnist.X[LAYER]
    train, held = torch.from_numpy(X[:800]), torch.from_numpy(X[800:])
    d = X.shape[1]
    sae = TopKSAE(TopKConfig(d_in=d, d_sae=4 * d, k=8, seed=0, dead_after=DEAD_AFTER))
    steps: list[tuple[int, torch.Tensor]] = []
    forward = sae.forward_normalized

    def recording(xn, *args, **kwargs):
        out = forward(xn, *args, **kwargs)
        if sae.training:
            steps.append((int(xn.shape[0]), firing_counts(out).detach().clone()))
        return out

    sae.forward_normalized = recording  # type: ignore[method-assign]
    res = fit(train, sae, TrainSettings(n_steps=120, batch_size=128, lr=2e-3, seed=0,
                                        log_every=7, optimizer="adam"))
    sae.forward_normalized = forward  # type: ignore[method-assign]
    ev = evaluate(sae, held)
    run = SAERunResult(sae, ev, training=res)
    values = run.record_values()
    return sae, res, held, steps, values


def _recount_training(steps: list[tuple[int, torch.Tensor]], d_sae: int):
    fired = torch.zeros(d_sae, dtype=torch.int64)
    since = torch.zeros(d_sae, dtype=torch.int64)
    for n, counts in steps:
        fired += counts
        since += n
        since[counts > 0] = 0
    return float((since >= DEAD_AFTER).float().mean()), float((fired == 0).float().mean())


def test_record_history_and_counters_agree_with_a_direct_recount(trained):
    sae, res, held, steps, v = trained
    assert len(steps) == 120
    dead, never = _recount_training(steps, sae.d_sae)
    assert dead > 0.05 and never > 0  # the window is reached: the old curve was flat at 0
    assert v["dead_in_training"] == pytest.approx(dead, abs=1e-12)
    assert v["never_fired_in_training"] == pytest.approx(never, abs=1e-12)
    assert v["dead_after"] == DEAD_AFTER and v["n_seen"] == sum(n for n, _ in steps)
    # the curves end at the table's values: the last history row is the last step
    h = v["history"]
    assert h["step"][-1] == 120
    assert h["dead_in_training"][-1] == pytest.approx(dead, abs=1e-12)
    assert h["never_fired"][-1] == pytest.approx(never, abs=1e-12)
    assert res.dead_in_training() == v["dead_in_training"]
    assert res.never_fired() == v["never_fired_in_training"]
    # not firing on the evaluation set: the held-out codes, recounted
    with torch.no_grad():
        codes = sae.encode(held).dense()
    silent = int(((codes != 0).sum(0) == 0).sum())
    assert silent > 0
    assert v["dead_fraction"] == pytest.approx(silent / sae.d_sae, abs=1e-12)
    assert v["density_histogram"]["n_dead"] == silent
    assert "dead_fraction" not in h  # one name, one definition: the history has no such key


def test_report_table_curve_and_caption_show_the_same_counts(trained):
    sae, _, _, _, v = trained
    html = str(render_sae([Record("sae", v, model="lite0", dataset="mnist", layer="b15")]))
    parser = _Tables()
    parser.feed(html)
    headers, rows = parser.tables[0]
    (row,) = rows
    cells = dict(zip(headers, row))
    assert cells["not firing on the evaluation set"] == fmt(v["dead_fraction"], 3)
    assert cells["dead in training"] == fmt(v["dead_in_training"], 3)
    assert cells["never fired in training"] == fmt(v["never_fired_in_training"], 3)
    n_dead = v["density_histogram"]["n_dead"]
    assert (f"{n_dead} latents not firing on the evaluation set (a share of "
            f"{fmt(n_dead / sae.d_sae, 3)} of {sae.d_sae})") in html
    assert "Latents dead in training" in html and "Latents never fired in training" in html
    assert "never fired)" not in html and "dead latents" not in html.lower()
    assert f"{fmt(DEAD_AFTER)} training vectors" in html  # the window is named


def test_cli_train_names_the_columns_and_records_the_same_counters(lite0_mnist, tmp_path):
    layer = LAYER
    base = ["--db", str(tmp_path / "r.db"), "sae", "train", str(lite0_mnist.store), "--layer",
            layer, "--k", "8", "--expansion", "4", "--steps", "60", "--batch-size", "128",
            "--out", str(tmp_path / "sae")]
    res = CliRunner().invoke(cli, [*base, "--json"])
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)
    assert v["history"]["dead_in_training"][-1] == v["dead_in_training"]
    assert v["history"]["never_fired"][-1] == v["never_fired_in_training"]
    assert v["density_histogram"]["n_dead"] == round(v["dead_fraction"] * v["d_sae"])
    assert "dead_fraction_train" not in v
    res = CliRunner().invoke(cli, [*base[:-1], str(tmp_path / "sae2")])
    assert res.exit_code == 0, res.output
    table = re.sub(r"\s+", " ", res.stdout)
    assert "dead fraction" not in table
    for words in ("not firing on the", "evaluation set", "dead in training"):
        assert words in table, words
    ev = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "sae", "eval",
                                  str(tmp_path / "sae"), str(lite0_mnist.store), "--layer", layer])
    assert ev.exit_code == 0, ev.output
    assert "not firing on the evaluation set" in ev.stdout and "dead fraction" not in ev.stdout
    assert np.isfinite(v["fvu"])
