"""Stamp activation ranges into a float flatbuffer, quantize it, and find what stayed float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgeq.artifacts import IOType
from edgeq.converter.tfquant import mlir_quantize
from edgeq.tflite import model as tfl

#: Ops allowed to touch float tensors in a full-integer model: the I/O boundary conversions.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class FloatOp:
    """An op left computing in float in the quantized model."""

    index: int
    op_type: str
    tensor: str

    def __str__(self) -> str:
        return f"{self.op_type} (op {self.index}, tensor '{self.tensor}')"


def stamp_ranges(float_model: bytes, ranges: Mapping[int, tuple[float, float]]) -> bytes:
    """The float model with ``min``/``max`` quantization parameters on the given tensors."""
    parsed = tfl.parse(float_model)
    tensors = parsed.subgraphs[0].tensors
    for index, (lo, hi) in sorted(ranges.items()):
        params = tfl.schema().QuantizationParametersT()
        params.min = np.array([lo], dtype=np.float32)
        params.max = np.array([hi], dtype=np.float32)
        tensors[index].quantization = params
    return tfl.serialize(parsed)


def quantize(float_model: bytes, ranges: Mapping[int, tuple[float, float]], io: IOType,
             per_tensor: bool = False, per_tensor_dense: bool = False) -> bytes:
    """Full-integer INT8 model from a float model and activation ranges (via TF's MLIR quantizer)."""
    return mlir_quantize(stamp_ranges(float_model, ranges), io, per_channel=not per_tensor,
                         per_channel_dense=not (per_tensor or per_tensor_dense))


def float_ops(quantized: bytes) -> list[FloatOp]:
    """Ops other than boundary QUANTIZE/DEQUANTIZE that read or write a float32 tensor."""
    parsed = tfl.parse(quantized)
    graph = parsed.subgraphs[0]
    float32 = tfl.tensor_type("FLOAT32")
    found = []
    for i, op in enumerate(graph.operators):
        kind = tfl.op_type(parsed, op)
        if kind in BOUNDARY_OPS:
            continue
        for t in [*op.inputs, *op.outputs]:
            if t >= 0 and graph.tensors[t].type == float32:
                found.append(FloatOp(index=i, op_type=kind, tensor=tfl.tensor_name(graph.tensors[t])))
                break
    return found
