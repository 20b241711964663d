"""The "Against the baseline" section (``edgeq build --baseline OLD/report.json``): every delta of the report's
``baseline_comparison``, whether it is a regression or could not be compared (and why), the comparison's notes,
and the ``max_regression`` gates with whether each was judged.

The rows are built here, as plain text, for the page and for the build's Markdown summary alike
(edgeq.build.summary imports :func:`delta_rows`): both show the very figures report.json holds, formatted once.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.report.content import Page
from edgeq.report.format import bool_badge, esc, fmt, table
from edgeq.results.baseline import WORSE, Aspect, BaselineComparison, Delta
from edgeq.results.gates import Gate

REGRESSION_GATE = "max_regression"
REGRESSION_UNITS = {"accuracy_pp": "pp", "sqnr_db": "dB", "size_pct": "%", "latency_pct": "%"}  # by limit key
# the direction that is worse, as max_regression judges it: a drop in accuracy or dB, growth in size or time
# the word a note about a figure that was not compared names it by (edgeq.build.baseline.compare's notes)
_NOTE_WORD = {Aspect.ACCURACY: "accuracy", Aspect.FIDELITY: "fidelity", Aspect.LATENCY: "latency"}
_FALLBACK_REASON = {Aspect.LATENCY: "the baseline's latency was measured on another environment"}
_OTHER_SET = "the baseline's figures were measured on another evaluation set"


@dataclass(frozen=True)
class DeltaRow:
    """One delta as text: what it is, both values and the change with its sign and unit."""

    aspect: str
    figure: str  # the subject, "(published)" when max_regression judges it
    baseline: str
    current: str
    change: str  # "+2.00 pp", "-10.00 %"
    regression: bool  # the change goes the worse way (any amount; the gates judge the limits)
    comparable: bool
    reason: str | None  # why it was not compared; None when it was


def delta_value(delta: Delta, value: float) -> str:
    """A baseline or current figure: top-1 as a percentage, bytes, milliseconds or dB."""
    if delta.aspect is Aspect.ACCURACY:
        return f"{value * 100:.2f}%"
    if delta.aspect is Aspect.SIZE:
        return f"{value:,.0f} B"
    if delta.aspect is Aspect.LATENCY:
        return f"{value:.3f} ms"
    return f"{value:.2f} dB"


def is_regression(delta: Delta) -> bool:
    return WORSE[delta.aspect] * delta.change > 0


def not_compared_reason(comparison: BaselineComparison, delta: Delta) -> str | None:
    """Why ``delta`` was shown but not compared (the comparison's note that says so), or None: it was compared."""
    if delta.comparable:
        return None
    word = _NOTE_WORD.get(delta.aspect)
    note = next((n for n in comparison.notes if word is not None and word in n
                 and ("not comparable" in n or "not judged" in n)), None)
    if note is None:
        return _FALLBACK_REASON.get(delta.aspect, _OTHER_SET)
    head, colon, why = note.partition(": ")  # "latency not comparable: the baseline was measured on ..."
    return why if colon and "not comparable" in head else note


def delta_rows(comparison: BaselineComparison) -> list[DeltaRow]:
    """Every delta of ``comparison``, in its order."""
    return [DeltaRow(aspect=d.aspect.value, figure=d.subject + (" (published)" if d.published else ""),
                     baseline=delta_value(d, d.baseline), current=delta_value(d, d.current),
                     change=f"{d.change + 0.0:+.2f} {d.unit}",  # + 0.0: no -0.00
                     regression=is_regression(d), comparable=d.comparable, reason=not_compared_reason(comparison, d))
            for d in comparison.deltas]


def made_by(comparison: BaselineComparison) -> str:
    """Which edgeq wrote the baseline."""
    return (f"made by edgeq {comparison.edgeq_version}, schema {comparison.schema_version}"
            if comparison.edgeq_version else "written before reports carried edgeq's version (schema 0)")


def environment(comparison: BaselineComparison) -> str:
    """Where the baseline's latency was measured."""
    return comparison.environment.describe() if comparison.environment else "an unrecorded environment"


def regression_gates(gates: tuple[Gate, ...] | None) -> list[Gate]:
    return [g for g in gates or () if g.name.partition(":")[0] == REGRESSION_GATE]


def _regression_cell(row: DeltaRow) -> str:
    if not row.comparable:
        return '<span class="muted">not judged</span>'
    return '<span class="bad">regression</span>' if row.regression else '<span class="ok">no</span>'


def _comparable_cell(row: DeltaRow) -> str:
    return "yes" if row.comparable else f'<span class="warn">not comparable</span>: {esc(row.reason)}'


def _gate_rows(gates: list[Gate]) -> list[list[str]]:
    rows = []
    for gate in gates:
        judged = gate.judged is not False
        unit = f" {REGRESSION_UNITS.get(gate.name.partition(':')[2], '')}".rstrip()
        result = bool_badge(gate.passed) if judged else '<span class="badge muted">NOT JUDGED</span>'
        rows.append([esc(gate.name), "yes" if judged else "no", result,
                     fmt(gate.value, ".2f", esc(unit)) if judged else "—", fmt(gate.limit, "g", esc(unit)),
                     esc(gate.detail)])
    return rows


def render(page: Page) -> str:
    comparison = page.baseline_comparison
    if comparison is None:
        return ""
    parts = [f'<p>Baseline <span class="name">{esc(comparison.path)}</span> ({esc(made_by(comparison))}; '
             f"published <b>{esc(comparison.method)}</b>; latency measured on {esc(environment(comparison))}). "
             "A change is this build minus the baseline: points for top-1, dB for SQNR, percent for size and "
             "latency; a regression goes the worse way by any amount, the gates below judge the limits.</p>"]
    rows = delta_rows(comparison)
    if rows:
        cells = [[esc(r.aspect), esc(r.figure), esc(r.baseline), esc(r.current), esc(r.change), _regression_cell(r),
                  _comparable_cell(r)] for r in rows]
        parts.append(table(["Aspect", "Figure", "Baseline", "This build", "Change", "Regression", "Compared"], cells,
                           numeric={2, 3, 4},
                           row_classes=["failed" if r.regression and r.comparable else "" for r in rows]))
    else:
        parts.append('<p class="note">The reports have no figure in common.</p>')
    if comparison.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(note)}</li>" for note in comparison.notes) + "</ul>")
    gates = regression_gates(page.gates)
    if gates:
        parts.append("<h3>max_regression gates</h3>")
        parts.append(table(["Gate", "Judged", "Result", "Regression", "Limit", "Detail"], _gate_rows(gates),
                           numeric={3, 4}))
    else:
        parts.append('<p class="note">The recipe sets no <code>max_regression</code>: nothing was judged against '
                     "the baseline.</p>")
    return "\n".join(parts)
