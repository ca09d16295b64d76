"""`make demo` fetches the Austen novels (no root needed) before the demo runs, so the text step
runs on real text on a fresh machine instead of silently falling back to templates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_fetches_the_austen_novels_first():
    text = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*?(?=^\S|\Z)", text, re.S | re.M).group(0)
    lines = [ln.strip() for ln in demo.splitlines()[1:] if ln.strip()]
    assert "fetch_system_data.sh --austen" in lines[0]
    assert "repscope demo" in lines[-1]


def test_austen_fetch_is_quiet_when_present(tmp_path):
    """With the novels present, the --austen step prints nothing and exits 0."""
    data = tmp_path / "data"
    rdb = data / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    rdb.parent.mkdir(parents=True)
    rdb.write_bytes(b"x")
    out = subprocess.run(["bash", str(ROOT / "scripts/fetch_system_data.sh"), "--austen"],
                         env={"REPSCOPE_DATA": str(data), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""
