"""``calibrate`` and ``convert``: the Python API the CLI verbs mirror. Returns artifacts, never prints."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edgeq.artifacts import Estimator, Preprocessing, QuantizedArtifact, TransformRecord
from edgeq.calib.collect import ActivationStats, collect, model_inputs
from edgeq.calib.data import CalibrationSet, load_calibration
from edgeq.calib.outliers import outlier_samples
from edgeq.calib.ranges import choose_ranges, sample_guard
from edgeq.converter.quantize import quantize
from edgeq.converter.verify import verify
from edgeq.errors import InputError, UsageError
from edgeq.files import atomic_path
from edgeq.intake.float_model import FloatModel
from edgeq.intake.load import load_float_model
from edgeq.progress import step
from edgeq.quant_recipe import QuantRecipe
from edgeq.recover.search import search
from edgeq.tflite import model as tfl
from edgeq.tflite.metadata import embed_preprocessing
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter
from edgeq.versions import package_versions

Progress = Callable[[int, int], None]


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


def _tool_versions() -> dict[str, str]:
    return package_versions(("edgeq", "tensorflow", "ai-edge-litert", "numpy"))


def _int16_versions() -> dict[str, str]:
    return package_versions(("ai-edge-quantizer",))


def quantize_with(float_model: bytes, ranges: Mapping[TensorKey, tuple[float, float]], recipe: QuantRecipe) -> bytes:
    """The INT8 model for given ranges under a recipe's granularity and I/O (what the search compares)."""
    return quantize(float_model, ranges, recipe.io, recipe.per_tensor, recipe.per_tensor_dense)


def _int16_tensors(quantized: bytes) -> tuple[str, ...]:
    """Every int16 tensor of the model as built: the ones asked for, and those ai-edge-quantizer made int16 with
    them (the readers' outputs, the requantize ops between int8 and int16)."""
    parsed = tfl.parse(quantized)
    int16 = tfl.tensor_type("INT16")
    return tuple(sorted({tfl.tensor_name(t) for g in parsed.subgraphs for t in g.tensors if t.type == int16}))


def sidecar_path(output: str | Path) -> Path:
    return Path(output).with_suffix(".json")


def convert(model: ModelSource, output: str | Path, *, calib: str | Path | None = None,
            stats: str | Path | None = None, recipe: QuantRecipe | None = None,
            preprocessing: Preprocessing | None = None, input_shape: tuple[int, ...] | None = None,
            limit: int | None = None, progress: Progress | None = None, int16: Collection[str] = (),
            transforms: tuple[TransformRecord, ...] = ()) -> QuantizedArtifact:
    """Calibrate (or reuse ``stats``), choose ranges, quantize, and write ``output`` + its JSON sidecar.

    ``int16`` names activations to keep at int16 (through ai-edge-quantizer, edgeq.converter.int16);
    ``transforms`` records float-graph transforms already applied to ``model`` (edgeq.recover), for the sidecar."""
    recipe = recipe or QuantRecipe()
    output = Path(output)
    if output.suffix != ".tflite":
        raise UsageError(f"output must end in .tflite, got {output}")
    if (calib is None) == (stats is None):
        raise UsageError("give exactly one of a calibration set (--calib) or a stats file (--stats)")
    if int16 and Estimator(recipe.method) is Estimator.SEARCH:
        raise UsageError("--method search measures all-int8 models; run it first, then --int16 with the --recipe "
                         "its sidecar records")
    if int16 and recipe.per_tensor_dense:
        raise UsageError("--int16 goes through ai-edge-quantizer, which takes per-tensor weights everywhere "
                         "(--per-tensor) or nowhere, not for FULLY_CONNECTED alone (--per-tensor-dense)")
    float_model = _float_model(model, input_shape)
    searched = None
    if Estimator(recipe.method) is Estimator.SEARCH:
        if calib is None:
            raise UsageError("method search measures the model on calibration samples: give --calib, not --stats")
        data = _calibration_data(float_model, calib, preprocessing, limit)
        preprocessing = data.preprocessing
        found = search(float_model.flatbuffer, data, replace(recipe, method=Estimator.AUTO), quantize_with,
                       progress=progress)
        activation_stats, recipe, searched = found.stats, found.recipe, found.record
        samples = len(data)
    elif stats is not None:
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
    step(f"quantizing {output.name}" + (" (int16 tensors through ai-edge-quantizer)" if int16 else ""))
    if int16:
        from edgeq.converter.int16 import quantize_mixed

        by_name = {activation_stats.names[key]: span for key, span in keyed.items() if key[0] == 0}
        if len(by_name) != sum(1 for key in keyed if key[0] == 0):
            raise InputError("--int16 passes ranges to ai-edge-quantizer by tensor name, and this model has "
                             "activations sharing a name")
        quantized = quantize_mixed(float_model.flatbuffer, by_name, int16, recipe.io, per_tensor=recipe.per_tensor)
    else:
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
        float_ops=tuple(str(op) for op in left_float), outlier_samples=outliers,
        tool_versions={**_tool_versions(), **(_int16_versions() if int16 else {})},
        search=searched, transforms=tuple(transforms), int16_tensors=_int16_tensors(quantized) if int16 else (),
    )
    sidecar = json.dumps(artifact.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(output) as model_tmp, atomic_path(sidecar_path(output)) as sidecar_tmp:
        model_tmp.write_bytes(quantized)
        sidecar_tmp.write_text(sidecar)
    return artifact
