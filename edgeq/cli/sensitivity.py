"""``edgeq sensitivity``: which activation and weight tensors cost the accuracy, ranked on the simulated model,
with the real INT8 model's fidelity beside the simulation's so the reader sees what the ranking rests on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.artifacts import Estimator
from edgeq.cli import options
from edgeq.cli.argtypes import integer
from edgeq.cli.output import emit_json, info, json_text, print_table, tables_wanted

DEFAULT_LIMIT = 64  # evaluation samples: each is run 2 × (activations + weights) times through the probe
DEFAULT_TOP = 15
NAME_CHARS = 48
JSON_NAME = "sensitivity.json"
METHODS = [e.value for e in Estimator if e is not Estimator.SEARCH]


def register(verbs: Any) -> None:
    sens = options.verb_parser(
        verbs, "sensitivity", help="rank tensors by how much their INT8 quantization costs end to end",
        description="Calibrates, chooses ranges with --method, and measures on --eval, per activation and weight "
                    "tensor, the model's output fidelity (mean output SQNR vs FP32, dB) when only that tensor is "
                    "quantized and when every tensor but it is (simulated quantization: one probe model, no "
                    "reconversion). Also converts the real INT8 model once and measures it on the same samples, "
                    "so the simulation's own error is shown. Writes sensitivity.json to -o DIR or --json.",
        handler=run_sensitivity)
    options.add_model_argument(sens)
    options.add_calib_option(sens)
    options.add_labelled_set_option(sens, "--eval", dest="eval_set")
    sens.add_argument("--method", choices=METHODS, default=Estimator.AUTO.value,
                      help="activation-range estimator the ranges come from (default auto)")
    sens.add_argument("--limit", type=integer(1, 100_000_000), default=DEFAULT_LIMIT, metavar="N",
                      help=f"analyse on the first N evaluation samples ({DEFAULT_LIMIT})")
    sens.add_argument("--top", type=integer(1, 100_000_000), default=DEFAULT_TOP, metavar="N",
                      help=f"tensors listed in the table ({DEFAULT_TOP}; the JSON holds all)")
    options.add_preprocess_option(sens, default="the model's own TFLite Metadata, else each set's datagen.json; "
                                                "none known is an error")
    options.add_input_shape_option(sens)
    options.add_output_option(sens, f"write {JSON_NAME} here", metavar="DIR", required=False)
    options.add_machine_output_options(sens, "the analysis")


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A tensor name for a table: the first of TFLite's ';'-joined names, and when that is still too long, its
    last path components that fit after '…/' (the layer's own name is at the end)."""
    first = name.split(";")[0] or name
    if len(first) <= limit:
        return first
    parts = first.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(kept) + 3 > limit:
            break
        kept = f"{part}/{kept}"
    return "…/" + kept if len(kept) + 2 <= limit else "…" + first[-(limit - 1):]


