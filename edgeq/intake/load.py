"""Any supported float model -> a float TFLite flatbuffer with a static input shape (batch 1 by default).

Inputs: Keras ``.keras``/``.h5`` files, SavedModel folders and float ``.tflite`` files from any
exporter. A dynamic batch leaves SHAPE/PACK/GATHER and QUANTIZE/DEQUANTIZE ops in an "int8"
graph, so the batch is fixed here. The float-graph rewrites (edgeq.intake.rewrite) run last.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq.errors import InputError
from edgeq.intake.custom_ops import DECOMPOSITIONS, check_decompositions, custom_ops, decompose_custom_ops
from edgeq.intake.float_model import FloatModel, RewriteCount
from edgeq.intake.rewrite import apply_rewrites
from edgeq.intake.shapes import fix_dynamic_shapes
from edgeq.quiet import native_output_captured
from edgeq.tfimport import import_tensorflow
from edgeq.tflite import model as tfl

if TYPE_CHECKING:
    import keras

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _static(shape: tuple[int | None, ...], override: tuple[int, ...] | None, batch_size: int,
            what: str) -> tuple[int, ...]:
    if override is not None:
        if len(override) != len(shape) - 1:
            raise InputError(f"--input-shape {override} has rank {len(override)}; {what} has rank {len(shape) - 1} "
                             "without the batch")
        return (batch_size, *override)
    dims = tuple(shape[1:])
    if any(d is None or d < 0 for d in dims):
        raise InputError(f"{what} has a dynamic shape {shape}; give a static one with --input-shape")
    return (batch_size, *(int(d) for d in dims))  # type: ignore[misc]


def keras_to_float_tflite(model: "keras.Model", batch_size: int = 1,
                          input_shape: tuple[int, ...] | None = None) -> bytes:
    """Convert a Keras model to a float32 ``.tflite`` flatbuffer with static batch ``batch_size``."""
    tf = import_tensorflow("converting a Keras model")
    import keras

    if input_shape is not None and len(model.inputs) != 1:
        raise InputError("--input-shape applies to single-input models only")
    inputs = []
    for t in model.inputs:
        shape = _static(tuple(t.shape), input_shape, batch_size, f"input '{t.name}'")
        inputs.append(keras.Input(shape=shape[1:], batch_size=batch_size, name=t.name.split(":")[0], dtype=t.dtype))
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    static = keras.Model(inputs, outputs, name=model.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(static)
    with native_output_captured():  # the exporter prints its SavedModel signature to stdout
        return bytes(converter.convert())


def _load_keras(path: Path) -> "keras.Model":
    import_tensorflow("loading a Keras model")
    import keras

    with contextlib.suppress(ImportError):  # the zoo ships with the full install
        from edgeq_models import layers  # noqa: F401  (registers the zoo's custom layers)
    try:
        with native_output_captured((1,)):
            return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load Keras model {path}: {first}") from None


def _saved_model_to_tflite(folder: Path, batch_size: int, input_shape: tuple[int, ...] | None) -> bytes:
    tf = import_tensorflow("converting a SavedModel")
    try:
        with native_output_captured((1,)):
            loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise InputError(f"cannot load SavedModel {folder}: {type(exc).__name__}") from None
    signatures = dict(loaded.signatures)
    if "serving_default" not in signatures:
        raise InputError(f"SavedModel {folder} has no 'serving_default' signature")
    serving = signatures["serving_default"]
    specs = serving.structured_input_signature[1]
    if input_shape is not None and len(specs) != 1:
        raise InputError("--input-shape applies to single-input models only")
    names = sorted(specs)
    static_specs = [tf.TensorSpec(_static(tuple(specs[n].shape), input_shape, batch_size, f"input '{n}'"),
                                  specs[n].dtype, name=n) for n in names]

    @tf.function(input_signature=static_specs)
    def serve(*args: object) -> object:
        return serving(**dict(zip(names, args, strict=True)))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], loaded)
    with native_output_captured():
        return bytes(converter.convert())


def _fingerprint_path(path: Path) -> str:
    if path.is_dir():
        return tfl.sha256((path / "saved_model.pb").read_bytes())
    return tfl.sha256(path.read_bytes())


def load_float_model(source: str | Path, input_shape: tuple[int, ...] | None = None,
                     batch_size: int = 1) -> FloatModel:
    """Load ``source`` as a static-shape float flatbuffer with the float-graph rewrites applied."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"no such model: {path}")
    decomposed: tuple[RewriteCount, ...] = ()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
        flatbuffer = _saved_model_to_tflite(path, batch_size, input_shape)
    elif path.suffix.lower() in KERAS_SUFFIXES:
        flatbuffer = keras_to_float_tflite(_load_keras(path), batch_size, input_shape)
    elif path.suffix.lower() == ".tflite":
        flatbuffer, decomposed = _runnable_tflite(path)
    elif path.suffix.lower() == ".onnx":
        from edgeq.intake.onnx import onnx_to_float_tflite

        flatbuffer = onnx_to_float_tflite(path, input_shape, batch_size)  # the shape is in the ONNX layout
    else:
        raise InputError(f"{path} is not a model edgeq reads (.keras, .h5, .tflite, .onnx or a SavedModel folder)")
    source_bytes = path.stat().st_size if path.suffix.lower() == ".tflite" else len(flatbuffer)
    parsed = tfl.parse(flatbuffer, str(path))
    _require_float_inputs(parsed, str(path))
    # Keras and SavedModel inputs were traced with static shapes above; a .tflite gets them here.
    fix = fix_dynamic_shapes(parsed, flatbuffer, input_shape if path.suffix.lower() == ".tflite" else None,
                             batch_size, str(path))
    static, fixes = flatbuffer, ()
    if fix is not None:
        static = tfl.serialize(parsed)
        fixes = tuple(c for c in (RewriteCount("fix_input_shapes", len(fix.inputs)),
                                  RewriteCount("fold_shape_computations", fix.folded_ops)) if c.count)
        _check_same_outputs(flatbuffer, static, "fixing the input shapes", {i: s for i, (_, _, s) in
                                                                            zip(parsed.subgraphs[0].inputs, fix.inputs,
                                                                                strict=True)})
        parsed = tfl.parse(static, str(path))
    _require_float_static(parsed, str(path))
    rewrites = tuple(apply_rewrites(parsed))
    final = tfl.serialize(parsed) if rewrites else static
    if rewrites:
        _check_same_outputs(static, final, f"the float-graph rewrites ({', '.join(r.name for r in rewrites)})")
    rewrites = decomposed + fixes + rewrites
    return FloatModel(flatbuffer=final, source=str(path), source_fingerprint=_fingerprint_path(path),
                      source_bytes=source_bytes, rewrites=rewrites)


