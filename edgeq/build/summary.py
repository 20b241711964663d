"""The GitHub-flavoured Markdown summary of a build (or a validation): what a reviewer reads on the run's page.

``--summary-md FILE`` writes it; under GitHub Actions it is also appended to ``$GITHUB_STEP_SUMMARY`` (a file
every step of a job appends to). Every figure comes from the report itself, so the summary, report.json and
report.html never disagree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeq.report.baseline import REGRESSION_UNITS, delta_rows, environment, made_by
from edgeq.results.baseline import BaselineComparison
from edgeq.results.build import BuildReport
from edgeq.results.gates import Gate
from edgeq.results.validation import ValidationReport, ValidationRun

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def _cell(value: object) -> str:
    """A table cell: a pipe would end the cell and a newline the row."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _num(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f}%"


@dataclass(frozen=True)
class GateFigures:
    value: str
    limit: str


def _max_drop(gate: Gate, report: ValidationReport) -> GateFigures:
    return GateFigures(_num(gate.drop_pp, 2, " pp"), _num(report.validation.max_drop_pp, 2, " pp"))


def _latency(gate: Gate, report: ValidationReport) -> GateFigures:
    if not gate.verdicts:
        return GateFigures("not measured", "-")
    worst = max(gate.verdicts, key=lambda v: (not v.passed, v.value_ms))
    return GateFigures(f"p{worst.percentile:g} {worst.value_ms:.3f} ms (t{worst.threads})", f"{worst.max_ms:g} ms")


def _spec(gate: Gate, report: ValidationReport) -> GateFigures:
    return GateFigures(gate.detail, "0 errors")


def _coverage(gate: Gate, report: ValidationReport) -> GateFigures:
    return GateFigures(gate.detail.split(" layer")[0] + " layers flagged", "0")


def _regression(gate: Gate, report: ValidationReport) -> GateFigures:
    unit = REGRESSION_UNITS.get(gate.name.partition(":")[2], "")
    value = "not judged" if gate.judged is False else _num(gate.value, 2, f" {unit}")
    return GateFigures(value, "-" if gate.limit is None else f"{gate.limit:g} {unit}")


FIDELITY_UNITS = {"min_output_sqnr": " dB"}  # the others are shares or normalized errors


def _fidelity(gate: Gate, report: ValidationReport) -> GateFigures:
    """A validate fidelity limit carries its measured value and limit."""
    unit = FIDELITY_UNITS.get(gate.name.partition(":")[0], "")
    return GateFigures(_num(gate.value, 4, unit), "-" if gate.limit is None else f"{gate.limit:g}{unit}")


# gate name (before the first ':') -> its measured value and limit; anything else is a fidelity limit
GATE_FIGURES: dict[str, Callable[[Gate, ValidationReport], GateFigures]] = {
    "max_drop": _max_drop, "latency": _latency, "spec": _spec, "coverage": _coverage,
    "max_regression": _regression,
}


def gate_figures(gate: Gate, report: ValidationReport) -> GateFigures:
    """A gate's measured value and limit, as the summary and JUnit show them."""
    return GATE_FIGURES.get(gate.name.partition(":")[0], _fidelity)(gate, report)


def _result(gate: Gate) -> str:
    if gate.judged is False:
        return "⏭️ not judged"
    return "✅ pass" if gate.passed else "❌ FAIL"


Judged = BuildReport | ValidationRun  # what a build or a validation writes to report.json


def validation_of(report: Judged) -> ValidationReport:
    return report.validation_report if isinstance(report, BuildReport) else report.report


def _gates(report: Judged) -> list[str]:
    gates = report.gates
    if not gates:
        return ["No gates were set.", ""]
    validation = validation_of(report)
    rows = []
    for gate in gates:
        figures = gate_figures(gate, validation)
        rows.append([gate.name, _result(gate), figures.value, figures.limit, gate.detail])
    return ["### Gates", "", *table(["gate", "result", "value", "limit", "detail"], rows)]


