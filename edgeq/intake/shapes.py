"""Fix the dynamic dimensions of a float ``.tflite`` model: batch 1 by default, or the shape the user gives.

``TFLiteConverter.from_keras_model`` exports a dynamic batch by default (shape signature ``[-1, H, W, C]``),
with SHAPE -> STRIDED_SLICE -> PACK chains that compute reshape targets at run time. Quantized as they are,
those chains stay in the "int8" model (with QUANTIZE/DEQUANTIZE around them) and the model is not
full-integer. So the input shapes are fixed, and static shapes are propagated through the graph the way
the runtime itself computes them: LiteRT resizes the inputs and allocates every tensor, and each integer
tensor that depends on shapes only (never on input values) is evaluated and stored as a constant, its
producing op removed. Every tensor then carries its static shape and no shape signature.

What cannot be resolved is refused with the tensor named: a shape that depends on the input values
(WHERE, NON_MAX_SUPPRESSION, ...), or a shape computation whose result changes with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.tflite import model as tfl

#: Ops that compute on shapes: when every input is known without the data, so is the output.
SHAPE_OPS = frozenset({
    "SHAPE", "STRIDED_SLICE", "SLICE", "PACK", "UNPACK", "CONCATENATION", "GATHER", "GATHER_ND", "RESHAPE",
    "SQUEEZE", "EXPAND_DIMS", "CAST", "ADD", "SUB", "MUL", "DIV", "FLOOR_DIV", "FLOOR_MOD", "MAXIMUM",
    "MINIMUM", "REDUCE_PROD", "SUM", "RANGE", "FILL", "TILE", "BROADCAST_TO", "BROADCAST_ARGS", "TRANSPOSE",
})
#: Ops whose output shape depends on the input values: a SHAPE of anything computed from them is never folded,
#: even when two seeded runs happen to agree (the check below would then miss it).
DATA_DEPENDENT_SHAPE_OPS = frozenset({"WHERE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "UNIQUE",
                                      "MULTINOMIAL", "RANDOM_STANDARD_NORMAL", "RANDOM_UNIFORM"})
#: Only integer tensors are folded: shape arithmetic is integer, and a float tensor is data or a weight.
_INTEGER_TYPES = frozenset({"INT32", "INT64"})
_PROBE_SEEDS = (0, 1)  # two different inputs: a value that differs between them depends on the data


@dataclass(frozen=True)
class ShapeFix:
    """What fixing the shapes changed."""

    inputs: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (name, signature, fixed shape)
    folded_ops: int  # shape-computing ops replaced by constants


def _signature(tensor: Any) -> tuple[int, ...]:
    values = tensor.shapeSignature if tensor.shapeSignature is not None and len(tensor.shapeSignature) else tensor.shape
    return tuple(int(d) for d in (values if values is not None else ()))


def _fixed_shape(name: str, signature: tuple[int, ...], override: tuple[int, ...] | None,
                 batch_size: int) -> tuple[int, ...]:
    """The static shape for one input: the override (without the batch) or the signature with batch_size for
    a dynamic batch. A static dimension the override contradicts is refused: the weights were made for it."""
    if override is not None:
        if len(override) != len(signature) - 1:
            raise InputError(f"--input-shape {override} has rank {len(override)}; input '{name}' has rank "
                             f"{len(signature) - 1} without the batch")
        pairs = enumerate(zip(signature[1:], override, strict=True), 1)
        clash = [(axis, d, o) for axis, (d, o) in pairs if d >= 0 and d != o]
        if clash:
            axis, have, want = clash[0]
            raise InputError(f"--input-shape {override} sets dimension {axis} of input '{name}' to {want}, but the "
                             f"model fixes it at {have} (shape {list(signature)}); only dynamic (-1) dimensions "
                             "can be chosen")
        rest = override
    else:
        rest = signature[1:]
        dynamic = [i + 1 for i, d in enumerate(rest) if d < 0]
        if dynamic:
            raise InputError(f"input '{name}' has dynamic dimension(s) {dynamic} in shape {list(signature)}; choose "
                             "them with --input-shape (without the batch)")
    if override is not None and any(d <= 0 for d in override):
        raise InputError(f"--input-shape {override} must have positive dimensions")
    batch = signature[0] if signature and signature[0] >= 0 else batch_size  # a static batch stays as exported
    return (batch, *rest)


def _needs_fixing(graph: Any, override: tuple[int, ...] | None) -> bool:
    if override is not None:
        return True
    return any(d < 0 for tensor in graph.tensors for d in _signature(tensor))


def _run(flatbuffer: bytes, shapes: dict[int, tuple[int, ...]], seed: int) -> tuple[dict[int, tuple[int, ...]],
                                                                                      dict[int, np.ndarray]]:
    """Every main-graph tensor's shape, and every integer tensor's value, after one run on seeded data."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(flatbuffer, CpuKernels.CPU, preserve_all_tensors=True)
    try:
        for index, shape in shapes.items():
            interpreter.resize_tensor_input(index, list(shape), strict=False)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(seed)
        for detail in interpreter.get_input_details():
            dtype = np.dtype(detail["dtype"])
            data = rng.uniform(-1, 1, detail["shape"]) if dtype.kind == "f" else rng.integers(0, 2, detail["shape"])
            interpreter.set_tensor(detail["index"], data.astype(dtype))
        interpreter.invoke()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the runtime could not run the model with input shapes "
                         f"{[list(s) for s in shapes.values()]}: {first}") from None
    found_shapes, values = {}, {}
    for detail in interpreter.get_tensor_details():
        index = int(detail["index"])
        found_shapes[index] = tuple(int(d) for d in detail["shape"])
        if np.dtype(detail["dtype"]).kind in "iu":
            try:
                values[index] = np.array(interpreter.get_tensor(index))
            except ValueError:  # a tensor without data (never computed)
                continue
    return found_shapes, values


