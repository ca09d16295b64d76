"""Report section ``sae``: sparse autoencoders trained or evaluated on a layer.

Per group of records with the same model, data set and layer: a summary table (architecture,
width, k, FVU, L0, the three dead-latent counts, shrinkage, LM loss recovered), training curves
(FVU, "dead in training" and "never fired in training" against the step), the L0–FVU frontier over the group's SAEs, the firing-density
histogram, and the inputs that activate a few latents most (text snippets or image
thumbnails). Renders stored records only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import Html, esc, figure, fmt, html_table
from repscope.report._svg import bar_chart, line_chart
from repscope.sae._words import DEAD_WORDS as _WORDS

__all__ = ["render_sae"]

_SNIPPET = 110
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")

_CSS = (
    "<style>"
    ".sae-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));"
    "gap:.7rem;margin:.8rem 0}"
    ".sae-card{border:1px solid var(--line);border-radius:8px;padding:.5rem .6rem;"
    "background:var(--panel);font-size:.84rem}"
    ".sae-card .title{margin:0 0 .2rem;font-size:.9rem;font-weight:600}"
    ".sae-card .meta{color:var(--muted);font-size:.78rem;margin-bottom:.35rem}"
    ".sae-card ol{margin:0;padding-left:1.1rem}.sae-card li{margin:.15rem 0}"
    ".sae-card .act{font-variant-numeric:tabular-nums;color:var(--accent);font-weight:600}"
    ".sae-card .ctx mark{background:var(--accent);color:var(--panel);padding:0 .15em;"
    "border-radius:3px}"
    ".sae-thumbs{display:flex;flex-wrap:wrap;gap:.3rem}"
    ".sae-thumbs figure{margin:0;text-align:center;font-size:.72rem;color:var(--muted)}"
    ".sae-thumbs img{display:block;width:48px;height:48px;image-rendering:pixelated;"
    "border:1px solid var(--line);background:#fff}"
    "</style>"
)



def _label(v: Mapping[str, Any]) -> str:
    arch = str(v.get("architecture") or "sae")
    parts = [arch]
    if v.get("k") is not None:
        parts.append(f"k={v.get('k')}")
    if v.get("d_sae") is not None:
        parts.append(f"width {v.get('d_sae')}")
    return " ".join(parts)


def _labels(records: Sequence[RecordLike]) -> list[str]:
    """One distinct label per record (``#2``, ``#3`` appended to repeats)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for r in records:
        base = _label(r.values)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
    return out


def _loss_recovered(v: Mapping[str, Any]) -> float | None:
    """The fraction of LM loss recovered, or None (shown as a dash) when not measured."""
    lr = v.get("loss_recovered")
    if isinstance(lr, Mapping):
        return as_float(lr.get("fraction_recovered"))
    return None


def _evaluated_on(v: Mapping[str, Any]) -> str:
    n = v.get("n_eval")
    where = str(v.get("eval_on") or "")
    if n is None:
        return where or "—"
    return f"{fmt(n)} vectors" + (f" ({where})" if where else "")


def _summary(records: Sequence[RecordLike], labels: list[str]) -> str:
    with_loss = any(isinstance(r.values.get("loss_recovered"), Mapping) for r in records)
    headers = [
        "SAE",
        "architecture",
        "width",
        "k",
        "FVU",
        "L0",
        _WORDS["dead_fraction"],
        _WORDS["dead_in_training"],
        _WORDS["never_fired_in_training"],
        "shrinkage",
        "evaluated on",
    ]
    if with_loss:
        headers.append("LM loss recovered")
    rows = []
    for r, lab in zip(records, labels):
        v = r.values
        row: list[Any] = [
            lab,
            str(v.get("architecture", "")),
            v.get("d_sae"),
            v.get("k"),
            as_float(v.get("fvu")),
            as_float(v.get("l0")),
            as_float(v.get("dead_fraction")),
            as_float(v.get("dead_in_training")),
            as_float(_never_fired(v)),
            as_float(v.get("shrinkage")),
            _evaluated_on(v),
        ]
        if with_loss:
            row.append(_loss_recovered(v))
        rows.append(row)
    windows = sorted({int(w) for w in (r.values.get("dead_after") for r in records)
                      if isinstance(w, (int, float)) and not isinstance(w, bool)})
    window = (f"{fmt(windows[0])} training vectors" if len(windows) == 1
              else "a window of training vectors (the SAE's dead_after)")
    caption = (
        "Reconstruction (FVU: fraction of variance unexplained) and sparsity (L0: active "
        f"latents per input). Shares of the latents: '{_WORDS['dead_fraction']}' fire on none "
        f"of the evaluated inputs; '{_WORDS['dead_in_training']}' fired in none of the last "
        f"{window} at the end of training; '{_WORDS['never_fired_in_training']}' fired on no "
        "training vector at all"
    )
    out = html_table(headers, rows, caption=caption, digits=3)
    losses = [
        (lab, r.values["loss_recovered"])
        for r, lab in zip(records, labels)
        if isinstance(r.values.get("loss_recovered"), Mapping)
    ]
    if losses:
        out += html_table(
            ["SAE", "clean loss", "SAE spliced in", "zero-ablated", "fraction recovered"],
            [
                [
                    lab,
                    as_float(d.get("clean")),
                    as_float(d.get("spliced")),
                    as_float(d.get("zero_ablated")),
                    as_float(d.get("fraction_recovered")),
                ]
                for lab, d in losses
            ],
            caption="Next-token loss (nats per token) with the layer's output replaced",
            digits=4,
        )
    inter = [
        (lab, r.values["interactions"])
        for r, lab in zip(records, labels)
        if isinstance(r.values.get("interactions"), Mapping)
    ]
    if inter:
        out += html_table(
            ["SAE", "interaction strength vs co-occurrence (r)",
             "latent covariance vs co-occurrence (r)", "latent pairs from"],
            [[lab, as_float(d.get("r_interaction")), as_float(d.get("r_covariance")),
              f"{d.get('n_latents')} most active latents"] for lab, d in inter],
            caption="PolySAE: does the decoder's pairwise interaction strength follow how often "
            "two latents fire together (PolySAE's claim), beside the plain covariance of the "
            "latents as the baseline",
            digits=3,
        )
    return out


def _history(v: Mapping[str, Any], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    h = v.get("history")
    if not isinstance(h, Mapping) or key not in h or "step" not in h:
        return None
    x = np.asarray(h["step"], dtype=float).ravel()
    y = np.asarray(h[key], dtype=float).ravel()
    m = min(x.size, y.size)
    return (x[:m], y[:m]) if m else None


def _never_fired(v: Mapping[str, Any]) -> Any:
    """"Never fired in training" (``dead_fraction_train`` in records before it was renamed)."""
    return v.get("never_fired_in_training", v.get("dead_fraction_train"))


def _dead_window_note(records: Sequence[RecordLike]) -> str:
    """Why the "dead in training" curve of a short run stays at 0, when it does."""
    short = [
        r for r in records
        if isinstance(r.values.get("n_seen"), (int, float))
        and isinstance(r.values.get("dead_after"), (int, float))
        and r.values["n_seen"] < r.values["dead_after"]
    ]
    if not short:
        return ""
    v = short[0].values
    return (
        f"; training saw {fmt(v['n_seen'])} vectors, fewer than the {fmt(v['dead_after'])} of "
        "the window, so no latent could be dead in training yet"
    )


def _curves(records: Sequence[RecordLike], labels: list[str]) -> str:
    out = []
    for keys, title, y_label, caption in (
        (("fvu",), "Training FVU", "FVU (training batches)", ""),
        (
            ("dead_in_training", "dead_fraction"),  # the second: records before the rename
            "Latents " + _WORDS["dead_in_training"],
            "share of latents",
            ": no firing in the last dead_after training vectors (the table's "
            f"'{_WORDS['dead_in_training']}' is the last point)" + _dead_window_note(records),
        ),
        (
            ("never_fired",),
            "Latents " + _WORDS["never_fired_in_training"] + " so far",
            "share of latents",
            f" (the table's '{_WORDS['never_fired_in_training']}' is the last point)",
        ),
    ):
        series = {}
        for r, lab in zip(records, labels):
            key = next((k for k in keys if _history(r.values, k) is not None), None)
            xy = None if key is None else _history(r.values, key)
            if xy is not None:
                series[lab] = xy
        if series:
            y_range = None if keys[0] == "fvu" else (0.0, 1.0)
            out.append(
                figure(
                    line_chart(
                        series,
                        title=title,
                        x_label="optimiser step",
                        y_label=y_label,
                        y_range=y_range,
                        height=300,
                    ),
                    f"{title} against the step, one line per SAE{caption}",
                )
            )
    return "".join(out)


def _frontier(records: Sequence[RecordLike]) -> str:
    many_runs = len({r.run_id for r in records}) > 1
    pts: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        l0, fvu = as_float(r.values.get("l0")), as_float(r.values.get("fvu"))
        if math.isfinite(l0) and math.isfinite(fvu) and l0 > 0:
            name = str(r.values.get("architecture") or "sae")
            if many_runs:
                name += f" (run {r.run_id or '—'})"
            pts.setdefault(name, []).append((l0, fvu))
    if sum(len(p) for p in pts.values()) < 2:
        return ""
    series = {}
    for arch, p in pts.items():
        p.sort()
        series[arch] = ([a for a, _ in p], [b for _, b in p])
    l0s = [a for p in pts.values() for a, _ in p]
    svg = line_chart(
        series,
        title="Sparsity–reconstruction frontier",
        x_label="L0 (active latents per input)",
        y_label="held-out FVU",
        x_log=max(l0s) / min(l0s) > 8,
        height=320,
    )
    return figure(
        svg,
        "One point per SAE, one line per architecture and run; lower and further left is better",
    )


def _featured(records: Sequence[RecordLike]) -> RecordLike:
    """The record whose histogram and examples are shown: the last one with examples."""
    with_top = [r for r in records if r.values.get("top_latents")]
    return with_top[-1] if with_top else records[-1]


def _density_histogram(r: RecordLike, label: str) -> str:
    h = r.values.get("density_histogram")
    if not isinstance(h, Mapping):
        return ""
    edges = np.asarray(h.get("edges", []), dtype=float).ravel()
    counts = np.asarray(h.get("counts", []), dtype=float).ravel()
    if counts.size == 0 or edges.size != counts.size + 1:
        return ""
    while counts.size > 30 and counts.size % 2 == 0:  # fewer, wider bars read better
        counts, edges = counts.reshape(-1, 2).sum(1), edges[::2]
    centres = (edges[:-1] + edges[1:]) / 2
    svg = bar_chart(
        [f"{c:.1f}" for c in centres],
        counts,
        title=f"Firing density of the latents ({label})",
        x_label="log10 firing density (share of held-out inputs)",
        y_label="latents",
        height=300,
    )
    n_dead = h.get("n_dead")
    cap = "Latents that fire on the evaluation set, by how often they fire"
    if n_dead is not None:
        d_sae = r.values.get("d_sae")
        share = ""
        if isinstance(d_sae, int) and d_sae > 0:
            share = f" (a share of {fmt(int(n_dead) / d_sae, 3)} of {fmt(d_sae)})"
        cap += (f"; {fmt(n_dead)} latents {_WORDS['dead_fraction']}{share}, the table's "
                f"'{_WORDS['dead_fraction']}', are not shown")
    return figure(svg, cap)


def _context(e: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """An example's ``context`` (text before, the token, text after), or None."""
    ctx = e.get("context")
    if isinstance(ctx, (list, tuple)) and len(ctx) == 3:
        return str(ctx[0]), str(ctx[1]), str(ctx[2])
    return None


def _example(e: Mapping[str, Any]) -> str:
    act = f'<span class="act">{esc(fmt(as_float(e.get("activation")), 3))}</span>'
    ctx = _context(e)
    if ctx is not None:
        before, tok, after = ctx
        where = f"sample {e.get('id', e.get('index', '?'))}, token {e.get('position', '?')}"
        if e.get("token") is not None:
            where += f" ({e['token']})"
        return (f'<li>{act} <span class="ctx" title="{esc(where)}">{esc(before)}'
                f"<mark>{esc(tok)}</mark>{esc(after)}</span></li>")
    pos = e.get("position")
    where = f" · pos {esc(pos)}" if pos is not None else ""
    token = f" · token <code>{esc(e['token'])}</code>" if e.get("token") is not None else ""
    text = e.get("text")
    if text is not None:
        s = " ".join(str(text).split())
        short = s if len(s) <= _SNIPPET else s[: _SNIPPET - 1] + "…"
        return f'<li>{act}{where}{token} <span title="{esc(s)}">{esc(short)}</span></li>'
    ident = f"id {e['id']}" if e.get("id") is not None else f"#{e.get('index', '?')}"
    return f"<li>{act}{where}{token} <code>{esc(ident)}</code></li>"


def _thumb(e: Mapping[str, Any]) -> str:
    data = str(e.get("image_png", ""))
    if not _BASE64.match(data):
        return ""
    name = e.get("id", e.get("index", ""))
    act = fmt(as_float(e.get("activation")), 3)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(f"input {name}")}" '
        f'title="{esc(f"input {name}: activation {act}")}"><figcaption>{esc(act)}'
        "</figcaption></figure>"
    )


def _card(t: Mapping[str, Any]) -> str:
    examples = [e for e in (t.get("examples") or []) if isinstance(e, Mapping)]
    images = [e for e in examples if e.get("image_png")]
    body = ""
    if images:
        body += '<div class="sae-thumbs">' + "".join(_thumb(e) for e in images) + "</div>"
    others = [e for e in examples if not e.get("image_png")]
    if others:
        body += "<ol>" + "".join(_example(e) for e in others) + "</ol>"
    if not examples:
        body = '<p class="note">No held-out input activates it.</p>'
    meta = f"density {fmt(as_float(t.get('density')), 3)} · max {fmt(as_float(t.get('max')), 3)}"
    return (
        f'<div class="sae-card"><div class="title">latent {esc(t.get("latent", "?"))}</div>'
        f'<div class="meta">{esc(meta)}</div>{body}</div>'
    )


def _top_latents(r: RecordLike, label: str) -> str:
    tops = [t for t in (r.values.get("top_latents") or []) if isinstance(t, Mapping)]
    if not tops:
        return ""
    examples = [e for t in tops for e in (t.get("examples") or []) if isinstance(e, Mapping)]
    no_text = any(
        e.get("position") is not None and _context(e) is None and e.get("text") is None
        for e in examples
    )
    note = (
        '<p class="note">Text not stored: the store was extracted without its token strings '
        "(before repscope kept them), so tokens show by position and sample id; extract it "
        "again to see each token in its context.</p>"
        if no_text
        else ""
    )
    return (
        f"<h4>Top-activating inputs ({esc(label)})</h4>"
        '<p class="note">Latents chosen across the firing-density range, most frequent '
        "first; each lists the held-out inputs with its highest activations (a token is "
        "highlighted within up to 8 tokens either side).</p>"
        + note
        + f'<div class="sae-grid">{"".join(_card(t) for t in tops)}</div>'
    )


def _group(records: Sequence[RecordLike]) -> str:
    labels = _labels(records)
    r0 = records[0]
    head = " · ".join(esc(s) for s in (r0.model, r0.layer, r0.dataset) if s)
    featured = _featured(records)
    flab = labels[list(records).index(featured)]
    return (
        (f"<h3>{head}</h3>" if head else "")
        + _summary(records, labels)
        + _curves(records, labels)
        + _frontier(records)
        + _density_histogram(featured, flab)
        + _top_latents(featured, flab)
    )


def render_sae(records: Sequence[RecordLike]) -> str:
    """Summary, curves, frontier, density histogram and examples per model/layer group."""
    groups: dict[tuple[str, str, str], list[RecordLike]] = {}
    for r in records:
        groups.setdefault((r.model, r.dataset, r.layer), []).append(r)
    blocks = [f'<div class="block">{_group(g)}</div>' for g in groups.values()]
    return Html(_CSS + "".join(blocks))
