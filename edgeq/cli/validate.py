"""``edgeq validate``: FP32 vs INT8 for every calibration method, per condition and per layer, gated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.calib.estimators import METHODS
from edgeq.cli.argtypes import integer, number
from edgeq.cli.output import print_table
from edgeq.errors import GateFailed, UsageError


def register(verbs: Any) -> None:
    val = verbs.add_parser(
        "validate", help="FP32 baseline vs INT8 per method, per condition and per layer, with a max-drop gate",
        description="Calibrates once, converts with every method, measures accuracy drop, agreement and output "
                    "SQNR against FP32 (per condition when the evaluation set has them), diagnoses the best "
                    "method layer by layer, writes report.json and report.html. Exit 1 when no method meets "
                    "--max-drop, with triage advice.")
    val.add_argument("model", help="float model (.keras/.h5, SavedModel, float .tflite)")
    val.add_argument("--calib", required=True, metavar="SET", help="calibration data (a datagen set, .npy, ...)")
    val.add_argument("--eval", required=True, dest="eval_set", metavar="SET",
                     help="labelled evaluation set (a datagen set or digits:test / lfw:test)")
    val.add_argument("--methods", default=",".join(m.value for m in METHODS), help="estimators to compare")
    val.add_argument("--max-drop", type=number(-100.0, 100.0), metavar="PP",
                     help="gate: the picked method's top-1 drop in points, measured on the held-out gate half of "
                          "--eval (fails when the point estimate exceeds PP; the report says whether the 95%% "
                          "interval makes that clear)")
    val.add_argument("--split-seed", type=integer(0, 2**63 - 1), default=0, metavar="N",
                     help="seed of the stratified split of --eval into a selection half (picks the method by "
                          "fidelity to FP32) and a gate half (measures the drop); default 0")
    val.add_argument("--preprocess", metavar="SPEC", help="mean=...,std=... or none (raw 0-255 values); default: "
                     "the model's own TFLite Metadata, else each set's datagen.json; none known is an error")
    val.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for models and the report")
    val.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from edgeq.artifacts import Estimator
    from edgeq.calib.data import parse_preprocessing
    from edgeq.harness.labelled import load_labelled
    from edgeq.preprocess import model_file_preprocessing, resolve
    from edgeq.report.html import write_report
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
        outcome = validate(args.model, args.calib, data, out, methods, args.max_drop, calib_preprocessing=pp,
                           split_seed=args.split_seed)
    except BaseException:
        if created and out.exists():  # leave no half-filled output folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    gates = [] if args.max_drop is None else [max_drop_gate(outcome.document["validation"]["gate"])]
    document = {"title": f"edgeq validate: {Path(args.model).name}", **outcome.document, "gates": gates,
                "passed": outcome.passed, "preprocessing": resolved.to_dict()}
    json_path, html_path = write_report(document, out)
    print_summary(document)
    print(f"\nreport: {html_path} ({json_path.name})")
    if not outcome.passed:
        raise GateFailed(f"gate max_drop failed: {gates[0]['detail']}; {outcome.advice[0]}")
    return 0


def sqnr_text(row: dict[str, Any]) -> str:
    """Output SQNR for a table: '∞ (bit-exact)' when the INT8 outputs equal FP32's, '-' when not measured."""
    if row.get("bit_exact") is True:
        return "∞ (bit-exact)"
    return "-" if row.get("output_sqnr_db") is None else f"{row['output_sqnr_db']:.1f}"


def top1_text(row: dict[str, Any]) -> str:
    """'89.17% [84.6, 92.5]': top-1 with its 95% Wilson interval in percent."""
    ci = row.get("top1_ci")
    text = f"{row['top1']:.2%}"
    return text if not ci else f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def drop_text(row: dict[str, Any]) -> str:
    """'+0.83 [-1.05, +2.71]': the drop in points with its 95% paired interval."""
    ci = row.get("drop_ci_pp")
    text = f"{row['drop_pp']:+.2f}"
    return text if not ci else f"{text} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def method_rows(validation: dict[str, Any]) -> list[list[str]]:
    """FP32 and one row per method: top-1 [CI], drop [CI], vs FP32 (tie inside the interval), agreement,
    output SQNR, fidelity rank (selection half); the picked method is starred."""
    baseline = validation["baseline"]
    rows = [["FP32", top1_text(baseline), "-", "-", "-", "-", "-"]]
    for r in validation["methods"]:
        mark = " *" if r["method"] == validation["best_method"] else ""
        rank = (r.get("selection") or {}).get("rank")
        rows.append([f"INT8 {r['method']}{mark}", top1_text(r), drop_text(r), r.get("vs_fp32", "-"),
                     f"{r['agreement']:.2%}", sqnr_text(r), "-" if rank is None else str(rank)])
    return rows


METHOD_HEADERS = ["model", "top-1 [95% CI]", "drop pp [95% CI]", "vs FP32", "agrees with FP32", "output SQNR dB",
                  "fidelity rank"]


def selection_lines(validation: dict[str, Any]) -> list[str]:
    """Why this method, and what the held-out half says about its drop."""
    selection, gate = validation.get("selection") or {}, validation.get("gate") or {}
    lines = []
    if selection:
        line = (f"picked: {validation['best_method']}, the most faithful to FP32 on the selection half "
                f"({selection['n']} samples; by agreement, then output SQNR, then output error)")
        if selection.get("tied_with_best"):
            line += f"; tied exactly with {', '.join(selection['tied_with_best'])}"
        lines.append(line)
    if gate:
        lines.append(f"{'gate' if gate.get('max_drop_pp') is not None else 'held-out half'}: {gate['detail']}")
    return lines


def print_summary(document: dict[str, Any]) -> None:
    validation = document["validation"]
    print_table(METHOD_HEADERS, method_rows(validation))
    print("top-1 intervals: Wilson 95%; drop intervals: paired (Newcombe) 95%; 'tie': the interval contains 0")
    for line in selection_lines(validation):
        print(line)
    worst = document["layers"]["worst"]
    if worst:
        print(f"worst layers ({document['layers']['method']}): " + ", ".join(w[-48:] for w in worst))
    for line in validation["advice"]:
        print(f"advice: {line}")