def _foldable(model: Any, graph: Any, what: str) -> list[int]:
    """Ops (indices) whose integer outputs depend on shapes only, in graph order."""
    known = {i for i, tensor in enumerate(graph.tensors) if tfl.is_constant(model, tensor)}
    data_shaped: set[int] = set()  # tensors downstream of an op whose output shape depends on the data
    folded = []
    for position, op in enumerate(graph.operators):
        kind = tfl.op_type(model, op)
        outputs = [int(t) for t in op.outputs]
        if kind in DATA_DEPENDENT_SHAPE_OPS or any(int(t) in data_shaped for t in op.inputs if t >= 0):
            if kind == "SHAPE":
                raise InputError(f"{what}: the shape computation '{tfl.tensor_name(graph.tensors[outputs[0]])}' "
                                 "reads a tensor whose shape depends on the input values; edgeq cannot resolve it "
                                 "to a constant")
            data_shaped.update(outputs)
            continue
        if kind not in SHAPE_OPS or not all(tfl.tensor_type_name(graph.tensors[t].type) in _INTEGER_TYPES
                                            for t in outputs):
            continue
        inputs = [int(t) for t in op.inputs if t >= 0]
        if kind == "SHAPE" or all(t in known for t in inputs):
            known.update(outputs)
            folded.append(position)
    return folded


def fix_dynamic_shapes(model: Any, flatbuffer: bytes, input_shape: tuple[int, ...] | None, batch_size: int,
                       what: str) -> ShapeFix | None:
    """Fix ``model``'s (parsed from ``flatbuffer``) dynamic shapes in place; None when it has none to fix."""
    graph = model.subgraphs[0]
    if not _needs_fixing(graph, input_shape):
        return None
    inputs = [int(i) for i in graph.inputs]
    if input_shape is not None and len(inputs) != 1:
        raise InputError("--input-shape applies to single-input models only")
    before = {index: _signature(graph.tensors[index]) for index in inputs}
    targets = {}
    for index in inputs:
        tensor = graph.tensors[index]
        targets[index] = _fixed_shape(tfl.tensor_name(tensor), _signature(tensor), input_shape, batch_size)
    runs = [_run(flatbuffer, targets, seed) for seed in _PROBE_SEEDS]
    (shapes, values), (other_shapes, other_values) = runs
    for index, tensor in enumerate(graph.tensors):
        if shapes.get(index) != other_shapes.get(index):
            raise InputError(f"{what}: tensor '{tfl.tensor_name(tensor)}' has a shape that depends on the input "
                             f"values ({list(shapes.get(index, ()))} vs {list(other_shapes.get(index, ()))}); "
                             "edgeq cannot make such a model static")
    folded = _foldable(model, graph, what)
    buffer_of = {}
    for position in folded:
        for index in (int(t) for t in graph.operators[position].outputs):
            tensor = graph.tensors[index]
            if index not in values or not np.array_equal(values[index], other_values.get(index)):
                raise InputError(f"{what}: the shape computation '{tfl.tensor_name(tensor)}' depends on the input "
                                 "values; edgeq cannot resolve it to a constant")
            buffer_of[index] = values[index]
    for index, array in buffer_of.items():
        tensor = graph.tensors[index]
        buffer = tfl.schema().BufferT()
        dtype = "<i4" if tfl.tensor_type_name(tensor.type) == "INT32" else "<i8"
        buffer.data = np.frombuffer(np.ascontiguousarray(array.astype(dtype)).tobytes(), dtype=np.uint8).copy()
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
    drop = set(folded)
    graph.operators = [op for position, op in enumerate(graph.operators) if position not in drop]
    for index, tensor in enumerate(graph.tensors):
        if index in shapes:
            tensor.shape = np.asarray(shapes[index], dtype=np.int32)
        tensor.shapeSignature = None
    if any(d < 0 for tensor in graph.tensors for d in _signature(tensor)):  # pragma: no cover - runtime guarantees
        raise InputError(f"{what}: some dimensions stay dynamic after fixing the inputs")
    described = tuple((tfl.tensor_name(graph.tensors[i]), before[i], targets[i]) for i in inputs)
    return ShapeFix(inputs=described, folded_ops=len(folded))
