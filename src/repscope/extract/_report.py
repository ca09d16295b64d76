"""Section ``extraction``: what was extracted, from which model, how fast, and where to."""

from __future__ import annotations

from collections.abc import Sequence

from repscope.db._records import RecordLike
from repscope.report._sections import Html, esc, html_table


def _layers_cell(layers: object) -> Html:
    names = [str(x) for x in layers] if isinstance(layers, (list, tuple)) else []
    if not names:
        return Html(esc(str(layers)) if layers not in (None, "") else "—")
    items = "".join(f"<li><code>{esc(n)}</code></li>" for n in names)
    return Html(f"<details><summary>{len(names)} layers</summary><ul class=\"layers\">"
                f"{items}</ul></details>")


def render_extraction(records: Sequence[RecordLike]) -> str:
    """A table: model, data set, samples, layers, seconds, store."""
    rows = []
    for r in records:
        v = r.values
        secs = v.get("seconds")
        rows.append([
            r.model or "—", r.dataset or "—", v.get("n_samples"), _layers_cell(v.get("layers")),
            float(secs) if isinstance(secs, (int, float)) else secs,
            Html(f"<code>{esc(v.get('store', '—'))}</code>"),
        ])
    return html_table(["model", "dataset", "samples", "layers", "seconds", "store"], rows,
                      digits=3)
