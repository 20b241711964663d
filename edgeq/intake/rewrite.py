"""Float-graph rewrites that let the quantizer produce a full-integer model.

A table of small, exact rewrites applied to the float flatbuffer before ranges are stamped:

- ``NEG(x)`` -> ``MUL(x, -1.0)``: the quantizer has no int8 NEG and leaves it float, wrapped in
  DEQUANTIZE/QUANTIZE (Keras LayerNormalization lowers to a NEG).
- ``DENSIFY(sparse constant)`` -> a dense constant (and sparse constants read directly by an op are
  densified in place): the quantizer keeps DENSIFY and its sparse float16 input, so the "int8" model
  fails to prepare in LiteRT. Decoded by edgeq.intake.sparsity, checked against LiteRT's kernel.
- converter-hint metadata (``keep_stablehlo_constant``, written by litert-torch) is dropped: it makes
  TensorFlow's quantizer keep the weights in float.
- ``DEQUANTIZE(float16 constant)`` -> a float32 constant: exporters store weights as float16 behind
  DEQUANTIZE ops, which the quantizer rejects until they are folded. Runs after densify, so sparse
  float16 weights (DENSIFY -> DEQUANTIZE) are folded too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.intake.float_model import RewriteCount
from edgeq.intake.sparsity import VALUE_DTYPES, densify
from edgeq.tflite import model as tfl


def _add_constant(model: Any, graph: Any, values: np.ndarray, name: str) -> int:
    """Append a float32 constant tensor with its own buffer; return its tensor index."""
    return tfl.add_tensor(model, graph, name, values.shape, "FLOAT32", values.astype("<f4"))


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
            op.opcodeIndex = tfl.opcode_index(model, "MUL")
            op.inputs = np.array([op.inputs[0], minus_one], dtype=np.int32)
            op.builtinOptionsType = S.BuiltinOptions.MulOptions
            op.builtinOptions = S.MulOptionsT()
            rewritten += 1
    return rewritten


def _new_buffer(model: Any, values: np.ndarray) -> int:
    buffer = tfl.schema().BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), dtype=np.uint8).copy()
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _raw(model: Any, tensor: Any) -> bytes:
    return np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8).tobytes()


def _used(graph: Any) -> set[int]:
    used = {int(i) for i in [*_ints(graph.inputs), *_ints(graph.outputs)]}
    for op in graph.operators:
        used.update(int(i) for i in [*_ints(op.inputs), *_ints(op.outputs)] if i >= 0)
    return used


def _ints(values: Any) -> list[Any]:
    return [] if values is None else list(values)


def _release(model: Any, orphans: list[tuple[Any, int]]) -> None:
    """Tensors a rewrite replaced: when no op reads them any more, drop their data (so neither the float model
    nor anything derived from it carries the old encoding) and their sparsity."""
    freed = set()
    for graph, index in orphans:
        if index in _used(graph):
            continue
        tensor = graph.tensors[index]
        if tensor.buffer:
            freed.add(int(tensor.buffer))
        tensor.buffer, tensor.sparsity = 0, None
    still = {int(t.buffer) for graph in model.subgraphs for t in graph.tensors}
    still.update(int(m.buffer) for m in model.metadata or [])
    for index in freed - still:
        model.buffers[index] = tfl.schema().BufferT()


def _where(model: Any, g: int, op_index: int, tensor: Any) -> str:
    graph = f"subgraph {g}, " if g else ""
    return f"'{tfl.tensor_name(tensor)}' ({graph}op {op_index})"


def _densified(model: Any, tensor: Any, where: str) -> np.ndarray:
    kind = tfl.tensor_type_name(tensor.type)
    if kind not in VALUE_DTYPES or not tfl.is_constant(model, tensor):
        raise InputError(f"cannot densify sparse tensor {where}: it is {kind}"
                         f"{'' if tfl.is_constant(model, tensor) else ' and not a constant'}")
    raw = _raw(model, tensor)
    dtype = np.dtype(VALUE_DTYPES[kind])
    if len(raw) % dtype.itemsize:
        raise InputError(f"cannot densify sparse tensor {where}: {len(raw)} bytes is not a whole number of {kind}")
    shape = tuple(int(d) for d in tensor.shape)
    try:
        return densify(shape, tensor.sparsity, np.frombuffer(raw, dtype=dtype))
    except InputError as exc:
        raise InputError(f"cannot densify sparse tensor {where}: {exc}") from None


def densify_sparse_weights(model: Any) -> int:
    """DENSIFY(sparse constant) -> a dense constant on its output tensor; other sparse constants in place."""
    densified = 0
    for g, graph in enumerate(model.subgraphs):
        kept, orphans = [], []
        for op_index, op in enumerate(graph.operators):
            if tfl.op_type(model, op) == "DENSIFY":
                source = graph.tensors[op.inputs[0]]
                where = _where(model, g, op_index, source)
                if source.sparsity is None:
                    raise InputError(f"DENSIFY input {where} carries no sparsity parameters")
                target = graph.tensors[op.outputs[0]]
                target.type = source.type
                target.buffer = _new_buffer(model, _densified(model, source, where))
                target.sparsity = None
                orphans.append((graph, int(op.inputs[0])))
                densified += 1
                continue
            kept.append(op)
        graph.operators = kept
        for op_index, op in enumerate(graph.operators):
            for index in _ints(op.inputs):
                tensor = graph.tensors[index] if index >= 0 else None
                if tensor is None or tensor.sparsity is None:
                    continue
                tensor.buffer = _new_buffer(model, _densified(model, tensor, _where(model, g, op_index, tensor)))
                tensor.sparsity = None
                densified += 1
        _release(model, orphans)
    return densified


def fold_float16_dequantize(model: Any) -> int:
    """Replace DEQUANTIZE(float16 constant) by a float32 constant buffer on its output tensor."""
    float16, float32 = tfl.tensor_type("FLOAT16"), tfl.tensor_type("FLOAT32")
    folded = 0
    for graph in model.subgraphs:
        kept, orphans = [], []
        for op in graph.operators:
            if tfl.op_type(model, op) == "DEQUANTIZE":
                source = graph.tensors[op.inputs[0]]
                if source.type == float16 and tfl.is_constant(model, source) and source.sparsity is None:
                    values = np.frombuffer(_raw(model, source), dtype="<f2").astype("<f4")
                    target = graph.tensors[op.outputs[0]]
                    target.type = float32
                    target.buffer = _new_buffer(model, values)
                    orphans.append((graph, int(op.inputs[0])))
                    folded += 1
                    continue
            kept.append(op)
        graph.operators = kept
        _release(model, orphans)
    return folded


#: Metadata entries that are instructions to TensorFlow's converter, not facts about the model. litert-torch
#: writes ``keep_stablehlo_constant``; with it, TF's quantizer keeps every weight in float behind a DEQUANTIZE
#: (measured: "cannot quantize CONV_2D, FULLY_CONNECTED", and full-integer once the entry is gone).
QUANTIZER_HINTS = frozenset({"keep_stablehlo_constant"})


def drop_quantizer_hints(model: Any) -> int:
    """Remove converter-hint metadata entries (they change nothing the model computes)."""
    entries = list(model.metadata or [])
    kept = [e for e in entries if _text(e.name) not in QUANTIZER_HINTS]
    if len(kept) != len(entries):
        model.metadata = kept
    return len(entries) - len(kept)


def _text(name: Any) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


#: The rewrites, in the order they run. Each returns how many places it changed.
REWRITES: tuple[tuple[str, Callable[[Any], int]], ...] = (
    ("drop_quantizer_hints", drop_quantizer_hints),
    ("densify_sparse_weights", densify_sparse_weights),
    ("fold_float16_dequantize", fold_float16_dequantize),
    ("neg_to_mul", neg_to_mul),
)


def apply_rewrites(model: Any) -> list[RewriteCount]:
    """Apply every rewrite in place; report those that changed something."""
    counts = [RewriteCount(name, fn(model)) for name, fn in REWRITES]
    return [c for c in counts if c.count]
