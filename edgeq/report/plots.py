"""The page's figures: matplotlib (Agg, no pyplot state) drawn to inline base64 PNGs.

Fixed sizes, a fixed style whatever the user's matplotlibrc says, DejaVu Sans (shipped with matplotlib)
and no software stamp in the PNG: the same values always give the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edgeq.errors import require
from edgeq.report.format import esc, img, label

HEALTHY_SQNR_DB = 35.0  # a healthy int8 activation sits around 35-40 dB
LOW_SQNR_DB = 30.0  # below this a layer's quantization is a problem: red in the chart and the tables
SQNR_COLORS = {"bad": "#d62728", "warn": "#ff7f0e", "ok": "#1f77b4"}  # by the plotted value, as the tables' cells
MAX_TICK_LABELS = 40  # beyond this many layers, axes show every k-th name
DPI = 100
FIG_WIDTH = 9.0  # inches: 900 px, the page's column
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
LINESTYLES = ("-", "--", "-.", ":")
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


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
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


@dataclass(frozen=True)
class Mapped:
    """A figure whose x positions 0..n-1 on ``ax`` each get a hover title (the full name and its values) and an
    in-page link: an HTML image map over the PNG, since a PNG has no tooltips and the page runs no script."""

    fig: Any
    ax: Any
    titles: list[str]
    hrefs: list[str]


def sqnr_class(value: float | None) -> str:
    """``bad``, ``warn`` or ``ok`` for an SQNR in dB; the chart's colours and the tables' cells agree."""
    if value is None:
        return "ok"
    return "bad" if value < LOW_SQNR_DB else "warn" if value < HEALTHY_SQNR_DB else "ok"


def _areas(mapped: Mapped, name: str) -> str:
    """One rectangle per x position, the axes' full height, in the saved PNG's pixels (origin top left)."""
    height = mapped.fig.bbox.height
    box = mapped.ax.bbox
    top, bottom = round(height - box.y1), round(height - box.y0)
    areas = []
    for i, (title, href) in enumerate(zip(mapped.titles, mapped.hrefs, strict=True)):
        (x0, _), (x1, _) = mapped.ax.transData.transform([(i - 0.5, 0.0), (i + 0.5, 0.0)])
        left, right = max(round(x0), round(box.x0)), min(round(x1), round(box.x1))
        if right > left:
            areas.append(f'<area shape="rect" coords="{left},{top},{right},{bottom}" href="{esc(href)}" '
                         f'title="{esc(title)}" alt="{esc(title)}">')
    return f'<map name="{esc(name)}">' + "".join(areas) + "</map>"


def figure(draw: Callable[..., Any], *args: Any, alt: str, caption: str = "", map_name: str = "") -> str:
    """Draw one figure; data too malformed to plot becomes a visible note, not a missing report. A draw that
    returns :class:`Mapped` gets an image map named ``map_name`` (unique in the page) with its titles."""
    try:
        drawn = draw(*args)
        fig = drawn.fig if isinstance(drawn, Mapped) else drawn
        png = None if fig is None else _png(fig)  # matplotlib lays out (and can fail) only when saving
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f'<p class="note">Figure “{esc(alt)}” not drawn: {esc(exc)}</p>'
    if png is None:
        return ""
    if isinstance(drawn, Mapped) and map_name:  # the layout saving computed is the one the areas measure
        return img(png, alt, caption, usemap=map_name) + "\n" + _areas(drawn, map_name)
    return img(png, alt, caption)


def _tick_layers(ax: Any, names: list[str]) -> None:
    """Layer names under the x axis, thinned to every k-th when there are many."""
    step = max(1, math.ceil(len(names) / MAX_TICK_LABELS))
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [label(names[i]) for i in ticks], rotation=45, ha="right", fontsize=7)


def _zoomed_ylim(ax: Any, values: list[float]) -> None:
    """Accuracy bars differ by tenths of a point: zoom the axis (captions say so) instead of hiding that."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.5)
    ax.set_ylim(max(0.0, lo - 1.5 * span), hi + 0.6 * span)


def plot_methods(baseline: float | None, methods: list[tuple[str, float]], best: str,
                 intervals: list[tuple[float, float] | None] | None = None) -> Any:
    if not methods:
        return None
    fig = _new_figure(FIG_WIDTH, 3.2)
    ax = fig.add_subplot()
    names = [m for m, _ in methods]
    values = [100 * v for _, v in methods]
    colors = [PALETTE[2] if m == best else PALETTE[0] for m in names]
    bars = ax.bar(range(len(values)), values, color=colors, width=0.6)
    ax.set_xticks(range(len(names)), [label(n) for n in names])
    shown = list(values)
    spans = [(i, 100 * ci[0], 100 * ci[1]) for i, ci in enumerate(intervals or []) if ci is not None]
    if not spans:
        ax.barlabel(bars, fmt="%.2f", fontsize=8, padding=2)
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


