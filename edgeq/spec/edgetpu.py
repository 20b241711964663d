"""Edge TPU deployability: which ops ``edgetpu_compiler`` would map, predicted from Coral's op table.

The table and its limitation predicates are in ``edgetpu_ops.py``. Coral's rule on partitioning:
the compiler maps ops only up to the first unsupported one; that op and every op after it run on
the CPU, even supported ones. ``predict_partition`` applies that rule in execution order and
``edgetpu_findings`` says what splits the graph and what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeq.artifacts import Finding, Severity
from edgeq.errors import InputError
from edgeq.spec.edgetpu_ops import _CHECKS, CONSTANT_TYPES, EDGETPU_OPS, EIGHT_BIT, _ints, _operand, _shape
from edgeq.tflite import model as tfl


@dataclass(frozen=True)
class OpPlacement:
    """Where one op is predicted to run, and why."""

    index: int
    op_type: str
    on_tpu: bool
    reason: str
    rule_id: str | None = None  # the edgetpu.* rule that put it on the CPU (None on the TPU)


@dataclass(frozen=True)
class PartitionPrediction:
    """The predicted split of subgraph 0 between the Edge TPU and the CPU, in execution order."""

    placements: tuple[OpPlacement, ...]
    first_unsupported: int | None  # index of the op that ends the Edge TPU segment
    tpu_ops: int
    cpu_ops: int


@dataclass(frozen=True)
class _Problem:
    rule_id: str
    message: str
    tensor: str | None = None
    expected: str | None = None
    actual: str | None = None


# --- per-op analysis --------------------------------------------------------------------------------------------

def _graph_io(graph: Any) -> tuple[set[int], set[int]]:
    return set(_ints(graph.inputs)), set(_ints(graph.outputs))


def _boundary_conversion(model: Any, graph: Any, op: Any, kind: str) -> str | None:
    """Why ``op`` is a float<->8-bit conversion at the model boundary, or None.

    Decision: a QUANTIZE reading a float32 model input, or a DEQUANTIZE writing a float32 model
    output, runs on the CPU but does not split the graph. Recorded compiler logs show exactly that
    (the input QUANTIZE "otherwise supported, but not mapped", the output DEQUANTIZE "working on an
    unsupported data type", and every op between them still "Mapped to Edge TPU" in one subgraph).
    """
    inputs, outputs = _graph_io(graph)
    ins, outs = [i for i in _ints(op.inputs) if i >= 0], _ints(op.outputs)
    if len(ins) != 1 or len(outs) != 1:
        return None
    src, dst = (tfl.tensor_type_name(graph.tensors[i].type) for i in (ins[0], outs[0]))
    conversion = f"{kind} {src.lower()} -> {dst.lower()} runs on the CPU without splitting the graph"
    if kind == "QUANTIZE" and src == "FLOAT32" and dst in EIGHT_BIT and ins[0] in inputs:
        return f"float input boundary: {conversion}"
    if kind == "DEQUANTIZE" and src in EIGHT_BIT and dst == "FLOAT32" and outs[0] in outputs:
        return f"float output boundary: {conversion}"
    return None


def _op_problems(model: Any, graph: Any, op: Any, kind: str) -> list[_Problem]:
    """Everything that keeps ``op`` off the Edge TPU by itself (empty: it can be mapped)."""
    entry = EDGETPU_OPS.get(kind)
    if entry is None:
        what = "a custom op" if kind.startswith("CUSTOM:") else "not in Coral's supported-op table"
        if kind == "CUSTOM:edgetpu-custom-op":
            what = "already compiled for the Edge TPU (predict on the model before edgetpu_compiler)"
        return [_Problem("edgetpu.unsupported-op", f"{kind} is {what}", expected="an op in Coral's table",
                         actual=kind)]
    problems: list[_Problem] = []
    inputs = _ints(op.inputs)
    parameters = {inputs[k] for k in entry.const_inputs if k < len(inputs) and inputs[k] >= 0}
    for tensor_index in dict.fromkeys(i for i in [*inputs, *_ints(op.outputs)] if i >= 0):
        tensor = graph.tensors[tensor_index]
        name, type_name = tfl.tensor_name(tensor), tfl.tensor_type_name(tensor.type)
        constant = tfl.is_constant(model, tensor)
        allowed = CONSTANT_TYPES if constant else EIGHT_BIT
        # A parameter computed at run time is reported as such below, not also as a non-8-bit tensor.
        if type_name not in allowed and not (tensor_index in parameters and not constant):
            role = "constant" if constant else "tensor"
            problems.append(_Problem("edgetpu.not-8bit", f"{role} '{name}' is {type_name.lower()}, not 8-bit",
                                     name, "/".join(sorted(t.lower() for t in allowed)), type_name.lower()))
        signature = _ints(tensor.shapeSignature)
        if any(d < 0 for d in signature):
            problems.append(_Problem("edgetpu.dynamic-shape", f"tensor '{name}' has a dynamic shape {signature}",
                                     name, "static shape", str(signature)))
        shape = _shape(tensor)
        if not constant and len(shape) > 3 and any(d != 1 for d in shape[:-3]):
            problems.append(_Problem("edgetpu.rank", f"tensor '{name}' {shape} has more than the 3 innermost "
                                     "dimensions larger than 1", name, "at most 3 innermost dims > 1", str(shape)))
    for position in entry.const_inputs:
        tensor = _operand(graph, op, position)
        if tensor is not None and not tfl.is_constant(model, tensor):
            name = tfl.tensor_name(tensor)
            problems.append(_Problem("edgetpu.non-constant-parameter", f"parameter '{name}' (operand {position}) is "
                                     "computed at run time; model parameters must be compile-time constants",
                                     name, "constant", "computed"))
    for check in entry.checks:
        why = _CHECKS[check](model, graph, op)
        if why:
            problems.append(_Problem("edgetpu.limitation", f"{entry.coral_name} {why}", None,
                                     entry.limitations, why))
    return problems


@dataclass(frozen=True)
class _Analysis:
    prediction: PartitionPrediction
    problems: dict[int, list[_Problem]]
    quantized: bool


def _is_quantized(model: Any, graph: Any) -> bool:
    return any(tfl.tensor_type_name(t.type) in EIGHT_BIT for t in graph.tensors or [])


def _analyse(model: Any) -> _Analysis:
    if not model.subgraphs:
        raise InputError("model has no subgraphs")
    graph = model.subgraphs[0]
    quantized = _is_quantized(model, graph)
    placements: list[OpPlacement] = []
    problems: dict[int, list[_Problem]] = {}
    first: int | None = None
    for index, op in enumerate(graph.operators or []):
        kind = tfl.op_type(model, op)
        if not quantized:
            reason = "model is not quantized: the Edge TPU runs only 8-bit (int8/uint8) models"
            placements.append(OpPlacement(index, kind, False, reason, "edgetpu.not-quantized"))
            first = 0 if first is None else first
            continue
        boundary = _boundary_conversion(model, graph, op, kind) if kind in ("QUANTIZE", "DEQUANTIZE") else None
        if boundary is not None:
            placements.append(OpPlacement(index, kind, False, boundary, "edgetpu.float-boundary"))
            continue
        own = _op_problems(model, graph, op, kind)
        if own:
            problems[index] = own
        if first is not None:
            reason = f"after first unsupported op {first} ({placements[first].op_type})"
            if own:
                reason += "; also " + "; ".join(p.message for p in own)
            placements.append(OpPlacement(index, kind, False, reason, "edgetpu.cpu-fallback"))
        elif own:
            first = index
            placements.append(OpPlacement(index, kind, False, "; ".join(p.message for p in own), own[0].rule_id))
        else:
            note = EDGETPU_OPS[kind].note
            reason = "supported" + (f" (unchecked: {note})" if note else "")
            placements.append(OpPlacement(index, kind, True, reason))
    tpu = sum(p.on_tpu for p in placements)
    prediction = PartitionPrediction(tuple(placements), first, tpu, len(placements) - tpu)
    return _Analysis(prediction, problems, quantized)


def predict_partition(model: Any) -> PartitionPrediction:
    """Predict which ops of subgraph 0 ``edgetpu_compiler`` maps to the Edge TPU.

    Walks ops in execution order; an op maps only if it and every op before it can (float
    boundary conversions excepted, see ``_boundary_conversion``). The real compiler follows the
    graph rather than the list, so a branch independent of the unsupported op may still map:
    this prediction is the conservative reading of Coral's rule.
    """
    return _analyse(model).prediction


_TENSOR_RULES = frozenset({"edgetpu.not-8bit", "edgetpu.dynamic-shape", "edgetpu.rank"})


def edgetpu_findings(model: Any) -> list[Finding]:
    """Deployability findings for the Edge TPU: what splits the graph, and what it costs."""
    analysis = _analyse(model)
    prediction = analysis.prediction
    if not analysis.quantized:
        return [Finding("edgetpu.not-quantized", Severity.ERROR,
                        f"model has no int8/uint8 tensors: all {len(prediction.placements)} ops run on the CPU; "
                        "the Edge TPU needs a fully 8-bit quantized model", expected="int8/uint8", actual="float")]
    findings: list[Finding] = []
    first = prediction.first_unsupported
    reported: set[tuple[str, str]] = set()  # a bad tensor is named once, at the first op that touches it
    for placement in prediction.placements:
        if placement.rule_id == "edgetpu.float-boundary":
            findings.append(Finding("edgetpu.float-boundary", Severity.INFO,
                                    f"op {placement.index}: {placement.reason}", placement.index, placement.op_type))
        for problem in analysis.problems.get(placement.index, []):
            if problem.tensor is not None and problem.rule_id in _TENSOR_RULES:
                if (problem.rule_id, problem.tensor) in reported:
                    continue
                reported.add((problem.rule_id, problem.tensor))
            if placement.index == first:
                severity = Severity.ERROR
                message = (f"op {placement.index} ({placement.op_type}) is the first op the Edge TPU cannot run: "
                           f"{problem.message}; it and every op after it run on the CPU")
            else:
                severity = Severity.WARNING
                message = (f"op {placement.index} ({placement.op_type}) also cannot run on the Edge TPU: "
                           f"{problem.message}")
            findings.append(Finding(problem.rule_id, severity, message, placement.index, placement.op_type,
                                    problem.tensor, problem.expected, problem.actual))
    if first is not None:
        after = [p for p in prediction.placements[first + 1:] if p.rule_id == "edgetpu.cpu-fallback"]
        supported = sum(1 for p in after if p.index not in analysis.problems)
        findings.append(Finding(
            "edgetpu.cpu-fallback", Severity.WARNING,
            f"op {first} ({prediction.placements[first].op_type}) ends the Edge TPU segment: {len(after)} later "
            f"op(s) run on the CPU, {supported} of them otherwise supported; {prediction.tpu_ops} of "
            f"{len(prediction.placements)} ops stay on the Edge TPU",
            first, prediction.placements[first].op_type, expected="0 ops on the CPU after the Edge TPU segment",
            actual=str(len(after))))
    noted = {p.op_type for p in prediction.placements if p.on_tpu and EDGETPU_OPS[p.op_type].note}
    for kind in sorted(noted):
        findings.append(Finding("edgetpu.unchecked-limitation", Severity.INFO,
                                f"{kind} is predicted on the Edge TPU, but not everything is checkable here: "
                                f"{EDGETPU_OPS[kind].note}", op_type=kind))
    return findings
