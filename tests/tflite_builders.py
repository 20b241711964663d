"""Small .tflite fixtures built with the flatbuffer object API: sparse encodings, DENSIFY models.

A reference sparse *encoder* lives here (the slow, obvious one: walk the expanded tensor in traversal order,
keep CSR runs of the coordinates that hold a non-zero); LiteRT's DENSIFY kernel is the oracle that decodes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.tflite import model as tfl

NUMPY_OF = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8}


def _index_vector(values: Sequence[int], kind: str) -> tuple[int, Any]:
    S = tfl.schema()  # noqa: N806
    cls, dtype = {"int32": (S.Int32VectorT, np.int32), "uint16": (S.Uint16VectorT, np.uint16),
                  "uint8": (S.Uint8VectorT, np.uint8)}[kind]
    vector = cls()
    vector.values = np.asarray(values, dtype=dtype)
    union = {"int32": S.SparseIndexVector.Int32Vector, "uint16": S.SparseIndexVector.Uint16Vector,
             "uint8": S.SparseIndexVector.Uint8Vector}[kind]
    return union, vector


def encode_sparse(dense: np.ndarray, order: Sequence[int], block_map: Sequence[int] = (),
                  block_size: Sequence[int] = (), formats: Sequence[int] | None = None,
                  index_type: str = "int32") -> tuple[Any, np.ndarray]:
    """(SparsityParametersT, stored values) of ``dense``; ``formats`` per traversal level (1 = SPARSE_CSR)."""
    S = tfl.schema()  # noqa: N806
    n, k = dense.ndim, len(block_map)
    formats = list(formats) if formats is not None else [0] * (n - 1) + [1] + [0] * k
    grid = list(dense.shape)
    for j, dim in enumerate(block_map):
        grid[dim] //= block_size[j]
    expanded_shape = grid + list(block_size)
    expanded = np.empty(expanded_shape, dtype=dense.dtype)
    for idx in np.ndindex(*expanded_shape):
        original = list(idx[:n])
        for j, dim in enumerate(block_map):
            original[dim] = original[dim] * block_size[j] + idx[n + j]
        expanded[idx] = dense[tuple(original)]
    traversed = np.transpose(expanded, list(order))
    segments: list[list[int]] = [[0] for _ in order]
    indices: list[list[int]] = [[] for _ in order]
    values: list[Any] = []

    def walk(level: int, sub: np.ndarray) -> None:
        if level == len(order):
            values.append(sub)
            return
        for i in range(traversed.shape[level]):
            child = sub[i]
            if formats[level] == 1:
                if not np.any(child != 0):
                    continue
                indices[level].append(i)
            walk(level + 1, child)
        if formats[level] == 1:
            segments[level].append(len(indices[level]))

    walk(0, traversed)
    sparsity = S.SparsityParametersT()
    sparsity.traversalOrder = np.asarray(order, np.int32)
    sparsity.blockMap = np.asarray(block_map, np.int32) if k else None
    sparsity.dimMetadata = []
    for level, fmt in enumerate(formats):
        meta = S.DimensionMetadataT()
        meta.format = fmt
        if fmt == 0:
            meta.denseSize = traversed.shape[level]
        else:
            meta.arraySegmentsType, meta.arraySegments = _index_vector(segments[level], index_type)
            meta.arrayIndicesType, meta.arrayIndices = _index_vector(indices[level], index_type)
        sparsity.dimMetadata.append(meta)
    return sparsity, np.asarray(values, dtype=dense.dtype)


def _buffer(data: np.ndarray | None) -> Any:
    buffer = tfl.schema().BufferT()
    if data is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8).copy()
    return buffer


class GraphBuilder:
    """Append tensors and ops to one subgraph of a new model; ``build()`` returns the flatbuffer bytes."""

    def __init__(self) -> None:
        S = tfl.schema()  # noqa: N806
        self.model = S.ModelT()
        self.model.version = 3
        self.model.operatorCodes, self.model.buffers = [], [_buffer(None)]
        self.graph = S.SubGraphT()
        self.graph.tensors, self.graph.operators, self.graph.name = [], [], "main"

    def tensor(self, name: str, shape: Sequence[int], type_name: str, data: np.ndarray | None = None,
               sparsity: Any = None) -> int:
        tensor = tfl.schema().TensorT()
        tensor.name, tensor.shape, tensor.type = name, np.asarray(shape, np.int32), tfl.tensor_type(type_name)
        self.model.buffers.append(_buffer(data))
        tensor.buffer = len(self.model.buffers) - 1
        tensor.sparsity = sparsity
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def op(self, kind: str, inputs: Sequence[int], outputs: Sequence[int], options: Any = None,
           version: int = 1) -> None:
        S = tfl.schema()  # noqa: N806
        code = tfl.builtin_code(kind)
        index = next((i for i, c in enumerate(self.model.operatorCodes) if c.builtinCode == code), None)
        if index is None:
            entry = S.OperatorCodeT()
            entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), version
            self.model.operatorCodes.append(entry)
            index = len(self.model.operatorCodes) - 1
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        if options is not None:
            op.builtinOptionsType = getattr(S.BuiltinOptions, type(options).__name__.removesuffix("T"))
            op.builtinOptions = options
        self.graph.operators.append(op)

    def custom_op(self, name: str, inputs: Sequence[int], outputs: Sequence[int], options: bytes = b"") -> None:
        S = tfl.schema()  # noqa: N806
        index = next((i for i, c in enumerate(self.model.operatorCodes) if c.customCode in (name, name.encode())),
                     None)
        if index is None:
            entry = S.OperatorCodeT()
            code = tfl.builtin_code("CUSTOM")
            entry.builtinCode, entry.deprecatedBuiltinCode, entry.customCode, entry.version = code, code, name, 1
            self.model.operatorCodes.append(entry)
            index = len(self.model.operatorCodes) - 1
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        op.customOptions = np.frombuffer(options, dtype=np.uint8).copy() if options else None
        self.graph.operators.append(op)

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        self.graph.inputs, self.graph.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        self.model.subgraphs = [self.graph]
        return tfl.serialize(self.model)


def densify_model(shape: Sequence[int], type_name: str, sparsity: Any, values: np.ndarray) -> bytes:
    """A model with no input whose one op, DENSIFY, turns the sparse constant into its output."""
    builder = GraphBuilder()
    sparse = builder.tensor("sparse", shape, type_name, values.astype(values.dtype.newbyteorder("<")), sparsity)
    dense = builder.tensor("dense", shape, type_name)
    builder.op("DENSIFY", [sparse], [dense])
    return builder.build([], [dense])


def sparse_float16_conv_model(seed: int = 0, channels: int = 8, density: float = 0.3) -> tuple[bytes, np.ndarray]:
    """input (1, 12, 12, 3) -> CONV_2D 3x3 whose float16 weights are sparse behind DENSIFY -> DEQUANTIZE,
    and whose float16 bias is a plain constant behind DEQUANTIZE -> RELU -> output. Returns (model, weights)."""
    S = tfl.schema()  # noqa: N806
    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(channels, 3, 3, 3)) * (rng.random((channels, 3, 3, 3)) < density)).astype(np.float16)
    bias = (rng.normal(size=channels) * 0.1).astype(np.float16)
    sparsity, stored = encode_sparse(weights, order=[0, 1, 2, 3], formats=[0, 0, 0, 1], index_type="uint8")
    builder = GraphBuilder()
    x = builder.tensor("input", [1, 12, 12, 3], "FLOAT32")
    w_sparse = builder.tensor("conv/weights_sparse_fp16", weights.shape, "FLOAT16", stored, sparsity)
    w_fp16 = builder.tensor("conv/weights_fp16", weights.shape, "FLOAT16")
    w = builder.tensor("conv/weights", weights.shape, "FLOAT32")
    b_fp16 = builder.tensor("conv/bias_fp16", [channels], "FLOAT16", bias)
    b = builder.tensor("conv/bias", [channels], "FLOAT32")
    y = builder.tensor("conv/output", [1, 12, 12, channels], "FLOAT32")
    out = builder.tensor("relu", [1, 12, 12, channels], "FLOAT32")
    builder.op("DENSIFY", [w_sparse], [w_fp16])
    builder.op("DEQUANTIZE", [w_fp16], [w], version=3)
    builder.op("DEQUANTIZE", [b_fp16], [b], version=3)
    conv = S.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = S.Padding.SAME, 1, 1
    conv.dilationWFactor = conv.dilationHFactor = 1
    builder.op("CONV_2D", [x, w, b], [y], conv)
    builder.op("RELU", [y], [out])
    return builder.build([x], [out]), weights
