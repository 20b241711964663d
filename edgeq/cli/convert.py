"""``edgeq calibrate`` and ``edgeq convert``: float model + calibration data -> stats / INT8 model."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from edgeq.artifacts import Estimator, IOType
from edgeq.cli import options
from edgeq.cli.output import emit_json, print_table, tables_wanted
from edgeq.errors import UsageError


def _thresholds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thresholds {text!r}; use LOW,HIGH such as 3,10") from None
    return low, high


def _guard_factors(text: str) -> tuple[float, float]:
    try:
        factor, follow = (float(v) for v in text.split(","))
    except ValueError:
        factor = follow = float("nan")
    if not 1.0 < follow <= factor < float("inf"):
        raise argparse.ArgumentTypeError(f"bad sample guard factors {text!r}; use FACTOR,FOLLOW with "
                                         "1 < FOLLOW <= FACTOR, such as 10,3")
    return factor, follow


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_float_input_options(parser)
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N calibration samples")


def register(verbs: Any) -> None:
    calibrate = options.verb_parser(verbs, "calibrate", help="collect activation statistics of a float model",
                                    description="Run the float model once over the calibration data and save "
                                                "per-tensor statistics for 'edgeq convert --stats'.",
                                    handler=run_calibrate)
    options.add_model_argument(calibrate)
    options.add_calib_option(calibrate)
    options.add_output_option(calibrate, "statistics file to write (.npz)")
    _add_data_arguments(calibrate)
    options.add_executor_options(calibrate)
    options.add_machine_output_options(calibrate, "the statistics file, its counts and outlier samples")

    convert = options.verb_parser(verbs, "convert", help="full-integer INT8 .tflite with chosen activation ranges",
                                  description="Convert a float model to a full-integer INT8 TFLite model and a JSON "
                                              "sidecar describing every activation range and why it was chosen.",
                                  handler=run_convert)
    options.add_model_argument(convert)
    source = convert.add_mutually_exclusive_group(required=True)
    options.add_calib_option(source, required=False)
    source.add_argument("--stats", metavar="FILE", help="statistics from 'edgeq calibrate' (same model)")
    options.add_output_option(convert, "INT8 model to write (.tflite); sidecar: .json")
    convert.add_argument("--method", choices=[e.value for e in Estimator],
                         help="activation-range estimator (default auto)")
    convert.add_argument("--percentile", type=float, help="percentile for the percentile estimator (99.99)")
    convert.add_argument("--auto-thresholds", type=_thresholds, metavar="LOW,HIGH",
                         help="outlier-ratio thresholds of auto: minmax below LOW, percentile up to HIGH, "
                              "mse above (3,10)")
    convert.add_argument("--io", choices=[e.value for e in IOType], help="model input/output type (int8)")
    granularity = convert.add_mutually_exclusive_group()
    granularity.add_argument("--per-tensor", action="store_true", default=None,
                             help="per-tensor weights everywhere (default per-axis)")
    granularity.add_argument("--per-tensor-dense", action="store_true", default=None,
                             help="per-tensor weights for FULLY_CONNECTED only")
    convert.add_argument("--allow-float-ops", action="store_true", default=None,
                         help="leave ops without an int8 kernel in float (listed in the sidecar) instead of failing")
    guard = convert.add_mutually_exclusive_group()
    guard.add_argument("--no-sample-guard", dest="sample_guard", action="store_false", default=None,
                       help="keep ranges one calibration sample alone stretches (default: such a sample is left "
                            "out of the ranges of mse, percentile, kl and auto)")
    guard.add_argument("--sample-guard-factors", type=_guard_factors, metavar="FACTOR,FOLLOW",
                       help="the sample guard leaves out a sample that stretches a tensor's max|x| FACTOR times "
                            "beyond every other sample, and that sample wherever it stretches FOLLOW times (10,3)")
    convert.add_argument("--recipe", metavar="FILE", help="YAML/JSON recipe with per-tensor/per-op overrides")
    convert.add_argument("--int16", metavar="TENSOR,...",
                         help="keep these activations at int16 (int16x8 kernels: LiteRT CPU, not the Edge TPU; "
                              "XNNPACK runs them on the builtin kernels) through ai-edge-quantizer with edgeq's "
                              "ranges; 'edgeq sensitivity' ranks which tensors gain most (docs/int16.md)")
    options.add_machine_output_options(convert, "the model, its sidecar path and the sidecar")
    _add_data_arguments(convert)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")


def run_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeq.calib.data import parse_preprocessing
    from edgeq.calib.parallel import collect_sharded
    from edgeq.converter.api import Calibration, _calibration_data, _float_model
    from edgeq.execute import open_executor

    _check_limit(args.limit)
    if Path(args.output).suffix != ".npz":
        raise UsageError(f"statistics output must end in .npz, got {args.output}")
    spec = options.executor_spec(args)
    with open_executor(spec) as executor:
        float_model = _float_model(args.model, args.input_shape)
        data = _calibration_data(float_model, args.calib, parse_preprocessing(args.preprocess), args.limit)
        result = Calibration(float_model, data, collect_sharded(float_model.flatbuffer, data, executor))
    result.stats.save(args.output)
    print(f"{len(result.stats.tensors)} activation tensors over {result.stats.samples} samples -> {args.output}")
    from edgeq.calib.outliers import outlier_samples, summary

    outliers = outlier_samples(result.stats)
    for outlier in outliers:
        print(f"outlier calibration sample: {summary(outlier, len(result.stats.tensors))}")
    emit_json(args.json, "edgeq.calibrate", {
        "model": args.model, "calib": args.calib, "stats": args.output, "tensors": len(result.stats.tensors),
        "samples": result.stats.samples, "outlier_samples": outliers})
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from edgeq.calib.data import parse_preprocessing
    from edgeq.converter.api import convert, sidecar_path
    from edgeq.quant_recipe import QuantRecipe, load_recipe

    _check_limit(args.limit)
    recipe = load_recipe(args.recipe) if args.recipe else QuantRecipe()
    recipe = recipe.with_updates(
        method=Estimator(args.method) if args.method else None, percentile=args.percentile,
        auto_thresholds=args.auto_thresholds, io=IOType(args.io) if args.io else None,
        per_tensor=args.per_tensor, per_tensor_dense=args.per_tensor_dense, allow_float_ops=args.allow_float_ops,
        sample_guard=args.sample_guard,
        sample_guard_factor=args.sample_guard_factors[0] if args.sample_guard_factors else None,
        sample_guard_follow=args.sample_guard_factors[1] if args.sample_guard_factors else None)
    artifact = convert(args.model, args.output, calib=args.calib, stats=args.stats, recipe=recipe,
                       preprocessing=parse_preprocessing(args.preprocess), input_shape=args.input_shape,
                       limit=args.limit,
                       int16=[t.strip() for t in (args.int16 or "").split(",") if t.strip()])
    sidecar = str(sidecar_path(artifact.path))
    emit_json(args.json, "edgeq.convert", {"model": str(artifact.path), "sidecar_path": sidecar,
                                           "sidecar": artifact.to_dict()})
    if not tables_wanted(args):
        return 0
    chosen = Counter(r.estimator.value for r in artifact.ranges.ranges)
    clipped = max(artifact.ranges.ranges, key=lambda r: r.clip_fraction)
    print_table(["", ""], [
        ["model", artifact.path],
        ["source", artifact.source],
        ["io", artifact.io_type.value],
        ["calibration samples", artifact.calibration_samples],
        ["activation ranges", ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))],
        *([["search", _search_summary(artifact.search)]] if artifact.search is not None else []),
        *([["int16 activations", ", ".join(artifact.int16_tensors)]] if artifact.int16_tensors else []),
        ["most clipped tensor", f"{clipped.name} ({clipped.clip_fraction:.3%})"],
        ["size", _size_summary(artifact)],
        ["float ops left", _float_ops_summary(artifact.float_ops)],
        ["outlier samples", _outliers_summary(artifact)],
        ["sidecar", sidecar],
    ])
    return 0


def _search_summary(record: Any) -> str:
    """What shipped and the held-out figures it was chosen on: the per-tensor choice, the rule it starts from."""
    scores = {s.method: s.real_db for s in record.scores}
    proposed = len(record.choices)
    changed = f"{proposed} tensor(s) changed" if record.chosen == "search" else f"{proposed} proposed, not shipped"
    return (f"{record.chosen} chosen ({changed}); held-out ({record.held_out_samples} samples, stats on the other "
            f"{record.fit_samples}): search {scores['search']:.2f} dB, auto {scores['auto']:.2f} dB, "
            f"{record.chosen} {scores[record.chosen]:.2f} dB")


def _size_summary(artifact: Any) -> str:
    from pathlib import Path

    from edgeq.spec.size import size_breakdown, size_change, size_reasons

    text = (f"{artifact.float_bytes / 1024:.1f} KiB float -> {artifact.int8_bytes / 1024:.1f} KiB int8 "
            f"({size_change(artifact.float_bytes, artifact.int8_bytes)})")
    breakdown = size_breakdown(Path(artifact.path).read_bytes())
    reasons = size_reasons(artifact.rewrites, artifact.float_bytes, artifact.int8_bytes, breakdown)
    return text + (": " + "; ".join(reasons) if reasons else "")


def _outliers_summary(artifact: Any, shown: int = 2) -> str:
    from edgeq.calib.outliers import summary

    samples = artifact.outlier_samples
    if not samples:
        return "none"
    more = f"; and {len(samples) - shown} more (all in the sidecar)" if len(samples) > shown else ""
    return "; ".join(summary(s, len(artifact.ranges.ranges)) for s in samples[:shown]) + more


def _float_ops_summary(ops: tuple[str, ...], shown: int = 4) -> str:
    if not ops:
        return "none"
    more = f"; and {len(ops) - shown} more (all in the sidecar)" if len(ops) > shown else ""
    return f"{len(ops)}: " + "; ".join(ops[:shown]) + more
