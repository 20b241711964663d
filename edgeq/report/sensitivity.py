"""The Sensitivity section: which tensors cost the accuracy, ranked on the simulated model
(edgeq.recover.sensitivity), and how far the simulation is from the real INT8 model."""

from __future__ import annotations

from edgeq.artifacts import SensitivityReport, TensorSensitivity
from edgeq.report.format import esc, finite, fmt, name_cell, table

TOP = 15  # rows shown; report.json holds every tensor
NAME_CHARS = 60
DOMINANT_DB = 3.0  # a tensor that alone comes this close to the all-quantized fidelity is most of the loss


def _name(name: str) -> str:
    """The name shortened readably (edgeq.report.format.short), the whole name on hover."""
    return name_cell(name, NAME_CHARS)


def _only_db(value: float, all_db: float) -> str:
    number, everything = finite(value), finite(all_db)
    if number is None:
        return fmt(None)
    dominant = everything is not None and number - everything < DOMINANT_DB
    return f'<span class="bad">{number:.1f}</span>' if dominant else f"{number:.1f}"


def _cells(row: TensorSensitivity, all_db: float) -> list[str]:
    return [fmt(row.rank, "d"), _name(row.name), esc(row.tensor_kind), esc(row.op), _only_db(row.only_db, all_db),
            fmt(row.all_but_db, ".1f"), fmt(row.recovers_db, "+.2f")]


def _simulated_vs_real(report: SensitivityReport) -> str:
    simulated = fmt(report.all_quantized_db, ".1f")
    if finite(report.real_int8_db) is None:
        return (f"<p>Simulated INT8 (every tensor quantized): <b>{simulated} dB</b>; the real INT8 model was not "
                "measured on these samples.</p>")
    gap = report.all_quantized_db - (report.real_int8_db or 0.0)
    side = "optimistic" if gap > 0 else "pessimistic"
    return (f"<p>Simulated INT8 (every tensor quantized): <b>{simulated} dB</b>; the real INT8 model on the same "
            f"samples: <b>{fmt(report.real_int8_db, '.1f')} dB</b>, so the simulation is "
            f"{fmt(abs(gap), '.1f')} dB {side}.</p>")


def render_sensitivity(report: SensitivityReport) -> str:
    """HTML for a :class:`SensitivityReport`: the most sensitive tensors and simulated vs real fidelity; "" when
    it holds no tensor."""
    if not report.tensors:
        return ""
    ranges = f" with <b>{esc(report.ranges)}</b> ranges" if report.ranges else ""
    parts = [f"<p>Output fidelity (mean SQNR of the outputs against FP32, dB; higher is better) of the simulated "
             f"model{ranges} on {fmt(report.samples, 'd')} samples: activations only "
             f"{fmt(report.activations_only_db, '.1f')} dB, weights only {fmt(report.weights_only_db, '.1f')} dB.</p>",
             _simulated_vs_real(report)]
    shown = report.tensors[:TOP]
    parts.append(table(["Rank", "Tensor", "Kind", "Op", "Only it (dB)", "All but it (dB)", "Recovers (dB)"],
                       [_cells(r, report.all_quantized_db) for r in shown], numeric={0, 4, 5, 6}, names={1}))
    if len(report.tensors) > len(shown):
        parts.append(f'<p class="note">{len(shown)} of {len(report.tensors)} tensors shown; report.json holds '
                     "all.</p>")
    parts.append('<p class="note">Only it: fidelity with just this tensor quantized (low: it alone hurts; red: '
                 f"within {DOMINANT_DB:g} dB of every tensor quantized, so most of the loss). All but it: every other "
                 "tensor quantized, this one float. Recovers: what keeping this tensor at higher precision (int16) "
                 "wins at most. Tensors that share another's int8 scale (pooling, reshapes) are "
                 "ranked with it.</p>")
    return "\n".join(parts)
