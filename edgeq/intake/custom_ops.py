"""Custom ops with exact builtin decompositions, rewritten in the float graph before anything runs it.

A custom op has no int8 kernel and often no kernel at all in a stock runtime (MediaPipe registers its
own). Where the op's public semantics equal a builtin op's, it is rewritten to that op, so the model loads
everywhere and quantizes full-integer. Each entry of ``DECOMPOSITIONS`` pairs the rewrite with a numpy
reference of the custom op as its authors define it; after rewriting, the builtin op's output is checked
against that reference on the model's own intermediate values (``check_decompositions``).

- ``Convolution2DTransposeBias`` (MediaPipe, mediapipe/util/tflite/operations/transpose_conv_bias.cc):
  a transposed convolution whose output starts from the bias, OHWI weights, custom options
  ``(padding, stride_w, stride_h)`` as int32 (padding 1 = SAME, 2 = VALID). Output size
  ``stride * (in - 1) + filter - P`` with ``P = max(0, filter - (in - 1) % stride - 1)`` for SAME, 0 for
  VALID, and ``P // 2`` cropped at the start. Rewritten to builtin TRANSPOSE_CONV with the bias operand,
  whose reference kernel accumulates the same products at the same positions.

Not here, because no builtin graph computes them exactly in a full-integer model: ``MaxPoolingWithArgmax2D``
and ``MaxUnpooling2D`` (argmax indices and a scatter by them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.tflite import model as tfl

_SAME, _VALID = 1, 2  # TfLitePadding


@dataclass(frozen=True)
class Decomposition:
    """How one custom op becomes builtin ops, and what it computes (for the check)."""

    rewrite: Callable[[Any, Any, Any, str], None]  # (model, graph, op, where) -> rewrites op in place
    reference: Callable[[list[np.ndarray], bytes], np.ndarray]  # (input values, custom options) -> output
    builtin: str  # the op it becomes


def _transpose_conv_options(options: bytes, where: str) -> tuple[int, int, int]:
    if len(options) < 12:
        raise InputError(f"custom op Convolution2DTransposeBias {where} has {len(options)} bytes of options; "
                         "expected padding, stride_w, stride_h as int32")
    padding, stride_w, stride_h = struct.unpack("<iii", options[:12])
    if padding not in (_SAME, _VALID) or stride_w < 1 or stride_h < 1:
        raise InputError(f"custom op Convolution2DTransposeBias {where} has options padding={padding}, "
                         f"strides={stride_w}x{stride_h}; expected padding 1 (SAME) or 2 (VALID) and positive strides")
    return padding, stride_w, stride_h


def _crop(padding: int, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """MediaPipe's (output size, cropped at the start) along one axis."""
    total = max(0, kernel - (size - 1) % stride - 1) if padding == _SAME else 0
    return stride * (size - 1) + kernel - total, total // 2


def transpose_conv_bias_reference(values: list[np.ndarray], options: bytes) -> np.ndarray:
    """Convolution2DTransposeBias as MediaPipe's kernel computes it (float64 accumulation, for checking)."""
    x, weights, bias = (np.asarray(v, dtype=np.float64) for v in values)
    padding, stride_w, stride_h = _transpose_conv_options(options, "")
    batch, in_h, in_w, _ = x.shape
    out_c, k_h, k_w, _ = weights.shape
    out_h, top = _crop(padding, in_h, k_h, stride_h)
    out_w, left = _crop(padding, in_w, k_w, stride_w)
    full = np.zeros((batch, stride_h * (in_h - 1) + k_h + top, stride_w * (in_w - 1) + k_w + left, out_c))
    for fy in range(k_h):
        for fx in range(k_w):
            contribution = np.einsum("nhwi,oi->nhwo", x, weights[:, fy, fx, :])
            full[:, fy:fy + stride_h * in_h:stride_h, fx:fx + stride_w * in_w:stride_w, :] += contribution
    return full[:, top:top + out_h, left:left + out_w, :] + bias


