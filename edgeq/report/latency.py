"""The Latency section: every configuration's distribution, init and first inference, delegation and
stability; INT8/FP32 ratios with a sentence when INT8 is the slower one; where it ran and the peak RSS.

A reader comparing INT8 with FP32 needs the ratio said, not computed by hand, and needs to know when the
samples behind it were disturbed (a busy machine makes a 0.1 ms model look 64 ms slow)."""

from __future__ import annotations

import math

from edgeq.report.content import Page
from edgeq.report.format import esc, finite, fmt, table
from edgeq.report.plots import figure, plot_latency
from edgeq.results.build import LatencyRow
from edgeq.results.latency import LatencyRatio, LatencySummary

_STABLE = {True: '<span class="badge ok">stable</span>', False: '<span class="badge bad">unstable</span>',
           None: '<span class="muted">too few runs</span>'}


def _delegation(row: LatencyRow) -> str:
    d = row.delegation
    if d is None:
        return "—"
    taken = f"{esc(d.delegate)}: {fmt(d.nodes_delegated, 'd')} of {fmt(d.nodes_total, 'd')} nodes"
    if d.partitions != 1:
        taken += f", {fmt(d.partitions, 'd')} partitions"
    if d.undelegated_ops:
        taken += f'<br><span class="muted">left: {esc(", ".join(d.undelegated_ops))}</span>'
    return taken


def _stability(row: LatencyRow) -> str:
    s = row.stability
    if s is None:
        return "—"
    shown = f"{_STABLE[s.stable]}<br><span class=\"muted\">p90/p50 {fmt(s.tail_p90_p50, '.2f')}, " \
            f"thirds {fmt(None if s.drift_thirds is None else 100 * s.drift_thirds, '.0f')}%</span>"
    return shown


def _configurations(configs: tuple[LatencyRow, ...]) -> str:
    has_mean = any(finite(c.mean_ms) is not None for c in configs)
    extra = any(c.init_ms is not None or c.stability is not None or c.delegation is not None for c in configs)
    headers = ["Configuration", "Model", "Backend", "Threads", "p50 (ms)", "p90 (ms)",
               *(["mean (ms)"] if has_mean else []), "Samples",
               *(["init (ms)", "first (ms)", "Delegation", "Stability"] if extra else [])]
    cells, labels, samples, classes = [], [], [], []
    for c in configs:
        runs = [v for v in c.samples_ms if math.isfinite(v)]
        label = c.label or f"{c.backend} t{c.threads}"
        cells.append([esc(label), esc(c.model), esc(c.backend), fmt(c.threads, "d"), fmt(c.p50_ms, ".4f"),
                      fmt(c.p90_ms, ".4f"), *([fmt(c.mean_ms, ".4f")] if has_mean else []),
                      str(len(runs)) if runs else "—",
                      *([fmt(c.init_ms, ".2f"), fmt(c.first_inference_ms, ".3f"), _delegation(c), _stability(c)]
                        if extra else [])])
        classes.append("failed" if c.stability is not None and c.stability.stable is False else "")
        if runs:
            labels.append(label)
            samples.append(runs)
    numeric = {i for i, h in enumerate(headers) if h.endswith("(ms)") or h in ("Threads", "Samples")}
    parts = [table(headers, cells, numeric=numeric, row_classes=classes)]
    parts.append(figure(plot_latency, labels, samples, alt="Latency distributions",
                        caption="Per-invoke latency of every timed run; whiskers reach 1.5 IQR, dots beyond "
                                "them are outliers."))
    return "\n".join(p for p in parts if p)


def ratio_sentence(r: LatencyRatio) -> str:
    """One plain sentence for a ratio, saying which precision is faster and whether to trust it."""
    where = f"on {r.backend} with {r.threads} thread{'s' if r.threads != 1 else ''}"
    if r.ratio is None:
        said = f"INT8 {where} took {r.int8_p50_ms:.4g} ms against an FP32 median of 0: no ratio."
    elif r.ratio > 1:
        said = (f"INT8 is slower than FP32 {where}: {r.ratio:.2f}× the FP32 median "
                f"({r.int8_p50_ms:.4g} ms vs {r.fp32_p50_ms:.4g} ms).")
    else:
        said = (f"INT8 is faster than FP32 {where}: {r.ratio:.2f}× the FP32 median "
                f"({r.int8_p50_ms:.4g} ms vs {r.fp32_p50_ms:.4g} ms).")
    if r.unstable:
        said += " The samples behind it were unstable: the ratio may not be the models'."
    elif r.unjudged:
        said += " Too few runs to judge whether the samples were stable (docs/harness.md)."
    return said


def _ratios(summary: LatencySummary) -> str:
    if not summary.ratios:
        return ""
    cells = [[esc(r.backend), fmt(r.threads, "d"), fmt(r.int8_p50_ms, ".4f"), fmt(r.fp32_p50_ms, ".4f"),
              fmt(r.ratio, ".3f") + (' <span class="badge bad">unstable</span>' if r.unstable else "")]
             for r in summary.ratios]
    slower = [r for r in summary.ratios if r.ratio is not None and r.ratio > 1]
    sentences = "".join(f'<p class="{"bad" if r in slower else ""}">{esc(ratio_sentence(r))}</p>'
                        for r in summary.ratios)
    return ("<h3>INT8 / FP32</h3>" + sentences
            + table(["Backend", "Threads", "INT8 p50 (ms)", "FP32 p50 (ms)", "INT8 / FP32"], cells,
                    numeric={1, 2, 3, 4}, row_classes=["failed" if r.unstable else "" for r in summary.ratios]))


def _environment(summary: LatencySummary) -> str:
    cells = [[esc(k), esc(v)] for k, v in summary.environment.items()]
    cells.append(["peak RSS", f"{fmt(summary.peak_rss_mib, '.1f')} MiB "
                              f'<span class="muted">({esc(summary.peak_rss_source)})</span>'])
    cells.append(["stability limits", f"p90/p50 ≤ {fmt(summary.tail_limit, 'g')}, medians of the run's thirds "
                                      f"within {fmt(100 * summary.drift_limit, '.0f')}%"])
    return "<h3>Where it ran</h3>" + table(None, cells)


def render(page: Page) -> str:
    configs = page.latency
    if not configs:
        return ""
    parts = []
    summary = page.latency_summary
    if summary is not None:
        parts.append(_ratios(summary))
        parts.append("<h3>Each configuration</h3>")
    parts.append(_configurations(configs))
    if summary is not None:
        parts.append(_environment(summary))
    return "\n".join(p for p in parts if p)
