"""The Recovery section: each rung of ``validate --recover`` with its fidelity, gate, size and latency, and
which rung met the gate (or the tensors that remain the problem)."""

from __future__ import annotations

from edgeq.report.content import Page
from edgeq.report.format import bool_badge, esc, fmt, kib, name_cell, pct, table
from edgeq.results.validation import RungResult


def _row(rung: RungResult) -> list[str]:
    latency = ", ".join(f"{esc(backend)} {value:.3g} ms" + (" (unstable)" if backend in rung.latency_unstable else "")
                        for backend, value in rung.latency_ms.items()) or "-"
    agreement = "-" if rung.selection_agreement is None else pct(rung.selection_agreement, 1)
    gate = "-" if rung.gate_passed is None else bool_badge(rung.gate_passed)
    return [esc(rung.rung), esc(rung.status), fmt(rung.selection_sqnr_db, ".1f"), agreement, gate,
            "-" if rung.int8_bytes is None else kib(rung.int8_bytes), latency, esc(rung.note)]


def render(page: Page) -> str:
    recovery = page.recovery
    if recovery is None:
        return ""
    rungs = (recovery.start, *recovery.rungs)
    parts = [f"<p><b>{esc(recovery.verdict)}</b></p>",
             f"<p>Ladder: {esc(', '.join(recovery.ladder))}; targets: {esc(', '.join(recovery.targets))}. "
             "Fidelity on the selection half (decides whether a rung is kept), gates on the held-out gate half; "
             "latency is the median of a short in-process run, one thread.</p>",
             table(["Rung", "Status", "Output SQNR (dB)", "Agreement", "Gate", "INT8 size", "Latency", "Note"],
                   [_row(r) for r in rungs], numeric={2, 3, 5},
                   row_classes=["" if r.gate_passed else "failed" for r in rungs])]
    if recovery.remaining:
        parts.append("<p>Tensors that remain the problem (most to gain from higher precision):</p>")
        parts.append(table(["Tensor"], [[name_cell(name)] for name in recovery.remaining], names={0}))
    return "\n".join(parts)


def render_sensitivity(page: Page) -> str:
    from edgeq.report.sensitivity import render_sensitivity as render_report

    return render_report(page.sensitivity) if page.sensitivity is not None else ""
