"""Read, write and look inside ``.tflite`` flatbuffers without importing TensorFlow.

Uses the generated schema object API that ships with the LiteRT runtime (``ai_edge_litert``) and
the tiny ``flatbuffers`` runtime. This is the one module that knows the flatbuffer layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from edgeq.errors import InputError

FILE_IDENTIFIER = b"TFL3"


def schema() -> Any:
    """The generated TFLite schema module (object API)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:  # pragma: no cover - the device/full extras both install it
        raise InputError("reading .tflite files needs ai-edge-litert: pip install 'edgeq[device]'") from exc
    return schema_py_generated


@cache
def _enum_names(enum_class_name: str) -> dict[int, str]:
    enum_class = getattr(schema(), enum_class_name)
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_name(code: int) -> str:
    return _enum_names("BuiltinOperator").get(code, f"BUILTIN_{code}")


def tensor_type_name(code: int) -> str:
    return _enum_names("TensorType").get(code, f"TYPE_{code}")


def builtin_code(name: str) -> int:
    return int(getattr(schema().BuiltinOperator, name))


def tensor_type(name: str) -> int:
    return int(getattr(schema().TensorType, name))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a .tflite file, refusing what is clearly not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such model file: {path}")
    data = path.read_bytes()
    check_identifier(data, str(path))
    return data


def check_identifier(data: bytes, what: str = "model") -> None:
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise InputError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier)")


def parse(data: bytes, what: str = "model") -> Any:
    """A mutable ``ModelT`` object tree; truncated or corrupted buffers give an InputError."""
    check_identifier(data, what)
    try:
        return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception:  # the generated reader raises anything from struct.error to IndexError
        raise InputError(f"{what} is a damaged TFLite flatbuffer (truncated or corrupted)") from None