def _builtin_fit(same: bool, out: int, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(input size TRANSPOSE_CONV expects, its start offset) for an output of ``out`` along one axis, as
    LiteRT's ComputePaddingHeightWidth computes them for SAME or VALID padding."""
    del size
    if same:
        expected = -(-out // stride)
        return expected, max((expected - 1) * stride + kernel - out, 0) // 2
    return -(-(out - kernel + 1) // stride), 0


def _int32_constant(model: Any, graph: Any, values: list[int], name: str) -> int:
    return tfl.add_tensor(model, graph, name, [len(values)], "INT32", np.asarray(values, dtype="<i4"))


def _rewrite_transpose_conv_bias(model: Any, graph: Any, op: Any, where: str) -> None:
    schema = tfl.schema()
    padding, stride_w, stride_h = _transpose_conv_options(_options(op), where)
    if len(op.inputs) != 3 or len(op.outputs) != 1:
        raise InputError(f"custom op Convolution2DTransposeBias {where} has {len(op.inputs)} inputs and "
                         f"{len(op.outputs)} outputs; expected input, weights, bias and one output")
    x, weights, bias = (graph.tensors[int(i)] for i in op.inputs)
    in_shape, w_shape = [int(d) for d in x.shape], [int(d) for d in weights.shape]
    fits = len(in_shape) == len(w_shape) == 4 and in_shape[3] == w_shape[3]
    if not fits or [int(d) for d in bias.shape] != [w_shape[0]]:
        raise InputError(f"custom op Convolution2DTransposeBias {where}: input {in_shape}, weights {w_shape} and bias "
                         f"{[int(d) for d in bias.shape]} do not fit (NHWC input, OHWI weights, bias [O])")
    out_h, top = _crop(padding, in_shape[1], w_shape[1], stride_h)
    out_w, left = _crop(padding, in_shape[2], w_shape[2], stride_w)
    # TRANSPOSE_CONV derives its padding from the output size and checks that it gives back the input size.
    for builtin_padding in (schema.Padding.SAME, schema.Padding.VALID):
        if all(_builtin_fit(builtin_padding == schema.Padding.SAME, out, size, kernel, stride) == (size, start)
               for out, size, kernel, stride, start in ((out_h, in_shape[1], w_shape[1], stride_h, top),
                                                        (out_w, in_shape[2], w_shape[2], stride_w, left))):
            break
    else:
        raise InputError(f"custom op Convolution2DTransposeBias {where} crops ({top}, {left}) at the start of a "
                         f"{out_h}x{out_w} output, which no TRANSPOSE_CONV padding reproduces; edgeq cannot rewrite it "
                         "exactly")
    shape = _int32_constant(model, graph, [in_shape[0], out_h, out_w, w_shape[0]],
                            f"{tfl.tensor_name(graph.tensors[int(op.outputs[0])])}/edgeq_output_shape")
    options = schema.TransposeConvOptionsT()
    options.padding, options.strideW, options.strideH = builtin_padding, stride_w, stride_h
    op.opcodeIndex = tfl.opcode_index(model, "TRANSPOSE_CONV", 3)  # version 3: the bias operand
    op.inputs = np.array([shape, int(op.inputs[1]), int(op.inputs[0]), int(op.inputs[2])], dtype=np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
    op.builtinOptions = options
    op.customOptions = None


def _options(op: Any) -> bytes:
    return b"" if op.customOptions is None else np.asarray(op.customOptions, dtype=np.uint8).tobytes()


#: Custom op name -> its exact builtin decomposition.
DECOMPOSITIONS: dict[str, Decomposition] = {
    "Convolution2DTransposeBias": Decomposition(_rewrite_transpose_conv_bias, transpose_conv_bias_reference,
                                                "TRANSPOSE_CONV"),
}


@dataclass(frozen=True)
class Rewritten:
    """One decomposed op: where it is now, and what the custom op would have computed there."""

    name: str
    op_index: int
    inputs: tuple[int, ...]  # the custom op's operands (input, weights, bias), in its order
    output: int
    options: bytes


def custom_ops(model: Any) -> dict[str, int]:
    """The custom op names the model uses, in first-use order, each with the first subgraph that uses it."""
    found: dict[str, int] = {}
    for index, graph in enumerate(model.subgraphs):
        for op in graph.operators:
            kind = tfl.op_type(model, op)
            if kind.startswith("CUSTOM:"):
                found.setdefault(kind.removeprefix("CUSTOM:"), index)
    return found


def decompose_custom_ops(model: Any) -> list[Rewritten]:
    """Rewrite every custom op of the main graph that has a decomposition, in place."""
    done = []
    graph = model.subgraphs[0]
    for index, op in enumerate(graph.operators):
        name = tfl.op_type(model, op).removeprefix("CUSTOM:")
        if not tfl.op_type(model, op).startswith("CUSTOM:") or name not in DECOMPOSITIONS:
            continue
        record = Rewritten(name, index, tuple(int(i) for i in op.inputs), int(op.outputs[0]), _options(op))
        DECOMPOSITIONS[name].rewrite(model, graph, op, f"(op {index})")
        done.append(record)
    return done


def check_decompositions(flatbuffer: bytes, rewritten: list[Rewritten], rtol: float = 1e-5) -> float:
    """Run the rewritten model once on seeded data and compare each builtin op's output with the custom op's
    reference on the same operands. Returns the largest relative difference; a larger one than ``rtol`` is
    an edgeq bug (RuntimeError, exit 4), never a model published computing something else."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(flatbuffer, CpuKernels.CPU, preserve_all_tensors=True)
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"]))
    interpreter.invoke()
    worst = 0.0
    for record in rewritten:
        operands = [interpreter.get_tensor(i) for i in record.inputs]
        want = DECOMPOSITIONS[record.name].reference(operands, record.options)
        got = interpreter.get_tensor(record.output).astype(np.float64)
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
        difference = float(np.abs(got - want).max(initial=0.0)) / scale if got.shape == want.shape else np.inf
        if not difference <= rtol:
            raise RuntimeError(f"the {record.name} decomposition (op {record.op_index}) differs from the custom op by "
                               f"{difference:.3g} of its range")
        worst = max(worst, difference)
    return worst