def _runnable_tflite(path: Path) -> tuple[bytes, tuple[RewriteCount, ...]]:
    """The file's flatbuffer with its known custom ops decomposed (checked against their reference), once a
    child process has loaded and run it: an untrusted file's runtime crash must not take edgeq down."""
    from edgeq.tflite.probe import probe

    flatbuffer = tfl.read_bytes(path)
    parsed = tfl.parse(flatbuffer, str(path))
    decomposed = decompose_custom_ops(parsed)
    if decomposed:
        flatbuffer = tfl.serialize(parsed)
    try:
        probe(flatbuffer if decomposed else path, "cpu", what=str(path))
    except InputError as exc:
        if "unresolved custom op" not in str(exc):
            raise
        left = custom_ops(parsed)  # after decomposition: only the main graph's are decomposed
        nested = [f"{name} (subgraph {index})" for name, index in left.items() if name in DECOMPOSITIONS]
        if nested:
            raise InputError(f"{path} uses custom op(s) {', '.join(nested)} inside a control-flow subgraph, where "
                             "edgeq does not decompose them, and LiteRT has no kernel for them") from None
        raise InputError(f"{path} uses custom op(s) {', '.join(left)} that LiteRT has no kernel for and edgeq "
                         f"knows no exact builtin decomposition of (it decomposes: {', '.join(DECOMPOSITIONS)})"
                         ) from None
    if decomposed:
        check_decompositions(flatbuffer, decomposed)
    counts: dict[str, int] = {}
    for record in decomposed:
        counts[record.name] = counts.get(record.name, 0) + 1
    return flatbuffer, tuple(RewriteCount(f"decompose_{name}", n) for name, n in counts.items())


def _check_same_outputs(original: bytes, changed: bytes, change: str,
                        input_shapes: dict[int, tuple[int, ...]] | None = None) -> None:
    """Intake's graph changes are exact: both models must give the same outputs on one seeded random input
    (``original`` resized to ``input_shapes`` first). A difference is an edgeq bug (exit 4), never a model
    published from a graph that computes something else."""
    import numpy as np

    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    results = []
    for model in (original, changed):
        interpreter, _ = make_interpreter(model, CpuKernels.CPU)
        if model is original and input_shapes:
            for index, shape in input_shapes.items():
                interpreter.resize_tensor_input(int(index), list(shape), strict=False)
            interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"]))
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()])
    for before, after in zip(*results, strict=True):
        scale = float(np.nanmax(np.abs(before), initial=0.0)) if before.size else 0.0
        if before.shape != after.shape or not np.allclose(before, after, rtol=1e-4, atol=1e-6 * max(scale, 1.0),
                                                          equal_nan=True):
            raise RuntimeError(f"{change} changed the model's outputs")


def _require_float_inputs(parsed: object, what: str) -> None:
    """The main graph's inputs (the model's inputs) are float32."""
    graph = parsed.subgraphs[0]  # type: ignore[attr-defined]
    float32 = tfl.tensor_type("FLOAT32")
    for index in graph.inputs:
        tensor = graph.tensors[index]
        if tensor.type != float32:
            raise InputError(f"{what} input '{tfl.tensor_name(tensor)}' is {tfl.tensor_type_name(tensor.type)}: "
                             "edgeq quantizes float models; this one already is quantized")


def _require_float_static(parsed: object, what: str) -> None:
    """After shape fixing, no input may still be dynamic (a safety net: fix_dynamic_shapes refuses first)."""
    graph = parsed.subgraphs[0]  # type: ignore[attr-defined]
    for index in graph.inputs:
        tensor = graph.tensors[index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        if any(int(d) < 0 for d in signature):
            raise InputError(f"{what} input '{tfl.tensor_name(tensor)}' has a dynamic shape "
                             f"{[int(d) for d in signature]}; export it with a static shape")
