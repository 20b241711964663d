"""Real models, three INT8 quantizers: edgeq per method vs TensorFlow's quantizer vs Google's ai-edge-quantizer.

Usage: python benchmarks/real_models.py [--models NAMES] [--methods minmax,percentile,mse,kl,auto]
                                        [--aeq-python /tmp/aeq/bin/python] [--write docs/real_models.md]

Models: the three vendored MediaPipe float models (tests/data/mediapipe/) and the zoo's mobilenet_v2 (Keras,
32x32 digits, trained once and cached by edgeq_models.build). Data: the 21 bundled photos resized to the
model's input (benchmarks/mediapipe_accuracy.py: 14 calibrate, 7 held out, among them the astronaut); for
mobilenet_v2 the first 256 of a seeded shuffle of the digits train split calibrate and the 360-image test split
is held out. Every tool gets the same calibration samples in the same model units.

Tools, each tried on what it can take, every attempt recorded with its one-line error:
- edgeq: ``edgeq.convert(source, out, calib=..., preprocessing=..., recipe=QuantRecipe(method=m))``.
- TensorFlow: a Keras model goes through ``TFLiteConverter.from_keras_model`` with a representative dataset and
  int8 I/O. TF's public converter cannot take a ``.tflite``, so for those its quantization stage is called the
  way ``TFLiteConverter._quantize`` calls it (``tensorflow.lite.python.optimize.calibrator.Calibrator``, then
  either the MLIR quantizer, TF's default, or the legacy ``calibrate_and_quantize``), on the file as shipped,
  on edgeq's intake output (``load_float_model(path).flatbuffer``) and on that output with the entries the
  intake leaves unused (tensors, buffers, operator codes) dropped. Each attempt runs in a child process: the
  legacy quantizer crashes (SIGSEGV) on some inputs.
- ai-edge-quantizer (AEQ): benchmarks/aeq_driver.py run with ``--aeq-python`` (or $EDGEQ_AEQ_PYTHON), a Python
  with ai-edge-quantizer 0.10 installed; its static int8 recipe ``recipe.static_wi8_ai8()``. Tried on the file
  as shipped, with a SignatureDef added (AEQ calibrates through signatures), on edgeq's intake output with a
  signature, and on the cleaned intake output with a signature; where a file sets only the deprecated
  ``deprecated_builtin_code`` (AEQ reads ``builtin_code`` alone), also with ``builtin_code`` filled in.

Measured per successful attempt on the held-out data, against the float model (edgeq's intake output, whose
outputs the intake checks equal to the original's; the selfie segmenter's custom op has no kernel otherwise),
all run with LiteRT's builtin CPU kernels: SQNR dB per output (edgeq.validate.diagnostics.output_sqnr_db over
all held-out samples), the task metric (detectors: highest face score on the astronaut photo, float vs INT8;
segmenter: mask IoU vs float at 0.5, pooled over the held-out photos, their per-photo mean, and on the
astronaut; classifier: top-1 on the test split, float vs INT8), whether any float tensor is left, the INT8 file
size and the conversion wall time (edgeq: the whole convert() call, intake included, after one untimed warm-up
conversion; TF and AEQ: calibration + quantization in their process, imports excluded). Prints Markdown;
``--write FILE`` replaces the part of FILE between the generated-section markers, keeping the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from markdown import write_generated  # noqa: E402
from mediapipe_accuracy import photos, run_outputs, split  # noqa: E402

MEDIAPIPE = ROOT / "tests" / "data" / "mediapipe"
AEQ_DRIVER = ROOT / "benchmarks" / "aeq_driver.py"
AEQ_ENV = "EDGEQ_AEQ_PYTHON"
METHODS = ("minmax", "percentile", "mse", "kl", "auto")
BEGIN, END = "<!-- real_models.py: begin generated -->", "<!-- real_models.py: end generated -->"
CHILD_TIMEOUT = 900


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "tflite" (a MediaPipe file) or "keras" (a zoo model)
    task: str  # "detection", "segmentation" or "classification"
    size: int = 0
    mean: float = 0.0
    std: float = 1.0


SPECS = {s.name: s for s in (
    Spec("face_detection_short_range", "tflite", "detection", 128, 127.5, 127.5),
    Spec("face_detection_full_range_sparse", "tflite", "detection", 192, 127.5, 127.5),
    Spec("selfie_segmentation", "tflite", "segmentation", 256, 0.0, 255.0),
    Spec("mobilenet_v2", "keras", "classification"),
)}


@dataclass
class Data:
    source: Path  # what edgeq converts
    source_bytes: int
    calib_images: np.ndarray  # uint8, for edgeq (with preprocessing)
    preprocessing: Any
    calib: np.ndarray  # float32 model input, for TF and AEQ
    held: np.ndarray  # float32 model input
    labels: np.ndarray | None = None
    astronaut: int | None = None  # index of the astronaut photo within the held-out samples


@dataclass
class Attempt:
    tool: str
    variant: str  # what the tool was given / which quantizer
    ok: bool
    detail: str  # one-line error, or what was needed
    model: bytes | None = None
    seconds: float | None = None


@dataclass
class Row:
    tool: str
    variant: str
    full_integer: str
    int8_bytes: int
    seconds: float
    sqnr: list[float]
    task: str


@dataclass
class ModelResult:
    spec: Spec
    source_bytes: int
    outputs: list[str]
    rows: list[Row] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    edgeq_rewrites: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# flatbuffer edits some tools need (the float graph is unchanged: outputs are checked equal)


def drop_unused(flatbuffer: bytes) -> bytes:
    """Drop tensors no op reads or writes, buffers no tensor or metadata uses, and unused operator codes."""
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(flatbuffer)
    for graph in parsed.subgraphs:
        ops = graph.operators or []
        used = sorted({int(t) for op in ops for t in [*op.inputs, *op.outputs, *(op.intermediates or [])] if t >= 0}
                      | {int(t) for t in [*graph.inputs, *graph.outputs]})
        new = {old: i for i, old in enumerate(used)}
        graph.tensors = [graph.tensors[i] for i in used]
        for op in ops:
            op.inputs = [new[int(t)] if t >= 0 else -1 for t in op.inputs]
            op.outputs = [new[int(t)] for t in op.outputs]
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = [new[int(t)] for t in op.intermediates]
        graph.inputs = [new[int(t)] for t in graph.inputs]
        graph.outputs = [new[int(t)] for t in graph.outputs]
    if parsed.signatureDefs:
        raise ValueError("drop_unused does not remap SignatureDefs; add the signature afterwards")
    buffers = sorted({0} | {int(t.buffer) for g in parsed.subgraphs for t in g.tensors}
                     | {int(m.buffer) for m in parsed.metadata or []})
    new_buffer = {old: i for i, old in enumerate(buffers)}
    parsed.buffers = [parsed.buffers[i] for i in buffers]
    for graph in parsed.subgraphs:
        for tensor in graph.tensors:
            tensor.buffer = new_buffer[int(tensor.buffer)]
    for entry in parsed.metadata or []:
        entry.buffer = new_buffer[int(entry.buffer)]
    codes = sorted({int(op.opcodeIndex) for g in parsed.subgraphs for op in g.operators or []})
    new_code = {old: i for i, old in enumerate(codes)}
    parsed.operatorCodes = [parsed.operatorCodes[i] for i in codes]
    for graph in parsed.subgraphs:
        for op in graph.operators or []:
            op.opcodeIndex = new_code[int(op.opcodeIndex)]
    return bytes(tfl.serialize(parsed))


def with_signature(flatbuffer: bytes) -> bytes:
    """Add a ``serving_default`` SignatureDef naming the main graph's inputs and outputs (if there is none)."""
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(flatbuffer)
    if parsed.signatureDefs:
        return flatbuffer
    schema, graph = tfl.schema(), parsed.subgraphs[0]

    def tensor_maps(indices: Sequence[int]) -> list[Any]:
        maps = []
        for index in indices:
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = tfl.tensor_name(graph.tensors[int(index)]), int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = tensor_maps(graph.inputs), tensor_maps(graph.outputs)
    parsed.signatureDefs = [signature]
    return bytes(tfl.serialize(parsed))


