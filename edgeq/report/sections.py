"""The page's sections, in page order: ``SECTIONS`` maps a report key to its heading and its renderer.

A renderer takes the whole :class:`~edgeq.report.content.Page` (a section may quote another, as Model
quotes the artifact paths) and returns its HTML, or "" when the report has nothing for it: the page then
leaves the section and its navigation link out. Adding a section is one renderer (here or in a module of
its own) and one line in ``SECTIONS``; docs/report.md describes each.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable

from edgeq.artifacts import Finding, Severity
from edgeq.report import accuracy, baseline, graph, latency, layers, origin, outputs, recovery
from edgeq.report.content import Page
from edgeq.report.format import bool_badge, esc, finite, fmt, img, kib, name_cell, pct, table
from edgeq.report.plots import figure, plot_coverage

MAX_FINDINGS = 50  # per target; the rest stay in report.json
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_SEVERITY_CLASS = {Severity.ERROR: "bad", Severity.WARNING: "warn", Severity.INFO: "muted"}


def _gates(page: Page) -> str:
    if not page.gates:
        return ""
    cells = [[esc(g.name), bool_badge(g.passed), esc(g.detail)] for g in page.gates]
    return table(["Gate", "Result", "Detail"], cells, row_classes=["" if g.passed else "failed" for g in page.gates])


def _model(page: Page) -> str:
    model = page.model
    if model is None:
        return ""
    cells = [["Name", esc(model.name)]] if model.name is not None else []
    cells.append(["Source", esc(model.source)])
    cells += [[label, f"{kib(size)} ({fmt(size, 'd')} bytes)"]
              for label, size in (("FP32 size", model.float_bytes), ("INT8 size", model.int8_bytes))]
    cells.append(["Size ratio", f"{fmt(model.size_ratio, '.2f')}×"])
    cells.append(["INT8 sha256", f'<span class="name">{esc(model.sha256)}</span>'])
    if page.artifact is not None:
        cells += [["artifact path", esc(page.artifact.path)], ["artifact sidecar", esc(page.artifact.sidecar)]]
    return table(None, cells)


def _finding_cells(target: str, f: Finding) -> list[str]:
    op = f.op_type or ""
    if f.op_index is not None:
        op = f"{op} #{fmt(f.op_index, 'd')}".strip()
    message = esc(f.message)
    if f.expected is not None or f.actual is not None:
        message += (f'<br><span class="muted">expected {esc(f.expected or "—")}, '
                    f'found {esc(f.actual or "—")}</span>')
    return [esc(target), f'<span class="badge {_SEVERITY_CLASS[f.severity]}">{esc(f.severity)}</span>',
            esc(f.rule_id), esc(op), f'<span class="name">{name_cell(f.tensor)}</span>' if f.tensor else "", message]


def _check(page: Page) -> str:
    sections = page.check
    if not sections:
        return ""
    summary = [[esc(s.target), bool_badge(s.passed), fmt(s.errors, "d"), fmt(s.warnings, "d"), str(len(s.findings))]
               for s in sections]
    parts = [table(["Target", "Result", "Errors", "Warnings", "Findings"], summary, numeric={2, 3, 4},
                   row_classes=["" if s.passed else "failed" for s in sections])]
    cells, hidden = [], 0
    for s in sections:
        findings = sorted(s.findings, key=lambda f: _SEVERITY_ORDER[f.severity])
        cells += [_finding_cells(s.target, f) for f in findings[:MAX_FINDINGS]]
        hidden += max(0, len(findings) - MAX_FINDINGS)
    if cells:
        parts.append("<h3>Findings (errors first)</h3>")
        parts.append(table(["Target", "Severity", "Rule", "Op", "Tensor", "Message"], cells))
    if hidden:
        parts.append(f'<p class="note">{hidden} more finding(s) not shown (the first {MAX_FINDINGS} per target, '
                     "errors first, are listed).</p>")
    return "\n".join(parts)


def _preview(value: str | None) -> str:
    """The calibration preview as an <img>, only if it really is a base64 PNG (never raw text in an attribute)."""
    if not value or not value.strip():
        return ""
    encoded = value.strip()
    if encoded.startswith("data:"):
        encoded = encoded.partition(",")[2]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data.startswith(_PNG_SIGNATURE):
        return '<p class="note">The calibration preview is not a base64 PNG; not shown.</p>'
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    scale = 2 if 0 < width < 400 else 1  # small tiles are unreadable at their natural size
    return img(base64.b64encode(data).decode("ascii"), "Calibration preview", "Samples from the calibration "
               "set, as written by edgeq datagen.", css_class="preview",
               size=(scale * width, scale * height) if width and height else None)


def _calibration(page: Page) -> str:
    calibration = page.calibration
    if calibration is None:
        return ""
    facts = [f"source <b>{esc(calibration.source)}</b>"] if calibration.source else []
    facts.append(f"{fmt(calibration.samples, 'd')} samples")
    parts = [f"<p>{', '.join(facts)}.</p>"]
    if calibration.counts:
        total = sum(calibration.counts.values())
        cells = [[esc(k), fmt(v, "d"), pct(v / total if total else None, 1)] for k, v in calibration.counts.items()]
        parts.append(table(["Condition", "Samples", "Share"], cells, numeric={1, 2}))
    parts.append(_preview(calibration.preview_png))
    return "\n".join(p for p in parts if p)


def _coverage(page: Page) -> str:
    coverage = page.coverage
    if coverage is None:
        return ""
    covered = coverage.layers
    flagged_layers = [r for r in covered if r.flagged]
    count = fmt(coverage.flagged, "d")
    shown = f"<b>{count}</b> of {len(covered)} layer(s) flagged" if covered else f"<b>{count}</b> layer(s) flagged"
    threshold = finite(coverage.threshold)
    if threshold is not None:
        shown += f": calibration max / production max below {fmt(threshold, 'g')}"
    parts = [f"<p>{shown}.</p>"]
    if covered:
        names = [r.name for r in covered]
        conditions = [(cond, [math.nan if (v := finite(m)) is None else v for m in maxima])
                      for cond, maxima in coverage.per_condition_max.items()
                      if len(maxima) == len(names)]  # a list that does not line up with the layers would mislead
        production = [finite(r.production_max) for r in covered]
        flagged = [i for i, r in enumerate(covered) if r.flagged and production[i] is not None]
        hover = [f"{r.name}: calibration max {fmt(r.calib_max, '.4g')}, production max {fmt(r.production_max, '.4g')}"
                 for r in covered]
        parts.append(figure(plot_coverage, names, conditions, production, flagged, hover, alt="Calibration coverage",
                            map_name="coverage-map",
                            caption="Per layer, the largest |activation| each calibration condition produced and "
                                    "the largest production produced; red: production beyond the calibrated "
                                    "range (those values will clip). Hover a layer for its full name."))
    if flagged_layers:
        has_closing = any(r.closing_conditions for r in flagged_layers)
        headers = ["Layer", "Calibration max", "Production max", "Ratio",
                   *(["Conditions that reach production"] if has_closing else [])]
        cells = [[name_cell(r.name), fmt(r.calib_max, ".4g"), fmt(r.production_max, ".4g"),
                  f'<span class="bad">{fmt(r.ratio, ".3f")}</span>',
                  *([esc(", ".join(r.closing_conditions) or "none")] if has_closing else [])] for r in flagged_layers]
        parts.append("<h3>Flagged layers</h3>")
        parts.append(table(headers, cells, numeric={1, 2, 3}, names={0}))
    return "\n".join(p for p in parts if p)


Renderer = Callable[[Page], str]

# Page order; the key is the section's anchor and the report key it shows.
SECTIONS: dict[str, tuple[str, Renderer]] = {
    "gates": ("Gates", _gates),
    "model": ("Model", _model),
    "validation": ("Accuracy", accuracy.render),
    "outputs": ("Outputs", outputs.render),
    "recovery": ("Recovery ladder", recovery.render),
    "sensitivity": ("Sensitivity", recovery.render_sensitivity),
    "layers": ("Per-layer error", layers.render_layers),
    "histograms": ("Activation ranges", layers.render_histograms),
    "graph": ("Operators", graph.render_ops),
    "edgetpu": ("Edge TPU partition", graph.render_edgetpu),
    "latency": ("Latency", latency.render),
    "baseline_comparison": ("Against the baseline", baseline.render),
    "check": ("Target checks", _check),
    "calibration": ("Calibration set", _calibration),
    "coverage": ("Calibration coverage", _coverage),
    "provenance": ("Provenance", origin.render_provenance),
}
