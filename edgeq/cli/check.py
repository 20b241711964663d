"""``edgeq check``: INT8 spec conformance and deployability of a .tflite model, per target."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.output import emit_json, print_table, tables_wanted
from edgeq.spec.check import IO_CHOICES
from edgeq.spec.rules import PROFILES


def register(verbs: Any) -> None:
    check = options.verb_parser(
        verbs, "check", help="check a .tflite model against the INT8 spec and a deployment target",
        description="Spec conformance and deployability: float fallbacks, Q/DQ inside the graph, dynamic "
                    "shapes, custom ops, per-op quantization rules, target op support (Edge TPU partition "
                    "prediction). Exit 0 pass, 1 error findings, 2 unreadable input.", handler=run_check)
    options.add_model_argument(check, "the .tflite model to check")
    check.add_argument("--target", default="generic", choices=list(PROFILES), help="deployment target profile")
    check.add_argument("--io", default="integer", choices=list(IO_CHOICES),
                       help="required model input/output type (integer: int8 or uint8)")
    check.add_argument("--float", dest="float_model", metavar="FILE",
                       help="the float source model, to report the size ratio")
    check.add_argument("--ignore", default="", metavar="RULE[,RULE]", help="rule ids to waive")
    check.add_argument("--compile", action="store_true",
                       help="edgetpu target: also run edgetpu_compiler (when on PATH) and parse its log")
    options.add_machine_output_options(check, "the verdict, findings and size")


def run_check(args: argparse.Namespace) -> int:
    from edgeq.spec.check import check_model
    from edgeq.spec.size import size_breakdown
    from edgeq.tflite import model as tfl

    data = tfl.read_bytes(args.model)
    float_bytes = None
    if args.float_model:
        if not Path(args.float_model).is_file():
            from edgeq.errors import InputError

            raise InputError(f"no such float model: {args.float_model}")
        float_bytes = Path(args.float_model).stat().st_size
    report = check_model(data, target=args.target, io=args.io, what=args.model,
                         ignore=[r.strip() for r in args.ignore.split(",") if r.strip()])
    size = size_breakdown(data, float_bytes=float_bytes)
    document: dict[str, Any] = {"model": args.model, "passed": report.passed, "report": report.to_dict(),
                                "size": size.to_dict()}
    if args.target == "edgetpu":
        document.update(_edgetpu_sections(data, args))
    if tables_wanted(args):
        _print_human(args.model, report, size, document)
    emit_json(args.json, "edgeq.check", document)
    return 0 if report.passed else 1


def _edgetpu_sections(data: bytes, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses
    import tempfile

    from edgeq.errors import BackendUnavailable
    from edgeq.spec.edgetpu import predict_partition
    from edgeq.spec.edgetpu_log import run_compiler
    from edgeq.tflite import model as tfl

    prediction = predict_partition(tfl.parse(data))
    sections: dict[str, Any] = {"edgetpu_partition": dataclasses.asdict(prediction)}
    if args.compile:
        try:
            with tempfile.TemporaryDirectory() as out_dir:
                sections["edgetpu_compiler"] = dataclasses.asdict(run_compiler(Path(args.model), Path(out_dir)))
        except BackendUnavailable as exc:
            sections["edgetpu_compiler"] = {"ran": False, "reason": str(exc)}
    return sections


def _print_human(model: str, report: Any, size: Any, document: dict[str, Any]) -> None:
    errors = sum(f.severity.value == "error" for f in report.findings)
    warnings = sum(f.severity.value == "warning" for f in report.findings)
    verdict = "PASS" if report.passed else "FAIL"
    print(f"{model}: {verdict} for target {report.target.value} ({errors} errors, {warnings} warnings)")
    if report.findings:
        print()
        print_table(["severity", "rule", "op", "type", "tensor", "expected", "actual"], [
            [f.severity.value, f.rule_id, _op_cell(f), f.op_type or "",
             _short(f.tensor), _short(f.expected), _short(f.actual)] for f in report.findings])
    print()
    from edgeq.spec.size import size_change

    kib = 1024
    ratio = f", {size_change(size.float_bytes, size.total_bytes)} than float" if size.float_bytes else ""
    print(f"size: {size.total_bytes / kib:.1f} KiB = weights {size.weight_bytes / kib:.1f} + biases "
          f"{size.bias_bytes / kib:.1f} + quantization {size.quantization_bytes / kib:.1f} + other "
          f"{size.other_bytes / kib:.1f} KiB{ratio}")
    partition = document.get("edgetpu_partition")
    if partition:
        first = partition["first_unsupported"]
        where = "all ops map to the Edge TPU" if first is None else f"first unsupported op: {first}"
        print(f"edgetpu (predicted): {partition['tpu_ops']} ops on the TPU, {partition['cpu_ops']} on the CPU; {where}")
    compiler = document.get("edgetpu_compiler")
    if compiler is not None:
        if compiler.get("ran") is False:
            print(f"edgetpu_compiler: not run ({compiler['reason']})")
        else:
            print(f"edgetpu_compiler: {compiler.get('ops_on_tpu')} ops on the TPU, {compiler.get('ops_on_cpu')} on "
                  f"the CPU, on-chip {compiler.get('on_chip_bytes')} B, off-chip {compiler.get('off_chip_bytes')} B")


def _op_cell(finding: Any) -> str:
    """``12`` for op 12 of the main graph, ``2:4`` for op 4 of subgraph 2."""
    if finding.op_index is None:
        return f"{finding.subgraph}:" if finding.subgraph else ""
    return f"{finding.subgraph}:{finding.op_index}" if finding.subgraph else str(finding.op_index)


def _short(text: str | None, width: int = 48) -> str:
    if not text:
        return ""
    return text if len(text) <= width else "..." + text[-(width - 3):]