def fill_builtin_codes(flatbuffer: bytes) -> bytes:
    """Set each operator code's ``builtin_code`` to max(builtin_code, deprecated_builtin_code), as LiteRT reads it.

    Older exporters (the MediaPipe face detectors) wrote only ``deprecated_builtin_code`` and left
    ``builtin_code`` 0 (ADD); a reader that looks at ``builtin_code`` alone sees every op as an ADD.
    """
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(flatbuffer)
    changed = False
    for code in parsed.operatorCodes:
        real = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        changed |= int(code.builtinCode) != real
        code.builtinCode = real
    return bytes(tfl.serialize(parsed)) if changed else flatbuffer


def unused_counts(flatbuffer: bytes) -> str:
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(flatbuffer)
    graph = parsed.subgraphs[0]
    used_t = {int(t) for op in graph.operators for t in [*op.inputs, *op.outputs] if t >= 0}
    used_t |= {int(t) for t in [*graph.inputs, *graph.outputs]}
    used_c = {int(op.opcodeIndex) for op in graph.operators}
    unused_codes = sorted({tfl.builtin_op_name(int(c.builtinCode or c.deprecatedBuiltinCode)) if not c.customCode else
                           c.customCode.decode() for i, c in enumerate(parsed.operatorCodes) if i not in used_c})
    return (f"{len(graph.tensors) - len(used_t)} unused tensors, unused operator codes "
            f"{', '.join(unused_codes) or 'none'}")


