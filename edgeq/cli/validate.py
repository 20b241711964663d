"""``edgeq validate``: FP32 vs INT8 for every calibration method, output by output, per condition and per layer,
gated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.artifacts import Estimator, Target
from edgeq.cli import options
from edgeq.cli.argtypes import integer, number
from edgeq.cli.output import emit_json, info, print_table, tables_wanted
from edgeq.errors import GateFailed, UsageError
from edgeq.results.validation import Baseline, MethodResult, RecoveryReport, ValidationReport, ValidationSummary

TASK_HELP = ("judge an output by a task: OUTPUT (a name or index) = generic, classification, detection, landmarks "
             "or segmentation, then the task's keys, e.g. regressors=detection,scores=classificators,form=ssd or "
             "mask=segmentation,threshold=0.5 (docs/tasks.md lists the keys); repeat for more outputs; the first "
             "declared output ranks the methods. Default: classification for a lone [1, C] output when --eval has "
             "labels, else generic (fidelity only)")


def register(verbs: Any) -> None:
    val = options.verb_parser(
        verbs, "validate", help="FP32 vs INT8 per method, output by output, per condition and per layer, with gates",
        description="Calibrates once, converts with every method and measures each against FP32 on --eval: every "
                    "output's fidelity (SQNR, cosine, errors) and its task's figures (--task), top-1 and its drop "
                    "when --eval has labels and the model a classification output, per condition when --eval "
                    "has them; picks the most faithful method, diagnoses it layer by layer, writes report.json "
                    "and report.html. Exit 1 when a gate fails (--max-drop or a fidelity limit), with triage "
                    "advice.", handler=run_validate)
    options.add_model_argument(val)
    options.add_calib_option(val)
    options.add_labelled_set_option(val, "--eval", dest="eval_set")
    val.add_argument("--methods", default=",".join(m.value for m in Estimator if m is not Estimator.SEARCH),
                     help="estimators to compare (search, which measures per-tensor choices, only when named)")
    val.add_argument("--max-drop", type=number(-100.0, 100.0), metavar="PP",
                     help="gate: the picked method's top-1 drop in points, measured on the held-out gate half of "
                          "--eval (fails when the point estimate exceeds PP; the report says whether the 95%% "
                          "interval makes that clear); needs labels and a classification output")
    val.add_argument("--split-seed", type=integer(0, 2**63 - 1), default=0, metavar="N",
                     help="seed of the stratified split of --eval into a selection half (picks the method by "
                          "fidelity to FP32) and a gate half (measures the drop and the fidelity limits); default 0")
    ladder = val.add_argument_group("recovery when a gate fails (docs/recovery.md)")
    ladder.add_argument("--recover", metavar="RUNG,...",
                        help="climb these rungs in order while the gate is still missed, stopping at the first that "
                             "meets it: search, equalize, bias_correction, int16:N (e.g. "
                             "search,equalize,bias_correction,int16:3)")
    ladder.add_argument("--targets", default="generic", metavar="TARGET,...",
                        help="where the model will run (generic, xnnpack, edgetpu, tflm): rungs a target cannot run "
                             "are refused (int16 on the Edge TPU); default generic")
    ladder.add_argument("--sensitivity", action="store_true",
                        help="add the picked method's per-tensor sensitivity (simulated) to the report")
    tasks = val.add_argument_group("output tasks and fidelity gates (judged on the held-out gate half; docs/tasks.md)")
    tasks.add_argument("--task", action="append", default=[], metavar="OUTPUT=TASK[,KEY=VALUE...]",
                       help=TASK_HELP.replace("%", "%%"))
    tasks.add_argument("--tasks", metavar="FILE",
                       help="a YAML/JSON list of output tasks, each a mapping with output, task and the task's keys "
                            "(declared before any --task)")
    tasks.add_argument("--min-output-sqnr", action="append", default=[], type=_output_limit, metavar="OUTPUT=DB",
                       help="gate: an output's SQNR against FP32 in dB is at least DB (repeatable)")
    tasks.add_argument("--min-agreement", type=number(0.0, 1.0), metavar="SHARE",
                       help="gate: every classification output agrees with FP32's class on at least SHARE (0-1) of "
                            "the samples")
    tasks.add_argument("--min-detection-recall", type=number(0.0, 1.0), metavar="SHARE",
                       help="gate: every detection output recovers at least SHARE (0-1) of FP32's detections")
    tasks.add_argument("--min-mask-iou", type=number(0.0, 1.0), metavar="IOU",
                       help="gate: every segmentation output's mean mask IoU with FP32's mask is at least IOU")
    tasks.add_argument("--max-landmark-error", type=number(0.0), metavar="NORM",
                       help="gate: every landmarks output's mean point error, normalized by the landmarks' box "
                            "(or box_size), is at most NORM")
    options.add_preprocess_option(val, default="the model's own TFLite Metadata, else each set's datagen.json; "
                                               "none known is an error")
    options.add_output_option(val, "folder for models and the report", metavar="DIR")
    options.add_executor_options(val)
    options.add_ci_output_options(val)
    options.add_machine_output_options(val, "the verdict, the gates and where the report and models are")


def _output_limit(text: str) -> tuple[str, float]:
    """``OUTPUT=DB``: an output (name or index) and a finite number."""
    output, sep, value = text.rpartition("=")
    if not sep or not output.strip():
        raise argparse.ArgumentTypeError(f"expected OUTPUT=DB (an output name or index, then dB), got {text[:60]!r}")
    return output.strip(), number()(value.strip())


def _declarations(args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgeq.validate.outputs import load_task_file, parse_task_text

    declared = load_task_file(args.tasks) if args.tasks else []
    return declared + [parse_task_text(text) for text in args.task]


def _gates(args: argparse.Namespace) -> Any:
    from edgeq.validate.outputs import FidelityGates

    sqnr: dict[str, float] = {}
    for output, db in args.min_output_sqnr:
        if output in sqnr:
            raise UsageError(f"--min-output-sqnr: output {output!r} given twice")
        sqnr[output] = db
    return FidelityGates(min_output_sqnr_db=sqnr, min_agreement=args.min_agreement,
                         max_landmark_error=args.max_landmark_error, min_mask_iou=args.min_mask_iou,
                         min_detection_recall=args.min_detection_recall)


def run_validate(args: argparse.Namespace) -> int:
    from edgeq.artifacts import Estimator
    from edgeq.cli.ci import check_ci_outputs, ci_outputs
    from edgeq.extras import require_extra

    check_ci_outputs(args)  # an unwritable summary must not fail the validation after the work
    require_extra("tensorflow", "edgeq validate (it converts the float model with each method)")  # before any work
    from edgeq.calib.data import parse_preprocessing
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import model_file_preprocessing, resolve
    from edgeq.report.page import write_report
    from edgeq.results.validation import PreprocessingChoice, ValidationRun
    from edgeq.validate.declarations import model_input
    from edgeq.validate.protocol import validate
    from edgeq.validate.verdicts import max_drop_gate

    spec = options.executor_spec(args)
    try:
        methods = tuple(Estimator(m.strip()) for m in args.methods.split(",") if m.strip())
    except ValueError:
        raise UsageError(f"--methods: unknown estimator in {args.methods!r}") from None
    if not methods:
        raise UsageError("--methods is empty")
    from edgeq.validate.ladder import parse_ladder

    rungs = parse_ladder([r for r in (args.recover or "").split(",") if r.strip()])
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = sorted(set(targets) - {t.value for t in Target})
    if unknown or not targets:
        raise UsageError(f"--targets: unknown target {', '.join(unknown) or '(none given)'} "
                         f"(targets: {', '.join([t.value for t in Target])})")
    pp = parse_preprocessing(args.preprocess)
    declared, limits = _declarations(args), _gates(args)
    if rungs and args.max_drop is None and not limits:
        raise UsageError("--recover climbs while a gate is missed, and no gate is set: give --max-drop or a fidelity "
                         "limit (--min-output-sqnr, --min-agreement, --min-detection-recall, --min-mask-iou, "
                         "--max-landmark-error)")
    float_model = load_float_model(args.model)
    input_name, input_shape = model_input(float_model.flatbuffer)
    eval_set = load_eval_set(args.eval_set, input_shape=input_shape, input_name=input_name)
    if args.max_drop is not None and not eval_set.labelled:
        raise UsageError(f"--max-drop gates the top-1 drop, which needs labels, and {args.eval_set} has none; gate "
                         "fidelity instead (--min-output-sqnr, --min-agreement, --min-detection-recall, "
                         "--min-mask-iou, --max-landmark-error)")
    resolved = resolve(pp, model=model_file_preprocessing(args.model), data_set=eval_set.preprocessing,
                       images=eval_set.images is not None, model_name=Path(args.model).name,
                       data_name=args.eval_set)
    info(resolved.line())
    for warning in resolved.warnings:
        print(f"edgeq: warning: {warning}", file=sys.stderr)
    data = eval_set.with_preprocessing(resolved.spec)
    out = Path(args.output)
    created = not out.exists()
    from edgeq.execute import open_executor

    try:
        with open_executor(spec) as executor:
            report = validate(float_model, args.calib, data, out, methods, args.max_drop, calib_preprocessing=pp,
                              split_seed=args.split_seed, tasks=declared, gates=limits, recover=rungs,
                              targets=targets, sensitivity=args.sensitivity, executor=executor)
    except BaseException:
        if created and out.exists():  # leave no half-filled output folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    gate = report.gate
    gates = ((max_drop_gate(gate),) if args.max_drop is not None and gate is not None else ()) + report.output_gates
    recovered = report.recovery is not None and report.recovery.met_by is not None and report.recovery.model is not None
    from edgeq.report.graph_data import graph_report
    from edgeq.report.provenance import fingerprint, provenance
    from edgeq.validate.protocol import model_path

    int8_model = (out / report.recovery.model if recovered and report.recovery is not None and report.recovery.model
                  else model_path(out, report.best_method))
    inputs = [fingerprint("model", args.model), fingerprint("calibration set", args.calib),
              fingerprint("evaluation set", args.eval_set), fingerprint("int8 model", int8_model)]
    run = ValidationRun(title=f"edgeq validate: {Path(args.model).name}", report=report, gates=gates,
                        passed=report.passed or recovered,
                        preprocessing=PreprocessingChoice.from_document(resolved.to_dict()),
                        graph=graph_report(int8_model.read_bytes()),
                        provenance=provenance("validate", vars(args), inputs))
    json_path, html_path = write_report(run, out)
    if tables_wanted(args):
        print_summary(report)
        if report.recovery is not None:
            print_recovery(report.recovery)
    print(f"\nreport: {html_path} ({json_path.name})")
    recovered_model = out / str(report.recovery.model) if recovered and report.recovery is not None else None
    if recovered_model is not None:
        print(f"recovered model: {recovered_model}")
    ci_outputs(args, run, out)  # before the document: exit 2 here leaves none
    emit_json(args.json, "edgeq.validate", {
        "model": args.model, "output": str(out), "passed": run.passed, "exit_status": 0 if run.passed else 1,
        "best_method": report.best_method, "gates": gates, "advice": report.advice,
        "report": str(json_path), "report_html": str(html_path),
        "recovered_model": None if recovered_model is None else str(recovered_model)})
    if not report.passed and not recovered:
        failed = [g for g in gates if not g.passed]
        names = ", ".join(g.name for g in failed)
        raise GateFailed(f"gate {names} failed: {failed[0].detail}; {report.advice[0]}")
    return 0


def print_recovery(recovery: RecoveryReport) -> None:
    """The ladder as a table: each rung's status, selection-half fidelity, gate and size/latency."""
    rows = []
    for r in (recovery.start, *recovery.rungs):
        latency = ", ".join(f"{k} {v:.3g} ms" + (" (unstable)" if k in r.latency_unstable else "")
                            for k, v in r.latency_ms.items())
        fidelity = "-" if r.selection_sqnr_db is None else f"{r.selection_sqnr_db:.1f} dB"
        if r.selection_agreement is not None:
            fidelity += f", agree {r.selection_agreement:.1%}"
        gate = "-" if r.gate_passed is None else ("pass" if r.gate_passed else "fail")
        size = "-" if r.int8_bytes is None else f"{r.int8_bytes / 1024:.1f} KiB"
        rows.append([r.rung, r.status, fidelity, gate, size, latency or "-", r.note])
    print("\nrecovery ladder (fidelity on the selection half, gates on the held-out gate half)")
    print_table(["rung", "status", "fidelity", "gate", "size", "latency (p50, 1 thread)", "note"], rows)
    print(recovery.verdict)


