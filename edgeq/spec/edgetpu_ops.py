"""Coral's Edge TPU supported-op table as data, and one predicate per limitation it documents.

Kept apart from the partition predictor (``edgetpu.py``): this module says what Coral's page says,
op by op, and changes when the page does; the predictor walks a graph against it.

Source of the table: Coral, "TensorFlow models on the Edge TPU", section "Supported operations"
(https://coral.ai/docs/edgetpu/models-intro/#supported-operations). The live page could not be read
from here, so the rows were taken from two copies of it:

* the list of 40 operation names, as copied from that page (cited as its footnote [^1]) in the
  write-up of the dragynfruit "edged" Edge TPU reverse-engineering project; the rows Add ...
  ResizeBilinear appear in the same order in Axis' ARTPEC-7 DLPU "Supported ops" page
  (developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/), whose
  DLPU is an Edge TPU and whose table repeats Coral's current one;
* the "known limitations" text of the rows Add ... ResizeBilinear from that Axis copy; for
  ResizeNearestNeighbor, Slice, Softmax, SpaceToDepth, Split, Squeeze, StridedSlice, Sub and Tanh
  from a 2019 copy of Coral's table (github.com/dgist-datalab/
  Datalab_Intern, Edge_TPU/convert_model_for_Edge_TPU.md). For Rsqrt, Squared-difference, Sum,
  Transpose and TransposeConv (added after 2019) no limitation text could be recovered: they are
  treated as unconstrained and say so in their note.

General requirements from the same page: tensor parameters quantized to 8-bit fixed point
(int8/uint8); tensor sizes constant at compile time (no dynamic shapes); model parameters such as
bias tensors constant at compile time; tensors 1-, 2- or 3-dimensional, or if more, only the 3
innermost dimensions larger than 1; only the ops in the table.

The recovered text documents no maximum TFLite op version, so op versions are not checked; real
compilers do reject some ("Operation version not supported" in tests/data/edgetpu/
recorded_first_unsupported.log), which only running ``edgetpu_compiler`` reveals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.tflite import model as tfl

CURRENT = "coral-current"  # limitation text from the Axis copy of Coral's current table
CORAL_2019 = "coral-2019"  # limitation text from a 2019 copy (the current wording was not recovered)
NOT_RECOVERED = "not-recovered"  # op listed in the current table, limitation text not recovered


@dataclass(frozen=True)
class EdgeTpuOp:
    """One row of Coral's table, mapped to a TFLite builtin op, with what of it we can check."""

    name: str  # TFLite BuiltinOperator name
    coral_name: str  # the name in Coral's table
    limitations: str = ""  # Coral's "known limitations" text
    checks: tuple[str, ...] = ()  # statically checkable limitations: keys of _CHECKS
    const_inputs: tuple[int, ...] = ()  # operands that are model parameters: must be compile-time constants
    note: str = ""  # the part of the limitation that cannot be checked without the compiler
    text_from: str = CURRENT


_FUSED = "no-fused-activation"
_RESIZE_NOTE = "Depending on input/output size, may stay on the CPU to avoid loss in precision."

