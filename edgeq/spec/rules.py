"""The TFLite 8-bit quantization specification as data: one entry per op.

Source: the TensorFlow Lite "8-bit quantization specification" (tensorflow.org/lite/performance/
quantization_spec). General rules: activations int8 per-tensor with zero point in [-128, 127];
weights int8 symmetric (zero point 0) in [-127, 127]; biases int32 with zero point 0 and scale
input scale x weight scale. The table below adds each op's exceptions. The check engine
(edgeq/spec/check.py) interprets it; nothing op-specific lives in code.

The kernel tables (EXTRA_INT8_KERNELS and the xnnpack and tflm profiles) are measured, not copied:
``python tools/kernel_tables.py`` runs a one-op int8 model of every op they name on each runtime and writes
edgeq/spec/measured_kernels.json; tests/test_kernel_tables.py fails when a table and that measurement disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpRule:
    """What the spec says about one op's quantized tensors."""

    weights_input: int | None = None  # operand index of the weights (a constant int8 tensor)
    weights_axis: int | None = None  # required per-axis dimension of the weights
    per_tensor_weights_allowed: bool = False  # the spec also allows per-tensor weights for this op
    bias_input: int | None = None  # operand index of the int32 bias
    fixed_output: tuple[float, int] | None = None  # (scale, zero point) the spec fixes for output 0
    same_scale: bool = False  # inputs and outputs must share scale and zero point


#: Ops the spec lists, with their restrictions. Ops listed without restrictions follow the general rules.
SPEC: dict[str, OpRule] = {
    "ADD": OpRule(),
    "AVERAGE_POOL_2D": OpRule(same_scale=True),
    "CONCATENATION": OpRule(same_scale=True),
    "CONV_2D": OpRule(weights_input=1, weights_axis=0, bias_input=2),
    "DEPTHWISE_CONV_2D": OpRule(weights_input=1, weights_axis=3, bias_input=2),
    "FULLY_CONNECTED": OpRule(weights_input=1, weights_axis=0, per_tensor_weights_allowed=True, bias_input=2),
    "L2_NORMALIZATION": OpRule(fixed_output=(1.0 / 128.0, 0)),
    "LOGISTIC": OpRule(fixed_output=(1.0 / 256.0, -128)),
    "MAX_POOL_2D": OpRule(same_scale=True),
    "MUL": OpRule(),
    "RESHAPE": OpRule(same_scale=True),
    "RESIZE_BILINEAR": OpRule(same_scale=True),
    "SOFTMAX": OpRule(fixed_output=(1.0 / 256.0, -128)),
    "SPACE_TO_DEPTH": OpRule(same_scale=True),
    "TANH": OpRule(fixed_output=(1.0 / 128.0, 0)),
    "PAD": OpRule(same_scale=True),
    "GATHER": OpRule(same_scale=True),
    "BATCH_TO_SPACE_ND": OpRule(same_scale=True),
    "SPACE_TO_BATCH_ND": OpRule(same_scale=True),
    "TRANSPOSE": OpRule(same_scale=True),
    "MEAN": OpRule(),
    "SUB": OpRule(),
    "SQUEEZE": OpRule(same_scale=True),
    "LOG_SOFTMAX": OpRule(fixed_output=(16.0 / 256.0, 127)),
    "MAXIMUM": OpRule(same_scale=True),
    "ARG_MAX": OpRule(),
    "MINIMUM": OpRule(same_scale=True),
    "LESS": OpRule(),
    "PADV2": OpRule(same_scale=True),
    "GREATER": OpRule(),
    "GREATER_EQUAL": OpRule(),
    "LESS_EQUAL": OpRule(),
    "SLICE": OpRule(same_scale=True),
    "EQUAL": OpRule(),
    "NOT_EQUAL": OpRule(),
    "SHAPE": OpRule(),
    "QUANTIZE": OpRule(),  # requantization int8 -> int8 (and the float/uint8 boundary)
    "TRANSPOSE_CONV": OpRule(weights_input=1, weights_axis=0, bias_input=3),
}