# ---------------------------------------------------------------------------------------------------------
# TensorFlow, in a child process per attempt


def _tf_child(kind: str, model: str, calib: str, out: str, quantizer: str) -> int:
    """Quantize with TensorFlow; print one JSON line. Runs in its own process (the legacy quantizer can crash)."""
    from edgeq.quiet import native_output_captured
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()
    samples = np.load(calib)

    def dataset() -> Any:
        return ([sample[None].astype(np.float32)] for sample in samples)

    started = time.perf_counter()
    if kind == "keras":
        import keras

        from edgeq_models import load_model

        loaded = load_model(model)
        started = time.perf_counter()  # TF's time starts at the converter, like the others' at calibration
        inputs = keras.Input(tuple(loaded.inputs[0].shape[1:]), batch_size=1)
        converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, loaded(inputs)))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter.experimental_new_quantizer = quantizer == "mlir"
        with native_output_captured():
            quantized = bytes(converter.convert())
    else:
        from tensorflow.lite.python import convert as tf_convert
        from tensorflow.lite.python.optimize import calibrator

        content = calibrator.add_intermediate_tensors(Path(model).read_bytes())
        calibrate = calibrator.Calibrator(content)
        if quantizer == "mlir":
            calibrated = calibrate.calibrate(dataset)
            quantized = bytes(tf_convert.mlir_quantize(calibrated, input_data_type=tf.int8,
                                                       output_data_type=tf.int8))
        else:
            quantized = bytes(calibrate.calibrate_and_quantize(dataset, tf.int8, tf.int8, False))
    seconds = time.perf_counter() - started
    Path(out).write_bytes(quantized)
    print(json.dumps({"ok": True, "seconds": seconds}))
    return 0


