"""``calibrate`` and ``convert``: the Python API the CLI verbs mirror. Returns artifacts, never prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeq.artifacts import Preprocessing, QuantizedArtifact, RangeTable, SampleValue, TensorRange
from edgeq.calib.collect import ActivationStats, collect, model_inputs
from edgeq.calib.data import CalibrationSet, load_calibration
from edgeq.calib.estimators import SampleGuard, estimate, outlier_set
from edgeq.calib.outliers import outlier_samples
from edgeq.converter.load import FloatModel, load_float_model
from edgeq.converter.quantize import quantize
from edgeq.converter.recipe import QuantRecipe
from edgeq.converter.verify import verify
from edgeq.errors import InputError, UsageError
from edgeq.files import atomic_path
from edgeq.tflite import model as tfl
from edgeq.tflite.metadata import embed_preprocessing
from edgeq.tflite.runtime import CpuKernels, make_interpreter
from edgeq.versions import package_versions

Progress = Callable[[int, int], None]
SIDECAR_SAMPLES = 3  # per tensor, the sidecar lists this many samples by largest max and by smallest min


@dataclass(frozen=True)
class Calibration:
    float_model: FloatModel
    data: CalibrationSet | None
    stats: ActivationStats


def _calibration_data(float_model: FloatModel, calib: str | Path, preprocessing: Preprocessing | None,
                      limit: int | None) -> CalibrationSet:
    interpreter, _ = make_interpreter(float_model.flatbuffer, CpuKernels.CPU)
    return load_calibration(calib, model_inputs(interpreter), preprocessing, limit, model=float_model.flatbuffer)


ModelSource = str | Path | FloatModel


def _float_model(model: ModelSource, input_shape: tuple[int, ...] | None) -> FloatModel:
    """A model already loaded (a FloatModel) is used as is: loading a Keras model converts it, which is slow."""
    return model if isinstance(model, FloatModel) else load_float_model(model, input_shape)


def calibrate(model: ModelSource, calib: str | Path, *, preprocessing: Preprocessing | None = None,
              input_shape: tuple[int, ...] | None = None, limit: int | None = None,
              progress: Progress | None = None) -> Calibration:
    """Run the float model over the calibration set once and collect per-tensor statistics."""
    float_model = _float_model(model, input_shape)
    data = _calibration_data(float_model, calib, preprocessing, limit)
    return Calibration(float_model, data, collect(float_model.flatbuffer, data, progress))


def sample_guard(recipe: QuantRecipe, stats: ActivationStats | None = None) -> SampleGuard:
    """The recipe's sample guard thresholds, with the outlier samples of ``stats`` when given."""
    guard = SampleGuard(factor=recipe.sample_guard_factor, follow=recipe.sample_guard_follow)
    return replace(guard, outliers=outlier_set(stats.extremes.values(), guard)) if stats is not None else guard


def choose_ranges(stats: ActivationStats, recipe: QuantRecipe) -> RangeTable:
    """A range per activation tensor, in (subgraph, tensor) order: the recipe's method, or the first override
    rule that matches; the recipe's sample guard (when on) applies to every estimator but minmax."""
    guard = sample_guard(recipe, stats) if recipe.sample_guard else None
    used = [0] * len(recipe.overrides)
    ranges = []
    for key in sorted(stats.tensors):
        name, producer = stats.names[key], stats.producers[key]
        method, percentile, why = recipe.method, recipe.percentile, ""
        for k, rule in enumerate(recipe.overrides):
            if rule.matches(name, producer):
                used[k] += 1
                method = rule.method
                percentile = rule.percentile if rule.percentile is not None else recipe.percentile
                why = f"recipe override #{k + 1} ({rule.describe()}); "
                break
        tensor_stats = stats.tensors[key]
        if tensor_stats.count == 0:
            where = f" of subgraph {key[0]} (its loop or branch never ran)" if key[0] else ""
            raise InputError(f"tensor '{name}'{where} was never computed during calibration")
        extremes = stats.extremes.get(key)
        choice = estimate(tensor_stats, method, percentile=percentile, auto_thresholds=recipe.auto_thresholds,
                          extremes=extremes, guard=guard)
        ranges.append(TensorRange(
            name=name, min=float(choice.lo), max=float(choice.hi), estimator=choice.estimator,
            rule=why + choice.rule, outlier_ratio=float(choice.outlier_ratio),
            clip_fraction=float(choice.clip_fraction),
            top_max=tuple(SampleValue(s, v) for s, v in extremes.top_max[:SIDECAR_SAMPLES]) if extremes else (),
            top_min=tuple(SampleValue(s, v) for s, v in extremes.top_min[:SIDECAR_SAMPLES]) if extremes else (),
            sample_stretch=choice.sample_stretch, trimmed_sample=choice.trimmed_sample,
            untrimmed=choice.untrimmed))
    unused = [k for k, n in enumerate(used) if n == 0]
    if unused:
        rule = recipe.overrides[unused[0]]
        raise InputError(f"recipe override #{unused[0] + 1} ({rule.describe()}) matches no activation tensor")
    return RangeTable(model_fingerprint=stats.model_fingerprint, ranges=tuple(ranges))