#: Coral's supported-op table (see the module docstring for sources). Ops not here run on the CPU.
EDGETPU_OPS: dict[str, EdgeTpuOp] = {op.name: op for op in (
    EdgeTpuOp("ADD", "Add"),
    EdgeTpuOp("AVERAGE_POOL_2D", "AveragePool2d", "No fused activation function.", (_FUSED,)),
    EdgeTpuOp("CONCATENATION", "Concatenation",
              "No fused activation function. If any input is a compile-time constant tensor, there must be only "
              "2 inputs, and this constant tensor must be all zeros (effectively, a zero-padding op).",
              (_FUSED, "constant-input-is-zero-padding")),
    EdgeTpuOp("CONV_2D", "Conv2d", "Must use the same dilation in x and y dimensions.", ("same-dilation",),
              const_inputs=(1, 2)),
    EdgeTpuOp("DEPTHWISE_CONV_2D", "DepthwiseConv2d", "Must use the same dilation in x and y dimensions.",
              ("same-dilation",), const_inputs=(1, 2)),
    EdgeTpuOp("EXPAND_DIMS", "ExpandDims", const_inputs=(1,)),
    EdgeTpuOp("FULLY_CONNECTED", "FullyConnected",
              "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional.",
              ("default-weights-format", "one-dimensional-output"), const_inputs=(1, 2)),
    EdgeTpuOp("L2_NORMALIZATION", "L2Normalization"),
    EdgeTpuOp("LOGISTIC", "Logistic"),
    # TFLite has a single-step LSTM and a sequence LSTM; both are unidirectional. The bidirectional
    # sequence op is left out, as the limitation says.
    EdgeTpuOp("LSTM", "LSTM", "Unidirectional LSTM only."),
    EdgeTpuOp("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "Unidirectional LSTM only."),
    EdgeTpuOp("MAXIMUM", "Maximum"),
    EdgeTpuOp("MAX_POOL_2D", "MaxPool2d", "No fused activation function.", (_FUSED,)),
    EdgeTpuOp("MEAN", "Mean",
              "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
              ("no-batch-axes", "z-reduction-multiple-of-4"), const_inputs=(1,)),
    EdgeTpuOp("MINIMUM", "Minimum"),
    EdgeTpuOp("MUL", "Mul"),
    EdgeTpuOp("PACK", "Pack", "No packing in batch dimension.", ("no-batch-pack",)),
    EdgeTpuOp("PAD", "Pad", "No padding in batch dimension.", ("no-batch-padding",), const_inputs=(1,)),
    EdgeTpuOp("PRELU", "PReLU",
              "Alpha must be 1-dimensional (only the innermost dimension can be >1 size). If using Keras PReLU "
              "with 4D input (batch, height, width, channels), then shared_axes must be [1,2] so each filter has "
              "only one set of parameters.", ("alpha-innermost",), const_inputs=(1,)),
    EdgeTpuOp("QUANTIZE", "Quantize"),
    EdgeTpuOp("REDUCE_MAX", "ReduceMax", "Cannot operate on the batch dimension.", ("no-batch-axes",),
              const_inputs=(1,)),
    EdgeTpuOp("REDUCE_MIN", "ReduceMin", "Cannot operate on the batch dimension.", ("no-batch-axes",),
              const_inputs=(1,)),
    EdgeTpuOp("RELU", "ReLU"),
    EdgeTpuOp("RELU6", "ReLU6"),
    EdgeTpuOp("RELU_N1_TO_1", "ReLUN1To1"),
    EdgeTpuOp("RESHAPE", "Reshape", "Certain reshapes might not be mapped for large tensor sizes.",
              const_inputs=(1,), note="Certain reshapes might not be mapped for large tensor sizes."),
    EdgeTpuOp("RESIZE_BILINEAR", "ResizeBilinear",
              "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation might not "
              "be mapped to the Edge TPU to avoid loss in precision.", const_inputs=(1,), note=_RESIZE_NOTE),
    EdgeTpuOp("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighbor",
              "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not be "
              "mapped to the Edge TPU to avoid loss in precision.", const_inputs=(1,), note=_RESIZE_NOTE,
              text_from=CORAL_2019),
    EdgeTpuOp("RSQRT", "Rsqrt", note="limitation text not recovered", text_from=NOT_RECOVERED),
    EdgeTpuOp("SLICE", "Slice", const_inputs=(1, 2), text_from=CORAL_2019),
    EdgeTpuOp("SOFTMAX", "Softmax", "Supports only 1D input tensor with a max of 16,000 elements.",
              ("softmax-1d-16000",), text_from=CORAL_2019),
    EdgeTpuOp("SPACE_TO_DEPTH", "SpaceToDepth", text_from=CORAL_2019),
    EdgeTpuOp("SPLIT", "Split", const_inputs=(0,), text_from=CORAL_2019),
    EdgeTpuOp("SQUEEZE", "Squeeze",
              "Supported only when input tensor dimensions that have leading 1s (that is, no relayout needed). "
              "For example input tensor with [y][x][z] = 1,1,10 or 1,5,10 is ok. But [y][x][z] = 5,1,10 is not "
              "supported.", text_from=CORAL_2019,
              note="2019 wording, not enforced: the current table may have relaxed it"),
    EdgeTpuOp("STRIDED_SLICE", "StridedSlice",
              "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and with "
              "ellipsis-axis-mask == 0, and new-axis-max == 0.", ("unit-strides",), const_inputs=(1, 2, 3),
              text_from=CORAL_2019),
    EdgeTpuOp("SUB", "Sub", text_from=CORAL_2019),
    EdgeTpuOp("SUM", "Sum", const_inputs=(1,), note="limitation text not recovered", text_from=NOT_RECOVERED),
    EdgeTpuOp("SQUARED_DIFFERENCE", "Squared-difference", note="limitation text not recovered",
              text_from=NOT_RECOVERED),
    EdgeTpuOp("TANH", "Tanh", text_from=CORAL_2019),
    EdgeTpuOp("TRANSPOSE", "Transpose", const_inputs=(1,), note="limitation text not recovered",
              text_from=NOT_RECOVERED),
    EdgeTpuOp("TRANSPOSE_CONV", "TransposeConv", const_inputs=(0, 1, 3), note="limitation text not recovered",
              text_from=NOT_RECOVERED),
)}

EIGHT_BIT = frozenset({"INT8", "UINT8"})
#: Types a constant operand may have: 8-bit weights, or int32 biases and parameters (axes, shapes, paddings).
CONSTANT_TYPES = frozenset({"INT8", "UINT8", "INT32"})
SOFTMAX_MAX_ELEMENTS = 16_000


# --- reading the model ------------------------------------------------------------------------------------------

_NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _shape(tensor: Any) -> list[int]:
    return _ints(tensor.shape)


def _constant_values(model: Any, tensor: Any) -> np.ndarray | None:
    """The values of a constant tensor stored inside the flatbuffer, or None when they cannot be read."""
    dtype = _NUMPY_TYPES.get(tfl.tensor_type_name(tensor.type))
    buffer = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    if dtype is None or buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    if len(raw) % np.dtype(dtype).itemsize:
        return None
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    shape = _shape(tensor)
    return values.reshape(shape) if shape and int(np.prod(shape)) == values.size else values


def _operand(graph: Any, op: Any, position: int) -> Any | None:
    inputs = _ints(op.inputs)
    if position >= len(inputs) or inputs[position] < 0:
        return None
    return graph.tensors[inputs[position]]


def _non_one(shape: list[int]) -> int:
    return sum(1 for d in shape if d != 1)


def _axes(model: Any, graph: Any, op: Any) -> list[int] | None:
    """Reduction axes (operand 1), normalized against the input rank; None when not constant."""
    data, axes = _operand(graph, op, 0), _operand(graph, op, 1)
    values = _constant_values(model, axes) if axes is not None and tfl.is_constant(model, axes) else None
    if data is None or values is None:
        return None
    rank = len(_shape(data))
    return sorted({int(a) % rank for a in values.reshape(-1)}) if rank else []


# --- the documented limitations, one function each ----------------------------------------------------------------
# Convention: the batch dimension is axis 0 of a tensor of rank 4 or more (NHWC); lower-rank tensors have none.

Check = Callable[[Any, Any, Any], "str | None"]


def _no_fused_activation(model: Any, graph: Any, op: Any) -> str | None:
    fused = getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0
    if fused:
        name = {v: k for k, v in vars(tfl.schema().ActivationFunctionType).items() if isinstance(v, int)}.get(fused)
        return f"has a fused {name or fused} activation; the Edge TPU supports none on this op"
    return None


def _constant_input_is_zero_padding(model: Any, graph: Any, op: Any) -> str | None:
    inputs = [graph.tensors[i] for i in _ints(op.inputs) if i >= 0]
    constants = [t for t in inputs if tfl.is_constant(model, t)]
    if not constants:
        return None
    if len(inputs) != 2:
        return f"concatenates a constant tensor with {len(inputs)} inputs; only 2 are allowed then"
    for tensor in constants:
        values = _constant_values(model, tensor)
        q = tensor.quantization
        zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        if values is not None and np.any(values != zero):
            return f"concatenates constant '{tfl.tensor_name(tensor)}' that is not all zeros (not a zero padding)"
    return None


def _same_dilation(model: Any, graph: Any, op: Any) -> str | None:
    options = op.builtinOptions
    h, w = getattr(options, "dilationHFactor", 1) or 1, getattr(options, "dilationWFactor", 1) or 1
    return None if h == w else f"dilation differs in y ({h}) and x ({w})"


def _default_weights_format(model: Any, graph: Any, op: Any) -> str | None:
    fmt = getattr(op.builtinOptions, "weightsFormat", 0) or 0
    return None if fmt == 0 else f"uses weights format {fmt}, not the default"


def _one_dimensional_output(model: Any, graph: Any, op: Any) -> str | None:
    shape = _shape(graph.tensors[_ints(op.outputs)[0]])
    return None if _non_one(shape) <= 1 else f"output {shape} is not one-dimensional"


def _no_batch_axes(model: Any, graph: Any, op: Any) -> str | None:
    data, axes = _operand(graph, op, 0), _axes(model, graph, op)
    if data is not None and axes is not None and len(_shape(data)) >= 4 and 0 in axes:
        return f"reduces over the batch dimension (axes {axes} of {_shape(data)})"
    return None


def _z_reduction_multiple_of_4(model: Any, graph: Any, op: Any) -> str | None:
    data, axes = _operand(graph, op, 0), _axes(model, graph, op)
    if data is None or axes is None:
        return None
    shape = _shape(data)
    if shape and len(shape) - 1 in axes and shape[-1] % 4:
        return f"reduces over the z-dimension of size {shape[-1]}, not a multiple of 4"
    return None


def _no_batch_pack(model: Any, graph: Any, op: Any) -> str | None:
    output = _shape(graph.tensors[_ints(op.outputs)[0]])
    axis = int(getattr(op.builtinOptions, "axis", 0) or 0) % max(len(output), 1)
    return f"packs along the batch dimension of {output}" if len(output) >= 4 and axis == 0 else None


def _no_batch_padding(model: Any, graph: Any, op: Any) -> str | None:
    paddings = _operand(graph, op, 1)
    values = _constant_values(model, paddings) if paddings is not None else None
    if values is None or values.ndim != 2 or values.shape[0] < 4:
        return None
    return None if not np.any(values[0]) else f"pads the batch dimension ({values[0].tolist()})"


def _alpha_innermost(model: Any, graph: Any, op: Any) -> str | None:
    alpha = _operand(graph, op, 1)
    shape = _shape(alpha) if alpha is not None else []
    if any(d != 1 for d in shape[:-1]):
        return f"alpha {shape} is not 1-dimensional (only the innermost dimension may exceed 1)"
    return None


def _softmax_1d_16000(model: Any, graph: Any, op: Any) -> str | None:
    data = _operand(graph, op, 0)
    shape = _shape(data) if data is not None else []
    if _non_one(shape) > 1:
        return f"input {shape} is not one-dimensional"
    elements = int(np.prod(shape)) if shape else 1
    return None if elements <= SOFTMAX_MAX_ELEMENTS else f"input has {elements} elements, over {SOFTMAX_MAX_ELEMENTS}"


def _unit_strides(model: Any, graph: Any, op: Any) -> str | None:
    options = op.builtinOptions
    if getattr(options, "ellipsisMask", 0) or getattr(options, "newAxisMask", 0):
        return "uses an ellipsis or new-axis mask"
    strides = _operand(graph, op, 3)
    values = _constant_values(model, strides) if strides is not None else None
    if values is not None and np.any(values != 1):
        return f"has strides {values.tolist()}; only unit strides are supported"
    return None


_CHECKS: dict[str, Check] = {
    _FUSED: _no_fused_activation,
    "constant-input-is-zero-padding": _constant_input_is_zero_padding,
    "same-dilation": _same_dilation,
    "default-weights-format": _default_weights_format,
    "one-dimensional-output": _one_dimensional_output,
    "no-batch-axes": _no_batch_axes,
    "z-reduction-multiple-of-4": _z_reduction_multiple_of_4,
    "no-batch-pack": _no_batch_pack,
    "no-batch-padding": _no_batch_padding,
    "alpha-innermost": _alpha_innermost,
    "softmax-1d-16000": _softmax_1d_16000,
    "unit-strides": _unit_strides,
}

