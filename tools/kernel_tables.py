"""Measure the int8 kernel tables instead of copying them: one one-op INT8 model per op, run on every runtime.

Usage: python tools/kernel_tables.py [-o edgeq/spec/measured_kernels.json]   (about 1-2 minutes)
       python tools/kernel_tables.py --ops SQUARE,ADD                         (prints the table, writes nothing)
       python tools/kernel_tables.py --table                                  (the committed one, as Markdown)

For every op named in edgeq/spec/rules.py's tables (the spec table, EXTRA_INT8_KERNELS and the xnnpack,
nnapi and tflm profiles):

1. a float one-op model is written with TensorFlow (``tf.function`` over TF ops, converted by
   ``TFLiteConverter`` to a float ``.tflite``), with random float calibration data;
2. edgeq's own ``edgeq.convert`` (edgeq's float-graph rewrites, stamped ranges, the MLIR quantizer) makes it
   INT8 with ``allow_float_ops``, so an op the quantizer leaves in float is seen rather than refused. Its
   publication gate is bypassed (_publication_gate_off): that gate applies the very tables measured here.
   What edgeq.convert made of the op is recorded as ``quantizer``: ``int8``; ``float`` (left in float between
   DEQUANTIZE/QUANTIZE: no int8 kernel from the quantizer); ``rewritten`` (an edgeq float-graph rewrite
   replaced it, NEG -> MUL); ``absent`` (the TF converter makes other ops of it or computes it away, so a
   static-shape model from edgeq never holds it);
3. when that gave no int8 op, an int8 one-op model is still made, so that the runtimes' kernels are measured
   for the int8 op another tool might produce: the float op's DEQUANTIZE/QUANTIZE wrapper is removed so it
   reads and writes the int8 tensors the quantizer made for it (``measured``: ``unwrapped``), or the int8
   model edgeq makes of a related op is edited into it (``edited``: RESHAPE -> EXPAND_DIMS, MUL(x, -1) -> NEG);
4. each int8 model runs in child processes (a crash or hang is recorded, not fatal) through edgeq's own
   harness backends: LiteRT builtin kernels (``cpu``, no default delegate), LiteRT reference kernels
   (``ref``), LiteRT with XNNPACK (``xnnpack``, with whether the delegate took the op) and TFLite Micro
   (``tflm``), on TRIALS random int8 inputs. The outputs are compared with the float op on the same
   (dequantized) inputs, in steps of the output's quantization (LSB); weighted ops are compared with their
   float weights, so their weight rounding is part of the error.

Per op and runtime the result is ``runs`` (with ``max_lsb``), ``wrong`` (runs, but some output is more than
WRONG_LSB steps from the float op, or more than WRONG_FRACTION of an integer/bool output differs), ``refused``
(with the runtime's message and whether at load or invoke), ``crashed`` or ``no-int8-model``.
tests/test_kernel_tables.py checks rules.py's tables against the committed measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeq.tflite import model as tfl  # noqa: E402

DEFAULT_OUTPUT = ROOT / "edgeq" / "spec" / "measured_kernels.json"
RUNTIMES = ("cpu", "ref", "xnnpack", "tflm")
SCHEMA = 1
WRONG_LSB = 3  # beyond this many output steps from the float op on the same inputs, a kernel is "wrong"
WRONG_FRACTION = 0.01  # integer/bool outputs: beyond this fraction of elements differing, "wrong"
CALIB_SAMPLES = 16
TRIALS = 4  # random int8 inputs each runtime runs
UNIT_TIMEOUT_S = 120.0

Shape = tuple[int, ...]
X = (1, 8, 8, 4)


@dataclass(frozen=True)
class Edit:
    """For an op the TF converter never produces from a float graph: make it by editing a donor's int8 model.

    ``donor`` builds a float model whose one op has the same operands; after edgeq has quantized it,
    ``apply(model, graph, op)`` turns that op into the one measured. ``reference`` computes the op in numpy
    on the dequantized inputs (None: the donor's float model computes the same values).
    """

    donor: Callable[..., Any] | None  # None: the op's own converted model (what an edgeq rewrite made of it)
    apply: Callable[[Any, Any, Any], None]
    reference: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None


@dataclass(frozen=True)
class Case:
    """How to make a float one-op model of an op."""

    build: Callable[..., Any]  # TF ops over the inputs (called inside tf.function)
    inputs: tuple[Shape, ...] = (X,)
    positive: bool = False  # calibration data > 0 (LOG, SQRT, RSQRT, DIV's divisor)
    io: str = "int8"  # model I/O type; "float32" makes the boundary QUANTIZE/DEQUANTIZE ops
    aux: tuple[str, ...] = ()  # the other ops its int8 model may hold (anything else is an error)
    edit: Edit | None = None  # when the converter turns ``build`` into other ops
    note: str = ""


def _const(shape: Shape, seed: int, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _set_op(model: Any, op: Any, name: str, options: Any = None) -> None:
    S = tfl.schema()  # noqa: N806
    op.opcodeIndex = tfl.opcode_index(model, name)
    op.builtinOptionsType = getattr(S.BuiltinOptions, type(options).__name__[:-1]) if options is not None else 0
    op.builtinOptions = options


def _becomes(name: str) -> Callable[[Any, Any, Any], None]:
    """An edit that only changes the op code (ops with the donor's operands and no options)."""
    return lambda model, graph, op: _set_op(model, op, name)


def _expand_dims(model: Any, graph: Any, op: Any) -> None:
    """RESHAPE(x, shape) -> EXPAND_DIMS(x, axis=1)."""
    S = tfl.schema()  # noqa: N806
    buffer = S.BufferT()
    buffer.data = np.frombuffer(np.array(1, "<i4").tobytes(), np.uint8).copy()
    model.buffers.append(buffer)
    axis = S.TensorT()
    axis.shape, axis.type, axis.buffer, axis.name = np.zeros(0, np.int32), tfl.tensor_type("INT32"), \
        len(model.buffers) - 1, "axis"
    graph.tensors.append(axis)
    op.inputs = np.array([op.inputs[0], len(graph.tensors) - 1], np.int32)
    _set_op(model, op, "EXPAND_DIMS", S.ExpandDimsOptionsT())


def _squeeze(model: Any, graph: Any, op: Any) -> None:
    """RESHAPE((1, 8, 1, 4) -> (1, 8, 4)) -> SQUEEZE(axis 2)."""
    options = tfl.schema().SqueezeOptionsT()
    options.squeezeDims = [2]
    op.inputs = np.array([op.inputs[0]], np.int32)
    _set_op(model, op, "SQUEEZE", options)


def _mul_to_neg(model: Any, graph: Any, op: Any) -> None:
    """edgeq's rewrite MUL(x, -1) -> NEG(x): the int8 NEG a quantizer without that rewrite would have to make."""
    x = next(int(t) for t in op.inputs if not tfl.is_constant(model, graph.tensors[int(t)]))
    op.inputs = np.array([x], np.int32)
    _set_op(model, op, "NEG", tfl.schema().NegOptionsT())


def _shape(model: Any, graph: Any, op: Any) -> None:
    """ARG_MAX(x, axis) -> SHAPE(x) with an int32 [4] output."""
    options = tfl.schema().ShapeOptionsT()
    options.outType = tfl.tensor_type("INT32")
    out = graph.tensors[op.outputs[0]]
    out.shape = np.array([4], np.int32)
    out.shapeSignature = None
    op.inputs = np.array([op.inputs[0]], np.int32)
    _set_op(model, op, "SHAPE", options)


def _cases() -> dict[str, Case]:
    """Op name -> Case. TF is imported here only: the child process that runs models never imports it."""
    import tensorflow as tf

    pads = [[0, 0], [1, 1], [2, 2], [0, 0]]
    return {
        "ABS": Case(lambda x: tf.abs(x)),
        "ADD": Case(lambda x, y: x + y, (X, X)),
        "ADD_N": Case(lambda x, y, z: tf.add_n([x, y, z]), (X, X, X)),
        "ARG_MAX": Case(lambda x: tf.argmax(x, axis=3, output_type=tf.int32)),
        "ARG_MIN": Case(lambda x: tf.argmin(x, axis=3, output_type=tf.int32)),
        "AVERAGE_POOL_2D": Case(lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID")),
        "BATCH_MATMUL": Case(lambda a, b: tf.matmul(a, b), ((1, 4, 8), (1, 8, 6))),
        "BATCH_TO_SPACE_ND": Case(lambda x: tf.batch_to_space(tf.reshape(x, (4, 4, 4, 4)), [2, 2], [[0, 0], [0, 0]]),
                                  aux=("RESHAPE",)),
        "BROADCAST_TO": Case(lambda x: tf.broadcast_to(x, (1, 8, 8, 4)), ((1, 1, 8, 4),)),
        "CAST": Case(lambda x: tf.cast(x, tf.int32)),
        "CONCATENATION": Case(lambda x, y: tf.concat([x, y], axis=3), (X, X)),
        "CONV_2D": Case(lambda x: tf.nn.conv2d(x, _const((3, 3, 4, 8), 1), 1, "SAME") + _const((8,), 2)),
        "CUMSUM": Case(lambda x: tf.cumsum(x, axis=3)),
        "DEPTHWISE_CONV_2D": Case(lambda x: tf.nn.depthwise_conv2d(x, _const((3, 3, 4, 1), 3), [1, 1, 1, 1], "SAME")
                                  + _const((4,), 4)),
        "DEPTH_TO_SPACE": Case(lambda x: tf.nn.depth_to_space(x, 2)),
        "DEQUANTIZE": Case(lambda x, y: x + y, (X, X), io="float32", aux=("ADD", "QUANTIZE"),
                           note="the float-output boundary of an ADD model with float32 I/O"),
        "DIV": Case(lambda x, y: x / y, (X, X), positive=True),
        "ELU": Case(lambda x: tf.nn.elu(x)),
        "EQUAL": Case(lambda x, y: tf.equal(x, y), (X, X)),
        "EXP": Case(lambda x: tf.exp(x)),
        "EXPAND_DIMS": Case(lambda x: tf.expand_dims(x, 1),
                            edit=Edit(lambda x: tf.reshape(x, (1, 1, 8, 8, 4)), _expand_dims)),
        "FILL": Case(lambda x: tf.fill([1, 8, 8, 4], tf.reshape(x, [])), ((1,),), aux=("RESHAPE",)),
        "FLOOR": Case(lambda x: tf.floor(x)),
        "FULLY_CONNECTED": Case(lambda x: tf.matmul(x, _const((16, 8), 5)) + _const((8,), 6), ((1, 16),)),
        "GATHER": Case(lambda x: tf.gather(x, [0, 2, 3, 5], axis=1)),
        "GATHER_ND": Case(lambda x: tf.gather_nd(x, [[0, 1], [0, 3]])),
        "GELU": Case(lambda x: tf.nn.gelu(x, approximate=False)),
        "GREATER": Case(lambda x, y: tf.greater(x, y), (X, X)),
        "GREATER_EQUAL": Case(lambda x, y: tf.greater_equal(x, y), (X, X)),
        "HARD_SWISH": Case(lambda x: x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)),
        "L2_NORMALIZATION": Case(lambda x: tf.math.l2_normalize(x, axis=-1)),
        "LEAKY_RELU": Case(lambda x: tf.nn.leaky_relu(x, 0.2)),
        "LESS": Case(lambda x, y: tf.less(x, y), (X, X)),
        "LESS_EQUAL": Case(lambda x, y: tf.less_equal(x, y), (X, X)),
        "LOG": Case(lambda x: tf.math.log(x), positive=True),
        "LOGISTIC": Case(lambda x: tf.sigmoid(x)),
        "LOG_SOFTMAX": Case(lambda x: tf.nn.log_softmax(x), ((1, 10),)),
        "MAXIMUM": Case(lambda x, y: tf.maximum(x, y), (X, X)),
        "MAX_POOL_2D": Case(lambda x: tf.nn.max_pool2d(x, 2, 2, "VALID")),
        "MEAN": Case(lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True)),
        "MINIMUM": Case(lambda x, y: tf.minimum(x, y), (X, X)),
        "MIRROR_PAD": Case(lambda x: tf.pad(x, pads, mode="REFLECT")),
        "MUL": Case(lambda x, y: x * y, (X, X)),
        "NEG": Case(lambda x: tf.negative(x), edit=Edit(None, _mul_to_neg)),
        "NOT_EQUAL": Case(lambda x, y: tf.not_equal(x, y), (X, X)),
        "PACK": Case(lambda x, y: tf.stack([x, y], axis=1), (X, X)),
        "PAD": Case(lambda x: tf.pad(x, pads)),
        "PADV2": Case(lambda x: tf.pad(x, pads, constant_values=0.5)),
        "PRELU": Case(lambda x: tf.nn.relu(x) + (-np.abs(_const((1, 1, 4), 7))) * tf.nn.relu(-x),
                      note="the converter fuses relu(x) - alpha * relu(-x) (Keras PReLU) into PRELU"),
        "QUANTIZE": Case(lambda x, y: x + y, (X, X), io="float32", aux=("ADD", "DEQUANTIZE"),
                         note="the float-input boundary of an ADD model with float32 I/O"),
        "REDUCE_MAX": Case(lambda x: tf.reduce_max(x, axis=[1, 2], keepdims=True)),
        "REDUCE_MIN": Case(lambda x: tf.reduce_min(x, axis=[1, 2], keepdims=True)),
        "REDUCE_PROD": Case(lambda x: tf.reduce_prod(x, axis=3)),
        "RELU": Case(lambda x: tf.nn.relu(x)),
        "RELU6": Case(lambda x: tf.nn.relu6(x)),
        "RELU_0_TO_1": Case(lambda x: tf.minimum(tf.maximum(x, 0.0), 1.0),
                            edit=Edit(lambda x: tf.nn.relu(x), _becomes("RELU_0_TO_1"),
                                      lambda xs: [np.clip(xs[0], 0.0, 1.0)])),
        "RELU_N1_TO_1": Case(lambda x: tf.minimum(tf.maximum(x, -1.0), 1.0)),
        "RESHAPE": Case(lambda x: tf.reshape(x, (1, 16, 16))),
        "RESIZE_BILINEAR": Case(lambda x: tf.compat.v1.image.resize_bilinear(x, (16, 16))),
        "RESIZE_NEAREST_NEIGHBOR": Case(lambda x: tf.compat.v1.image.resize_nearest_neighbor(x, (16, 16))),
        "RSQRT": Case(lambda x: tf.math.rsqrt(x), positive=True),
        "SELECT": Case(lambda x, y: tf.raw_ops.Select(condition=tf.greater(x, y), x=x, y=y), (X, X),
                       aux=("GREATER",)),
        "SELECT_V2": Case(lambda x, y: tf.where(tf.greater(x, y), x, y), (X, (1, 1, 1, 4)), aux=("GREATER",),
                          note="with broadcasting (equal shapes become SELECT)"),
        "SHAPE": Case(lambda x: tf.shape(x),
                      edit=Edit(lambda x: tf.argmax(x, axis=3, output_type=tf.int32), _shape,
                                lambda xs: [np.array(xs[0].shape, np.int32)])),
        "SLICE": Case(lambda x: tf.slice(x, [0, 1, 1, 0], [1, 4, 4, 4])),
        "SOFTMAX": Case(lambda x: tf.nn.softmax(x), ((1, 10),)),
        "SPACE_TO_BATCH_ND": Case(lambda x: tf.space_to_batch(x, [2, 2], [[0, 0], [0, 0]])),
        "SPACE_TO_DEPTH": Case(lambda x: tf.nn.space_to_depth(x, 2)),
        "SPLIT": Case(lambda x: tf.split(x, 2, axis=3)),
        "SPLIT_V": Case(lambda x: tf.split(x, [1, 3], axis=3)),
        "SQRT": Case(lambda x: tf.sqrt(x), positive=True),
        "SQUARE": Case(lambda x: tf.square(x)),
        "SQUARED_DIFFERENCE": Case(lambda x, y: tf.math.squared_difference(x, y), (X, X)),
        "SQUEEZE": Case(lambda x: tf.squeeze(x, axis=2), ((1, 8, 1, 4),),
                        edit=Edit(lambda x: tf.reshape(x, (1, 8, 4)), _squeeze)),
        "STRIDED_SLICE": Case(lambda x: x[:, 1:7, 2:6, :3],
                              note="unit strides (a stride-2 slice, x[:, ::2], is not delegated to XNNPACK)"),
        "SUB": Case(lambda x, y: x - y, (X, X)),
        "SUM": Case(lambda x: tf.reduce_sum(x, axis=[1, 2])),
        "TANH": Case(lambda x: tf.tanh(x)),
        "TILE": Case(lambda x: tf.tile(x, [1, 2, 1, 1])),
        "TRANSPOSE": Case(lambda x: tf.transpose(x, [0, 3, 1, 2])),
        "TRANSPOSE_CONV": Case(lambda x: tf.nn.conv2d_transpose(x, _const((3, 3, 8, 4), 8), (1, 16, 16, 8), 2,
                                                                "SAME")),
        "UNPACK": Case(lambda x: tf.unstack(x, axis=3)),
        "ZEROS_LIKE": Case(lambda x: tf.zeros_like(x),
                           edit=Edit(lambda x: tf.abs(x), _becomes("ZEROS_LIKE"), lambda xs: [np.zeros_like(xs[0])])),
    }


def table_ops() -> list[str]:
    """Every op named in rules.py's kernel tables: what the measurement must cover."""
    from edgeq.spec import rules

    ops = set(rules.SPEC) | set(rules.EXTRA_INT8_KERNELS)
    for profile in rules.PROFILES.values():
        ops |= set(profile.supported_ops or ())
    return sorted(ops)


# --- making the models (parent process, TensorFlow) ------------------------------------------------------------

@dataclass
class Made:
    """The int8 one-op model the runtimes run, and how it was obtained."""

    op: str
    quantizer: str  # int8 | float | rewritten | absent: what edgeq.convert made of the op
    converted: list[str]  # the ops of edgeq.convert's model
    source: str  # quantizer | unwrapped | edited | none
    model: bytes | None
    reference_model: bytes | None  # the float model that computes what the int8 model should
    reference: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None
    detail: str = ""


def float_model(build: Callable[..., Any], inputs: Sequence[Shape]) -> bytes:
    """The float one-op ``.tflite`` of ``build`` over float inputs named in0, in1, ... (batch 1)."""
    import tensorflow as tf

    from edgeq.quiet import native_output_captured

    specs = [tf.TensorSpec(shape, tf.float32, name=f"in{i}") for i, shape in enumerate(inputs)]
    function = tf.function(build, input_signature=specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    with native_output_captured():
        return bytes(converter.convert())


def _ops(data: bytes) -> list[str]:
    parsed = tfl.parse(data)
    return [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators]


def _input_names(data: bytes) -> list[str]:
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(data, CpuKernels.CPU)
    return [str(d["name"]) for d in interpreter.get_input_details()]


def _left_float(data: bytes) -> list[str]:
    """Ops other than QUANTIZE/DEQUANTIZE that read or write a float32 tensor: what the quantizer left in float."""
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    float32 = tfl.tensor_type("FLOAT32")
    found = []
    for op in graph.operators:
        kind = tfl.op_type(parsed, op)
        if kind not in ("QUANTIZE", "DEQUANTIZE") and any(
                int(t) >= 0 and graph.tensors[int(t)].type == float32 for t in [*op.inputs, *op.outputs]):
            found.append(kind)
    return found


@contextlib.contextmanager
def _publication_gate_off() -> Iterator[None]:
    """edgeq.convert verifies a model before writing it (edgeq.converter.verify): the spec check, which applies
    rules.py's kernel tables, the very tables measured here, and a LiteRT run. What the quantizer makes is the
    measurement, so for the duration that gate passes every model through; nothing else in convert changes."""
    from edgeq.converter import api

    original = getattr(api, "verify", None)
    if original is None:
        yield
        return
    api.verify = lambda quantized, recipe, what="": []  # type: ignore[attr-defined]
    try:
        yield
    finally:
        api.verify = original  # type: ignore[attr-defined]


def _convert(flat: bytes, case: Case, folder: Path, name: str) -> bytes:
    """edgeq.convert of a float model, on random float calibration data, float ops allowed: the int8 bytes."""
    import edgeq
    from edgeq.artifacts import IOType
    from edgeq.quant_recipe import QuantRecipe

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_float.tflite").write_bytes(flat)
    rng = np.random.default_rng(0)
    calib = {}
    for input_name in _input_names(flat):
        shape = case.inputs[int(input_name.rsplit("in", 1)[1].split(":")[0])]
        values = rng.normal(size=(CALIB_SAMPLES, *shape[1:])).astype(np.float32)
        calib[input_name] = np.abs(values) + 0.1 if case.positive else values
    np.savez(folder / f"{name}_calib.npz", **calib)
    recipe = QuantRecipe(io=IOType(case.io), allow_float_ops=True)
    with _publication_gate_off():
        edgeq.convert(folder / f"{name}_float.tflite", folder / f"{name}.tflite", calib=folder / f"{name}_calib.npz",
                      recipe=recipe)
    return (folder / f"{name}.tflite").read_bytes()


def unwrap(data: bytes, op_name: str) -> bytes | None:
    """``data`` with the first ``op_name`` reading and writing int8 directly instead of through the
    DEQUANTIZE/QUANTIZE ops the quantizer wrapped it in; None when a float operand remains."""
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    float32 = tfl.tensor_type("FLOAT32")
    kinds = [tfl.op_type(parsed, op) for op in graph.operators]
    if op_name not in kinds:
        return None
    target = graph.operators[kinds.index(op_name)]
    producer = {int(t): i for i, op in enumerate(graph.operators) for t in op.outputs}
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(graph.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(i)
    dropped = set()
    inputs = [int(t) for t in target.inputs]
    for j, t in enumerate(inputs):
        p = producer.get(t)
        if p is not None and kinds[p] == "DEQUANTIZE":
            source = int(graph.operators[p].inputs[0])
            if graph.tensors[source].type != float32:
                inputs[j] = source
                if all(graph.operators[c] is target for c in consumers.get(t, [])):
                    dropped.add(p)
    outputs = [int(t) for t in target.outputs]
    for j, t in enumerate(outputs):
        users = consumers.get(t, [])
        if len(users) == 1 and kinds[users[0]] == "QUANTIZE" and t not in graph.outputs:
            outputs[j] = int(graph.operators[users[0]].outputs[0])
            dropped.add(users[0])
    target.inputs = np.array(inputs, np.int32)
    target.outputs = np.array(outputs, np.int32)
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in dropped]
    if any(t >= 0 and graph.tensors[t].type == float32 for t in [*inputs, *outputs]):
        return None
    return tfl.serialize(parsed)


def make(op: str, case: Case, folder: Path) -> Made:
    """Build and quantize the one-op model of ``op``; unwrap or edit it when the quantizer gave no int8 op."""
    flat = float_model(case.build, case.inputs)
    float_ops = _ops(flat)
    int8 = _convert(flat, case, folder, op)
    converted = _ops(int8)
    left = set(_left_float(int8))
    if op in converted and op not in left:
        return Made(op, "int8", converted, "quantizer", int8, flat)
    if op in left:
        model = unwrap(int8, op)
        detail = "the quantizer leaves it in float; measured with its DEQUANTIZE/QUANTIZE wrapper removed"
        return Made(op, "float", converted, "unwrapped" if model else "none", model, flat, None, detail)
    status = "rewritten" if op in float_ops else "absent"
    if case.edit is None:
        raise RuntimeError(f"edgeq.convert makes {converted} of {op} ({status}): give its Case an Edit")
    if case.edit.donor is None:
        donor_flat, donor = flat, int8
    else:
        donor_flat = float_model(case.edit.donor, case.inputs)
        donor = _convert(donor_flat, case, folder, f"{op}_donor")
    parsed = tfl.parse(donor)
    graph = parsed.subgraphs[0]
    kinds = [tfl.op_type(parsed, o) for o in graph.operators]
    donor_op = next(k for k in kinds if k not in ("QUANTIZE", "DEQUANTIZE"))
    case.edit.apply(parsed, graph, graph.operators[kinds.index(donor_op)])
    if status == "rewritten":
        detail = f"edgeq's float-graph rewrites make {'+'.join(converted)} of it"
    else:
        detail = f"the TF converter makes {'+'.join(float_ops) or 'no op (it computes the result)'} of it"
    detail += f"; measured on the int8 {donor_op} model edgeq makes, edited into {op}"
    return Made(op, status, converted, "edited", tfl.serialize(parsed),
                None if case.edit.reference else donor_flat, case.edit.reference, detail)


# --- inputs and the float reference (parent process) ------------------------------------------------------------

@dataclass
class Port:
    """A model input or output: its type and the int8 quantization step it is measured in."""

    dtype: str
    scale: float = 0.0
    zero_point: int = 0


def _params(tensor: Any) -> tuple[float, int]:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return 0.0, 0
    return float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0


def ports(data: bytes) -> tuple[list[Port], list[Port]]:
    """The model's inputs and outputs; a float input/output is measured in the steps of the int8 tensor that its
    QUANTIZE writes or its DEQUANTIZE reads."""
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    by_input = {int(t): op for op in graph.operators for t in op.inputs}
    by_output = {int(t): op for op in graph.operators for t in op.outputs}

    def port(index: int, neighbour: dict[int, Any], side: str) -> Port:
        tensor = graph.tensors[index]
        kind = tfl.tensor_type_name(tensor.type)
        if kind == "FLOAT32" and index in neighbour:
            op = neighbour[index]
            inner = graph.tensors[int(getattr(op, side)[0])]
            return Port(kind, *_params(inner))
        return Port(kind, *_params(tensor))

    return ([port(int(i), by_input, "outputs") for i in graph.inputs],
            [port(int(o), by_output, "inputs") for o in graph.outputs])


Trials = list[list[np.ndarray]]  # per trial, one array per model input or output


def trial_inputs(data: bytes, trials: int = TRIALS, seed: int = 0, positive: bool = False) -> tuple[Trials, Trials]:
    """Random inputs for the int8 model (raw) and their real values (for the float reference); ``positive`` keeps
    the real values above zero (a divisor, a logarithm's argument)."""
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    inputs, _ = ports(data)
    rng = np.random.default_rng(seed)
    raw, real = [], []
    for _ in range(trials):
        raw_trial, real_trial = [], []
        for index, port in zip(graph.inputs, inputs, strict=True):
            shape = tuple(int(d) for d in graph.tensors[int(index)].shape)
            q = rng.integers(min(port.zero_point + 1, 127) if positive else -128, 128, size=shape)
            values = ((q - port.zero_point) * port.scale).astype(np.float32)
            raw_trial.append(q.astype(np.int8) if port.dtype == "INT8" else values)
            real_trial.append(values)
        raw.append(raw_trial)
        real.append(real_trial)
    return raw, real


def reference_outputs(made: Made, real: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """What the op computes in float on the real input values of each trial."""
    if made.reference is not None:
        return [made.reference(trial) for trial in real]
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    assert made.reference_model is not None
    interpreter, _ = make_interpreter(made.reference_model, CpuKernels.CPU)
    details = interpreter.get_input_details()
    outputs = [int(d["index"]) for d in interpreter.get_output_details()]
    found = []
    for trial in real:
        for detail, values in zip(details, trial, strict=True):
            interpreter.set_tensor(detail["index"], values.reshape(detail["shape"]))
        interpreter.invoke()
        found.append([np.array(interpreter.get_tensor(i)) for i in outputs])
    return found


def compare(out_ports: list[Port], expected: Trials, got: Trials) -> dict[str, Any]:
    """How far ``got`` is from the float op: ``max_lsb`` (the largest error in output steps over the quantized
    outputs), ``beyond`` (the fraction of their elements off by more than WRONG_LSB) and ``differing`` (the
    fraction of integer/bool output elements that differ)."""
    worst, beyond, counted, differing, total = 0.0, 0, 0, 0, 0
    for expected_trial, got_trial in zip(expected, got, strict=True):
        for port, want, have in zip(out_ports, expected_trial, got_trial, strict=True):
            want = np.asarray(want, np.float64).reshape(np.shape(have))
            have = np.asarray(have).astype(np.float64)
            if port.scale and port.dtype in ("INT8", "FLOAT32"):
                low, high = (-128 - port.zero_point) * port.scale, (127 - port.zero_point) * port.scale
                clipped = np.clip(want, low, high)[~np.isnan(want)]
                if port.dtype == "INT8":
                    error = np.abs(have[~np.isnan(want)] - (np.round(clipped / port.scale) + port.zero_point))
                else:
                    error = np.abs(have[~np.isnan(want)] - clipped) / port.scale
                worst = max(worst, float(error.max()) if error.size else 0.0)
                beyond += int(np.count_nonzero(error > WRONG_LSB + 1e-6))
                counted += error.size
            else:
                differing += int(np.count_nonzero(have != want))
                total += have.size
    return {"max_lsb": int(np.ceil(worst - 1e-6)), "beyond": round(beyond / counted, 4) if counted else 0.0,
            "differing": round(differing / total, 4) if total else 0.0}


# --- running the models (child process: no TensorFlow; a crash loses one unit, not the run) ----------------------

def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """Load ``unit['model']`` on ``unit['runtime']`` through edgeq's harness, run every trial, save the outputs."""
    from edgeq.errors import EdgeqError
    from edgeq.harness.backends import open_session, parse_backend

    data = Path(unit["model"]).read_bytes()
    trials = np.load(unit["inputs"])
    count = int(trials["trials"])
    stage = "load"
    try:
        session = open_session(data, parse_backend(unit["runtime"]))
        stage = "invoke"
        saved = {}
        for t in range(count):
            session.set_inputs([trials[f"t{t}_{i}"] for i in range(len(session.inputs))])
            session.invoke()
            for k, array in enumerate(session.get_outputs()):
                saved[f"t{t}_{k}"] = np.array(array)
    except EdgeqError as exc:
        return {"result": "refused", "stage": stage, "message": str(exc), "error": type(exc).__name__}
    np.savez(unit["outputs"], **saved)
    found: dict[str, Any] = {"result": "ran"}
    if session.delegation is not None:
        found["delegated"] = unit["op"] not in session.delegation.undelegated_ops
    return found


def _child(units_file: str, start: int) -> int:
    units = json.loads(Path(units_file).read_text())
    for k in range(start, len(units)):
        print(f"START {k}", flush=True)
        print(f"DONE {k} {json.dumps(run_unit(units[k]))}", flush=True)
    return 0


def run_units(units: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Every unit in child processes; a unit that kills or hangs its child is recorded as crashed."""
    import queue
    import threading

    path = folder / "units.json"
    path.write_text(json.dumps(units))
    results: list[dict[str, Any] | None] = [None] * len(units)
    start = 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    while start < len(units):
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-units", str(path), str(start)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream: Any = child.stdout, sink: queue.Queue[str | None] = lines) -> None:
            for line in stream:
                sink.put(line)
            sink.put(None)

        threading.Thread(target=pump, daemon=True).start()
        current, hung, finished = None, False, 0
        while True:
            try:
                line = lines.get(timeout=UNIT_TIMEOUT_S)
            except queue.Empty:
                child.kill()
                hung = True
                break
            if line is None:
                break
            word, number, *rest = line.split(" ", 2)
            if word == "START":
                current = int(number)
            elif word == "DONE":
                results[int(number)] = json.loads(rest[0])
                current, finished = None, finished + 1
        code = child.wait()
        stderr = child.stderr.read() if child.stderr else ""
        if current is None:
            if code != 0 or start + finished != len(units):
                raise RuntimeError(f"the measuring process failed outside any unit: {stderr.strip()[-500:]}")
            break
        what = f"hung for {UNIT_TIMEOUT_S:.0f} s" if hung else _exit_text(code)
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:]
        results[current] = {"result": "crashed", "stage": "load or invoke",
                            "message": f"the process {what}" + (f": {tail[0].strip()}" if tail else "")}
        start = current + 1
    return [r if r is not None else {"result": "crashed", "message": "no result"} for r in results]


def _exit_text(code: int) -> str:
    import signal

    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with status {code}"


# --- the measurement --------------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    from edgeq.versions import package_versions

    return package_versions(("edgeq", "tensorflow", "ai-edge-litert", "tflite-micro", "numpy"))


def measure(ops: Sequence[str], folder: Path, runtimes: Sequence[str] = RUNTIMES) -> dict[str, dict[str, Any]]:
    """The record of every op in ``ops``: what the quantizer made of it and what each runtime did with it."""
    cases = _cases()
    unknown = sorted(set(ops) - set(cases))
    if unknown:
        raise KeyError(f"no one-op model for {', '.join(unknown)}: add a Case")
    made: dict[str, Made] = {}
    expected: dict[str, list[list[np.ndarray]]] = {}
    units = []
    for op in ops:
        made[op] = m = make(op, cases[op], folder / op)
        if m.model is None:
            continue
        extra = set(_ops(m.model)) - {op, *cases[op].aux}
        if extra:
            raise RuntimeError(f"the int8 model of {op} also holds {sorted(extra)}: fix its Case or list them in aux")
        model_path = folder / op / "measured.tflite"
        model_path.write_bytes(m.model)
        raw, real = trial_inputs(m.model, positive=cases[op].positive)
        expected[op] = reference_outputs(m, real)
        arrays = {f"t{t}_{i}": a for t, trial in enumerate(raw) for i, a in enumerate(trial)}
        np.savez(folder / op / "inputs.npz", trials=np.array(len(raw)), **arrays)
        for runtime in runtimes:
            units.append({"op": op, "runtime": runtime, "model": str(model_path),
                          "inputs": str(folder / op / "inputs.npz"), "outputs": str(folder / op / f"{runtime}.npz")})
    results = run_units(units, folder) if units else []
    by_op: dict[str, dict[str, Any]] = {}
    for unit, result in zip(units, results, strict=True):
        op, runtime = unit["op"], unit["runtime"]
        if result["result"] == "ran":
            saved = np.load(unit["outputs"])
            out_ports = ports(made[op].model or b"")[1]
            got = [[saved[f"t{t}_{k}"] for k in range(len(out_ports))] for t in range(TRIALS)]
            error = compare(out_ports, expected[op], got)
            wrong = error["max_lsb"] > WRONG_LSB or error["differing"] > WRONG_FRACTION
            result = {**{k: v for k, v in result.items() if k != "result"}, "result": "wrong" if wrong else "runs",
                      **error}
        by_op.setdefault(op, {})[runtime] = result
    records = {}
    for op in ops:
        m = made[op]
        record: dict[str, Any] = {"quantizer": m.quantizer, "converted": m.converted, "measured": m.source,
                                  "measured_ops": _ops(m.model) if m.model else []}
        if m.detail:
            record["detail"] = m.detail
        if cases[op].note:
            record["note"] = cases[op].note
        record["runtimes"] = by_op.get(op) or {r: {"result": "no-int8-model"} for r in runtimes}
        records[op] = record
    return records


def document(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": "python tools/kernel_tables.py",
        "versions": _versions(),
        "runtimes": {"cpu": "LiteRT builtin kernels, no default delegate (edgeq backend cpu)",
                     "ref": "LiteRT reference kernels (edgeq backend ref)",
                     "xnnpack": "LiteRT with the XNNPACK delegate applied by default (edgeq backend xnnpack)",
                     "tflm": "TFLite Micro interpreter from the tflite-micro package (edgeq backend tflm)"},
        "wrong_lsb": WRONG_LSB,
        "wrong_fraction": WRONG_FRACTION,
        "trials": TRIALS,
        "ops": records,
    }


def _summary(records: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: per op, what the quantizer made of it, and each runtime's result."""
    lines = ["| op | quantizer | measured on | " + " | ".join(RUNTIMES) + " |",
             "|---|---|---|" + "---|" * len(RUNTIMES)]
    for op, record in sorted(records.items()):
        cells = []
        for runtime in RUNTIMES:
            r = record["runtimes"].get(runtime, {})
            cell = r.get("result", "-")
            if cell in ("runs", "wrong"):
                cell += f" ({r['differing']:.1%} differ)" if r.get("differing") else f" ({r['max_lsb']} LSB)"
            elif cell == "refused":
                cell += f" at {r.get('stage', '?')}"
            if runtime == "xnnpack" and r.get("delegated") is not None:
                cell += ", delegated" if r["delegated"] else ""
            cells.append(cell)
        lines.append(f"| {op} | {record['quantizer']} | {record['measured']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--ops", help="comma-separated ops (default: every op with a Case); writes nothing")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown table of the measurement in --output; measure nothing")
    parser.add_argument("--run-units", nargs=2, metavar=("UNITS", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_units:
        return _child(args.run_units[0], int(args.run_units[1]))
    if args.table:
        print(_summary(json.loads(args.output.read_text())["ops"]))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.monotonic()
    ops = args.ops.split(",") if args.ops else sorted(set(_cases()) | set(table_ops()))
    with tempfile.TemporaryDirectory(prefix="edgeq-kernels-") as tmp:
        records = measure(ops, Path(tmp))
    print(_summary(records))
    if not args.ops:
        text = json.dumps(document(records), indent=1, sort_keys=True) + "\n"
        args.output.write_text(text)
        print(f"wrote {args.output}")
    print(f"{len(records)} ops measured in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
