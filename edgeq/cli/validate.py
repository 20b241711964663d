"""``edgeq validate``: FP32 vs INT8 for every calibration method, per condition and per layer, gated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.artifacts import Estimator
from edgeq.cli import options
from edgeq.cli.argtypes import integer, number
from edgeq.cli.output import print_table
from edgeq.errors import GateFailed, UsageError
from edgeq.results.validation import Baseline, MethodResult, ValidationReport, ValidationSummary


def register(verbs: Any) -> None:
    val = options.verb_parser(
        verbs, "validate", help="FP32 baseline vs INT8 per method, per condition and per layer, with a max-drop gate",
        description="Calibrates once, converts with every method, measures accuracy drop, agreement and output "
                    "SQNR against FP32 (per condition when the evaluation set has them), diagnoses the best "
                    "method layer by layer, writes report.json and report.html. Exit 1 when no method meets "
                    "--max-drop, with triage advice.", handler=run_validate)
    options.add_model_argument(val)
    options.add_calib_option(val)
    options.add_labelled_set_option(val, "--eval", dest="eval_set")
    val.add_argument("--methods", default=",".join(m.value for m in Estimator), help="estimators to compare")
    val.add_argument("--max-drop", type=number(-100.0, 100.0), metavar="PP",
                     help="gate: the picked method's top-1 drop in points, measured on the held-out gate half of "
                          "--eval (fails when the point estimate exceeds PP; the report says whether the 95%% "
                          "interval makes that clear)")
    val.add_argument("--split-seed", type=integer(0, 2**63 - 1), default=0, metavar="N",
                     help="seed of the stratified split of --eval into a selection half (picks the method by "
                          "fidelity to FP32) and a gate half (measures the drop); default 0")
    options.add_preprocess_option(val, default="the model's own TFLite Metadata, else each set's datagen.json; "
                                               "none known is an error")
    options.add_output_option(val, "folder for models and the report", metavar="DIR")


def run_validate(args: argparse.Namespace) -> int:
    from edgeq.artifacts import Estimator
    from edgeq.calib.data import parse_preprocessing
    from edgeq.harness.labelled import load_labelled
    from edgeq.preprocess import model_file_preprocessing, resolve
    from edgeq.report.page import write_report
    from edgeq.results.validation import PreprocessingChoice, ValidationRun
    from edgeq.validate.protocol import EvalData, validate
    from edgeq.validate.verdicts import max_drop_gate

    try:
        methods = tuple(Estimator(m.strip()) for m in args.methods.split(",") if m.strip())
    except ValueError:
        raise UsageError(f"--methods: unknown estimator in {args.methods!r}") from None
    if not methods:
        raise UsageError("--methods is empty")
    pp = parse_preprocessing(args.preprocess)
    images, labels, conditions, set_pp = load_labelled(args.eval_set)
    resolved = resolve(pp, model=model_file_preprocessing(args.model), data_set=set_pp,
                       model_name=Path(args.model).name, data_name=args.eval_set)
    print(resolved.line())
    for warning in resolved.warnings:
        print(f"edgeq: warning: {warning}", file=sys.stderr)
    assert resolved.spec is not None  # labelled sets are uint8 images: resolve() refuses rather than return None
    data = EvalData(name=args.eval_set, images=images, labels=labels, conditions=conditions,
                    preprocessing=resolved.spec)
    out = Path(args.output)
    created = not out.exists()
    try:
        report = validate(args.model, args.calib, data, out, methods, args.max_drop, calib_preprocessing=pp,
                          split_seed=args.split_seed)
    except BaseException:
        if created and out.exists():  # leave no half-filled output folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    gates = () if args.max_drop is None else (max_drop_gate(report.gate),)
    run = ValidationRun(title=f"edgeq validate: {Path(args.model).name}", report=report, gates=gates,
                        passed=report.passed, preprocessing=PreprocessingChoice.from_document(resolved.to_dict()))
    json_path, html_path = write_report(run, out)
    print_summary(report)
    print(f"\nreport: {html_path} ({json_path.name})")
    if not report.passed:
        raise GateFailed(f"gate max_drop failed: {gates[0].detail}; {report.advice[0]}")
    return 0


def sqnr_text(row: MethodResult) -> str:
    """Output SQNR for a table: '∞ (bit-exact)' when the INT8 outputs equal FP32's, '-' when not measured."""
    if row.bit_exact:
        return "∞ (bit-exact)"
    return "-" if row.output_sqnr_db is None else f"{row.output_sqnr_db:.1f}"


def top1_text(row: MethodResult | Baseline) -> str:
    """'89.17% [84.6, 92.5]': top-1 with its 95% Wilson interval in percent."""
    lo, hi = row.top1_ci
    return f"{row.top1:.2%} [{100 * lo:.1f}, {100 * hi:.1f}]"


def drop_text(row: MethodResult) -> str:
    """'+0.83 [-1.05, +2.71]': the drop in points with its 95% paired interval."""
    lo, hi = row.drop_ci_pp
    return f"{row.drop_pp:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def method_rows(validation: ValidationSummary) -> list[list[str]]:
    """FP32 and one row per method: top-1 [CI], drop [CI], vs FP32 (tie inside the interval), agreement,
    output SQNR, fidelity rank (selection half); the picked method is starred."""
    rows = [["FP32", top1_text(validation.baseline), "-", "-", "-", "-", "-"]]
    for r in validation.methods:
        mark = " *" if r.method == validation.best_method else ""
        rows.append([f"INT8 {r.method.value}{mark}", top1_text(r), drop_text(r), r.vs_fp32.value,
                     f"{r.agreement:.2%}", sqnr_text(r), str(r.selection.rank)])
    return rows


METHOD_HEADERS = ["model", "top-1 [95% CI]", "drop pp [95% CI]", "vs FP32", "agrees with FP32", "output SQNR dB",
                  "fidelity rank"]


def selection_lines(validation: ValidationSummary) -> list[str]:
    """Why this method, and what the held-out half says about its drop."""
    selection, gate = validation.selection, validation.gate
    line = (f"picked: {validation.best_method.value}, the most faithful to FP32 on the selection half "
            f"({selection.n} samples; by agreement, then output SQNR, then output error)")
    if selection.tied_with_best:
        line += f"; tied exactly with {', '.join(m.value for m in selection.tied_with_best)}"
    return [line, f"{'gate' if gate.max_drop_pp is not None else 'held-out half'}: {gate.detail}"]


def print_summary(report: ValidationReport) -> None:
    validation = report.validation
    print_table(METHOD_HEADERS, method_rows(validation))
    print("top-1 intervals: Wilson 95%; drop intervals: paired (Newcombe) 95%; 'tie': the interval contains 0")
    for line in selection_lines(validation):
        print(line)
    if report.layers.worst:
        print(f"worst layers ({report.layers.method.value}): " + ", ".join(w[-48:] for w in report.layers.worst))
    for line in validation.advice:
        print(f"advice: {line}")
