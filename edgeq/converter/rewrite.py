"""Float-graph rewrites that let the quantizer produce a full-integer model.

A table of small, exact rewrites applied to the float flatbuffer before ranges are stamped:

- ``NEG(x)`` -> ``MUL(x, -1.0)``: the quantizer has no int8 NEG and leaves it float, wrapped in
  DEQUANTIZE/QUANTIZE (Keras LayerNormalization lowers to a NEG).
- ``DEQUANTIZE(float16 constant)`` -> a float32 constant: exporters store weights as float16 behind
  DEQUANTIZE ops, which the quantizer rejects until they are folded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.tflite import model as tfl


@dataclass(frozen=True)
class RewriteCount:
    name: str
    count: int


def _opcode_index(model: Any, op_name: str) -> int:
    """Index of ``op_name`` in the model's operator-code table, appending it when absent."""
    code = tfl.builtin_code(op_name)
    for i, existing in enumerate(model.operatorCodes):
        if max(int(existing.builtinCode), int(existing.deprecatedBuiltinCode)) == code:
            return i
    new = tfl.schema().OperatorCodeT()
    new.builtinCode = code
    new.deprecatedBuiltinCode = min(code, 127)  # the legacy int8 field saturates at 127 (PLACEHOLDER)
    new.version = 1
    model.operatorCodes.append(new)
    return len(model.operatorCodes) - 1


def _add_constant(model: Any, graph: Any, values: np.ndarray, name: str) -> int:
    """Append a float32 constant tensor with its own buffer; return its tensor index."""
    S = tfl.schema()  # noqa: N806
    buffer = S.BufferT()
    buffer.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8).copy()
    model.buffers.append(buffer)
    tensor = S.TensorT()
    tensor.shape = np.asarray(values.shape, dtype=np.int32)
    tensor.type = tfl.tensor_type("FLOAT32")
    tensor.buffer = len(model.buffers) - 1
    tensor.name = name
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def neg_to_mul(model: Any) -> int:
    """Rewrite every float NEG as MUL by a shared -1.0 constant."""
    S = tfl.schema()  # noqa: N806
    float32 = tfl.tensor_type("FLOAT32")
    rewritten = 0
    for graph in model.subgraphs:
        minus_one: int | None = None
        for op in graph.operators:
            if tfl.op_type(model, op) != "NEG" or graph.tensors[op.inputs[0]].type != float32:
                continue
            if minus_one is None:
                minus_one = _add_constant(model, graph, np.array([-1.0], np.float32), "edgeq/neg_as_mul/minus_one")
            op.opcodeIndex = _opcode_index(model, "MUL")
            op.inputs = np.array([op.inputs[0], minus_one], dtype=np.int32)
            op.builtinOptionsType = S.BuiltinOptions.MulOptions
            op.builtinOptions = S.MulOptionsT()
            rewritten += 1
    return rewritten


def fold_float16_dequantize(model: Any) -> int:
    """Replace DEQUANTIZE(float16 constant) by a float32 constant buffer on its output tensor."""
    float16, float32 = tfl.tensor_type("FLOAT16"), tfl.tensor_type("FLOAT32")
    folded = 0
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            if tfl.op_type(model, op) == "DEQUANTIZE":
                source = graph.tensors[op.inputs[0]]
                if source.type == float16 and tfl.is_constant(model, source):
                    raw = np.asarray(model.buffers[source.buffer].data, dtype=np.uint8).tobytes()
                    values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
                    target = graph.tensors[op.outputs[0]]
                    target.type = float32
                    buffer = tfl.schema().BufferT()
                    buffer.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8).copy()
                    model.buffers.append(buffer)
                    target.buffer = len(model.buffers) - 1
                    folded += 1
                    continue
            kept.append(op)
        graph.operators = kept
    return folded


#: The rewrites, in the order they run. Each returns how many places it changed.
REWRITES: tuple[tuple[str, Callable[[Any], int]], ...] = (
    ("fold_float16_dequantize", fold_float16_dequantize),
    ("neg_to_mul", neg_to_mul),
)


def apply_rewrites(model: Any) -> list[RewriteCount]:
    """Apply every rewrite in place; report those that changed something."""
    counts = [RewriteCount(name, fn(model)) for name, fn in REWRITES]
    return [c for c in counts if c.count]