def plot_conditions(conditions: list[str], series: list[tuple[str, list[float | None]]]) -> Any:
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
        ax.bar(xs, ys, width=width * 0.95, color=color, label=label(name))
        shown += [y for y in ys if math.isfinite(y)]
    if not shown:
        return None
    ax.set_xticks(range(len(conditions)), [label(c) for c in conditions])
    _zoomed_ylim(ax, shown)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Top-1 per condition: FP32 (grey) and each INT8 method")
    ax.legend(ncol=min(len(series), 6), loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    return fig


def plot_sqnr(names: list[str], local: list[float | None], accumulated: list[float | None], worst: set[str],
              titles: list[str], hrefs: list[str]) -> Mapped | None:
    """Bars: each layer's local SQNR, coloured by that value (the tables' thresholds); line: the accumulated SQNR.
    The worst layers (lowest local SQNR) are outlined."""
    if not any(v is not None for v in (*local, *accumulated)):
        return None
    from matplotlib.patches import Patch

    fig = _new_figure(min(12.0, max(FIG_WIDTH, 0.28 * len(names) + 3)), 3.8)
    ax = fig.add_subplot()
    ax.set_axisbelow(True)  # the grid behind the bars: a bar's colour is its value's
    xs = list(range(len(names)))
    heights = [0.0 if v is None else v for v in local]
    colors = [SQNR_COLORS[sqnr_class(v)] for v in local]
    edges = ["black" if n in worst else "none" for n in names]
    ax.bar(xs, heights, color=colors, edgecolor=edges, linewidth=1.4, width=0.7)
    for x, v in zip(xs, local, strict=True):
        if v is None:  # exact (or unmeasured) layers: no bar, a marker says why
            ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=7, color="#5f6b7a")
    line = [math.nan if v is None else v for v in accumulated]
    ax.plot(xs, line, color="black", linewidth=1.2, marker=".", markersize=4)
    ax.axhline(HEALTHY_SQNR_DB, color="black", linestyle=":", linewidth=1)
    _tick_layers(ax, names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Per-layer SQNR, FP32 vs INT8 (higher is better): bars local, line accumulated", pad=20)
    handles = [Patch(color=SQNR_COLORS["bad"], label=f"local < {LOW_SQNR_DB:.0f} dB"),
               Patch(color=SQNR_COLORS["warn"], label=f"local {LOW_SQNR_DB:.0f}-{HEALTHY_SQNR_DB:.0f} dB"),
               Patch(color=SQNR_COLORS["ok"], label=f"local ≥ {HEALTHY_SQNR_DB:.0f} dB"),
               Patch(facecolor="white", edgecolor="black", label="worst (lowest local)"),
               *ax.plot([], [], color="black", marker=".", label="accumulated")]
    ax.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, bbox_to_anchor=(0.5, 1.0), frameon=False,
              borderaxespad=0.2)
    return Mapped(fig, ax, titles, hrefs)


def plot_histogram(name: str, edges: list[float], counts: list[float], ranges: list[tuple[str, float, float]]) -> Any:
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
        ax.axvline(lo, color=color, linestyle=style, linewidth=1.4, label=f"{label(method)} [{lo:.3g}, {hi:.3g}]")
        ax.axvline(hi, color=color, linestyle=style, linewidth=1.4)
    ax.set_xlabel("activation value")
    ax.set_ylabel("count (log)")
    ax.set_title(f"Calibration histogram: {label(name, 60)}")
    if ranges:
        ax.legend(loc="upper right")
    return fig


def plot_latency(labels: list[str], samples: list[list[float]]) -> Any:
    if not samples:
        return None
    fig = _new_figure(FIG_WIDTH, 3.2)
    ax = fig.add_subplot()
    positions = list(range(1, len(samples) + 1))
    ax.boxplot(samples, positions=positions, widths=0.5, showfliers=True,
               medianprops={"color": "#d62728", "linewidth": 1.5},
               flierprops={"marker": ".", "markersize": 3, "markerfacecolor": "#5f6b7a"})
    ax.set_xticks(positions, [label(name, 36) for name in labels], rotation=15 if len(labels) > 3 else 0)
    ax.set_ylabel("latency per invoke (ms)")
    ax.set_title("Latency distribution per configuration (box: p25-p75, red: median)")
    ax.set_ylim(bottom=0)
    return fig


def plot_coverage(names: list[str], conditions: list[tuple[str, list[float]]], production: list[float | None],
                  flagged: list[int], titles: list[str] | None = None) -> Any:
    if not names:
        return None
    fig = _new_figure(min(12.0, max(FIG_WIDTH, 0.28 * len(names) + 3)), 3.8)
    ax = fig.add_subplot()
    xs = list(range(len(names)))
    for i, (cond, maxima) in enumerate(conditions):
        ax.plot(xs, maxima, color=PALETTE[i % len(PALETTE)], linewidth=1.2, marker=".",
                label=f"calibration: {label(cond)}")
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
    if titles is None:
        return fig
    ax.set_xlim(-0.5, len(names) - 0.5)
    return Mapped(fig, ax, titles, ["#coverage"] * len(names))  # a link: browsers show a linked area's title
