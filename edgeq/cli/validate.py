"""``edgeq validate``: FP32 vs INT8 for every calibration method, per condition and per layer, gated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.cli.argtypes import number
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
    val.add_argument("--methods", default="minmax,percentile,mse,kl,auto", help="estimators to compare")
    val.add_argument("--max-drop", type=number(-100.0, 100.0), metavar="PP",
                     help="gate: best method's top-1 drop in points")
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
        outcome = validate(args.model, args.calib, data, out, methods, args.max_drop, calib_preprocessing=pp)
    except BaseException:
        if created and out.exists():  # leave no half-filled output folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    gates = [] if args.max_drop is None else [{
        "name": "max_drop", "passed": outcome.passed,
        "detail": f"{outcome.best_method.value} drops {_best(outcome)['drop_pp']:+.2f} pp (limit {args.max_drop} pp)"}]
    document = {"title": f"edgeq validate: {Path(args.model).name}", **outcome.document, "gates": gates,
                "passed": outcome.passed, "preprocessing": resolved.to_dict()}
    json_path, html_path = write_report(document, out)
    print_summary(document)
    print(f"\nreport: {html_path} ({json_path.name})")
    if not outcome.passed:
        raise GateFailed(f"gate max_drop failed: {gates[0]['detail']}; {outcome.advice[0]}")
    return 0


def _best(outcome: Any) -> dict[str, Any]:
    return next(r for r in outcome.document["validation"]["methods"] if r["method"] == outcome.best_method.value)


def print_summary(document: dict[str, Any]) -> None:
    validation = document["validation"]
    baseline = validation["baseline"]
    rows = [["FP32", f"{baseline['top1']:.2%}", "-", "-", "-"]]
    for r in validation["methods"]:
        sqnr = "-" if r["output_sqnr_db"] is None else f"{r['output_sqnr_db']:.1f}"
        mark = " *" if r["method"] == validation["best_method"] else ""
        rows.append([f"INT8 {r['method']}{mark}", f"{r['top1']:.2%}", f"{r['drop_pp']:+.2f}",
                     f"{r['agreement']:.2%}", sqnr])
    print_table(["model", "top-1", "drop pp", "agrees with FP32", "output SQNR dB"], rows)
    worst = document["layers"]["worst"]
    if worst:
        print(f"worst layers ({document['layers']['method']}): " + ", ".join(w[-48:] for w in worst))
    for line in validation["advice"]:
        print(f"advice: {line}")
