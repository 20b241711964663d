"""One self-contained ``report.html`` (plus ``report.json``) for a typed report: the page's layout.

The page must open offline, as a CI artifact or an e-mail attachment, and read at a glance for someone
who did not run the build: a verdict box first, then one section per key the report carries
(edgeq.report.sections). So: inline CSS, figures as inline base64 PNGs (edgeq.report.plots), no scripts,
no URLs (a Content-Security-Policy forbids loading anything but ``data:`` images), every string escaped,
and the same report always gives the same bytes. The page is built from Python strings, not a template
engine: Jinja2 would add a dependency and an escaping layer while every section still needs its own
Python to compute tables and figures, so it would not make the page easier to extend.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeq.envelope import envelope
from edgeq.files import write_text_atomic
from edgeq.report import model_explorer
from edgeq.report.accuracy import best_row, gate_text, picked_by, vs_fp32
from edgeq.report.content import Page, Report, page_content
from edgeq.report.format import esc, finite, fmt, interval, kib, pct
from edgeq.report.plots import plot_style
from edgeq.report.sections import SECTIONS

# Nothing may load except data: images and the inline style; no script runs even if one slips in.
REPORT_KIND = "edgeq.report"  # report.json's kind in edgeq's envelope (edgeq.envelope)
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_CSS = """
:root { --pass: #1b7a3a; --fail: #b42318; --warn: #b54708; --muted: #5f6b7a; --line: #d9dee5; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
nav { margin: 8px 0 0; font-size: 13px; }
nav a { margin-right: 12px; color: #0b57d0; text-decoration: none; }
.summary { border: 2px solid var(--line); border-radius: 8px; padding: 14px 18px; background: var(--bg); }
.summary dl { display: grid; grid-template-columns: auto 1fr; gap: 6px 18px; align-items: baseline; margin: 0; }
.summary.pass { border-color: var(--pass); }
.summary.fail { border-color: var(--fail); }
.summary dt { color: var(--muted); }
.summary dd { margin: 0; }
.verdict { font-size: 22px; font-weight: 700; letter-spacing: 0.04em; }
.badge { display: inline-block; padding: 0 8px; border-radius: 4px; font-weight: 600; font-size: 12px; color: #fff; }
.pass .verdict, .ok { color: var(--pass); }
.fail .verdict, .bad { color: var(--fail); }
.none .verdict, .muted { color: var(--muted); }
.warn { color: var(--warn); }
.badge.ok { background: var(--pass); color: #fff; }
.badge.bad { background: var(--fail); color: #fff; }
.badge.warn { background: var(--warn); color: #fff; }
.badge.muted { background: var(--muted); color: #fff; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.name { word-break: break-all; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
td.name { max-width: 460px; }
h3.name { font-size: 13px; }
tr.best td { background: #eef7f0; }
tr.failed td { background: #fdf0ef; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figure:has(img.mapped) { overflow-x: auto; }
figure img.mapped { max-width: none; }
figure img.preview { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.note { color: var(--muted); font-size: 13px; }
.nowrap { white-space: nowrap; }
ul.advice li { margin-bottom: 4px; }
details summary { cursor: pointer; color: #0b57d0; margin: 6px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { nav { display: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


def render_html(report: Report, title: str | None = None) -> str:
    """The report page; sections the report has nothing for are left out."""
    page = page_content(report)
    page_title = title or page.title or "edgeq report"
    sections: list[tuple[str, str, str]] = []
    with plot_style():
        for key, (heading, render) in SECTIONS.items():
            body = render(page)
            if body:
                sections.append((key, heading, body))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(page_title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{esc(page_title)}</h1>",
        _subtitle(page),
        _nav(sections),
        "</header>",
        _summary(page),
    ]
    for key, heading, body in sections:
        parts.append(f'<section id="{key}">\n<h2>{esc(heading)}</h2>\n{body}\n</section>')
    version = f" {esc(page.provenance.edgeq_version)}" if page.provenance is not None else ""
    parts.append(f"<footer>Written by edgeq{version}. The full data is in report.json beside this file.</footer>")
    parts += ["</body>", "</html>"]
    return "\n".join(p for p in parts if p) + "\n"


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` (the report's document in edgeq's envelope, strict JSON), ``report.html`` and the
    per-layer node data for Model Explorer (edgeq.report.model_explorer) into ``out_dir`` atomically; return
    (json path, html path)."""
    out_dir = Path(out_dir)
    page = render_html(report)  # render first: a failure leaves no half-updated pair behind
    node_data = model_explorer.node_data(page_content(report))
    document = json.dumps(envelope(REPORT_KIND, report.to_document()), indent=2, allow_nan=False) + "\n"
    json_path = write_text_atomic(out_dir / "report.json", document)
    html_path = write_text_atomic(out_dir / "report.html", page)
    for name, text in node_data.items():
        write_text_atomic(out_dir / name, text)
    return json_path, html_path


def _subtitle(page: Page) -> str:
    model = page.model
    bits = []
    if model is not None and model.name:
        bits.append(f"model <b>{esc(model.name)}</b>")
    if model is not None and model.source:
        bits.append(f"from {esc(model.source)}")
    return f'<p class="sub">{" · ".join(bits)}</p>' if bits else ""


def _nav(sections: list[tuple[str, str, str]]) -> str:
    if not sections:
        return ""
    links = "".join(f'<a href="#{key}">{esc(heading)}</a>' for key, heading, _ in sections)
    return f"<nav>{links}</nav>"


def _verdict(page: Page) -> bool | None:
    if page.passed is not None:
        return page.passed
    return all(g.passed for g in page.gates) if page.gates else None


def _summary(page: Page) -> str:
    """The box that answers "can I ship this?": verdict, gates, best method, top-1, held-out drop, size."""
    css, word = {True: ("pass", "PASS"), False: ("fail", "FAIL"), None: ("none", "NO VERDICT")}[_verdict(page)]
    items = [("Verdict", f'<span class="verdict">{word}</span>')]

    if page.gates:
        failed = [g for g in page.gates if not g.passed]
        if failed:
            names = "; ".join(f"<b>{esc(g.name)}</b>" + (f" ({esc(g.detail)})" if g.detail else "") for g in failed)
            items.append(("Gates", f'<span class="bad">{len(failed)} of {len(page.gates)} failed:</span> {names}'))
        else:
            listed = ", ".join(esc(g.name) for g in page.gates)
            items.append(("Gates", f'<span class="ok">all {len(page.gates)} passed</span> ({listed})'))
    elif page.gates is not None:
        items.append(("Gates", '<span class="muted">none set</span>'))

    validation = page.validation
    if validation is not None:
        items.append(("Best method", f"<b>{esc(validation.best_method)}</b>"))
        row = best_row(validation)
        if row is not None:
            items.append(("Picked by", picked_by(row, validation)))
        baseline = validation.baseline
        if baseline is not None:
            shown = f"FP32 <b>{pct(baseline.top1)}</b>"
            if row is not None and row.vs_fp32 is not None:  # the limit is judged on the held-out half: below
                ci = interval(row.drop_ci_pp, 1.0, "+.2f")
                drop = f" (drop {fmt(row.drop_pp, '+.2f')} pp{f', 95% CI {ci} pp' if ci else ''}"
                drop += f": {vs_fp32(row.vs_fp32)}) on all {fmt(baseline.n, 'd')} samples"
                shown += f" → INT8 {esc(row.method)} <b>{pct(row.top1)}</b>{drop}"
            items.append(("Top-1", shown))
        gate = validation.gate
        if gate is not None:
            items.append(("Max-drop gate" if finite(gate.max_drop_pp) is not None else "Held-out drop",
                          gate_text(gate)))

    model = page.model
    if model is not None:
        items.append(("Size", f"{kib(model.float_bytes)} FP32 → {kib(model.int8_bytes)} INT8 "
                              f"(<b>{fmt(model.size_ratio, '.2f')}×</b> smaller)"))

    body = "\n".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<section id="summary" class="summary {css}" aria-label="Summary">\n<dl>\n{body}\n</dl>\n</section>'
