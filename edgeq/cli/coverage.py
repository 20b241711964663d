"""``edgeq coverage``: does the calibration set cover production activations, layer by layer?

Production comes as images (``--production SET``, run through the float model) or as the logs an app running
the instrumented model wrote (``--production-log LOGS...``, docs/production_coverage.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import number
from edgeq.cli.output import emit_json, info, json_text, print_table, tables_wanted
from edgeq.errors import InputError, UsageError

#: Human output: the worst tensors shown per segment, the most recent windows and the worst segments shown
#: (the JSON has all).
WORST_PER_SEGMENT = 3
WINDOWS_SHOWN = 30
SEGMENTS_SHOWN = 20
NEAR_THRESHOLD = 1e-4  # relative: a flagged ratio this close to the threshold may be kernel rounding


def register(verbs: Any) -> None:
    cov = options.verb_parser(
        verbs, "coverage", help="compare calibration and production activation ranges per layer",
        description="Per activation tensor: max|x| and p99.99 of the calibration set against production data "
                    "(images, or the logs of the model edgeq instrument built: then also per segment and per "
                    "time window); layers where production exceeds calibration are flagged with the conditions "
                    "that would close the gap. Calibration samples that alone set tensors' ranges (outlier "
                    "samples) are named. Exit 1 when a flagged gap remains.", handler=run_coverage)
    options.add_model_argument(cov)
    options.add_calib_option(cov)
    production = cov.add_mutually_exclusive_group(required=True)
    production.add_argument("--production", metavar="SET", help="production data, same forms as --calib")
    production.add_argument("--production-log", nargs="+", metavar="LOG",
                            help="production logs (.jsonl files, .npz shards, or folders of them; "
                                 "docs/production_log.md) recorded by the instrumented model")
    cov.add_argument("--instrumented", metavar="SIDECAR",
                     help="with --production-log: the instrumented model's sidecar (default: "
                          "MODEL_STEM_instrumented.json beside MODEL)")
    cov.add_argument("--window", type=number(0, None, strict_low=True), metavar="SECONDS", default=None,
                     help="with --production-log: drift windows of this many seconds (86400: UTC days)")
    cov.add_argument("--segment-by", metavar="DIMS",
                     help="with --production-log: segments per these dimensions only, comma-separated: device, "
                          "app_version, tag:NAME (default: device, app version and every tag together)")
    cov.add_argument("--candidates", metavar="SET",
                     help="a set from edgeq datagen with several conditions (e.g. every condition rendered from the "
                          "calibration images): not calibration, only asked which of its conditions reach "
                          "production's range, to name what closes each gap")
    cov.add_argument("--threshold", type=number(0, 1e6, strict_low=True), default=1.0,
                     help="flag layers whose calibration max|x| / production max|x| is below this (1.0)")
    options.add_float_input_options(cov)
    options.add_output_option(cov, "write coverage.json and coverage.png (and drift.png for logs) here",
                              metavar="DIR", required=False)
    options.add_executor_options(cov)
    options.add_machine_output_options(cov, "every layer's ranges and the flagged gaps")


def run_coverage(args: argparse.Namespace) -> int:
    from edgeq.calib.coverage import coverage, plot_coverage
    from edgeq.calib.data import parse_preprocessing
    from edgeq.calib.outliers import summary
    from edgeq.converter.api import _calibration_data
    from edgeq.files import atomic_path
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import PreprocessingWarning, Source, describe

    if not args.threshold > 0:
        raise UsageError("--threshold must be positive")
    logs = args.production_log
    if not logs and (args.instrumented or args.window is not None or args.segment_by is not None):
        raise UsageError("--instrumented, --window and --segment-by go with --production-log")
    if args.output:
        from edgeq.extras import require_extra

        require_extra("matplotlib", "the coverage plot (-o)")  # before the work, not after it
    log_inputs = _log_inputs(args) if logs else None
    spec = options.executor_spec(args)
    float_model = load_float_model(args.model, args.input_shape)
    preprocessing = parse_preprocessing(args.preprocess)
    with warnings.catch_warnings():  # said below, once, as one line each
        warnings.simplefilter("ignore", PreprocessingWarning)
        calibration = _calibration_data(float_model, args.calib, preprocessing, None)
        production = None if logs else _calibration_data(float_model, args.production,
                                                         preprocessing or calibration.preprocessing, None)
        candidates = _candidates(float_model, args.candidates, preprocessing or calibration.preprocessing)
    said = list(dict.fromkeys([*calibration.warnings, *(production.warnings if production else []),
                               *(candidates.warnings if candidates else [])]))
    source = calibration.preprocessing_source or Source.NONE
    info(f"preprocessing: {describe(calibration.preprocessing)} (from {source.text})")
    for message in said:
        print(f"edgeq: warning: {message}", file=sys.stderr)
    with _work(spec) as (collect_fn, read_fn):
        logged = (_log_coverage(args, float_model, calibration, *log_inputs, collect_fn=collect_fn, read_fn=read_fn,
                                candidates=candidates) if log_inputs else None)
        report = logged.coverage if logged else coverage(float_model, calibration, production, args.threshold,
                                                         collect_fn=collect_fn, candidates=candidates)
    document = {"threshold": report.threshold, "flagged": len(report.flagged),
                "preprocessing": calibration.preprocessing.to_dict() if calibration.preprocessing else None,
                "preprocessing_source": source.value, "warnings": said,
                "layers": [_json_safe(dataclasses.asdict(layer)) for layer in report.layers],
                "per_condition_max": {k: list(v) for k, v in report.per_condition_max.items()},
                "candidate_max": {k: list(v) for k, v in report.candidate_max.items()},
                "outlier_samples": [dataclasses.asdict(o) for o in report.outlier_samples],
                "production_source": "logs" if logged else "images"}
    if logged:
        from edgeq.calib.log_coverage import log_document

        document["production_log"] = log_document(logged, logs, args.instrumented)
    if args.output:
        out = Path(args.output)
        with atomic_path(out / "coverage.json") as tmp:
            tmp.write_text(json_text("edgeq.coverage", document))
        with atomic_path(out / "coverage.png", suffix=".png") as tmp:
            plot_coverage(report, tmp)
        if logged and logged.windows:
            from edgeq.calib.log_coverage import plot_drift

            with atomic_path(out / "drift.png", suffix=".png") as tmp:
                plot_drift(logged, tmp)
    if tables_wanted(args):
        rows = [[layer.name[-40:], layer.producer, f"{layer.calib_max:.4g}", f"{layer.production_max:.4g}",
                 _ratio_text(layer.ratio, layer.flagged and not layer.saturated, report.threshold),
                 ("SATURATED" if layer.saturated else "GAP") if layer.flagged else "",
                 ", ".join(layer.closing_conditions) if layer.flagged else ""] for layer in report.layers]
        print_table(["tensor", "op", "calib max", "prod max", "ratio", "", "closed by"], rows)
        if logged:
            _print_log_tables(logged)
            _near_threshold_note(report)
        print(f"\n{len(report.flagged)} of {len(report.layers)} layers flagged (threshold {report.threshold})")
        for outlier in report.outlier_samples:
            print(f"outlier calibration sample: {summary(outlier, len(report.layers))}")
    emit_json(args.json, "edgeq.coverage", document)
    return 1 if report.flagged else 0


def _log_inputs(args: argparse.Namespace) -> tuple[Any, tuple[str, ...] | None]:
    """The instrument sidecar (given, or beside MODEL) and the segment dimensions, checked before any work."""
    from edgeq.calib.log_coverage import find_sidecar, load_sidecar, parse_segment_by

    segment_by = parse_segment_by(args.segment_by)
    missing = [p for p in args.production_log if not Path(p).exists()]
    if missing:
        raise InputError(f"{missing[0]}: no such file or directory")
    args.instrumented = args.instrumented or str(find_sidecar(args.model))
    return load_sidecar(args.instrumented), segment_by


@contextlib.contextmanager
def _work(spec: Any) -> Iterator[tuple[Any, Any]]:
    """The statistics collection and the log read on the executor ``spec`` names (bit-identical on each)."""
    from edgeq.calib.parallel import collect_sharded, read_log_sharded
    from edgeq.execute import open_executor

    with open_executor(spec) as executor:
        yield (functools.partial(collect_sharded, executor=executor),
               functools.partial(read_log_sharded, executor=executor))


def _candidates(float_model: Any, candidates: str | None, preprocessing: Any) -> Any:
    """The candidate set, which must hold several conditions: a set without them cannot name one."""
    from edgeq.converter.api import _calibration_data

    if candidates is None:
        return None
    data = _calibration_data(float_model, candidates, preprocessing, None)
    if len(set(data.conditions or ())) < 2:
        raise InputError(f"--candidates {candidates}: not a set from edgeq datagen with several conditions "
                         "(it could not name which condition closes a gap)")
    return data


def _log_coverage(args: argparse.Namespace, float_model: Any, calibration: Any, sidecar: Any,
                  segment_by: tuple[str, ...] | None, **work: Any) -> Any:
    """Compare the logs with the calibration set; the one place the logs are read."""
    from edgeq.calib.log_coverage import DEFAULT_WINDOW_SECONDS, describe_read, log_coverage

    window = DEFAULT_WINDOW_SECONDS if args.window is None else args.window
    report = log_coverage(float_model, calibration, args.production_log, sidecar, args.instrumented,
                          args.threshold, window, segment_by=segment_by, **work)
    info(f"production logs: {describe_read(report.read)}; model {report.model_sha256[:12]}... "
         f"(instrumented from {'MODEL' if report.source_check == 'MODEL' else report.source_check})")
    for example in report.read.examples[:3]:
        info(f"  refused {example.position}: {example.reason.value}: {example.detail}")
    return report


def _print_log_tables(report: Any) -> None:
    if report.not_logged:
        shown = ", ".join(report.not_logged[:5]) + (", ..." if len(report.not_logged) > 5 else "")
        print(f"\nnot logged (not compared, not covered): {len(report.not_logged)} tensors: {shown}")
    if report.not_in_model:
        print(f"logged but no activation of MODEL (ignored): {', '.join(report.not_in_model)}")
    if report.saturated:
        print(f"int8 tensors at the end of their range in production: {', '.join(report.saturated)} (SATURATED: "
              "flagged, production went at least that far and the model clamps there; not flagged: the op bounds its "
              "range, or an input whose calibration reached the same edge)")
    segments = report.segments
    if len(segments) > SEGMENTS_SHOWN:  # the worst ones; the JSON has every segment
        worst = sorted(segments, key=lambda s: min((t.ratio for t in s.tensors), default=math.inf))[:SEGMENTS_SHOWN]
        segments = [s for s in segments if s in worst]
        print(f"\nthe {SEGMENTS_SHOWN} segments of {len(report.segments)} with the lowest ratios:")
    print()
    print_table(["segment", "tensors", "flagged", "worst (ratio)"],
                [[_segment_text(s.segment), len(s.tensors), s.flagged,
                  "; ".join(f"{t.name[-30:]} {_ratio_text(t.ratio, t.flagged, report.coverage.threshold)}"
                            for t in s.worst(WORST_PER_SEGMENT))]
                 for s in segments])
    if report.windows:
        windows = report.windows[-WINDOWS_SHOWN:]
        print(f"\ndrift: windows of {report.window_seconds:g} s (UTC)"
              + (f", the last {len(windows)} of {len(report.windows)}" if len(windows) < len(report.windows) else ""))
        print_table(["window start", "tensors", "flagged", "worst ratio", "worst tensor"],
                    [[datetime.fromtimestamp(w.start, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"), w.tensors, w.flagged,
                      _ratio_text(w.worst_ratio, w.worst_ratio < report.coverage.threshold, report.coverage.threshold),
                      w.worst_tensor[-40:]] for w in windows])


def _ratio_text(ratio: float, flagged: bool, threshold: float) -> str:
    """Three decimals, or as many as it takes to show why a ratio that rounds to the threshold is flagged."""
    text = f"{ratio:.3f}"
    return f"{ratio:.7f}" if flagged and float(text) >= threshold else text


def _near_threshold_note(report: Any) -> None:
    """Logs come from the app's kernels, calibration from collect()'s: last-bit differences can flag a tensor."""
    near = [layer.name for layer in report.flagged
            if not layer.saturated and layer.ratio >= report.threshold * (1 - NEAR_THRESHOLD)]
    if near:
        print(f"note: {len(near)} flagged tensors are within {NEAR_THRESHOLD:.0e} of the threshold (e.g. {near[0]}); "
              "that may be a real gap, or an app on other kernels than calibration's (collected on "
              "XNNPACK for most graphs: collection_kernels; a GPU delegate, the builtin kernels) differing in the last "
              "bits: see docs/production_coverage.md")


def _segment_text(segment: Any) -> str:
    parts = [segment.device or "-", segment.app_version or "-", *(f"{k}={v}" for k, v in segment.tags)]
    return " ".join(parts)


def _json_safe(document: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in document.items()}