def _one_line(stderr: str, returncode: int) -> str:
    """The first meaningful error line of a failed child, with how often MLIR repeated it."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        frames = re.findall(r'File ".*?([\w]+\.py)", line \d+ in (\w+)', stderr)
        where = f" in {frames[0][1]}" if frames else ""
        return f"crashed: {name}{where}"
    errors = [line.split("error: ", 1)[1].strip() for line in stderr.splitlines() if "error: " in line]
    if errors:
        first = errors[0]
        others = sorted(set(errors) - {first})
        text = f"{first} (×{errors.count(first)})" if errors.count(first) > 1 else first
        return text + (f"; then: {others[0]}" if others else "")
    lines = stderr.splitlines()
    found = [i for i, line in enumerate(lines) if re.match(r"^\w*(Error|Exception)\b", line)]
    if found:
        text = lines[found[-1]].strip()
        if text.endswith(":"):  # the reason is on the next line
            text += " " + next((line.strip() for line in lines[found[-1] + 1:] if line.strip()), "")
        return text[:300]
    return (stderr.strip().splitlines() or [f"exit {returncode}"])[-1][:300]


def run_child(command: list[str], out: Path) -> Attempt:
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return Attempt("", "", False, f"timed out after {CHILD_TIMEOUT} s")
    report: dict[str, Any] = {}
    lines = result.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        report = json.loads(lines[-1])
    if result.returncode == 0 and report.get("ok"):
        return Attempt("", "", True, "", out.read_bytes(), float(report["seconds"]))
    detail = report.get("error") or _one_line(result.stderr, result.returncode)
    return Attempt("", "", False, str(detail), seconds=None)


def tf_attempts(spec: Spec, data: Data, folder: Path) -> list[Attempt]:
    calib = folder / f"{spec.name}_calib_float.npy"
    np.save(calib, data.calib)
    me = [sys.executable, str(Path(__file__).resolve()), "--tf-child"]
    attempts = []
    if spec.kind == "keras":
        for quantizer, label in (("mlir", "from_keras_model, MLIR quantizer (default)"),
                                 ("legacy", "from_keras_model, legacy quantizer")):
            out = folder / f"{spec.name}_tf_{quantizer}.tflite"
            attempt = run_child([*me, "keras", str(data.source), str(calib), str(out), quantizer], out)
            attempt.tool, attempt.variant = "TF converter", label
            attempts.append(attempt)
        return attempts
    from edgeq.intake.load import load_float_model

    intake = load_float_model(data.source).flatbuffer
    inputs = {"the .tflite as shipped": data.source.read_bytes(), "edgeq's intake output": intake,
              "edgeq's intake output, unused entries dropped": drop_unused(intake)}
    for quantizer, label in (("mlir", "TF calibrator + MLIR quantizer"),
                             ("legacy", "TF calibrator + legacy quantizer")):
        for given, content in inputs.items():
            model = folder / f"{spec.name}_tf_input.tflite"
            model.write_bytes(content)
            out = folder / f"{spec.name}_tf_{quantizer}.tflite"
            attempt = run_child([*me, "tflite", str(model), str(calib), str(out), quantizer], out)
            attempt.tool, attempt.variant = label, given
            attempts.append(attempt)
            if attempt.ok:
                break
    return attempts


def aeq_attempts(spec: Spec, data: Data, folder: Path, python: str) -> list[Attempt]:
    from edgeq.intake.load import keras_to_float_tflite, load_float_model

    calib = folder / f"{spec.name}_calib_float.npy"
    np.save(calib, data.calib)
    if spec.kind == "keras":
        from edgeq_models import load_model

        inputs = {"float .tflite from TFLiteConverter (batch 1)": keras_to_float_tflite(load_model(data.source))}
    else:
        intake = load_float_model(data.source).flatbuffer
        shipped = data.source.read_bytes()
        inputs = {"the .tflite as shipped": shipped, "as shipped + a SignatureDef": with_signature(shipped)}
        codes = "" if fill_builtin_codes(shipped) == shipped else ", builtin_code filled"
        if codes:
            inputs[f"as shipped + a SignatureDef{codes}"] = with_signature(fill_builtin_codes(shipped))
        inputs[f"edgeq's intake output + a SignatureDef{codes}"] = with_signature(fill_builtin_codes(intake))
        inputs[f"edgeq's intake output, unused entries dropped, + a SignatureDef{codes}"] = with_signature(
            fill_builtin_codes(drop_unused(intake)))
    attempts = []
    for given, content in inputs.items():
        model = folder / f"{spec.name}_aeq_input.tflite"
        model.write_bytes(content)
        out = folder / f"{spec.name}_aeq_{len(attempts)}.tflite"
        attempt = run_child([python, str(AEQ_DRIVER), str(model), str(calib), str(out)], out)
        attempt.tool, attempt.variant = "AEQ static_wi8_ai8", given
        attempts.append(attempt)
    return attempts


def aeq_versions(python: str) -> str:
    code = ("from importlib import metadata as m\nfor p in ('ai-edge-quantizer', 'ai-edge-litert', 'numpy', "
            "'tensorflow'):\n    try: print(p, m.version(p))\n    except m.PackageNotFoundError: print(p, 'absent')")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return ", ".join(result.stdout.strip().splitlines())


# ---------------------------------------------------------------------------------------------------------
# measuring


def full_integer(model: bytes) -> str:
    from edgeq.artifacts import IOType
    from edgeq.converter.quantize import float_ops
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(model)
    float_tensors = sum(tfl.is_float_type(t.type) for g in parsed.subgraphs for t in g.tensors)
    if not float_tensors:
        return "yes"
    graph = parsed.subgraphs[0]
    io_float = any(tfl.is_float_type(graph.tensors[int(i)].type) for i in [*graph.inputs, *graph.outputs])
    inside = [op for op in float_ops(model, IOType.FLOAT32 if io_float else IOType.INT8)
              if op.op_type not in ("QUANTIZE", "DEQUANTIZE") or not io_float]
    if not inside:
        return "int8 inside, float32 I/O"
    kinds = sorted({op.op_type for op in inside})
    return f"**no**: {len(inside)} float ops ({', '.join(kinds)})"


def task_metric(spec: Spec, data: Data, reference: list[np.ndarray], approx: list[np.ndarray]) -> str:
    """The task metric of ``approx`` against the float ``reference``, formatted for a table cell."""
    if spec.task == "detection":
        k = next(i for i, y in enumerate(reference) if y.shape[-1] == 1)  # scores: one logit per anchor
        assert data.astronaut is not None
        score = [float(1 / (1 + np.exp(-y[k][data.astronaut].max()))) for y in (reference, approx)]
        return f"{score[0]:.3f} → {score[1]:.3f}"
    if spec.task == "segmentation":
        from edgeq.validate.tasks import SegmentationConfig, segmentation_metrics

        metrics = segmentation_metrics(reference[0], approx[0], SegmentationConfig(threshold=0.5))
        assert data.astronaut is not None
        return (f"{metrics.class_iou[0]:.3f} / {metrics.mean_iou:.3f} / "
                f"{metrics.samples.iou[data.astronaut]:.3f}")
    assert data.labels is not None
    top = [float((y[0].argmax(axis=-1) == data.labels).mean()) for y in (reference, approx)]
    agree = float((reference[0].argmax(axis=-1) == approx[0].argmax(axis=-1)).mean())
    return f"{top[0]:.2%} → {top[1]:.2%} (agree {agree:.1%})"


def load_data(spec: Spec, folder: Path) -> Data:
    from edgeq.artifacts import Preprocessing
    from edgeq.preprocess import apply_preprocessing

    if spec.kind == "keras":
        from edgeq_models import ZOO, build
        from edgeq_models.zoo import load_splits

        built = build(spec.name)
        train, _, test = load_splits(ZOO[spec.name].dataset)
        order = np.random.default_rng(0).permutation(len(train))[:256]
        pp = ZOO[spec.name].preprocessing
        return Data(source=built.path, source_bytes=built.path.stat().st_size, calib_images=train.images[order],
                    preprocessing=pp, calib=apply_preprocessing(pp, train.images[order]),
                    held=apply_preprocessing(pp, test.images), labels=np.asarray(test.labels))
    source = MEDIAPIPE / f"{spec.name}.tflite"
    names, images = photos((spec.size, spec.size))
    calib, held = split(len(images))
    pp = Preprocessing(mean=(spec.mean,), std=(spec.std,))
    return Data(source=source, source_bytes=source.stat().st_size, calib_images=images[calib], preprocessing=pp,
                calib=apply_preprocessing(pp, images[calib]), held=apply_preprocessing(pp, images[held]),
                astronaut=int(np.flatnonzero(held == names.index("skimage/astronaut"))[0]))


def measure_model(spec: Spec, methods: Sequence[str], aeq_python: str | None, folder: Path,
                  log: Callable[[str], None]) -> ModelResult:
    import edgeq
    from edgeq.artifacts import Estimator
    from edgeq.intake.load import load_float_model
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.tfimport import import_tensorflow

    import_tensorflow()  # imported once here, not inside the first timed conversion
    data = load_data(spec, folder)
    float_model = load_float_model(data.source)
    reference = run_outputs(float_model.flatbuffer, data.held)
    from mediapipe_accuracy import output_names

    names = output_names(float_model.flatbuffer)
    result = ModelResult(spec, data.source_bytes, names)

    def add(tool: str, variant: str, model: bytes, seconds: float) -> str | None:
        """Measure ``model`` into a row; or say why it cannot be measured (it does not load or run)."""
        from edgeq.errors import EdgeqError
        from edgeq.tflite.probe import probe
        from edgeq.validate.diagnostics import output_sqnr_db

        try:
            probe(model)  # in a child process: a model that crashes LiteRT must not end the benchmark
            approx = run_outputs(model, data.held)
        except EdgeqError as exc:
            return f"LiteRT cannot run the INT8 model: {str(exc).strip().splitlines()[0]}"
        for r, a in zip(reference, approx, strict=True):
            if r.shape != a.shape:
                return f"its outputs have other shapes ({a.shape} vs {r.shape})"

        metric = task_metric(spec, data, reference, approx)
        result.rows.append(Row(tool, variant, full_integer(model), len(model), seconds,
                               [output_sqnr_db(r, a) for r, a in zip(reference, approx, strict=True)],
                               metric))
        log(f"{spec.name} {tool} {variant}: {result.rows[-1]}")
        return None

    calib_file = folder / f"{spec.name}_calib.npy"
    np.save(calib_file, data.calib_images)
    with contextlib.suppress(Exception):  # untimed warm-up: the first conversion in a process pays lazy loading
        edgeq.convert(data.source, folder / "warm_up.tflite", calib=calib_file, preprocessing=data.preprocessing,
                      recipe=QuantRecipe(method=Estimator.MINMAX))
    for method in methods:
        out = folder / f"{spec.name}_edgeq_{method}.tflite"
        started = time.perf_counter()
        try:
            artifact = edgeq.convert(data.source, out, calib=calib_file, preprocessing=data.preprocessing,
                                     recipe=QuantRecipe(method=Estimator(method)))
        except Exception as exc:
            result.attempts.append(Attempt("edgeq", method, False, f"{type(exc).__name__}: {exc}"))
            continue
        seconds = time.perf_counter() - started
        result.edgeq_rewrites = dict(artifact.rewrites)
        problem = add("edgeq", method, out.read_bytes(), seconds)
        if problem:
            result.attempts.append(Attempt("edgeq", method, False, problem))
    attempts = tf_attempts(spec, data, folder)
    if aeq_python:
        attempts += aeq_attempts(spec, data, folder, aeq_python)
    for attempt in attempts:
        result.attempts.append(attempt)
        if attempt.ok and attempt.model is not None and attempt.seconds is not None:
            problem = add(attempt.tool, attempt.variant, attempt.model, attempt.seconds)
            if problem:
                attempt.ok, attempt.detail = False, f"quantized in {attempt.seconds:.1f} s, but {problem}"
    if spec.kind == "tflite":
        result.attempts.insert(0, Attempt("(edgeq's intake output)", "", True,
                                          unused_counts(float_model.flatbuffer)))
    return result


# ---------------------------------------------------------------------------------------------------------
# report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores, {cpu}, {memory / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}"


def render(results: list[ModelResult], command: str, aeq: str, seconds: float) -> str:
    from edgeq.versions import package_versions

    versions = package_versions(("edgeq", "tensorflow", "ai-edge-litert", "numpy"))
    lines = [
        f"Generated {datetime.date.today().isoformat()} by `{command}` in {seconds:.0f} s.",
        "",
        f"- Machine: {machine()}; Python {platform.python_version()}.",
        f"- edgeq's environment: {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        f"- AEQ's environment: {aeq}.",
        "",
        "SQNR is over the held-out samples (7 photos; 360 digits for mobilenet_v2), INT8 vs the float model; "
        "higher is better. Time: edgeq = the whole `convert()` call (intake, calibration, quantization, "
        "verification), after one untimed warm-up conversion; TF and AEQ = calibration + quantization inside "
        "their process.",
        "",
    ]
    for r in results:
        task = {"detection": "astronaut face score float → INT8",
                "segmentation": "mask IoU vs float at 0.5: pooled / per-photo mean / astronaut",
                "classification": "test top-1 float → INT8"}[r.spec.task]
        lines += [f"### {r.spec.name}", "",
                  f"Float source: {r.source_bytes / 1024:.1f} KiB. Outputs: "
                  + ", ".join(f"`{n}`" for n in r.outputs) + ".", "",
                  "| tool | method / input | full-integer | INT8 KiB | convert s | "
                  + " | ".join(f"SQNR `{n}` dB" for n in r.outputs) + f" | {task} |",
                  "|---|---|---|---:|---:|" + "---:|" * len(r.outputs) + "---|"]
        for row in r.rows:
            lines.append(f"| {row.tool} | {row.variant} | {row.full_integer} | {row.int8_bytes / 1024:.1f} | "
                         f"{row.seconds:.2f} | " + " | ".join(f"{s:.1f}" for s in row.sqnr) + f" | {row.task} |")
        lines += ["", "What each tool needed:", "", "| tool | given | outcome |", "|---|---|---|"]
        if r.edgeq_rewrites:
            done = ", ".join(f"{k} ×{v}" for k, v in sorted(r.edgeq_rewrites.items()))
            lines.append(f"| edgeq | the source file | ran; its intake applied {done} |")
        else:
            lines.append("| edgeq | the source file | ran; no rewrites |")
        for a in r.attempts:
            outcome = "ran" if a.ok else "failed: " + a.detail.replace("|", "\\|").replace("\n", " ")
            if a.tool.startswith("("):
                lines.append(f"| {a.tool} | | {a.detail} |")
            else:
                lines.append(f"| {a.tool} | {a.variant} | {outcome} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--tf-child"]:
        return _tf_child(*argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SPECS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--aeq-python", default=os.environ.get(AEQ_ENV),
                        help=f"a Python with ai-edge-quantizer 0.10 (default ${AEQ_ENV}); AEQ is not run without it")
    parser.add_argument("--write", type=Path, help="replace the generated part of this Markdown file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.aeq_python:
        aeq = f"`{args.aeq_python}`: {aeq_versions(args.aeq_python)}"
    else:
        aeq = f"not run: no --aeq-python given and ${AEQ_ENV} unset"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            results.append(measure_model(SPECS[name], args.methods.split(","), args.aeq_python, Path(tmp),
                                         lambda text: print(text, file=sys.stderr, flush=True)))
    command = "python benchmarks/real_models.py " + shlex.join(argv)
    generated = render(results, command.strip(), aeq, time.perf_counter() - started)
    print(generated)
    if args.write:
        write_generated(args.write, generated, BEGIN, END, "Real models")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