def _tool_versions() -> dict[str, str]:
    return package_versions(("edgeq", "tensorflow", "ai-edge-litert", "numpy"))


def sidecar_path(output: str | Path) -> Path:
    return Path(output).with_suffix(".json")


def convert(model: ModelSource, output: str | Path, *, calib: str | Path | None = None,
            stats: str | Path | None = None, recipe: QuantRecipe | None = None,
            preprocessing: Preprocessing | None = None, input_shape: tuple[int, ...] | None = None,
            limit: int | None = None, progress: Progress | None = None) -> QuantizedArtifact:
    """Calibrate (or reuse ``stats``), choose ranges, quantize, and write ``output`` + its JSON sidecar."""
    recipe = recipe or QuantRecipe()
    output = Path(output)
    if output.suffix != ".tflite":
        raise UsageError(f"output must end in .tflite, got {output}")
    if (calib is None) == (stats is None):
        raise UsageError("give exactly one of a calibration set (--calib) or a stats file (--stats)")
    float_model = _float_model(model, input_shape)
    if stats is not None:
        activation_stats = ActivationStats.load(stats)
        if activation_stats.model_fingerprint != float_model.fingerprint:
            raise InputError(f"stats file {stats} was collected on a different model "
                             f"({activation_stats.model_fingerprint[:12]}, this one is {float_model.fingerprint[:12]})")
        samples = activation_stats.samples
        preprocessing = activation_stats.preprocessing
    else:
        assert calib is not None
        data = _calibration_data(float_model, calib, preprocessing, limit)
        preprocessing = data.preprocessing
        activation_stats = collect(float_model.flatbuffer, data, progress)
        samples = len(data)
    table = choose_ranges(activation_stats, recipe)
    keys = sorted(activation_stats.tensors)
    keyed = {key: (r.min, r.max) for key, r in zip(keys, table.ranges, strict=True)}
    outliers = outlier_samples(activation_stats, sample_guard(recipe),
                               {key: r.trimmed_sample for key, r in zip(keys, table.ranges, strict=True)})
    quantized = quantize(float_model.flatbuffer, keyed, recipe.io, recipe.per_tensor, recipe.per_tensor_dense)
    quantized = embed_preprocessing(quantized, float_model.flatbuffer, preprocessing, float_model.source)
    # What is verified is what is published: every change to the model's bytes belongs above this line.
    left_float = verify(quantized, recipe)
    artifact = QuantizedArtifact(
        path=str(output), sha256=tfl.sha256(quantized), source=float_model.source,
        source_fingerprint=float_model.source_fingerprint, float_fingerprint=float_model.fingerprint,
        calibration_fingerprint=activation_stats.calibration_fingerprint, calibration_samples=samples,
        io_type=recipe.io, ranges=table, float_bytes=float_model.source_bytes, int8_bytes=len(quantized),
        size_ratio=round(float_model.source_bytes / len(quantized), 4), recipe=recipe.to_dict(),
        preprocessing=preprocessing, rewrites={r.name: r.count for r in float_model.rewrites},
        float_ops=tuple(str(op) for op in left_float), tool_versions=_tool_versions(), outlier_samples=outliers,
    )
    sidecar = json.dumps(artifact.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(output) as model_tmp, atomic_path(sidecar_path(output)) as sidecar_tmp:
        model_tmp.write_bytes(quantized)
        sidecar_tmp.write_text(sidecar)
    return artifact
