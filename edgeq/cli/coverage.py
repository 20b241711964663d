"""``edgeq coverage``: does the calibration set cover production activations, layer by layer?"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import number
from edgeq.cli.output import emit_json, info, json_text, print_table, tables_wanted
from edgeq.errors import UsageError


def register(verbs: Any) -> None:
    cov = options.verb_parser(
        verbs, "coverage", help="compare calibration and production activation ranges per layer",
        description="Per activation tensor: max|x| and p99.99 of the calibration set against production data; "
                    "layers where production exceeds calibration are flagged with the conditions that would "
                    "close the gap. Calibration samples that alone set tensors' ranges (outlier samples) are "
                    "named. Exit 1 when a flagged gap remains.", handler=run_coverage)
    options.add_model_argument(cov)
    options.add_calib_option(cov)
    cov.add_argument("--production", required=True, metavar="SET", help="production data, same forms as --calib")
    cov.add_argument("--threshold", type=number(0, 1e6, strict_low=True), default=1.0,
                     help="flag layers whose calibration max|x| / production max|x| is below this (1.0)")
    options.add_float_input_options(cov)
    options.add_output_option(cov, "write coverage.json and coverage.png here", metavar="DIR", required=False)
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
    if args.output:
        from edgeq.extras import require_extra

        require_extra("matplotlib", "the coverage plot (-o)")  # before the work, not after it
    float_model = load_float_model(args.model, args.input_shape)
    preprocessing = parse_preprocessing(args.preprocess)
    with warnings.catch_warnings():  # said below, once, as one line each
        warnings.simplefilter("ignore", PreprocessingWarning)
        calibration = _calibration_data(float_model, args.calib, preprocessing, None)
        production = _calibration_data(float_model, args.production, preprocessing or calibration.preprocessing,
                                       None)
    said = list(dict.fromkeys([*calibration.warnings, *production.warnings]))
    source = calibration.preprocessing_source or Source.NONE
    info(f"preprocessing: {describe(calibration.preprocessing)} (from {source.text})")
    for message in said:
        print(f"edgeq: warning: {message}", file=sys.stderr)
    report = coverage(float_model, calibration, production, args.threshold)
    document = {"threshold": report.threshold, "flagged": len(report.flagged),
                "preprocessing": calibration.preprocessing.to_dict() if calibration.preprocessing else None,
                "preprocessing_source": source.value, "warnings": said,
                "layers": [_json_safe(dataclasses.asdict(layer)) for layer in report.layers],
                "per_condition_max": {k: list(v) for k, v in report.per_condition_max.items()},
                "outlier_samples": [dataclasses.asdict(o) for o in report.outlier_samples]}
    if args.output:
        out = Path(args.output)
        with atomic_path(out / "coverage.json") as tmp:
            tmp.write_text(json_text("edgeq.coverage", document))
        with atomic_path(out / "coverage.png", suffix=".png") as tmp:
            plot_coverage(report, tmp)
    if tables_wanted(args):
        rows = [[layer.name[-40:], layer.producer, f"{layer.calib_max:.4g}", f"{layer.production_max:.4g}",
                 f"{layer.ratio:.3f}", "GAP" if layer.flagged else "",
                 ", ".join(layer.closing_conditions) if layer.flagged else ""] for layer in report.layers]
        print_table(["tensor", "op", "calib max", "prod max", "ratio", "", "closed by"], rows)
        print(f"\n{len(report.flagged)} of {len(report.layers)} layers flagged (threshold {report.threshold})")
        for outlier in report.outlier_samples:
            print(f"outlier calibration sample: {summary(outlier, len(report.layers))}")
    emit_json(args.json, "edgeq.coverage", document)
    return 1 if report.flagged else 0


def _json_safe(document: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in document.items()}
