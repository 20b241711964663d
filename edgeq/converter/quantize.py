"""Stamp activation ranges into a float flatbuffer, quantize it, and find what stayed float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgeq.artifacts import IOType
from edgeq.converter.tfquant import mlir_quantize
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey

#: Ops allowed to touch float tensors in a full-integer model: the I/O boundary conversions.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class FloatOp:
    """An op left computing in (or converting to) a float type in the quantized model."""

    index: int
    op_type: str
    tensor: str
    subgraph: int = 0
    subgraph_name: str = ""
    tensor_type: str = "FLOAT32"

    def __str__(self) -> str:
        where = f"op {self.index}"
        if self.subgraph:
            graph = f" '{self.subgraph_name}'" if self.subgraph_name else ""
            where = f"subgraph {self.subgraph}{graph}, {where}"
        return f"{self.op_type} ({where}, {self.tensor_type} tensor '{self.tensor}')"


def _key(key: TensorKey | int) -> TensorKey:
    return key if isinstance(key, tuple) else (0, int(key))


def stamp_ranges(float_model: bytes, ranges: Mapping[TensorKey | int, tuple[float, float]]) -> bytes:
    """The float model with ``min``/``max`` quantization parameters on the given tensors, keyed by
    (subgraph, tensor) (a plain tensor index means the main graph)."""
    parsed = tfl.parse(float_model)
    for key, (lo, hi) in sorted((_key(k), v) for k, v in ranges.items()):
        params = tfl.schema().QuantizationParametersT()
        params.min = np.array([lo], dtype=np.float32)
        params.max = np.array([hi], dtype=np.float32)
        parsed.subgraphs[key[0]].tensors[key[1]].quantization = params
    return tfl.serialize(parsed)


def quantize(float_model: bytes, ranges: Mapping[TensorKey | int, tuple[float, float]], io: IOType,
             per_tensor: bool = False, per_tensor_dense: bool = False) -> bytes:
    """Full-integer INT8 model from a float model and activation ranges (via TF's MLIR quantizer)."""
    return mlir_quantize(stamp_ranges(float_model, ranges), io, per_channel=not per_tensor,
                         per_channel_dense=not (per_tensor or per_tensor_dense))


def float_ops(quantized: bytes, io: IOType = IOType.INT8) -> list[FloatOp]:
    """Every op, in every subgraph, that reads or writes a tensor of a float type (FLOAT32, FLOAT16, ...),
    except the QUANTIZE/DEQUANTIZE that convert the main graph's float32 inputs/outputs (``io`` float32)."""
    parsed = tfl.parse(quantized)
    main = parsed.subgraphs[0]
    boundary = {int(i) for i in [*main.inputs, *main.outputs]} if IOType(io) is IOType.FLOAT32 else set()
    found = []
    for g, graph in enumerate(parsed.subgraphs):
        for i, op in enumerate(graph.operators or []):
            kind = tfl.op_type(parsed, op)
            operands = [int(t) for t in [*op.inputs, *op.outputs] if t >= 0]
            if g == 0 and kind in BOUNDARY_OPS and any(t in boundary for t in operands):
                continue
            for t in operands:
                tensor = graph.tensors[t]
                if tfl.is_float_type(tensor.type):
                    found.append(FloatOp(index=i, op_type=kind, tensor=tfl.tensor_name(tensor), subgraph=g,
                                         subgraph_name=tfl.subgraph_name(parsed, g),
                                         tensor_type=tfl.tensor_type_name(tensor.type)))
                    break
    return found