#: Builtin ops with int8 kernels in the TFLite runtime beyond those the spec table lists. An op outside SPEC and this
#: set gets an 'op.no-int8-kernel' finding. Measured, not copied: tools/kernel_tables.py runs a one-op int8 model of
#: every op in these tables on LiteRT's builtin kernels (edgeq/spec/measured_kernels.json) and an op is listed when
#: its kernel runs and agrees with the float op; tests/test_kernel_tables.py keeps the two equal. Measured out
#: (LiteRT 2.3): SQUARE, ZEROS_LIKE and CUMSUM refuse int8; NEG and CAST run but ignore the quantization (NEG
#: negates the raw int8 values, so -128 comes back as -128; CAST converts the raw values, not the real ones).
EXTRA_INT8_KERNELS: frozenset[str] = frozenset({
    "ARG_MIN", "BATCH_MATMUL", "DEPTH_TO_SPACE", "DEQUANTIZE", "ELU", "EXPAND_DIMS", "GELU", "HARD_SWISH",
    "LEAKY_RELU", "MIRROR_PAD", "PACK", "PRELU", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6",
    "RELU_N1_TO_1", "RELU_0_TO_1", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT", "SELECT_V2", "SPLIT", "SPLIT_V",
    "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUM", "TILE", "UNPACK", "BROADCAST_TO", "EXP", "LOG", "ABS", "FILL",
    "GATHER_ND", "SQRT",
})

#: Ops whose operands/results are integer indices or shapes, not quantized activations.
INDEX_OUTPUT_OPS: frozenset[str] = frozenset({"ARG_MAX", "ARG_MIN", "SHAPE", "LESS", "GREATER", "GREATER_EQUAL",
                                              "LESS_EQUAL", "EQUAL", "NOT_EQUAL", "CAST"})


def has_int8_kernel(op_type: str) -> bool:
    return op_type in SPEC or op_type in EXTRA_INT8_KERNELS


@dataclass(frozen=True)
class TargetProfile:
    """What a deployment target adds to the generic spec rules."""

    name: str
    description: str
    supported_ops: frozenset[str] | None = None  # None: every op with an int8 kernel
    unsupported_severity: str = "warning"  # how bad an op outside supported_ops is on this target
    note: str = ""


#: Ops the XNNPACK delegate takes in an int8 model, measured (tools/kernel_tables.py: the op of a one-op int8 model is
#: delegated, per edgeq.harness.backends.delegation_of, and agrees with the float op). The delegate README's
#: "Quantized operators" list also names AVERAGE_POOL_2D, HARD_SWISH, PADV2 and PRELU, which ai-edge-litert 2.3 leaves
#: on the builtin kernels; it takes REDUCE_MAX, REDUCE_MIN and SUM, which the list leaves out. STRIDED_SLICE is
#: taken with unit strides only. Ops outside it run on the builtin kernels: slower, still correct.
XNNPACK_INT8_OPS = frozenset({
    "ADD", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "ELU",
    "FULLY_CONNECTED", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE", "REDUCE_MAX",
    "REDUCE_MIN", "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH", "SPLIT", "STRIDED_SLICE", "SUB", "SUM",
    "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

#: Ops whose int8 kernel runs in TFLite Micro (the pinned tflite-micro package) and agrees with the float op, measured
#: by tools/kernel_tables.py. Measured out: EXP, LOG, SQRT, SQUARE, NEG and FLOOR have float-only kernels (TFLM
#: refuses the int8 node at prepare or at the first invoke); RELU6 clamps the raw int8 input without requantizing to
#: the output's scale, CUMSUM misses the output zero point, ZEROS_LIKE writes raw zeros, DIV saturates when the
#: numerator is within a step of zero and CAST converts the raw integers: each runs and returns wrong values.
TFLM_OPS = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "AVERAGE_POOL_2D", "BATCH_MATMUL", "BATCH_TO_SPACE_ND",
    "BROADCAST_TO", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "ELU", "EQUAL",
    "EXPAND_DIMS", "FILL", "FULLY_CONNECTED", "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH",
    "L2_NORMALIZATION", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG_SOFTMAX", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM",
    "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "REDUCE_MAX",
    "REDUCE_MIN", "RELU", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT_V2", "SHAPE",
    "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK",
})