def sqnr_text(row: MethodResult) -> str:
    """Output SQNR for a table: '∞ (bit-exact)' when the INT8 outputs equal FP32's, '-' when not measured."""
    if row.bit_exact:
        return "∞ (bit-exact)"
    return "-" if row.output_sqnr_db is None else f"{row.output_sqnr_db:.1f}"


def top1_text(row: MethodResult | Baseline) -> str:
    """'89.17% [84.6, 92.5]': top-1 with its 95% Wilson interval in percent."""
    if row.top1 is None or row.top1_ci is None:
        return "-"
    lo, hi = row.top1_ci
    return f"{row.top1:.2%} [{100 * lo:.1f}, {100 * hi:.1f}]"


def drop_text(row: MethodResult) -> str:
    """'+0.83 [-1.05, +2.71]': the drop in points with its 95% paired interval."""
    if row.drop_pp is None or row.drop_ci_pp is None:
        return "-"
    lo, hi = row.drop_ci_pp
    return f"{row.drop_pp:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def method_rows(validation: ValidationSummary) -> list[list[str]]:
    """FP32 and one row per method: top-1 [CI], drop [CI], vs FP32 (tie inside the interval), agreement,
    output SQNR, fidelity rank (selection half); the picked method is starred. Without top-1 (no baseline):
    one row per method with agreement (when classified), the ranking metric, output SQNR and rank."""
    if validation.baseline is None:
        return [[f"INT8 {r.method.value}{' *' if r.method == validation.best_method else ''}",
                 "-" if r.agreement is None else f"{r.agreement:.2%}", _first_key(r), sqnr_text(r),
                 str(r.selection.rank)] for r in validation.methods]
    rows = [["FP32", top1_text(validation.baseline), "-", "-", "-", "-", "-"]]
    for r in validation.methods:
        mark = " *" if r.method == validation.best_method else ""
        rows.append([f"INT8 {r.method.value}{mark}", top1_text(r), drop_text(r), "-" if r.vs_fp32 is None else
                     r.vs_fp32.value, "-" if r.agreement is None else f"{r.agreement:.2%}", sqnr_text(r),
                     str(r.selection.rank)])
    return rows


