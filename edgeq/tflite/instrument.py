"""Instrument a .tflite model: per-inference min and max of its activations as extra outputs.

For each chosen activation tensor of the main graph, a builtin REDUCE_MIN and REDUCE_MAX over all axes
(a constant axis tensor, ``keep_dims`` false) is inserted right after the op that computes the tensor, and
their scalar results are appended to the graph's outputs, after the original ones (whose order and indices
do not change). Float models are instrumented on their float32 activations; full-integer models on their
int8 activations, the reductions carrying the tensor's own quantization, so the recorded values are in the
tensor's quantized domain (the sidecar keeps scale and zero point to dequantize them). A SignatureDef gets
the new outputs as ``edgeq_min/<tensor>`` / ``edgeq_max/<tensor>``, and TFLite Metadata that lists the
outputs gets one entry per new output, so the two stay the same length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgeq.artifacts import Artifact
from edgeq.errors import InputError
from edgeq.tflite import metadata as md
from edgeq.tflite import model as tfl

STATISTICS = ("min", "max")
_OPS = {"min": "REDUCE_MIN", "max": "REDUCE_MAX"}
_TYPES = {"FLOAT32": "float32", "INT8": "int8"}
OUTPUT_PREFIX = "edgeq_"


@dataclass(frozen=True)
class InstrumentedTensor:
    """An activation that can be instrumented: its index in the main graph, dtype and quantization."""

    index: int
    name: str
    dtype: str  # float32 or int8
    rank: int
    scale: float | None = None  # int8: the tensor's quantization (per-tensor)
    zero_point: int | None = None


@dataclass(frozen=True)
class ExtraOutput:
    """One output the instrumentation added."""

    output_index: int  # position among the model's outputs (after the original ones)
    name: str  # edgeq_min/<tensor>: the SignatureDef output name and the output tensor's name
    tensor: str  # the activation tensor it summarizes
    tensor_index: int  # that tensor's index in the main graph
    statistic: str  # min or max
    dtype: str  # float32, or int8 (quantized: value = scale * (q - zero_point))
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class InstrumentSidecar(Artifact):
    """The sidecar beside an instrumented model: which extra output holds what."""

    kind: ClassVar[str] = "instrumented_model"
    path: str  # the instrumented model
    sha256: str  # of the instrumented model
    source: str
    source_sha256: str
    original_outputs: int  # outputs 0 .. original_outputs-1 are the model's own, unchanged
    outputs: tuple[ExtraOutput, ...]
    tool_versions: dict[str, str]


def _quantization(tensor: Any) -> tuple[float, int] | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    zero = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
    return float(q.scale[0]), int(zero[0])


def activation_tensors(model: Any) -> list[InstrumentedTensor]:
    """The main graph's instrumentable activations (inputs and op outputs, not constants nor tensors computed from
    constants alone), in tensor order: the
    float32 ones and the per-tensor quantized int8 ones (an INT8 model with float inputs/outputs has both)."""
    graph = model.subgraphs[0]
    found: list[InstrumentedTensor] = []
    constant = set(tfl.constant_derived(model))  # the same every inference (dequantized weights): nothing to log
    for index in tfl.computed_tensors(graph):
        tensor = graph.tensors[index]
        dtype = _TYPES.get(tfl.tensor_type_name(int(tensor.type)))
        if dtype is None or tfl.is_constant(model, tensor) or index in constant:
            continue
        rank = len(tensor.shape) if tensor.shape is not None else 0
        if dtype == "int8":
            quant = _quantization(tensor)
            if quant is None:
                continue
            found.append(InstrumentedTensor(index, tfl.tensor_name(tensor), dtype, rank, *quant))
        else:
            found.append(InstrumentedTensor(index, tfl.tensor_name(tensor), dtype, rank))
    if not found:
        raise InputError("the model has no float32 or per-tensor int8 activation tensor to instrument")
    return found


def select(tensors: Sequence[InstrumentedTensor], names: Sequence[str] = (),
           pattern: str | None = None) -> list[InstrumentedTensor]:
    """The tensors named in ``names`` and/or whose name matches ``pattern`` (all when neither is given)."""
    if not names and pattern is None:
        return list(tensors)
    by_name = {t.name: t for t in tensors}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputError(f"no activation tensor named {unknown[0]!r} in the model's main graph")
    wanted = set(names)
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise InputError(f"--match {pattern!r} is not a regular expression: {exc}") from None
        matched = {t.name for t in tensors if regex.search(t.name)}
        if not matched:
            raise InputError(f"--match {pattern!r} matches no activation tensor of the model's main graph")
        wanted |= matched
    return [t for t in tensors if t.name in wanted]


def _reduce(model: Any, graph: Any, tensor: InstrumentedTensor, statistic: str, axes: int) -> tuple[Any, int]:
    schema = tfl.schema()
    out = tfl.add_tensor(model, graph, f"{OUTPUT_PREFIX}{statistic}/{tensor.name}", [],
                         "INT8" if tensor.dtype == "int8" else "FLOAT32")
    if tensor.scale is not None:
        quant = schema.QuantizationParametersT()
        quant.scale = np.asarray([tensor.scale], dtype=np.float32)
        quant.zeroPoint = np.asarray([tensor.zero_point], dtype=np.int64)
        graph.tensors[out].quantization = quant
    options = schema.ReducerOptionsT()
    options.keepDims = False
    op = schema.OperatorT()
    op.opcodeIndex = tfl.opcode_index(model, _OPS[statistic], 2 if tensor.dtype == "int8" else 1)
    op.inputs = np.asarray([tensor.index, axes], dtype=np.int32)
    op.outputs = np.asarray([out], dtype=np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
    op.builtinOptions = options
    return op, out


def instrument(data: bytes, tensors: Sequence[InstrumentedTensor]) -> tuple[bytes, list[ExtraOutput]]:
    """``data`` with a min and a max output per tensor in ``tensors`` (from :func:`activation_tensors`)."""
    model = tfl.parse(data)
    graph = model.subgraphs[0]
    original = [int(i) for i in graph.outputs]
    axes: dict[int, int] = {}
    added: dict[int, list[Any]] = {}  # tensor index -> its reduce ops
    extra: list[ExtraOutput] = []
    out_indices: list[int] = []
    for tensor in tensors:
        if tensor.rank not in axes:
            axes[tensor.rank] = tfl.add_tensor(model, graph, f"{OUTPUT_PREFIX}axes/{tensor.rank}", [tensor.rank],
                                               "INT32", np.arange(tensor.rank, dtype=np.int32))
        for statistic in STATISTICS:
            op, out = _reduce(model, graph, tensor, statistic, axes[tensor.rank])
            added.setdefault(tensor.index, []).append(op)
            out_indices.append(out)
            extra.append(ExtraOutput(output_index=len(original) + len(extra), name=tfl.tensor_name(graph.tensors[out]),
                                     tensor=tensor.name, tensor_index=tensor.index, statistic=statistic,
                                     dtype=tensor.dtype, scale=tensor.scale, zero_point=tensor.zero_point))
    # Each reduction right after the op computing its tensor (model inputs: first), so the memory planner can
    # free the activation as early as before.
    ops = [op for i in (graph.inputs if graph.inputs is not None else []) for op in added.pop(int(i), [])]
    for op in graph.operators or []:
        ops.append(op)
        for out in op.outputs if op.outputs is not None else []:
            ops.extend(added.pop(int(out), []))
    graph.operators = ops
    graph.outputs = np.asarray(original + out_indices, dtype=np.int32)
    _extend_signatures(model, extra, out_indices)
    result = tfl.serialize(model)
    metadata = md.read_metadata(data)
    if metadata is not None:
        result = md.write_metadata(result, _extend_metadata(metadata, len(original), extra),
                                   associated=md._associated_archive(data))
    return result, extra


def _extend_signatures(model: Any, extra: Sequence[ExtraOutput], out_indices: Sequence[int]) -> None:
    for signature in model.signatureDefs or []:
        if int(signature.subgraphIndex) != 0:
            continue
        outputs = list(signature.outputs or [])
        for output, index in zip(extra, out_indices, strict=True):
            entry = tfl.schema().TensorMapT()
            entry.name, entry.tensorIndex = output.name, index
            outputs.append(entry)
        signature.outputs = outputs


def _extend_metadata(metadata: dict[str, Any], original: int, extra: Sequence[ExtraOutput]) -> dict[str, Any]:
    """Metadata whose main subgraph lists the original outputs gets one entry per added output (readers such as
    the Task Library check that the counts agree); metadata that does not list outputs is left as it is."""
    subgraphs = metadata.get("subgraph_metadata") or []
    if not subgraphs or len(subgraphs[0].get("output_tensor_metadata") or []) != original:
        return metadata
    entries = [{"name": o.name, "description": f"edgeq instrumentation: per-inference {o.statistic} of {o.tensor}"
                + (f" (int8, scale {o.scale:g}, zero point {o.zero_point})" if o.dtype == "int8" else "")}
               for o in extra]
    first = {**subgraphs[0], "output_tensor_metadata": [*subgraphs[0]["output_tensor_metadata"], *entries]}
    return {**metadata, "subgraph_metadata": [first, *subgraphs[1:]]}


def _run(model: bytes, kernels: str, inputs: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels(kernels))
    results = []
    for sample in inputs:
        for detail, array in zip(interpreter.get_input_details(), sample, strict=True):
            interpreter.set_tensor(int(detail["index"]), array)
        interpreter.invoke()
        results.append([np.array(interpreter.get_tensor(int(d["index"]))) for d in interpreter.get_output_details()])
    return results


def verify(plain: bytes, instrumented: bytes, extra: Sequence[ExtraOutput], samples: int = 3,
           kernels: Sequence[str] = ("xnnpack", "cpu")) -> None:
    """Run both models on ``samples`` seeded random inputs with each kernel set: InputError unless the original
    outputs are bit-identical and the instrumented model has exactly the extra outputs, each a scalar."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter, seeded_inputs

    interpreter, _ = make_interpreter(plain, CpuKernels.CPU)
    specs = [(tuple(int(d) for d in i["shape"]), np.dtype(i["dtype"])) for i in interpreter.get_input_details()]
    inputs = [seeded_inputs(specs, seed) for seed in range(samples)]
    for kind in kernels:
        for i, (want, got) in enumerate(zip(_run(plain, kind, inputs), _run(instrumented, kind, inputs), strict=True)):
            if len(got) != len(want) + len(extra):
                raise InputError(f"the instrumented model has {len(got)} outputs on {kind}, expected "
                                 f"{len(want)} + {len(extra)}; not written")
            for k, (a, b) in enumerate(zip(want, got, strict=False)):
                if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                    raise InputError(f"instrumenting changed original output {k} on {kind} (input {i}); not written")
            if any(np.shape(v) != () for v in got[len(want):]):
                raise InputError(f"an instrumentation output is not a scalar on {kind}; not written")
