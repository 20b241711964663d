"""``edgeq eval``: top-1/top-5 of a .tflite classifier on a labelled set, per condition, on a backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import integer
from edgeq.cli.output import print_json, print_table


def register(verbs: Any) -> None:
    ev = options.verb_parser(
        verbs, "eval", help="accuracy of a .tflite classifier on a labelled set, per condition",
        description="Quantizes inputs and dequantizes outputs with the model's own parameters; per-condition "
                    "results for sets from 'edgeq datagen'; agreement with an FP32 reference model.",
        handler=run_eval)
    options.add_model_argument(ev, options.TFLITE_MODEL_HELP)
    options.add_labelled_set_option(ev, "--data")
    options.add_runtime_options(ev)
    ev.add_argument("--output", help="classification output by name or index (multi-output models)")
    ev.add_argument("--reference", metavar="MODEL", help="FP32 .tflite to compare predictions with (agreement)")
    options.add_preprocess_option(ev, default="the model's own TFLite Metadata, else its edgeq sidecar, else the "
                                              "set's datagen.json; none known is an error")
    ev.add_argument("--limit", type=integer(1, 100_000_000), help="evaluate only the first N samples")
    options.add_json_file_option(ev, "the result")


def run_eval(args: argparse.Namespace) -> int:
    from edgeq.calib.data import parse_preprocessing
    from edgeq.cli.progress import progress_printer
    from edgeq.errors import BackendUnavailable, UsageError
    from edgeq.harness.accuracy import evaluate, output_index, predict
    from edgeq.harness.backends import availability, open_session, parse_backend
    from edgeq.harness.labelled import load_labelled
    from edgeq.preprocess import apply_preprocessing, own_preprocessing, resolve, same_normalization
    from edgeq.tflite import model as tfl

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    backend = parse_backend(args.backend)
    status = availability(backend)
    if not status.available:
        raise BackendUnavailable(f"backend {backend} unavailable: {status.reason}")
    from edgeq.tflite.probe import probe

    model_bytes = tfl.read_bytes(args.model)
    tfl.parse(model_bytes, args.model)
    for untrusted in filter(None, (args.model, args.reference)):
        probe(untrusted, "cpu", what=untrusted)
    images, labels, conditions, set_pp = load_labelled(args.data, args.limit)
    resolved = resolve(parse_preprocessing(args.preprocess), model=own_preprocessing(model_bytes, args.model),
                       data_set=set_pp, model_name=Path(args.model).name, data_name=args.data)
    pp = resolved.spec
    assert pp is not None  # labelled sets are uint8 images: resolve() refuses rather than return None
    warnings = list(resolved.warnings)
    reference_bytes = tfl.read_bytes(args.reference) if args.reference else None
    if reference_bytes is not None:
        theirs = own_preprocessing(reference_bytes, args.reference)
        if theirs is not None and not same_normalization(theirs[0], pp):
            warnings.append(f"the reference {Path(args.reference).name} asks for other preprocessing "
                            f"({theirs[1].text}); it is fed the same inputs as the model")
    info = sys.stdout if args.json != "-" else sys.stderr
    print(resolved.line(), file=info)
    for warning in warnings:
        print(f"edgeq: warning: {warning}", file=sys.stderr)
    x = apply_preprocessing(pp, images)
    session = open_session(model_bytes, backend, args.threads)
    out = output_index(session, args.output)
    scores = predict(session, x, out, progress_printer("evaluating"))
    reference = None
    if reference_bytes is not None:
        ref_session = open_session(reference_bytes, parse_backend("cpu"), args.threads)
        reference = predict(ref_session, x, output_index(ref_session, args.output))
    result = evaluate(scores, labels, conditions, reference)
    document = {"model": args.model, "model_sha256": tfl.sha256(model_bytes), "data": args.data,
                "backend": str(backend), "runtime": session.runtime, "n": result.n, "top1": result.top1,
                "top5": result.top5, "agreement": result.agreement, "per_condition": result.per_condition,
                "preprocessing": pp.to_dict(), "preprocessing_source": resolved.source.value,
                "warnings": warnings}
    if args.json == "-":
        print_json(document)
        return 0
    rows = [["all", result.n, f"{result.top1:.2%}", f"{result.top5:.2%}",
             "-" if result.agreement is None else f"{result.agreement:.2%}"]]
    for name, entry in result.per_condition.items():
        rows.append([name, entry["n"], f"{entry['top1']:.2%}", f"{entry['top5']:.2%}",
                     f"{entry['agreement']:.2%}" if "agreement" in entry else "-"])
    print(f"{Path(args.model).name} on {backend} ({session.runtime}), data {args.data}")
    print_table(["condition", "n", "top-1", "top-5", "agrees with FP32"], rows)
    if args.json:
        import json

        from edgeq.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(document, indent=2) + "\n")
    return 0