def run_sensitivity(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from edgeq.calib.data import parse_preprocessing
    from edgeq.calib.ranges import choose_ranges
    from edgeq.converter.api import calibrate
    from edgeq.converter.quantize import quantize
    from edgeq.errors import UsageError
    from edgeq.files import write_text_atomic
    from edgeq.harness.accuracy import predict_outputs
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import model_file_preprocessing, resolve
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.recover.sensitivity import analyse
    from edgeq.recover.simulate import Simulator, fidelity
    from edgeq.tflite import model as tfl
    from edgeq.validate.declarations import model_input

    started = time.perf_counter()
    recipe = QuantRecipe().with_updates(method=Estimator(args.method))
    pp = parse_preprocessing(args.preprocess)
    float_model = load_float_model(args.model, args.input_shape)
    if len(tfl.parse(float_model.flatbuffer).subgraphs[0].inputs) != 1:
        raise UsageError("sensitivity measures single-input models; this one has several inputs")
    input_name, input_shape = model_input(float_model.flatbuffer)
    eval_set = load_eval_set(args.eval_set, limit=args.limit, input_shape=input_shape, input_name=input_name)
    resolved = resolve(pp, model=model_file_preprocessing(args.model), data_set=eval_set.preprocessing,
                       images=eval_set.images is not None, model_name=Path(args.model).name,
                       data_name=args.eval_set)
    info(resolved.line())
    for warning in resolved.warnings:
        print(f"edgeq: warning: {warning}", file=sys.stderr)
    x = eval_set.with_preprocessing(resolved.spec).model_inputs()
    calibration = calibrate(float_model, args.calib, preprocessing=pp)
    stats = calibration.stats
    table = choose_ranges(stats, recipe)
    ranges = {key: (r.min, r.max) for key, r in zip(sorted(stats.tensors), table.ranges, strict=True)}

    analysed = time.perf_counter()
    sim = Simulator(float_model.flatbuffer, per_tensor=recipe.per_tensor, per_tensor_dense=recipe.per_tensor_dense)
    samples = [[x[i:i + 1]] for i in range(len(x))]
    reference = sim.run(sim.float_config(), samples)
    report = analyse(sim, ranges, samples, reference=reference, described_as=recipe.method.value)
    analysis_seconds = time.perf_counter() - analysed

    int8 = quantize(float_model.flatbuffer, ranges, recipe.io, recipe.per_tensor, recipe.per_tensor_dense)
    outputs = list(predict_outputs(open_session(int8, parse_backend("cpu")), x).values())
    real_db = fidelity([r.reshape(-1) for r in reference], [o.reshape(-1) for o in outputs])
    report = dataclasses.replace(report, real_int8_db=real_db)
    seconds = time.perf_counter() - started

    document = {"model": args.model, "float_fingerprint": float_model.fingerprint, "calib": args.calib,
                "eval": args.eval_set, "method": recipe.method.value, "samples": len(samples),
                "activations": len(sim.activations), "weights": len(sim.weights),
                "analysis_seconds": round(analysis_seconds, 3), "seconds": round(seconds, 3),
                "preprocessing": None if resolved.spec is None else resolved.spec.to_dict(),
                "preprocessing_source": resolved.source.value, "warnings": list(resolved.warnings),
                "sensitivity": report.to_dict()}
    written = []
    if args.output:
        written.append(write_text_atomic(Path(args.output) / JSON_NAME, json_text("edgeq.sensitivity", document)))
    if tables_wanted(args):
        print_summary(report, args.top, len(sim.activations), len(sim.weights), analysis_seconds, seconds)
    written.append(emit_json(args.json, "edgeq.sensitivity", document))
    for path in filter(None, written):
        info(f"written: {path}")
    return 0


def print_summary(report: Any, top: int, activations: int, weights: int, analysis_seconds: float,
                  seconds: float) -> None:
    rows = [[r.rank, short_name(r.name), r.tensor_kind, r.op, f"{r.only_db:.1f}", f"{r.all_but_db:.1f}",
             f"{r.recovers_db:+.2f}"] for r in report.tensors[:top]]
    print_table(["rank", "tensor", "kind", "op", "only dB", "all-but dB", "recovers dB"], rows)
    if len(report.tensors) > top:
        print(f"... {len(report.tensors) - top} more tensors in the JSON")
    print(f"\nsimulated fidelity (mean output SQNR vs FP32 over {report.samples} samples, ranges {report.ranges}): "
          f"all quantized {report.all_quantized_db:.1f} dB, activations only {report.activations_only_db:.1f} dB, "
          f"weights only {report.weights_only_db:.1f} dB")
    if report.real_int8_db is not None:
        gap = report.all_quantized_db - report.real_int8_db
        print(f"real INT8 model: {report.real_int8_db:.1f} dB (the simulation is {abs(gap):.1f} dB "
              f"{'optimistic' if gap > 0 else 'pessimistic'})")
    print(f"{activations} activation and {weights} weight tensors ({len(report.tensors)} analysed, "
          f"{len(report.shares_scale)} share another's scale) in {analysis_seconds:.1f} s; {seconds:.1f} s in all")
    print("only dB: fidelity with just this tensor quantized (low: it alone hurts); all-but dB: every other tensor "
          "quantized; recovers dB: what keeping it at higher precision wins at most")
