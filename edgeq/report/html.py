"""One self-contained ``report.html`` (plus ``report.json``) for a validation or build document.

The page must open offline, as a CI artifact or an e-mail attachment, and read at a glance for someone
who did not run the build: a verdict box first, then one section per key the document carries. So:
inline CSS, figures as inline base64 PNGs (matplotlib Agg, fixed sizes and style), no scripts, no URLs
(a Content-Security-Policy forbids loading anything but ``data:`` images), every string escaped, and
the same document always gives the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import io
import json
import math
import numbers
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from edgeq.errors import require
from edgeq.files import write_text_atomic

# Headings in page order, by document key (docs/report.md describes each).
SECTION_HEADINGS: dict[str, str] = {
    "gates": "Gates",
    "model": "Model",
    "validation": "Accuracy",
    "layers": "Per-layer error",
    "histograms": "Activation ranges",
    "latency": "Latency",
    "check": "Target checks",
    "calibration": "Calibration set",
    "coverage": "Calibration coverage",
}

HEALTHY_SQNR_DB = 35.0  # a healthy int8 activation sits around 35-40 dB
LOW_SQNR_DB = 30.0
MAX_FINDINGS = 50  # per target; the rest stay in report.json
MAX_TICK_LABELS = 40  # beyond this many layers, axes show every k-th name
LABEL_CHARS = 28
DPI = 100
FIG_WIDTH = 9.0  # inches: 900 px, the page's column
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
LINESTYLES = ("-", "--", "-.", ":")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
# Nothing may load except data: images and the inline style; no script runs even if one slips in.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs, hence the same PNG bytes, everywhere
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "savefig.dpi": DPI,
    "path.simplify": True,
}

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
figure img.preview { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.note { color: var(--muted); font-size: 13px; }
ul.advice li { margin-bottom: 4px; }
details summary { cursor: pointer; color: #0b57d0; margin: 6px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { nav { display: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


# ---------------------------------------------------------------- public API


def render_html(document: dict[str, Any], title: str | None = None) -> str:
    """The report page for ``document``; sections whose key is missing or empty are left out."""
    document = document if isinstance(document, dict) else {}
    page_title = title or _text(document.get("title")) or "edgeq report"
    sections: list[tuple[str, str]] = []
    with _plot_style():
        for key in SECTION_HEADINGS:
            value = document.get(key)
            if not value:
                continue
            body = _RENDERERS[key](value, document)
            if body:
                sections.append((key, body))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(page_title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_esc(page_title)}</h1>",
        _subtitle(document),
        _nav(sections),
        "</header>",
        _summary(document),
    ]
    for key, body in sections:
        parts.append(f'<section id="{key}">\n<h2>{_esc(SECTION_HEADINGS[key])}</h2>\n{body}\n</section>')
    version = _text(document.get("edgeq_version"))
    parts.append(f"<footer>Written by edgeq{' ' + _esc(version) if version else ''}. The full data is in "
                 "report.json beside this file.</footer>")
    parts += ["</body>", "</html>"]
    return "\n".join(p for p in parts if p) + "\n"


def write_report(document: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` atomically; return (json path, html path).

    Non-finite floats become null and numpy values plain numbers, so report.json is strict JSON.
    """
    out_dir = Path(out_dir)
    clean = _json_ready(document)
    page = render_html(clean)  # render first: a failure leaves no half-updated pair behind
    json_path = write_text_atomic(out_dir / "report.json", json.dumps(clean, indent=2, allow_nan=False) + "\n")
    html_path = write_text_atomic(out_dir / "report.html", page)
    return json_path, html_path


# ---------------------------------------------------------------- value helpers


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seq(value: Any) -> list[Any]:
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else []


def _rows(value: Any) -> list[dict[str, Any]]:
    return [row for row in _seq(value) if isinstance(row, dict)]


def _num(value: Any) -> float | None:
    """A finite number, or None for anything else (missing, null, NaN, inf, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    number = _num(value)
    if number is None:
        return "—"
    if spec == "d":
        return f"{round(number):d}{suffix}"
    return f"{number:{spec}}{suffix}"


def _pct(value: Any, digits: int = 2) -> str:
    """A share in [0, 1] as a percentage."""
    number = _num(value)
    return "—" if number is None else f"{100 * number:.{digits}f}%"


def _kib(value: Any) -> str:
    number = _num(value)
    return "—" if number is None else f"{number / 1024:,.1f} KiB"


def _bool_badge(value: Any, yes: str = "PASS", no: str = "FAIL") -> str:
    if value is True:
        return f'<span class="badge ok">{yes}</span>'
    if value is False:
        return f'<span class="badge bad">{no}</span>'
    return '<span class="badge muted">?</span>'


def _short(name: Any, limit: int = LABEL_CHARS) -> str:
    """A layer name short enough for an axis: the first of TFLite's ';'-joined names, its tail if still long."""
    text = _text(name).split(";")[0] or _text(name)
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _label(text: Any, limit: int = LABEL_CHARS) -> str:
    """Text matplotlib draws literally: no mathtext from '$', no legend entry dropped for a leading '_'."""
    label = _short(text, limit).replace("$", r"\$")
    return " " + label if label.startswith("_") else label