#: NNAPI (Android 11+, TENSOR_QUANT8_ASYMM_SIGNED) ops the TFLite NNAPI delegate maps for int8 models. From the
#: delegate's documentation, not measured: there is no Android device here (tools/kernel_tables.py measures these
#: ops' LiteRT kernels, which is where an op NNAPI does not take falls back to).
NNAPI_INT8_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "BATCH_TO_SPACE_ND", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE",
    "DEPTHWISE_CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC",
    "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "PAD", "PADV2", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND",
    "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "REDUCE_MAX", "REDUCE_MIN", "ARG_MAX", "ARG_MIN", "GATHER", "PACK", "SELECT", "TILE",
})

PROFILES: dict[str, TargetProfile] = {
    "generic": TargetProfile("generic", "the TFLite INT8 spec and full-integer deployability"),
    "xnnpack": TargetProfile("xnnpack", "generic + XNNPACK's quantized operator coverage",
                             XNNPACK_INT8_OPS, "warning",
                             "ops outside XNNPACK's coverage run on the builtin kernels (slower, still correct)"),
    "edgetpu": TargetProfile("edgetpu", "generic + Coral Edge TPU requirements and partition prediction"),
    "nnapi": TargetProfile("nnapi", "generic + ops the NNAPI delegate maps for int8 (Android 11+)",
                           NNAPI_INT8_OPS, "warning",
                           "unmapped ops fall back to the CPU; NNAPI is deprecated from Android 15"),
    "tflm": TargetProfile("tflm", "generic + TFLite Micro's int8 kernels, static shapes, no custom ops",
                          TFLM_OPS, "error", "TFLite Micro has no fallback: an op it lacks cannot run"),
}

#: Ops that run with int16 activations and int8 weights (int16x8) on LiteRT's CPU builtin kernels, for which
#: ai-edge-quantizer 0.10 also has an a16w8 recipe: where an activation may be int16 (issue 16, docs/int16.md).
#: Measured (ai-edge-litert 2.3): a float one-op model of each op (tools/kernel_tables.py's cases) quantized by AEQ
#: with every activation int16, run on the builtin kernels on calibrated inputs and compared with the float op;
#: an op is listed when it runs and stays within one int8 step (256 int16 steps) of the float op. Weighted ops
#: (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV: 115-182 steps) are dominated by their int8
#: weights' rounding; the rest are within 4 steps except DIV (8). Measured out: RSQRT runs 548 steps off (worse
#: than int8). AEQ leaves RELU6, LEAKY_RELU, HARD_SWISH, MINIMUM, REDUCE_MAX, SQUARED_DIFFERENCE, SPACE_TO_DEPTH,
#: DEPTH_TO_SPACE, SPLIT_V, ELU, PRELU, EXP, LOG, ABS and SELECT_V2's GREATER in float under an a16w8 recipe, so
#: their LiteRT int16 kernels were not reached. XNNPACK delegates none of these ops with int16 activations (nor
#: the int8 <-> int16 QUANTIZE): they all run on the builtin kernels.
INT16X8_OPS: frozenset[str] = frozenset({
    "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "BROADCAST_TO", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "DIV", "FULLY_CONNECTED", "GATHER", "GATHER_ND", "GELU", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MIRROR_PAD", "MUL", "PACK", "PAD", "PADV2", "REDUCE_MIN", "RELU", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "SLICE", "SOFTMAX", "SPLIT", "SQRT", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK",
})

#: Bias types LiteRT's int16x8 kernels accept and compute correctly, per weighted op (zero point 0 and scale
#: input x weight as for int8). Measured by retyping AEQ's int64 bias to int32: DEPTHWISE_CONV_2D refuses it at
#: prepare ("bias->type != kTfLiteInt64"); CONV_2D loads it (its source accepts int32 for int16 input) but returns
#: values ~65000 int16 steps off on ai-edge-litert 2.3; FULLY_CONNECTED and TRANSPOSE_CONV give identical results.
INT16X8_BIAS_TYPES: dict[str, frozenset[str]] = {
    "CONV_2D": frozenset({"INT64"}),
    "DEPTHWISE_CONV_2D": frozenset({"INT64"}),
    "FULLY_CONNECTED": frozenset({"INT32", "INT64"}),
    "TRANSPOSE_CONV": frozenset({"INT32", "INT64"}),
}