def serialize(model: Any) -> bytes:
    """Pack a ``ModelT`` back into flatbuffer bytes (deterministic for the same object tree)."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def opcode_index(model: Any, op_name: str, version: int = 1) -> int:
    """Index of builtin ``op_name`` in the model's operator-code table, appended when absent; an existing entry's
    version is raised to ``version`` (the op's features the caller uses need it)."""
    code = builtin_code(op_name)
    for i, existing in enumerate(model.operatorCodes):
        if max(int(existing.builtinCode), int(existing.deprecatedBuiltinCode)) == code:
            existing.version = max(int(existing.version), version)
            return i
    new = schema().OperatorCodeT()
    new.builtinCode = code
    new.deprecatedBuiltinCode = min(code, 127)  # the legacy int8 field saturates at 127 (PLACEHOLDER)
    new.version = version
    model.operatorCodes.append(new)
    return len(model.operatorCodes) - 1


def op_type(model: Any, op: Any) -> str:
    """BuiltinOperator name of ``op`` (or ``CUSTOM:<code>`` for custom ops)."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == builtin_code("CUSTOM"):
        custom = code.customCode.decode(errors="replace") if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return builtin_op_name(builtin)


def tensor_name(tensor: Any) -> str:
    name = tensor.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def is_constant(model: Any, tensor: Any) -> bool:
    """A tensor backed by data in the model (weights, biases, constant operands)."""
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    if buffer is None:
        return False
    return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))


#: A tensor of the model: (subgraph index, tensor index in that subgraph). Subgraph 0 is the main graph.
TensorKey = tuple[int, int]

#: Tensor types that hold floating-point (or complex) values: a full-integer model has none of them in its graph.
FLOAT_TYPE_NAMES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128",
                              "FLOAT8_E4M3FN", "FLOAT8_E5M2"})

#: Ops that run other subgraphs, and the option fields that name them.
CALLED_SUBGRAPH_FIELDS: dict[str, tuple[str, ...]] = {
    "WHILE": ("condSubgraphIndex", "bodySubgraphIndex"),
    "IF": ("thenSubgraphIndex", "elseSubgraphIndex"),
    "CALL_ONCE": ("initSubgraphIndex",),
    "CALL": ("subgraph",),
}


def is_float_type(code: int) -> bool:
    return tensor_type_name(code) in FLOAT_TYPE_NAMES


def subgraph_name(model: Any, index: int) -> str:
    name = model.subgraphs[index].name
    return _text(name) if name else ""


def describe_subgraph(model: Any, index: int) -> str:
    """``subgraph 2 'while_body'`` (or just ``subgraph 2`` when it has no name)."""
    name = subgraph_name(model, index)
    return f"subgraph {index} '{name}'" if name else f"subgraph {index}"


def called_subgraphs(model: Any, op: Any) -> list[int]:
    """Indices of the subgraphs ``op`` runs (WHILE's cond and body, IF's branches, ...); empty for plain ops."""
    fields = CALLED_SUBGRAPH_FIELDS.get(op_type(model, op), ())
    options = op.builtinOptions
    return [int(getattr(options, f)) for f in fields] if options is not None else []


def set_called_subgraphs(model: Any, op: Any, mapping: dict[int, int]) -> None:
    """Renumber the subgraphs ``op`` runs through ``mapping`` (old index -> new index)."""
    fields = CALLED_SUBGRAPH_FIELDS.get(op_type(model, op), ())
    for field_name in fields:
        setattr(op.builtinOptions, field_name, mapping[int(getattr(op.builtinOptions, field_name))])


def reachable_subgraphs(model: Any) -> list[int]:
    """Subgraph 0 and every subgraph it runs, directly or through other subgraphs, in index order."""
    seen, todo = {0}, [0]
    while todo:
        graph = model.subgraphs[todo.pop()]
        for op in graph.operators or []:
            for index in called_subgraphs(model, op):
                if 0 <= index < len(model.subgraphs) and index not in seen:
                    seen.add(index)
                    todo.append(index)
    return sorted(seen)


def producers(model: Any) -> dict[TensorKey, str]:
    """The op type that computes each tensor: ``INPUT`` for model inputs, ``ARGUMENT`` for the inputs of a
    subgraph another op runs (a loop body's carried values, a branch's operands)."""
    found: dict[TensorKey, str] = {}
    for g, graph in enumerate(model.subgraphs):
        for index in graph.inputs if graph.inputs is not None else []:
            found[(g, int(index))] = "INPUT" if g == 0 else "ARGUMENT"
        for op in graph.operators or []:
            kind = op_type(model, op)
            for out in op.outputs if op.outputs is not None else []:
                found[(g, int(out))] = kind
    return found


@dataclass(frozen=True)
class ActivationTensor:
    """A float, non-constant tensor: what calibration measures. ``subgraph`` 0 is the main graph."""

    index: int
    name: str
    shape: tuple[int, ...]
    subgraph: int = 0

    @property
    def key(self) -> TensorKey:
        return (self.subgraph, self.index)


def computed_tensors(graph: Any) -> list[int]:
    """Indices of a subgraph's tensors that exist at run time: its inputs and every op's outputs, sorted."""
    found = {int(i) for i in (graph.inputs if graph.inputs is not None else [])}
    for op in graph.operators or []:
        found.update(int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0)
    return sorted(found)


def float_activations(model: Any) -> list[ActivationTensor]:
    """Float32 tensors computed at run time (inputs, intermediates, outputs) in every subgraph the main graph
    runs (loop bodies and conditions, branches), ordered by (subgraph, tensor)."""
    float32 = tensor_type("FLOAT32")
    found = []
    for g in reachable_subgraphs(model):
        graph = model.subgraphs[g]
        for index in computed_tensors(graph):
            tensor = graph.tensors[index]
            if tensor.type == float32 and not is_constant(model, tensor):
                shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
                found.append(ActivationTensor(index=index, name=tensor_name(tensor), shape=shape, subgraph=g))
    return found


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: named entry point mapping input/output names to tensor indices of a subgraph."""

    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


def signatures(model: Any) -> list[Signature]:
    """The model's signatures (empty for models exported without any)."""
    found = []
    for sig in model.signatureDefs or []:
        found.append(Signature(
            key=_text(sig.signatureKey), subgraph=int(sig.subgraphIndex),
            inputs={_text(m.name): int(m.tensorIndex) for m in sig.inputs or []},
            outputs={_text(m.name): int(m.tensorIndex) for m in sig.outputs or []},
        ))
    return found


def buffer_span(data: bytes, index: int) -> tuple[int, int] | None:
    """(byte offset, length) of buffer ``index``'s data inside the serialized model, or None when the buffer keeps
    its data outside the flatbuffer (or has none): lets a caller swap a constant's values without reserializing."""
    buffer = schema().Model.GetRootAs(data, 0).Buffers(index)
    if buffer is None:
        return None
    table = buffer._tab
    field_offset = table.Offset(4)  # Buffer.data, the table's first field
    if not field_offset:
        return None
    start, length = table.Vector(field_offset), table.VectorLen(field_offset)
    return (start, length) if length else None


def add_tensor(model: Any, graph: Any, name: str, shape: Sequence[int], type_name: str = "FLOAT32",
               values: np.ndarray | None = None) -> int:
    """Append a tensor to ``graph`` (its own buffer holding ``values`` when given, else none: computed at run
    time) and return its index: the one way edgeq's float-graph rewrites add tensors."""
    tensor = schema().TensorT()
    tensor.shape = np.asarray(list(shape), dtype=np.int32)
    tensor.type = tensor_type(type_name)
    tensor.name = name
    tensor.buffer = 0
    if values is not None:
        buffer = schema().BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), dtype=np.uint8).copy()
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


#: Ops whose results depend on earlier invocations (resource variables) or on how often the model ran (random).
STATEFUL_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "RANDOM_UNIFORM",
                "RANDOM_STANDARD_NORMAL", "MULTINOMIAL")


def stateful_reason(model: Any) -> str | None:
    """Why one invocation's results can depend on the invocations before it (a variable tensor, a resource
    variable, a random op), or None. Such a model cannot be cut into shards run by separate interpreters."""
    for g in reachable_subgraphs(model):
        graph = model.subgraphs[g]
        for tensor in graph.tensors or []:
            if getattr(tensor, "isVariable", False):
                return f"tensor '{tensor_name(tensor)}' is a variable (state kept between invocations)"
        for op in graph.operators or []:
            kind = op_type(model, op)
            if kind in STATEFUL_OPS:
                return f"it runs {kind}"
    return None


def constant_derived(parsed: Any) -> list[int]:
    """Tensors of the main graph that ops compute from constants alone (transitively), in op order: the same at
    every inference (DEQUANTIZE of int8 or float16 weights, DENSIFY), and never written by XNNPACK, which packs
    such ops as static weights."""
    graph = parsed.subgraphs[0]
    constant = {i for i, tensor in enumerate(graph.tensors or []) if is_constant(parsed, tensor)}
    found = []
    for op in graph.operators or []:
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        if inputs and all(i in constant for i in inputs):
            outputs = [int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            constant.update(outputs)
            found.extend(outputs)
    return found
