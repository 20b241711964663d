"""``edgeq eval``: a .tflite model on a backend: top-1/top-5 on labelled data, and per-output fidelity to an FP32
reference on any data (labelled or not), per condition."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import integer
from edgeq.cli.output import emit_json, info, print_table, tables_wanted


def register(verbs: Any) -> None:
    ev = options.verb_parser(
        verbs, "eval", help="top-1 on labelled data and fidelity to an FP32 reference on any data, per condition",
        description="Quantizes inputs and dequantizes outputs with the model's own parameters; per-condition "
                    "results for sets from 'edgeq datagen'; agreement with an FP32 reference model.",
        handler=run_eval)
    options.add_model_argument(ev, options.TFLITE_MODEL_HELP)
    options.add_labelled_set_option(ev, "--data")
    options.add_runtime_options(ev)
    ev.add_argument("--output", help="classification output by name or index (multi-output models)")
    ev.add_argument("--reference", metavar="MODEL", help="FP32 .tflite to compare with: agreement, and every output's "
                    "SQNR, cosine and errors (needed for unlabelled data)")
    options.add_preprocess_option(ev, default="the model's own TFLite Metadata, else its edgeq sidecar, else the "
                                              "set's datagen.json; none known is an error")
    ev.add_argument("--limit", type=integer(1, 100_000_000), help="evaluate only the first N samples")
    options.add_executor_options(ev)
    options.add_machine_output_options(ev, "the result")


def _fidelity(outputs: dict[str, Any], reference: dict[str, Any],
              conditions: tuple[str, ...] | None) -> dict[str, Any]:
    """Per output: fidelity to the reference overall and per condition."""
    import numpy as np

    from edgeq.harness.accuracy import pair_outputs
    from edgeq.validate.tasks import fidelity_samples

    result = {}
    for name, y, ref in pair_outputs(outputs, reference):
        samples = fidelity_samples(ref, y)
        entry = {"all": samples.summary(None).to_dict()}
        if conditions:
            names = np.asarray(conditions)
            entry["per_condition"] = {c: samples.summary(np.flatnonzero(names == c)).to_dict()
                                      for c in dict.fromkeys(conditions)}
        result[name] = entry
    return result


def _fidelity_rows(fidelity: dict[str, Any]) -> list[list[Any]]:
    def cell(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = []
    for name, entry in fidelity.items():
        groups = [("all", entry["all"]), *entry.get("per_condition", {}).items()]
        for condition, f in groups:
            sqnr = "exact" if f["exact"] else cell(f["sqnr_db"], ".1f")
            rows.append([name, condition, f["n"], sqnr, cell(f["cosine"], ".4f"), cell(f["max_abs_error"], ".4g"),
                         cell(f["mean_abs_error"], ".4g")])
    return rows


def run_eval(args: argparse.Namespace) -> int:
    from edgeq.calib.data import parse_preprocessing
    from edgeq.errors import BackendUnavailable, UsageError
    from edgeq.execute import open_executor
    from edgeq.harness.accuracy import evaluate, output_index
    from edgeq.harness.backends import availability, open_session, parse_backend
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.harness.parallel import ModelPass, check_shardable, evaluation_pass
    from edgeq.preprocess import own_preprocessing, resolve, same_normalization
    from edgeq.tflite import model as tfl
    from edgeq.validate.declarations import model_input

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    spec = options.executor_spec(args)
    backend = parse_backend(args.backend)
    check_shardable(backend, spec.name)
    status = availability(backend)
    if not status.available:
        raise BackendUnavailable(f"backend {backend} unavailable: {status.reason}")
    from edgeq.tflite.probe import probe

    model_bytes = tfl.read_bytes(args.model)
    tfl.parse(model_bytes, args.model)
    for untrusted in filter(None, (args.model, args.reference)):
        probe(untrusted, "cpu", what=untrusted)
    input_name, input_shape = model_input(model_bytes)
    data = load_eval_set(args.data, limit=args.limit, input_shape=input_shape, input_name=input_name)
    if not data.labelled and not args.reference:
        raise UsageError(f"{args.data} has no labels: eval measures top-1 on labelled data, or fidelity to the "
                         "FP32 model on any data: give --reference FP32.tflite")
    resolved = resolve(parse_preprocessing(args.preprocess), model=own_preprocessing(model_bytes, args.model),
                       data_set=data.preprocessing, images=data.images is not None,
                       model_name=Path(args.model).name, data_name=args.data)
    pp = resolved.spec
    warnings = list(resolved.warnings)
    reference_bytes = tfl.read_bytes(args.reference) if args.reference else None
    if reference_bytes is not None and pp is not None:
        theirs = own_preprocessing(reference_bytes, args.reference)
        if theirs is not None and not same_normalization(theirs[0], pp):
            warnings.append(f"the reference {Path(args.reference).name} asks for other preprocessing "
                            f"({theirs[1].text}); it is fed the same inputs as the model")
    info(resolved.line())
    for warning in warnings:
        print(f"edgeq: warning: {warning}", file=sys.stderr)
    x = data.model_inputs(pp)
    session = open_session(model_bytes, backend, args.threads)
    cpu = parse_backend("cpu")
    ref_session = open_session(reference_bytes, cpu, args.threads) if reference_bytes else None
    conditions = tuple(data.conditions) if data.conditions is not None else None
    document: dict[str, Any] = {"model": args.model, "model_sha256": tfl.sha256(model_bytes), "data": args.data,
                                "backend": str(backend), "interpreter": session.runtime, "n": len(data)}
    result = None
    with open_executor(spec) as executor:  # one pass per model: its scores and, with a reference, every output
        fidelity = reference_bytes is not None and ref_session is not None
        scores, outputs = evaluation_pass(executor, ModelPass(
            model_bytes, backend, args.threads, x, scores=output_index(session, args.output) if data.labelled else None,
            outputs=fidelity), session)
        reference = ref_outputs = None
        if reference_bytes is not None and ref_session is not None:
            reference, ref_outputs = evaluation_pass(executor, ModelPass(
                reference_bytes, cpu, args.threads, x,
                scores=output_index(ref_session, args.output) if data.labelled else None, outputs=True), ref_session)
    if scores is not None:
        result = evaluate(scores, data.labels, list(conditions) if conditions else None, reference)
        document.update({"n": result.n, "top1": result.top1, "top5": result.top5, "agreement": result.agreement,
                         "per_condition": result.per_condition})
    if outputs is not None and ref_outputs is not None:
        document["fidelity"] = _fidelity(outputs, ref_outputs, conditions)
    document.update({"preprocessing": None if pp is None else pp.to_dict(),
                     "preprocessing_source": resolved.source.value, "warnings": warnings})
    emit_json(args.json, "edgeq.eval", document)
    if not tables_wanted(args):
        return 0
    print(f"{Path(args.model).name} on {backend} ({session.runtime}), data {args.data}")
    if result is not None:
        rows = [["all", result.n, f"{result.top1:.2%}", f"{result.top5:.2%}",
                 "-" if result.agreement is None else f"{result.agreement:.2%}"]]
        for name, entry in result.per_condition.items():
            rows.append([name, entry["n"], f"{entry['top1']:.2%}", f"{entry['top5']:.2%}",
                         f"{entry['agreement']:.2%}" if "agreement" in entry else "-"])
        print_table(["condition", "n", "top-1", "top-5", "agrees with FP32"], rows)
    if "fidelity" in document:
        print(f"fidelity to {Path(args.reference).name} (FP32 on cpu), per output:")
        print_table(["output", "condition", "n", "SQNR dB", "cosine", "max |error|", "mean |error|"],
                    _fidelity_rows(document["fidelity"]))
    return 0