def _methods(report: ValidationReport) -> list[str]:
    validation = report.validation
    rows = []
    if validation.baseline is not None:
        rows.append(["FP32", _pct(validation.baseline.top1), "-", "-", "-", ""])
    for m in validation.methods:
        sqnr = "bit-exact" if m.bit_exact else _num(m.output_sqnr_db, 1)
        rows.append([f"INT8 {m.method.value}", _pct(m.top1), _num(m.drop_pp, 2), _pct(m.agreement), sqnr,
                     "✔" if m.method is validation.best_method else ""])
    recovered = report.recovery.met_by if report.recovery is not None else None
    lines = ["### Accuracy and fidelity", "",
             f"On {validation.eval_set}; ✔ marks the picked method"
             + (f" (the recovery rung {recovered} then met the gates)" if recovered else "") + ".", ""]
    lines += table(["model", "top-1", "drop pp", "agrees with FP32", "output SQNR dB", "picked"], rows)
    if report.outputs is not None and len(report.outputs.model_outputs) > 1:
        best = next((m for m in report.outputs.methods if m.method is validation.best_method), None)
        if best is not None:
            lines += table(["output (picked method)", "SQNR dB", "cosine"],
                           [[o.output, _num(o.fidelity.sqnr_db, 1), _num(o.fidelity.cosine, 4)]
                            for o in best.outputs])
    return lines


def _size(report: ValidationReport) -> list[str]:
    model = report.model
    return ["### Size", "", *table(["FP32 bytes", "INT8 bytes", "ratio"],
                                   [[f"{model.float_bytes:,}", f"{model.int8_bytes:,}", f"{model.size_ratio:.2f}x"]])]


def _latency_table(report: BuildReport) -> list[str]:
    if not report.latency:
        return []
    rows = [[row.label, f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}", len(row.samples_ms)] for row in report.latency]
    lines = ["### Latency", ""]
    if report.bench_environment is not None:
        lines += [f"Measured on {report.bench_environment.describe()}.", ""]
    return lines + table(["configuration", "p50 ms", "p90 ms", "runs"], rows)


def _baseline(comparison: BaselineComparison | None) -> list[str]:
    if comparison is None:
        return []
    lines = ["### Against the baseline", "",
             f"Baseline: `{comparison.path}` ({made_by(comparison)}; published {comparison.method}; latency "
             f"measured on {environment(comparison)}).", ""]
    rows = [[r.aspect, r.figure, r.baseline, r.current, r.change + ("" if r.comparable else " (not comparable)")]
            for r in delta_rows(comparison)]  # the rows report.html shows (edgeq.report.baseline)
    lines += table(["aspect", "figure", "baseline", "this build", "change"], rows) if rows else [
        "The reports have no figure in common.", ""]
    lines += [f"- {note}" for note in comparison.notes]
    return [*lines, ""] if comparison.notes else lines


def _artifacts(report: BuildReport, report_dir: Path | None) -> list[str]:
    paths = [("INT8 model", report.artifact.path), ("sidecar", report.artifact.sidecar)]
    if report_dir is not None:
        paths += [("report", str(report_dir / "report.html")), ("report data", str(report_dir / "report.json"))]
    return ["### Artifacts", "", *[f"- {what}: `{path}`" for what, path in paths], ""]


def render(report: Judged, report_dir: Path | None = None) -> str:
    """The summary of a build's report (or a validation's: its gates, accuracy, fidelity and size)."""
    build = report if isinstance(report, BuildReport) else None
    validation = validation_of(report)
    failed = [g.name for g in report.gates if not g.passed]
    verdict = "✅ PASS" if report.passed else "❌ FAIL"
    lines = [f"## {report.title}: {verdict}", ""]
    if failed:
        lines += [f"Failed: {', '.join(failed)}.", ""]
    lines += _gates(report) + _methods(validation) + _size(validation)
    if build is not None:
        lines += _latency_table(build) + _baseline(build.baseline_comparison) + _artifacts(build, report_dir)
    elif report_dir is not None:
        lines += ["### Artifacts", "", f"- report: `{report_dir / 'report.html'}`", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_summary(text: str, path: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """Write ``text`` to ``path`` (replacing it) and append it to ``$GITHUB_STEP_SUMMARY`` when that is set; the
    same file named both ways is appended to once. Returns the files written."""
    from edgeq.errors import InputError
    from edgeq.files import write_text_atomic

    written: list[str] = []
    step = environ.get(STEP_SUMMARY) or None
    same = step is not None and path is not None and Path(step).resolve() == Path(path).resolve()
    target = path
    try:
        if path is not None and not same:
            write_text_atomic(Path(path), text)
            written.append(path)
        if step is not None:
            target = step
            with open(step, "a", encoding="utf-8") as handle:  # shared by the job's steps: append, never replace
                handle.write(text if not handle.tell() else "\n" + text)
            written.append(step)
    except OSError as exc:
        raise InputError(f"cannot write the summary to {target}: {exc.strerror or exc}") from None
    return written