def _first_key(row: MethodResult) -> str:
    score = row.selection
    if score.metric is None:
        return "-"
    return f"{score.metric} {score.value:.4g}" if score.value is not None else f"{score.metric} -"


METHOD_HEADERS = ["model", "top-1 [95% CI]", "drop pp [95% CI]", "vs FP32", "agrees with FP32", "output SQNR dB",
                  "fidelity rank"]
FIDELITY_HEADERS = ["model", "agrees with FP32", "ranking metric (selection half)", "output SQNR dB", "fidelity rank"]


def method_headers(validation: ValidationSummary) -> list[str]:
    return METHOD_HEADERS if validation.baseline is not None else FIDELITY_HEADERS


def selection_lines(validation: ValidationSummary) -> list[str]:
    """Why this method, and what the held-out half says about its drop."""
    selection, gate = validation.selection, validation.gate
    by = ("agreement, then output SQNR, then output error" if validation.baseline is not None and
          selection.by[0].startswith("agreement") else "; then ".join(selection.by))
    line = (f"picked: {validation.best_method.value}, the most faithful to FP32 on the selection half "
            f"({selection.n} samples; by {by})")
    if selection.tied_with_best:
        line += f"; tied exactly with {', '.join(m.value for m in selection.tied_with_best)}"
    if gate is None:
        return [line]
    return [line, f"{'gate' if gate.max_drop_pp is not None else 'held-out half'}: {gate.detail}"]


