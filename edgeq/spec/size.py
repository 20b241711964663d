"""Where a .tflite file's bytes go: weights, biases, quantization metadata, everything else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeq.spec.rules import SPEC
from edgeq.tflite import model as tfl


@dataclass(frozen=True)
class SizeBreakdown:
    total_bytes: int
    weight_bytes: int  # constant tensors other than biases (weights, constant operands, tables)
    bias_bytes: int  # constant int32 operands in a bias position of CONV/DEPTHWISE/FC/TRANSPOSE_CONV
    quantization_bytes: int  # scales (4 B), zero points (8 B), min/max (4 B) of every tensor
    other_bytes: int  # graph structure, names, signatures, metadata, alignment
    float_bytes: int | None = None  # the float source model's size, when given

    @property
    def ratio_to_float(self) -> float | None:
        return None if self.float_bytes is None else self.float_bytes / self.total_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "weight_bytes": self.weight_bytes, "bias_bytes": self.bias_bytes,
                "quantization_bytes": self.quantization_bytes, "other_bytes": self.other_bytes,
                "float_bytes": self.float_bytes, "ratio_to_float": self.ratio_to_float}


def _length(values: Any) -> int:
    return 0 if values is None else len(values)


def size_breakdown(data: bytes, model: Any | None = None, float_bytes: int | None = None) -> SizeBreakdown:
    model = model if model is not None else tfl.parse(data)
    bias_buffers: set[int] = set()
    for graph in model.subgraphs:
        for op in graph.operators or []:
            rule = SPEC.get(tfl.op_type(model, op))
            if rule and rule.bias_input is not None and rule.bias_input < _length(op.inputs):
                index = int(op.inputs[rule.bias_input])
                if index >= 0:
                    bias_buffers.add(int(graph.tensors[index].buffer))
    counted: set[int] = set()
    weights = biases = quant = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors or []:
            q = tensor.quantization
            if q is not None:
                quant += 4 * _length(q.scale) + 8 * _length(q.zeroPoint) + 4 * (_length(q.min) + _length(q.max))
            buffer_index = int(tensor.buffer)
            if buffer_index in counted or not tfl.is_constant(model, tensor):
                continue
            counted.add(buffer_index)
            size = _length(model.buffers[buffer_index].data)
            if buffer_index in bias_buffers:
                biases += size
            else:
                weights += size
    return SizeBreakdown(total_bytes=len(data), weight_bytes=weights, bias_bytes=biases, quantization_bytes=quant,
                         other_bytes=max(len(data) - weights - biases - quant, 0), float_bytes=float_bytes)


def size_change(float_bytes: int, int8_bytes: int) -> str:
    """``3.51x smaller`` or ``1.19x larger`` (INT8 relative to float), never a ratio below 1 called smaller."""
    if int8_bytes <= 0 or float_bytes <= 0:
        return "size unknown"
    if float_bytes == int8_bytes:
        return "the same size"
    if float_bytes > int8_bytes:
        return f"{float_bytes / int8_bytes:.2f}x smaller"
    return f"{int8_bytes / float_bytes:.2f}x larger"


#: Why an INT8 model can come out larger than (or barely smaller than) its float source, by rewrite applied.
SIZE_REASONS = {
    "densify_sparse_weights": "the source's sparse weights were densified (int8 stores every weight)",
    "fold_float16_dequantize": "the source stored float16 weights (int8 saves at most 2x over them)",
}


def size_reasons(rewrites: Mapping[str, int], float_bytes: int, int8_bytes: int,
                 breakdown: SizeBreakdown | None = None) -> list[str]:
    """What explains an INT8 model that is not about 4x smaller than its float source (empty when it is)."""
    if int8_bytes * 3 < float_bytes:
        return []
    reasons = [text for name, text in SIZE_REASONS.items() if rewrites.get(name)]
    if breakdown is not None and breakdown.quantization_bytes * 5 > breakdown.total_bytes:
        reasons.append(f"quantization parameters take {breakdown.quantization_bytes / 1024:.1f} KiB "
                       "(per-axis scales and zero points)")
    return reasons
