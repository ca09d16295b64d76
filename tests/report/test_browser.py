"""The report opened in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The README's screenshot is made from the full demo by ``scripts/update_screenshot.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from repscope._testing import skip_or_fail
from repscope.report import render_report

CHROMIUM = os.environ.get("REPSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = "<script>alert(1)</script>"
TITLES = ["Feature extraction", "Probe accuracy by layer", "Layer-to-layer similarity",
          "PCA spectrum and effective rank", "mystery_metric"]


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True,
                              timeout=60_000)
        try:
            yield b
        finally:
            b.close()


class _Page:
    """A page that records console errors, page errors, dialogs and network requests."""

    def __init__(self, browser, *, javascript: bool = True) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900},
                                           java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

        def on_route(route):
            url = route.request.url
            if url.startswith(("file:", "data:", "about:")):
                route.continue_()
            else:
                self.requests.append(url)
                route.abort()

        self.page.route("**/*", on_route)

    def open(self, path: Path) -> None:
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def close(self) -> None:
        self.context.close()


def test_report_renders_in_chromium(browser, tmp_path, fill_db):
    db = tmp_path / "results.db"
    fill_db(db)
    html = render_report(db, tmp_path / "report.html", title="repscope demo report")
    p = _Page(browser)
    try:
        p.open(html)
        page = p.page
        assert page.title() == "repscope demo report"
        h2 = [t.strip() for t in page.locator("section > h2").all_inner_texts()]
        assert h2 == TITLES
        svgs = page.locator("section svg[role=img]")
        assert svgs.count() >= 4
        for i in range(svgs.count()):
            box = svgs.nth(i).bounding_box()
            assert box is not None
            assert box["width"] > 200
            assert box["height"] > 100
        toc = page.locator("nav.toc a").evaluate_all("els => els.map(e => e.hash)")
        assert toc == [f"#{i}" for i in page.locator("section").evaluate_all(
            "els => els.map(e => e.id)")]
        assert page.evaluate("document.scripts.length") == 0
        assert p.errors == []
        assert p.dialogs == []
        assert p.requests == []
    finally:
        p.close()


def test_hostile_labels_render_as_text_in_chromium(browser, tmp_path, fill_db):
    db = tmp_path / "results.db"
    fill_db(db, hostile=True)
    html = render_report(db, tmp_path / "hostile.html")
    p = _Page(browser)
    try:
        p.open(html)
        page = p.page
        page.wait_for_timeout(200)  # time for anything that would fire to fire
        text = page.evaluate("document.body.textContent")
        assert HOSTILE in text
        cell = page.locator("td", has_text=HOSTILE).first
        assert cell.inner_text().strip().startswith("<script>")
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert p.dialogs == [], p.dialogs
        assert p.errors == []
        assert p.requests == []
    finally:
        p.close()


def test_report_is_readable_with_javascript_off(browser, tmp_path, fill_db):
    db = tmp_path / "results.db"
    fill_db(db)
    html = render_report(db, tmp_path / "report.html")
    p = _Page(browser, javascript=False)
    try:
        p.open(html)
        page = p.page
        for title in TITLES:
            assert page.get_by_role("heading", name=title, exact=True).is_visible()
        assert page.locator("svg[role=img]").first.is_visible()
        page.locator("details summary").first.click()  # <details> opens without scripts
        assert page.locator("details[open]").count() >= 1
        assert p.errors == []
        assert p.requests == []
    finally:
        p.close()