def output_rows(report: ValidationReport) -> list[list[str]]:
    """Per method and output on the whole set: task, SQNR, cosine, max |error| and the task's figures."""
    from edgeq.report.outputs import sqnr_text as output_sqnr
    from edgeq.report.outputs import task_text

    if report.outputs is None:
        return []
    tasks = {d.name: d.task for d in report.outputs.model_outputs}
    rows = []
    for m in report.outputs.methods:
        mark = " *" if m.method == report.best_method else ""
        for r in m.outputs:
            f = r.figures.fidelity
            rows.append([f"INT8 {m.method.value}{mark}", r.output, tasks.get(r.output, "-"), output_sqnr(f),
                         "-" if f.cosine is None else f"{f.cosine:.4f}",
                         "-" if f.max_abs_error is None else f"{f.max_abs_error:.4g}",
                         task_text(r.figures) or "-"])
    return rows


OUTPUT_HEADERS = ["model", "output", "task", "SQNR dB", "cosine", "max |err|", "task figures"]


def print_summary(report: ValidationReport) -> None:
    validation = report.validation
    print_table(method_headers(validation), method_rows(validation))
    if validation.baseline is not None:
        print("top-1 intervals: Wilson 95%; drop intervals: paired (Newcombe) 95%; 'tie': the interval contains 0")
    outputs = output_rows(report)
    if outputs and (validation.baseline is None or len(outputs) > len(validation.methods)
                    or any(r[2] != "classification" for r in outputs)):
        print()
        print_table(OUTPUT_HEADERS, outputs)
    for line in selection_lines(validation):
        print(line)
    for gate in report.output_gates:
        print(f"gate {gate.name}: {gate.detail}")
    if report.layers.worst:
        print(f"worst layers ({report.layers.method.value}): " + ", ".join(w[-48:] for w in report.layers.worst))
    for line in validation.advice:
        print(f"advice: {line}")
