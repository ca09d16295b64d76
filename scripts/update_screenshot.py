"""Regenerate the README's screenshot from the full demo, with a sidecar that says what it shows.

    .venv/bin/python scripts/update_screenshot.py [DEMO_OUT]

DEMO_OUT is a finished ``repscope demo --out DEMO_OUT`` folder (default: run the full demo into
a temporary folder first, about two to four minutes). Writes ``docs/report-screenshot.png``
(the top of the report in headless Chromium, 1280 px wide) and ``docs/report-screenshot.json``
(the report's section titles and the repscope version). ``tests/cli/test_demo.py`` compares the
sidecar with the sections of a freshly rendered demo report, so a stale screenshot fails CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "docs" / "report-screenshot.png"
SIDECAR = ROOT / "docs" / "report-screenshot.json"
CHROMIUM = os.environ.get("REPSCOPE_CHROMIUM", "/usr/bin/chromium")


def section_titles(html: str) -> list[str]:
    """The ``<h2>`` titles of the report's sections, in order."""
    return [unescape(t) for t in re.findall(r'<section id="[^"]+"><h2>(.*?)</h2>', html)]


def main(argv: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    from repscope import __version__

    if argv:
        out = Path(argv[0])
    else:
        out = Path(tempfile.mkdtemp(prefix="repscope-demo-"))
        subprocess.run([sys.executable, "-m", "repscope", "--db", str(out / "results.db"), "demo",
                        "--out", str(out), "--no-progress"], check=True)
    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 2400})
        page.goto(report.resolve().as_uri())
        PNG.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(PNG))
        browser.close()
    SIDECAR.write_text(json.dumps({"version": __version__, "sections": section_titles(html)},
                                  indent=2) + "\n")
    print(f"wrote {PNG} and {SIDECAR}")


if __name__ == "__main__":
    main(sys.argv[1:])