def _json_ready(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()  # numpy scalars and arrays
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # paths, enums: their text


def _table(headers: list[str] | None, rows: list[list[str]], numeric: Collection[int] = (), names: Collection[int] = (),
           row_classes: list[str] | None = None) -> str:
    """An HTML table of already-escaped cells; ``numeric`` columns align right, ``names`` columns are identifiers."""

    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ' class="name"' if i in names else ""

    head = "".join(f"<th{' class=num' if i in numeric else ''}>{_esc(h)}</th>" for i, h in enumerate(headers or []))
    body = []
    for r, row in enumerate(rows):
        row_cls = row_classes[r] if row_classes and row_classes[r] else ""
        cells = "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row))
        body.append(f'<tr class="{row_cls}">{cells}</tr>' if row_cls else f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>\n" if head else ""
    return f"<table>\n{thead}<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _name_cell(name: Any) -> str:
    return f'<span title="{_esc(name)}">{_esc(name)}</span>'


# ---------------------------------------------------------------- figures


@contextlib.contextmanager
def _plot_style() -> Iterator[None]:
    """matplotlib's defaults plus ours, whatever the user's matplotlibrc says; restored afterwards."""
    require("matplotlib", "the HTML report")
    import matplotlib.style

    with matplotlib.style.context("default"), matplotlib.rc_context(_RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        yield


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg directly: no pyplot state, no GUI backend
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, caption: str = "", css_class: str = "", size: tuple[int, int] | None = None) -> str:
    attrs = f' class="{css_class}"' if css_class else ""
    if size:
        attrs += f' width="{size[0]}" height="{size[1]}"'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img{attrs} alt="{_esc(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _figure(draw: Callable[..., Any], *args: Any, alt: str, caption: str = "") -> str:
    """Draw one figure; data too malformed to plot becomes a visible note, not a missing report."""
    try:
        fig = draw(*args)
        png = None if fig is None else _png(fig)  # matplotlib lays out (and can fail) only when saving
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f'<p class="note">Figure “{_esc(alt)}” not drawn: {_esc(exc)}</p>'
    return "" if png is None else _img(png, alt, caption)


def _tick_layers(ax: Any, names: list[str]) -> None:
    """Layer names under the x axis, thinned to every k-th when there are many."""
    step = max(1, math.ceil(len(names) / MAX_TICK_LABELS))
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [_label(names[i]) for i in ticks], rotation=45, ha="right", fontsize=7)


def _zoomed_ylim(ax: Any, values: list[float]) -> None:
    """Accuracy bars differ by tenths of a point: zoom the axis (captions say so) instead of hiding that."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.5)
    ax.set_ylim(max(0.0, lo - 1.5 * span), hi + 0.6 * span)


def _plot_methods(baseline: float | None, methods: list[tuple[str, float]], best: str,
                  intervals: list[tuple[float, float] | None] | None = None) -> Any:
    if not methods:
        return None
    fig = _new_figure(FIG_WIDTH, 3.2)
    ax = fig.add_subplot()
    names = [m for m, _ in methods]
    values = [100 * v for _, v in methods]
    colors = [PALETTE[2] if m == best else PALETTE[0] for m in names]
    bars = ax.bar(range(len(values)), values, color=colors, width=0.6)
    ax.set_xticks(range(len(names)), [_label(n) for n in names])
    shown = list(values)
    spans = [(i, 100 * ci[0], 100 * ci[1]) for i, ci in enumerate(intervals or []) if ci is not None]
    if not spans:
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    else:  # the 95% Wilson interval of each top-1: bars whose whiskers overlap are not told apart
        xs, lo, hi = zip(*spans, strict=True)
        ax.errorbar(xs, [values[i] for i in xs], yerr=[[values[i] - v for i, v in zip(xs, lo, strict=True)],
                                                      [v - values[i] for i, v in zip(xs, hi, strict=True)]],
                    fmt="none", ecolor="black", elinewidth=1, capsize=4)
        shown += [*lo, *hi]
    if baseline is not None:
        ax.axhline(100 * baseline, color="black", linestyle="--", linewidth=1.2, label=f"FP32 {100 * baseline:.2f}%")
        shown.append(100 * baseline)
        ax.legend(loc="upper right" if spans else "lower right")  # clear of the values drawn at the feet
    _zoomed_ylim(ax, shown)
    if spans:  # whiskers stand on the bars' tops: the values go at their feet, inside the zoomed axis
        bottom, top = ax.get_ylim()
        for x, value in enumerate(values):
            ax.text(x, bottom + 0.04 * (top - bottom), f"{value:.2f}", ha="center", va="bottom", fontsize=8,
                    color="white")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("INT8 top-1 by calibration method with 95% intervals (picked method in green)" if spans else
                 "INT8 top-1 by calibration method (best in green)")
    return fig


def _plot_conditions(conditions: list[str], series: list[tuple[str, list[float | None]]]) -> Any:
    if not conditions or not series:
        return None
    fig = _new_figure(FIG_WIDTH, 3.4)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    shown = []
    for s, (name, values) in enumerate(series):
        xs = [c + (s - (len(series) - 1) / 2) * width for c in range(len(conditions))]
        ys = [float("nan") if v is None else 100 * v for v in values]
        color = "#444444" if s == 0 else PALETTE[(s - 1) % len(PALETTE)]
        ax.bar(xs, ys, width=width * 0.95, color=color, label=_label(name))
        shown += [y for y in ys if math.isfinite(y)]
    if not shown:
        return None
    ax.set_xticks(range(len(conditions)), [_label(c) for c in conditions])
    _zoomed_ylim(ax, shown)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Top-1 per condition: FP32 (grey) and each INT8 method")
    ax.legend(ncol=min(len(series), 6), loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    return fig


def _plot_sqnr(names: list[str], sqnr: list[float | None], worst: set[str]) -> Any:
    if not any(v is not None for v in sqnr):
        return None
    fig = _new_figure(min(12.0, max(FIG_WIDTH, 0.28 * len(names) + 3)), 3.6)
    ax = fig.add_subplot()
    xs = range(len(names))
    heights = [0.0 if v is None else v for v in sqnr]
    colors = ["#d62728" if n in worst else PALETTE[0] for n in names]
    ax.bar(xs, heights, color=colors, width=0.7)
    for x, v in zip(xs, sqnr, strict=True):
        if v is None:  # exact (or unmeasured) layers: no bar, a marker says why
            ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=7, color="#5f6b7a")
    ax.axhline(HEALTHY_SQNR_DB, color="black", linestyle=":", linewidth=1, label=f"{HEALTHY_SQNR_DB:.0f} dB")
    _tick_layers(ax, names)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Per-layer SQNR, FP32 vs INT8 (worst layers in red; higher is better)")
    ax.legend(loc="upper right")
    return fig


def _plot_histogram(name: str, edges: list[float], counts: list[float], ranges: list[tuple[str, float, float]]) -> Any:
    if not counts:
        return None
    if len(edges) != len(counts) + 1:
        raise ValueError(f"{len(edges)} bin edges for {len(counts)} counts")
    fig = _new_figure(FIG_WIDTH, 3.0)
    ax = fig.add_subplot()
    positive = [c for c in counts if c > 0]
    ax.stairs(counts, edges, fill=True, color="#b8c7d9", edgecolor="#6b7f99", linewidth=0.6)
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(positive) * 3)
    for i, (method, lo, hi) in enumerate(ranges):
        color, style = PALETTE[i % len(PALETTE)], LINESTYLES[i % len(LINESTYLES)]
        ax.axvline(lo, color=color, linestyle=style, linewidth=1.4, label=f"{_label(method)} [{lo:.3g}, {hi:.3g}]")
        ax.axvline(hi, color=color, linestyle=style, linewidth=1.4)
    ax.set_xlabel("activation value")
    ax.set_ylabel("count (log)")
    ax.set_title(f"Calibration histogram: {_label(name, 60)}")
    if ranges:
        ax.legend(loc="upper right")
    return fig


def _plot_latency(labels: list[str], samples: list[list[float]]) -> Any:
    if not samples:
        return None
    fig = _new_figure(FIG_WIDTH, 3.2)
    ax = fig.add_subplot()
    positions = list(range(1, len(samples) + 1))
    ax.boxplot(samples, positions=positions, widths=0.5, showfliers=True,
               medianprops={"color": "#d62728", "linewidth": 1.5},
               flierprops={"marker": ".", "markersize": 3, "markerfacecolor": "#5f6b7a"})
    ax.set_xticks(positions, [_label(label, 36) for label in labels], rotation=15 if len(labels) > 3 else 0)
    ax.set_ylabel("latency per invoke (ms)")
    ax.set_title("Latency distribution per configuration (box: p25-p75, red: median)")
    ax.set_ylim(bottom=0)
    return fig


def _plot_coverage(names: list[str], conditions: list[tuple[str, list[float]]], production: list[float | None],
                   flagged: list[int]) -> Any:
    if not names:
        return None
    fig = _new_figure(min(12.0, max(FIG_WIDTH, 0.28 * len(names) + 3)), 3.8)
    ax = fig.add_subplot()
    xs = list(range(len(names)))
    for i, (cond, maxima) in enumerate(conditions):
        ax.plot(xs, maxima, color=PALETTE[i % len(PALETTE)], linewidth=1.2, marker=".",
                label=f"calibration: {_label(cond)}")
    prod = [float("nan") if v is None else v for v in production]
    if any(math.isfinite(v) for v in prod):
        ax.plot(xs, prod, color="black", linewidth=2, label="production")
    if flagged:
        ax.scatter(flagged, [prod[i] for i in flagged], color="#d62728", zorder=3, s=30,
                   label="production beyond calibration")
    ax.set_yscale("symlog", linthresh=1e-3)
    _tick_layers(ax, names)
    ax.set_ylabel("max |activation|")
    ax.set_title("Layer-wise max |activation|: calibration conditions vs production")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(ncol=2)
    return fig


# ---------------------------------------------------------------- page parts


def _subtitle(document: dict[str, Any]) -> str:
    model = _dict(document.get("model"))
    bits = []
    if model.get("name"):
        bits.append(f"model <b>{_esc(model['name'])}</b>")
    if model.get("source"):
        bits.append(f"from {_esc(model['source'])}")
    for key in ("created", "generated_at"):  # only a time the document itself carries
        if document.get(key):
            bits.append(_esc(document[key]))
    if document.get("edgeq_version"):
        bits.append(f"edgeq {_esc(document['edgeq_version'])}")
    return f'<p class="sub">{" · ".join(bits)}</p>' if bits else ""


def _nav(sections: list[tuple[str, str]]) -> str:
    if not sections:
        return ""
    links = "".join(f'<a href="#{key}">{_esc(SECTION_HEADINGS[key])}</a>' for key, _ in sections)
    return f"<nav>{links}</nav>"


def _verdict(document: dict[str, Any]) -> bool | None:
    passed = document.get("passed")
    if isinstance(passed, bool):
        return passed
    results = [g.get("passed") for g in _rows(document.get("gates")) if isinstance(g.get("passed"), bool)]
    return all(results) if results else None


def _method_rows(validation: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in _rows(validation.get("methods")) if m.get("method") is not None]


def _pair(value: Any) -> tuple[float, float] | None:
    pair = [_num(v) for v in _seq(value)]
    return (pair[0], pair[1]) if len(pair) == 2 and pair[0] is not None and pair[1] is not None else None


def _interval(value: Any, scale: float = 100.0, spec: str = ".1f", sep: str = " to ") -> str:
    """'84.6 to 92.5' for a [lo, hi] pair (shares scaled to percent), '' when it is not one."""
    pair = _pair(value)
    return "" if pair is None else f"{scale * pair[0]:{spec}}{sep}{scale * pair[1]:{spec}}"


def _with_interval(text: str, value: Any, scale: float = 100.0, spec: str = ".1f") -> str:
    interval = _interval(value, scale, spec, ", ")  # on its own line: the table stays within the page
    return f'{text}<br><span class="muted">[{interval}]</span>' if interval else text


def _vs_fp32(value: Any) -> str:
    """How INT8 compares with FP32 by the drop's interval: a difference inside it is a tie."""
    cls = {"tie": "muted", "worse": "bad", "better": "ok"}.get(_text(value))
    return f'<span class="{cls}">{_esc(value)}</span>' if cls else "—"


def _sqnr_text(row: dict[str, Any], unit: str = "") -> str:
    """Output SQNR: '∞ (bit-exact)' for outputs equal to FP32's (stored as null plus bit_exact: true)."""
    if row.get("bit_exact") is True:
        return "∞ (bit-exact)"
    return _fmt(row.get("output_sqnr_db"), ".1f", unit)


def _picked_by(row: dict[str, Any], selection: dict[str, Any]) -> str:
    chosen = _dict(row.get("selection"))
    text = "fidelity to FP32"
    if _num(selection.get("n")) is not None:
        text += f" on the selection half ({_fmt(selection['n'], 'd')} samples)"
    if chosen:
        text += f": agreement {_pct(chosen.get('agreement'))}, output SQNR {_sqnr_text(chosen, ' dB')}"
    tied = [_esc(t) for t in _seq(selection.get("tied_with_best"))]
    if tied:
        text += f"; tied exactly with {', '.join(tied)}"
    return text


def _gate_text(gate: dict[str, Any]) -> str:
    """The held-out drop and the verdict on it, saying whether the interval makes the verdict clear."""
    text = "held-out half"
    if _num(gate.get("n")) is not None:
        text += f", {_fmt(gate['n'], 'd')} samples"
    text += f": FP32 {_pct(gate.get('fp32_top1'))} → INT8 {_esc(_text(gate.get('method')))} "
    text += f"{_pct(gate.get('int8_top1'))} (drop <b>{_fmt(gate.get('drop_pp'), '+.2f')} pp</b>"
    ci = _interval(gate.get("drop_ci_pp"), 1.0, "+.2f")
    text += f", 95% CI {ci} pp" if ci else ""
    limit = _num(gate.get("max_drop_pp"))
    if limit is None:
        return text + ")"
    text += f", limit {_fmt(limit, 'g')} pp): "
    passed, clear = gate.get("passed"), gate.get("clear")
    if passed is True:
        verdict = ('<span class="ok">pass, clearly within the limit</span>' if clear is True else
                   '<span class="warn">pass, but the limit lies inside the interval (not statistically '
                   "clear)</span>")
    elif passed is False:
        verdict = ('<span class="bad">fail, clearly over the limit</span>' if clear is True else
                   '<span class="bad">fail, the limit lies inside the interval (not statistically clear)</span>')
    else:
        verdict = '<span class="muted">no verdict</span>'
    return text + verdict


def _summary(document: dict[str, Any]) -> str:
    passed = _verdict(document)
    css, word = {True: ("pass", "PASS"), False: ("fail", "FAIL"), None: ("none", "NO VERDICT")}[passed]
    items = [("Verdict", f'<span class="verdict">{word}</span>')]

    gates = _rows(document.get("gates"))
    if gates:
        failed = [g for g in gates if g.get("passed") is False]
        if failed:
            names = "; ".join(f"<b>{_esc(g.get('name', '?'))}</b>"
                              + (f" ({_esc(g['detail'])})" if g.get("detail") else "") for g in failed)
            items.append(("Gates", f'<span class="bad">{len(failed)} of {len(gates)} failed:</span> {names}'))
        else:
            listed = ", ".join(_esc(g.get("name", "?")) for g in gates)
            items.append(("Gates", f'<span class="ok">all {len(gates)} passed</span> ({listed})'))
    elif "gates" in document:
        items.append(("Gates", '<span class="muted">none set</span>'))

    validation = _dict(document.get("validation"))
    methods = _method_rows(validation)
    best = validation.get("best_method")
    if validation:
        items.append(("Best method", f"<b>{_esc(best)}</b>" if best else '<span class="muted">none</span>'))
    # no best method named: none is invented (the pick is by fidelity to FP32, not the highest top-1)
    row = next((m for m in methods if m.get("method") == best), None) if best else None
    selection = _dict(validation.get("selection"))
    if row is not None and selection:
        items.append(("Picked by", _picked_by(row, selection)))
    baseline = _dict(validation.get("baseline"))
    fp32 = _num(baseline.get("top1"))
    gate = _dict(validation.get("gate"))
    if fp32 is not None or row is not None:
        text = f"FP32 <b>{_pct(fp32)}</b>"
        if row is not None:
            drop = _num(row.get("drop_pp"))
            if drop is None and fp32 is not None and _num(row.get("top1")) is not None:
                drop = 100 * (fp32 - _num(row["top1"]))
            limit = _num(validation.get("max_drop_pp"))
            if gate:  # the limit is judged on the held-out half: the "Max-drop gate" row below
                ci = _interval(row.get("drop_ci_pp"), 1.0, "+.2f")
                drop_text = f" (drop {_fmt(drop, '+.2f')} pp{f', 95% CI {ci} pp' if ci else ''}"
                drop_text += f": {_vs_fp32(row.get('vs_fp32'))})" if row.get("vs_fp32") else ")"
                if _num(baseline.get("n")) is not None:
                    drop_text += f" on all {_fmt(baseline['n'], 'd')} samples"
            else:  # a document from before the held-out gate
                cls = "bad" if drop is not None and limit is not None and drop > limit else ""
                drop_text = f' <span class="{cls}">(drop {_fmt(drop, "+.2f")} pp'
                drop_text += f", limit {_fmt(limit, 'g')} pp)</span>" if limit is not None else ")</span>"
            text += f" → INT8 {_esc(row['method'])} <b>{_pct(row.get('top1'))}</b>{drop_text}"
        items.append(("Top-1", text))
    if gate:
        items.append(("Max-drop gate" if _num(gate.get("max_drop_pp")) is not None else "Held-out drop",
                      _gate_text(gate)))

    model = _dict(document.get("model"))
    ratio = _num(model.get("size_ratio"))
    fbytes, ibytes = _num(model.get("float_bytes")), _num(model.get("int8_bytes"))
    if ratio is None and fbytes and ibytes:
        ratio = fbytes / ibytes
    if ratio is not None or fbytes is not None or ibytes is not None:
        items.append(("Size", f"{_kib(fbytes)} FP32 → {_kib(ibytes)} INT8 (<b>{_fmt(ratio, '.2f')}×</b> smaller)"))

    body = "\n".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<section id="summary" class="summary {css}" aria-label="Summary">\n<dl>\n{body}\n</dl>\n</section>'


def _gates(value: Any, _: dict[str, Any]) -> str:
    gates = _rows(value)
    if not gates:
        return ""
    rows = [[_esc(g.get("name", "?")), _bool_badge(g.get("passed")), _esc(_text(g.get("detail")))] for g in gates]
    classes = ["failed" if g.get("passed") is False else "" for g in gates]
    return _table(["Gate", "Result", "Detail"], rows, row_classes=classes)


def _model(value: Any, document: dict[str, Any]) -> str:
    model = _dict(value)
    rows: list[list[str]] = []
    known = {"name": "Name", "source": "Source", "float_bytes": "FP32 size", "int8_bytes": "INT8 size",
             "size_ratio": "Size ratio", "sha256": "INT8 sha256"}
    for key, label in known.items():
        if model.get(key) is None:
            continue
        if key.endswith("_bytes"):
            cell = f"{_kib(model[key])} ({_fmt(model[key], 'd')} bytes)" if _num(model[key]) is not None \
                else _esc(model[key])
        elif key == "size_ratio":
            cell = f"{_fmt(model[key], '.2f')}×"
        else:
            cell = f'<span class="name">{_esc(model[key])}</span>' if key == "sha256" else _esc(model[key])
        rows.append([_esc(label), cell])
    for key, item in model.items():  # fields this page does not know yet: shown as they are
        if key not in known and isinstance(item, str | int | float | bool) and item is not None:
            rows.append([_esc(key), _esc(item)])
    artifact = _dict(document.get("artifact"))
    for key, item in artifact.items():
        if isinstance(item, str | int | float):
            rows.append([_esc(f"artifact {key}"), _esc(item)])
    return _table(None, rows) if rows else ""


def _validation(value: Any, _: dict[str, Any]) -> str:
    validation = _dict(value)
    baseline = _dict(validation.get("baseline"))
    methods = _method_rows(validation)
    best = validation.get("best_method")
    limit = _num(validation.get("max_drop_pp"))
    parts = []
    facts = []
    if validation.get("eval_set"):
        facts.append(f"evaluated on <b>{_esc(validation['eval_set'])}</b>")
    if _num(baseline.get("n")) is not None:
        facts.append(f"{_fmt(baseline['n'], 'd')} samples")
    if validation.get("calibration"):
        facts.append(f"calibrated on <b>{_esc(validation['calibration'])}</b>")
    if limit is not None:
        facts.append(f"gate: drop ≤ {_fmt(limit, 'g')} pp on the held-out half")
    if facts:
        parts.append(f"<p>{'; '.join(facts)}.</p>")

    conditions = list(dict.fromkeys(
        [str(c) for c in _dict(baseline.get("per_condition"))]
        + [str(c) for m in methods for c in _dict(m.get("per_condition"))]))
    if methods or baseline:
        has_top5 = any(_num(m.get("top5")) is not None for m in methods)
        has_rank = any(_num(_dict(m.get("selection")).get("rank")) is not None for m in methods)
        headers = ["Model", "Top-1", *(["Top-5"] if has_top5 else []), "Drop (pp)", "Agreement", "SQNR (dB)",
                   *(["Rank"] if has_rank else []), *[f"Top-1 {c}" for c in conditions]]
        rows, classes = [], []
        if baseline:
            rows.append(["FP32 (baseline)", _with_interval(_pct(baseline.get("top1")), baseline.get("top1_ci")),
                         *([_pct(baseline.get("top5"))] if has_top5 else []), "—", "—", "—",
                         *(["—"] if has_rank else []),
                         *[_pct(_dict(_dict(baseline.get("per_condition")).get(c)).get("top1")) for c in conditions]])
            classes.append("")
        for m in methods:
            tag = ' <span class="badge ok">best</span>' if m.get("method") == best else ""
            rank = _dict(m.get("selection")).get("rank")
            drop = _fmt(m.get("drop_pp"), "+.2f")
            if m.get("vs_fp32") is not None:  # tie / worse / better by the drop's interval
                drop = f"{_vs_fp32(m['vs_fp32'])} {drop}"
            rows.append([f"INT8 {_esc(m['method'])}{tag}", _with_interval(_pct(m.get("top1")), m.get("top1_ci")),
                         *([_pct(m.get("top5"))] if has_top5 else []),
                         _with_interval(drop, m.get("drop_ci_pp"), 1.0, "+.2f"), _pct(m.get("agreement")),
                         _sqnr_text(m), *([_fmt(rank, "d")] if has_rank else []),
                         *[_pct(_dict(_dict(m.get("per_condition")).get(c)).get("top1")) for c in conditions]])
            classes.append("best" if m.get("method") == best else "")
        parts.append(_table(headers, rows, numeric=set(range(1, len(headers))), row_classes=classes))
        parts.append('<p class="note">Measured on the whole evaluation set; [lo, hi]: the 95% interval. Top-1 '
                     "with its Wilson score interval. Drop: FP32 top-1 minus INT8 top-1 in percentage points "
                     "(negative: INT8 scored higher) with its paired (Newcombe) interval, marked <i>tie</i> when "
                     "that interval contains 0 (the two cannot be told apart on these samples), <i>worse</i> or "
                     "<i>better</i> otherwise. Agreement: share of samples where INT8 predicts the same class as "
                     "FP32. SQNR: FP32 vs INT8 outputs, higher is better; ∞ when the outputs are bit-exact. Rank: "
                     "fidelity to FP32 on the selection half, the order the best method was picked in "
                     "(below; equal ranks are exact ties).</p>")
    parts.append(_selection_and_gate(validation, best))

    plotted = [(str(m["method"]), top1, _pair(m.get("top1_ci"))) for m in methods
               if (top1 := _num(m.get("top1"))) is not None]
    parts.append(_figure(_plot_methods, _num(baseline.get("top1")), [(m, v) for m, v, _ in plotted], best,
                         [ci for _, _, ci in plotted], alt="Top-1 by method",
                         caption="Top-1 of each INT8 model with its 95% interval; the dashed line is FP32. The y "
                                 "axis is zoomed and does not start at 0."))
    if conditions:
        series: list[tuple[str, list[float | None]]] = []
        if baseline:
            series.append(("FP32", [_num(_dict(_dict(baseline.get("per_condition")).get(c)).get("top1"))
                                    for c in conditions]))
        for m in methods:
            series.append((str(m["method"]), [_num(_dict(_dict(m.get("per_condition")).get(c)).get("top1"))
                                              for c in conditions]))
        parts.append(_figure(_plot_conditions, conditions, series, alt="Top-1 per condition",
                             caption="Which conditions lose accuracy under INT8. The y axis is zoomed."))

    advice = [a for a in _seq(validation.get("advice")) if a]
    if advice:
        items = "\n".join(f"<li>{_esc(a)}</li>" for a in advice)
        parts.append(f'<h3>Advice</h3>\n<ul class="advice">\n{items}\n</ul>')
    return "\n".join(p for p in parts if p)


def _selection_and_gate(validation: dict[str, Any], best: Any) -> str:
    """How the best method was picked (selection half) and where its drop was gated (held-out half)."""
    split, selection, gate = (_dict(validation.get(k)) for k in ("split", "selection", "gate"))
    if not (split or selection or gate):
        return ""
    parts = ["<h3>Selection and gate</h3>"]
    halves = [(name, _dict(split.get(name))) for name in ("selection", "gate")]
    if any(_num(side.get("n")) is not None for _, side in halves):
        text = (f"The evaluation set is split in two halves, stratified by "
                f"{_esc(' and '.join(str(s) for s in _seq(split.get('stratified_by'))) or 'label')}"
                f" (seed {_fmt(split.get('seed'), 'd')}): ")
        text += ", ".join(f"{name} {_fmt(side.get('n'), 'd')} samples" for name, side in halves)
        parts.append(f"<p>{text}.</p>")
    if selection:
        by = "; then ".join(_esc(b) for b in _seq(selection.get("by")))
        groups = [[_esc(m) for m in _seq(group)] for group in _seq(selection.get("ranking"))]
        text = f"<b>{_esc(best)}</b> was picked on the selection half by fidelity to FP32 ({by}); labels are not used."
        if groups:
            text += f" Ranking: {' &gt; '.join(' = '.join(g) for g in groups)}"
            text += " (=: identical measurements)." if any(len(g) > 1 for g in groups) else "."
        parts.append(f"<p>{text}</p>")
    if gate:
        parts.append(f"<p>The max-drop gate is measured on the held-out gate half: {_gate_text(gate)}.</p>")
        parts.append('<p class="note">The gate fails when the drop\'s point estimate exceeds the limit. It is '
                     "<i>clear</i> when the whole 95% interval lies on the same side of the limit; otherwise the "
                     "samples cannot tell, and more evaluation samples would narrow the interval.</p>")
    return "\n".join(parts)


def _sqnr_cell(value: Any) -> str:
    number = _num(value)
    if number is None:
        return '<span class="muted">—</span>'
    cls = "bad" if number < LOW_SQNR_DB else "warn" if number < HEALTHY_SQNR_DB else ""
    text = f"{number:.1f}"
    return f'<span class="{cls}">{text}</span>' if cls else text


def _layer_table(rows: list[dict[str, Any]]) -> str:
    body = [[_name_cell(r.get("name", "?")), _esc(_text(r.get("op"))), _sqnr_cell(r.get("sqnr_db")),
             _fmt(r.get("rmse_over_scale"), ".3f"), _pct(r.get("saturation")), _pct(r.get("clip_fraction"))]
            for r in rows]
    return _table(["Layer", "Op", "SQNR (dB)", "rmse / scale", "Saturation", "Clipped"], body, numeric={2, 3, 4, 5},
                  names={0})


def _layers(value: Any, _: dict[str, Any]) -> str:
    layers = _dict(value)
    rows = [r for r in _rows(layers.get("rows")) if r.get("name") is not None]
    worst_names = [str(w) for w in _seq(layers.get("worst"))]
    if not rows and not worst_names:
        return ""
    parts = []
    facts = []
    if layers.get("method"):
        facts.append(f"INT8 model calibrated with <b>{_esc(layers['method'])}</b> against FP32")
    if _num(layers.get("samples")) is not None:
        facts.append(f"on {_fmt(layers['samples'], 'd')} inputs")
    if facts:
        parts.append(f"<p>{' '.join(facts)}, every activation tensor compared.</p>")
    if rows and not worst_names:
        measured = sorted((r for r in rows if _num(r.get("sqnr_db")) is not None), key=lambda r: r["sqnr_db"])
        worst_names = [str(r["name"]) for r in measured[:3]]
    if rows:
        names = [str(r["name"]) for r in rows]
        parts.append(_figure(_plot_sqnr, names, [_num(r.get("sqnr_db")) for r in rows], set(worst_names),
                             alt="Per-layer SQNR",
                             caption=f"Layers in execution order. Dotted line: {HEALTHY_SQNR_DB:.0f} dB, typical "
                                     "of a healthy int8 activation; n/a: no SQNR (an exact layer or not "
                                     "measured)."))
    by_name = {str(r["name"]): r for r in rows}
    worst_rows = [by_name.get(n, {"name": n}) for n in worst_names]
    if worst_rows:
        parts.append("<h3>Worst layers</h3>")
        parts.append(_layer_table(worst_rows))
    if rows:
        parts.append(f"<details><summary>All {len(rows)} layers</summary>\n{_layer_table(rows)}\n</details>")
        parts.append('<p class="note">SQNR: higher is better. rmse / scale ≈ 0.29 is pure rounding noise. '
                     "Saturation: share of int8 values at qmin/qmax. Clipped: share of FP32 values outside the "
                     "representable range. See docs/report.md.</p>")
    return "\n".join(p for p in parts if p)


def _histograms(value: Any, document: dict[str, Any]) -> str:
    parts = []
    for item in _rows(value):
        name = _text(item.get("name")) or "?"
        edges = [_num(e) for e in _seq(item.get("bin_edges"))]
        counts = [_num(c) for c in _seq(item.get("counts"))]
        ranges = []
        for method, pair in _dict(item.get("ranges")).items():
            pair = [_num(p) for p in _seq(pair)]
            if len(pair) == 2 and None not in pair:
                ranges.append((str(method), pair[0], pair[1]))
        parts.append(f'<h3 class="name">{_esc(name)}</h3>')
        if None in edges or None in counts:
            parts.append('<p class="note">Histogram not drawn: non-numeric bin edges or counts.</p>')
        else:
            parts.append(_figure(_plot_histogram, name, edges, counts, ranges, alt=f"Histogram of {name}",
                                 caption="Calibration activations (log count) with each estimator's [lo, hi] "
                                         "range: values outside a range are clipped by that method."))
        if ranges:
            rows = [[_esc(m), _fmt(lo, ".4g"), _fmt(hi, ".4g"), _fmt(hi - lo, ".4g")] for m, lo, hi in ranges]
            parts.append(_table(["Estimator", "lo", "hi", "width"], rows, numeric={1, 2, 3}))
    if parts:
        parts.append(_calibration_samples(document.get("calibration_samples")))
    return "\n".join(p for p in parts if p)


def _latency(value: Any, _: dict[str, Any]) -> str:
    configs = _rows(value)
    if not configs:
        return ""
    has_model = any(c.get("model") is not None for c in configs)
    has_mean = any(_num(c.get("mean_ms")) is not None for c in configs)
    headers = ["Configuration", *(["Model"] if has_model else []), "Backend", "Threads", "p50 (ms)", "p90 (ms)",
               *(["mean (ms)"] if has_mean else []), "Samples"]
    rows, labels, samples = [], [], []
    for c in configs:
        runs = [v for v in (_num(s) for s in _seq(c.get("samples_ms"))) if v is not None]
        label = _text(c.get("label")) or f"{_text(c.get('backend'))} t{_text(c.get('threads'))}"
        rows.append([_esc(label), *([_esc(_text(c.get("model")))] if has_model else []),
                     _esc(_text(c.get("backend"))), _fmt(c.get("threads"), "d"), _fmt(c.get("p50_ms"), ".4f"),
                     _fmt(c.get("p90_ms"), ".4f"), *([_fmt(c.get("mean_ms"), ".4f")] if has_mean else []),
                     str(len(runs)) if runs else "—"])
        if runs:
            labels.append(label)
            samples.append(runs)
    numeric = {i for i, h in enumerate(headers) if h.endswith("(ms)") or h in ("Threads", "Samples")}
    parts = [_table(headers, rows, numeric=numeric)]
    parts.append(_figure(_plot_latency, labels, samples, alt="Latency distributions",
                         caption="Per-invoke latency of every timed run; whiskers reach 1.5 IQR, dots beyond "
                                 "them are outliers."))
    return "\n".join(p for p in parts if p)


def _finding_row(target: str, f: dict[str, Any]) -> list[str]:
    severity = _text(f.get("severity")) or "?"
    cls = {"error": "bad", "warning": "warn"}.get(severity, "muted")
    op = _text(f.get("op_type"))
    if _num(f.get("op_index")) is not None:
        op = f"{op} #{_fmt(f['op_index'], 'd')}".strip()
    message = _esc(_text(f.get("message")))
    if f.get("expected") is not None or f.get("actual") is not None:
        message += (f'<br><span class="muted">expected {_esc(_text(f.get("expected")) or "—")}, '
                    f'found {_esc(_text(f.get("actual")) or "—")}</span>')
    tensor = _text(f.get("tensor"))
    return [_esc(target), f'<span class="badge {cls}">{_esc(severity)}</span>', _esc(_text(f.get("rule_id"))),
            _esc(op), f'<span class="name">{_esc(tensor)}</span>' if tensor else "", message]


def _check(value: Any, _: dict[str, Any]) -> str:
    sections = _rows(value)
    if not sections:
        return ""
    summary = []
    for s in sections:
        summary.append([_esc(_text(s.get("target")) or "?"), _bool_badge(s.get("passed")), _fmt(s.get("errors"), "d"),
                        _fmt(s.get("warnings"), "d"), str(len(_rows(s.get("findings"))))])
    parts = [_table(["Target", "Result", "Errors", "Warnings", "Findings"], summary, numeric={2, 3, 4},
                    row_classes=["failed" if s.get("passed") is False else "" for s in sections])]
    rows, hidden = [], 0
    for s in sections:
        target = _text(s.get("target")) or "?"
        findings = sorted(_rows(s.get("findings")),
                          key=lambda f: _SEVERITY_ORDER.get(_text(f.get("severity")), len(_SEVERITY_ORDER)))
        rows += [_finding_row(target, f) for f in findings[:MAX_FINDINGS]]
        hidden += max(0, len(findings) - MAX_FINDINGS)
    if rows:
        parts.append("<h3>Findings (errors first)</h3>")
        parts.append(_table(["Target", "Severity", "Rule", "Op", "Tensor", "Message"], rows))
    if hidden:
        parts.append(f'<p class="note">{hidden} more finding(s) not shown (the first {MAX_FINDINGS} per target, '
                     "errors first, are listed).</p>")
    return "\n".join(parts)


def _preview(value: Any) -> str:
    """The calibration preview as an <img>, only if it really is a base64 PNG (never raw text in an attribute)."""
    if not isinstance(value, str) or not value.strip():
        return ""
    text = value.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data.startswith(_PNG_SIGNATURE):
        return '<p class="note">The calibration preview is not a base64 PNG; not shown.</p>'
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    scale = 2 if 0 < width < 400 else 1  # small tiles are unreadable at their natural size
    return _img(base64.b64encode(data).decode("ascii"), "Calibration preview", "Samples from the calibration "
                "set, as written by edgeq datagen.", css_class="preview",
                size=(scale * width, scale * height) if width and height else None)


def _calibration(value: Any, _: dict[str, Any]) -> str:
    calibration = _dict(value)
    parts = []
    facts = []
    if calibration.get("source"):
        facts.append(f"source <b>{_esc(calibration['source'])}</b>")
    if _num(calibration.get("samples")) is not None:
        facts.append(f"{_fmt(calibration['samples'], 'd')} samples")
    if facts:
        parts.append(f"<p>{', '.join(facts)}.</p>")
    counts = {str(k): _num(v) for k, v in _dict(calibration.get("counts")).items()}
    if counts:
        total = sum(v for v in counts.values() if v is not None)
        rows = [[_esc(k), _fmt(v, "d"), _pct(v / total if v is not None and total else None, 1)]
                for k, v in counts.items()]
        parts.append(_table(["Condition", "Samples", "Share"], rows, numeric={1, 2}))
    parts.append(_preview(calibration.get("preview_png")))
    return "\n".join(p for p in parts if p)


def _coverage(value: Any, _: dict[str, Any]) -> str:
    coverage = _dict(value)
    layers = [r for r in _rows(coverage.get("layers")) if r.get("name") is not None]
    threshold = _num(coverage.get("threshold"))
    flagged_rows = [r for r in layers if r.get("flagged") is True]
    flagged_count = _num(coverage.get("flagged"))
    if not layers and flagged_count is None:
        return ""
    parts = []
    count = _fmt(flagged_count if flagged_count is not None else len(flagged_rows), "d")
    text = f"<b>{count}</b> of {len(layers)} layer(s) flagged" if layers else f"<b>{count}</b> layer(s) flagged"
    if threshold is not None:
        text += f": calibration max / production max below {_fmt(threshold, 'g')}"
    parts.append(f"<p>{text}.</p>")
    if layers:
        names = [str(r["name"]) for r in layers]
        conditions = []
        for cond, maxima in _dict(coverage.get("per_condition_max")).items():
            values = [_num(v) for v in _seq(maxima)]
            if len(values) == len(names):  # a list that does not line up with the layers would mislead
                conditions.append((str(cond), [float("nan") if v is None else v for v in values]))
        production = [_num(r.get("production_max")) for r in layers]
        flagged = [i for i, r in enumerate(layers) if r.get("flagged") is True and production[i] is not None]
        parts.append(_figure(_plot_coverage, names, conditions, production, flagged, alt="Calibration coverage",
                             caption="Per layer, the largest |activation| each calibration condition produced and "
                                     "the largest production produced; red: production beyond the calibrated "
                                     "range (those values will clip)."))
    if flagged_rows:
        has_closing = any(_seq(r.get("closing_conditions")) for r in flagged_rows)
        headers = ["Layer", "Calibration max", "Production max", "Ratio",
                   *(["Conditions that reach production"] if has_closing else [])]
        rows = [[_name_cell(r["name"]), _fmt(r.get("calib_max"), ".4g"), _fmt(r.get("production_max"), ".4g"),
                 f'<span class="bad">{_fmt(r.get("ratio"), ".3f")}</span>',
                 *([_esc(", ".join(str(c) for c in _seq(r.get("closing_conditions"))) or "none")]
                   if has_closing else [])] for r in flagged_rows]
        parts.append("<h3>Flagged layers</h3>")
        parts.append(_table(headers, rows, numeric={1, 2, 3}, names={0}))
    return "\n".join(p for p in parts if p)


def _calibration_samples(value: Any) -> str:
    """Samples that alone set activation ranges, and what the sample guard did (edgeq.calib.outliers): a part of
    the Activation ranges section, shown when there is an outlier sample or the guard is off."""
    section = _dict(value)
    guard = _dict(section.get("guard"))
    samples = _rows(section.get("outlier_samples"))
    trimmed = _rows(section.get("trimmed"))
    enabled = guard.get("enabled") is not False
    if enabled and not samples and not trimmed:
        return ""
    parts = ["<h3>Outlier calibration samples</h3>"]
    if enabled:
        factor, follow = _fmt(guard.get("factor"), "g"), _fmt(guard.get("follow"), "g")
        parts.append(f"<p>Sample guard <b>on</b>: a sample whose max|x| on a tensor is {factor}× beyond every other "
                     f"sample's (an outlier sample, then {follow}× wherever it stretches a range) is left out of that "
                     f"tensor's range; {len(trimmed)} of {_fmt(section.get('tensors'), 'd')} range(s) were chosen "
                     "without one.</p>")
    else:
        parts.append("<p>Sample guard <b>off</b>: every range keeps every calibration sample.</p>")
    if samples:
        rows = []
        for s in samples:
            worst = _rows(s.get("worst"))
            top = worst[0] if worst else {}
            where = "—"
            if top:
                where = (f"{_esc(_short(top.get('tensor'), 40))}: {_fmt(top.get('value'), '.4g')} vs "
                         f"{_fmt(top.get('next_value'), '.4g')} (sample {_fmt(top.get('next_sample'), 'd')})")
            rows.append([_fmt(s.get("sample"), "d"), _esc(_text(s.get("id")) or "—"),
                         _esc(_text(s.get("condition")) or "—"), _name_cell(_text(s.get("source")) or "—"),
                         _fmt(s.get("tensors"), "d"), _fmt(s.get("max_factor"), ".3g", "×"),
                         _fmt(s.get("trimmed"), "d"), where])
        parts.append(_table(["Sample", "Id", "Condition", "Source", "Tensors it stretches", "Largest stretch",
                             "Ranges without it", "Most stretched tensor"], rows, numeric={0, 4, 5, 6}, names={3}))
    return "\n".join(parts)


_RENDERERS: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "gates": _gates,
    "model": _model,
    "validation": _validation,
    "layers": _layers,
    "histograms": _histograms,
    "latency": _latency,
    "check": _check,
    "calibration": _calibration,
    "coverage": _coverage,
}
