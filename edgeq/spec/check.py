"""The check engine: interpret the spec table and a target profile over one model, produce findings.

Pure Python over the flatbuffer (edgeq.tflite.model); no TensorFlow, no runtime. Every subgraph is checked
(loop bodies and conditions, branches): each finding names its rule id, severity, subgraph, op index and
type, tensor, expected and actual value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.artifacts import Finding, Severity, SpecReport, Target
from edgeq.errors import InputError, UsageError
from edgeq.spec.rules import INDEX_OUTPUT_OPS, INT16X8_BIAS_TYPES, INT16X8_OPS, PROFILES, SPEC, has_int8_kernel
from edgeq.tflite import model as tfl

IO_CHOICES = ("integer", "int8", "uint8", "float32")
BIAS_SCALE_RTOL = 1e-4
SAME_SCALE_RTOL = 1e-5
ZERO_POINT_RANGE = {"INT8": (-128, 127), "UINT8": (0, 255)}

#: Operand index of the activation input, for ops where it is not operand 0 (TRANSPOSE_CONV's inputs are
#: [output_shape, weights, input, bias]). The bias scale rule needs it: bias scale = input scale x weight scale.
ACTIVATION_OPERAND = {"TRANSPOSE_CONV": 2}


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int
    constant: bool

    @property
    def quantized(self) -> bool:
        return self.scales.size > 0


class _View:
    """Validated, decoded access to one subgraph: what the rules need, computed once."""

    def __init__(self, model: Any, index: int) -> None:
        self.model = model
        self.index = index
        self.graph = self.model.subgraphs[index]
        with np.errstate(all="ignore"):  # a damaged file may hold any bit pattern as a scale
            self.tensors = [self._decode(i, t) for i, t in enumerate(self.graph.tensors or [])]
        self.inputs = [int(i) for i in _ints(self.graph.inputs)]
        self.outputs = [int(i) for i in _ints(self.graph.outputs)]
        self.ops = [(i, tfl.op_type(self.model, op), [int(x) for x in _ints(op.inputs)],
                     [int(x) for x in _ints(op.outputs)]) for i, op in enumerate(self.graph.operators or [])]

    def _decode(self, index: int, tensor: Any) -> _Tensor:
        q = tensor.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float64)
        zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        shape = tuple(int(d) for d in _ints(tensor.shape))
        signature = tuple(int(d) for d in _ints(tensor.shapeSignature)) if tensor.shapeSignature is not None else shape
        return _Tensor(index=index, name=tfl.tensor_name(tensor), type=tfl.tensor_type_name(tensor.type), shape=shape,
                       signature=signature, scales=scales, zero_points=zps,
                       axis=int(q.quantizedDimension) if q is not None else 0,
                       constant=tfl.is_constant(self.model, tensor))

    def buffer_of(self, tensor: _Tensor) -> np.ndarray:
        buffer = self.model.buffers[self.graph.tensors[tensor.index].buffer]
        return np.asarray(buffer.data if buffer.data is not None else [], dtype=np.uint8)


def _ints(values: Any) -> Iterable[Any]:
    return [] if values is None else values


def _validate_structure(model: Any) -> None:
    """Every index in range: a damaged file is an input error here, not an IndexError later."""
    if not model.subgraphs:
        raise InputError("the model has no subgraphs")
    n_codes, n_buffers = len(model.operatorCodes or []), len(model.buffers or [])
    for g, graph in enumerate(model.subgraphs):
        n_tensors = len(graph.tensors or [])
        for tensor in graph.tensors or []:
            if not 0 <= tensor.buffer < max(n_buffers, 1):
                raise InputError(f"damaged model: a tensor of subgraph {g} points at missing buffer {tensor.buffer}")
            q = tensor.quantization
            scales, zero_points = (len(_ints(getattr(q, name, None))) for name in ("scale", "zeroPoint"))
            if scales and zero_points != scales:  # LiteRT refuses these too ("Must have same number")
                raise InputError(f"damaged model: tensor '{tfl.tensor_name(tensor)}' of subgraph {g} has {scales} "
                                 f"scales and {zero_points} zero points")
        for index in [*_ints(graph.inputs), *_ints(graph.outputs)]:
            if not 0 <= index < n_tensors:
                raise InputError(f"damaged model: subgraph {g} input/output {index} is not a tensor")
        for i, op in enumerate(graph.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise InputError(f"damaged model: op {i} of subgraph {g} has no operator code")
            for index in [*_ints(op.inputs), *_ints(op.outputs)]:
                if not -1 <= index < n_tensors:
                    raise InputError(f"damaged model: op {i} of subgraph {g} uses missing tensor {index}")
            outputs = list(_ints(op.outputs))
            if not outputs or any(index < 0 for index in outputs):
                raise InputError(f"damaged model: op {i} of subgraph {g} has no output tensor")


def _finding(rule: str, severity: Severity, message: str, op: tuple[int, str] | None = None,
             tensor: _Tensor | None = None, expected: object = None, actual: object = None) -> Finding:
    return Finding(rule_id=rule, severity=severity, message=message, op_index=op[0] if op else None,
                   op_type=op[1] if op else None, tensor=tensor.name if tensor else None,
                   expected=None if expected is None else str(expected), actual=None if actual is None else str(actual))


def _fmt(values: np.ndarray) -> str:
    flat = values.ravel()
    text = ", ".join(f"{v:.6g}" for v in flat[:4])
    return f"[{text}{', ...' if flat.size > 4 else ''}]" if flat.size != 1 else text


def _graph_findings(view: _View, io: str) -> Iterator[Finding]:
    """Model I/O rules on the main graph; dynamic shapes in every subgraph."""
    if view.index != 0:
        yield from _dynamic_shape_findings(view)
        return
    allowed = {"integer": {"INT8", "UINT8"}, "int8": {"INT8"}, "uint8": {"UINT8"}, "float32": {"FLOAT32"}}[io]
    for role, indices in (("input", view.inputs), ("output", view.outputs)):
        for index in indices:
            t = view.tensors[index]
            if t.type not in allowed:
                yield _finding("io.type", Severity.ERROR, f"model {role} '{t.name}' is {t.type}", tensor=t,
                               expected=" or ".join(sorted(allowed)), actual=t.type)
    for index in view.inputs:
        t = view.tensors[index]
        if t.constant:
            yield _finding("io.constant-input", Severity.ERROR, f"model input '{t.name}' is backed by constant data",
                           tensor=t, expected="a runtime input", actual="constant buffer")
    yield from _dynamic_shape_findings(view)


def _dynamic_shape_findings(view: _View) -> Iterator[Finding]:
    for t in view.tensors:
        if any(d < 0 for d in t.signature):
            yield _finding("shape.dynamic", Severity.ERROR, f"tensor '{t.name}' has a dynamic shape", tensor=t,
                           expected="static shape", actual=list(t.signature))


def _int16_findings(op: tuple[int, str], t: _Tensor) -> Iterator[Finding]:
    """LiteRT's int16x8 kernels take symmetric int16 activations: one scale, zero point 0."""
    if not t.quantized:
        yield _finding("activation.unquantized", Severity.ERROR, f"INT16 tensor '{t.name}' has no scale", op, t,
                       "scale and zero point 0", "none")
        return
    if t.scales.size != 1:
        yield _finding("activation.per-tensor", Severity.ERROR, f"activation '{t.name}' is quantized per-axis",
                       op, t, "one scale", f"{t.scales.size} scales")
    if t.zero_points.size and np.any(t.zero_points != 0):
        yield _finding("int16.zero-point", Severity.ERROR, f"int16 activation '{t.name}' is not symmetric", op, t,
                       "zero point 0", _fmt(t.zero_points))


def _activation_findings(view: _View, op: tuple[int, str], tensors: list[_Tensor]) -> Iterator[Finding]:
    for t in tensors:
        if not t.constant and t.type == "INT16":
            yield from _int16_findings(op, t)
            continue
        if t.constant or t.type not in ZERO_POINT_RANGE:
            continue
        if not t.quantized:
            yield _finding("activation.unquantized", Severity.ERROR, f"{t.type} tensor '{t.name}' has no scale",
                           op, t, "scale and zero point", "none")
            continue
        if t.scales.size != 1:
            yield _finding("activation.per-tensor", Severity.ERROR, f"activation '{t.name}' is quantized per-axis",
                           op, t, "one scale", f"{t.scales.size} scales")
        low, high = ZERO_POINT_RANGE[t.type]
        if t.zero_points.size and not np.all((t.zero_points >= low) & (t.zero_points <= high)):
            yield _finding("activation.zero-point", Severity.ERROR, f"zero point of '{t.name}' out of range",
                           op, t, f"[{low}, {high}]", _fmt(t.zero_points))


def _weight_findings(view: _View, op: tuple[int, str], inputs: list[int], rule_weights: int,
                     axis: int, per_tensor_ok: bool) -> Iterator[Finding]:
    if rule_weights >= len(inputs) or inputs[rule_weights] < 0:
        return
    w = view.tensors[inputs[rule_weights]]
    if w.type != "INT8":
        yield _finding("weights.dtype", Severity.ERROR, f"weights '{w.name}' are {w.type}", op, w, "INT8", w.type)
        return
    if not w.quantized:
        yield _finding("weights.unquantized", Severity.ERROR, f"weights '{w.name}' have no scale", op, w,
                       "per-axis scales", "none")
        return
    if np.any(w.zero_points != 0):
        yield _finding("weights.zero-point", Severity.ERROR, f"weights '{w.name}' are not symmetric", op, w,
                       "zero point 0", _fmt(w.zero_points[w.zero_points != 0]))
    if w.constant:
        values = view.buffer_of(w).view(np.int8)
        if values.size and int(values.min()) == -128:
            yield _finding("weights.range", Severity.ERROR, f"weights '{w.name}' use -128", op, w,
                           "[-127, 127]", f"min {int(values.min())}")
    channels = w.shape[axis] if axis < len(w.shape) else 1
    if w.scales.size == 1 and channels > 1:
        if per_tensor_ok:
            yield _finding("weights.per-tensor", Severity.INFO, f"weights '{w.name}' are per-tensor (allowed here)",
                           op, w, f"per-axis (dim {axis}) preferred", "per-tensor")
        else:
            yield _finding("weights.per-axis", Severity.ERROR, f"weights '{w.name}' are per-tensor", op, w,
                           f"per-axis on dim {axis} ({channels} scales)", "1 scale")
    elif w.scales.size > 1 and (w.axis != axis or w.scales.size != channels):
        yield _finding("weights.axis", Severity.ERROR, f"weights '{w.name}' are per-axis on the wrong dimension",
                       op, w, f"dim {axis} with {channels} scales", f"dim {w.axis} with {w.scales.size} scales")


def _bias_findings(view: _View, op: tuple[int, str], inputs: list[int], bias_index: int,
                   weights_index: int) -> Iterator[Finding]:
    activation = ACTIVATION_OPERAND.get(op[1], 0)
    if bias_index >= len(inputs) or inputs[bias_index] < 0 or activation >= len(inputs) or inputs[activation] < 0:
        return
    b, w, x = view.tensors[inputs[bias_index]], view.tensors[inputs[weights_index]], view.tensors[inputs[activation]]
    allowed = INT16X8_BIAS_TYPES.get(op[1], frozenset({"INT64"})) if x.type == "INT16" else frozenset({"INT32"})
    if b.type not in allowed:
        kernel = "int16x8 " if x.type == "INT16" else ""
        yield _finding("bias.dtype", Severity.ERROR, f"bias '{b.name}' of {kernel}{op[1]} is {b.type}", op, b,
                       " or ".join(sorted(allowed)), b.type)
        return
    if not (b.quantized and w.quantized and x.quantized):
        return
    if np.any(b.zero_points != 0):
        yield _finding("bias.zero-point", Severity.ERROR, f"bias '{b.name}' has a non-zero zero point", op, b,
                       "0", _fmt(b.zero_points))
    expected = x.scales[0] * w.scales
    actual = b.scales
    if actual.size not in (1, expected.size) or not np.allclose(
            np.broadcast_to(actual, expected.shape), expected, rtol=BIAS_SCALE_RTOL, atol=0):
        yield _finding("bias.scale", Severity.ERROR, f"bias '{b.name}' scale is not input scale x weight scale", op,
                       b, _fmt(expected), _fmt(actual))


def _output_findings(view: _View, op: tuple[int, str], outputs: list[int],
                     fixed: tuple[float, int]) -> Iterator[Finding]:
    if not outputs:
        return
    y = view.tensors[outputs[0]]
    if y.type not in ZERO_POINT_RANGE or not y.quantized:
        return
    scale, zero_point = fixed
    if y.type == "UINT8":
        zero_point += 128
    if not (np.isclose(y.scales[0], scale, rtol=1e-6) and int(y.zero_points[0]) == zero_point):
        yield _finding("output.fixed-params", Severity.ERROR, f"{op[1]} output must have fixed parameters", op, y,
                       f"scale {scale:.6g}, zero point {zero_point}",
                       f"scale {y.scales[0]:.6g}, zero point {int(y.zero_points[0])}")


def _same_scale_findings(view: _View, op: tuple[int, str], inputs: list[int],
                         outputs: list[int]) -> Iterator[Finding]:
    members = [view.tensors[i] for i in [*inputs, *outputs[:1]] if i >= 0]
    members = [t for t in members if t.type in ZERO_POINT_RANGE and t.quantized and not t.constant]
    if len(members) < 2:
        return
    ref = members[-1]  # the output
    for t in members[:-1]:
        same = np.isclose(t.scales[0], ref.scales[0], rtol=SAME_SCALE_RTOL) and t.zero_points[0] == ref.zero_points[0]
        if not same:
            yield _finding("same-scale", Severity.ERROR, f"{op[1]} needs equal input and output quantization", op, t,
                           f"scale {ref.scales[0]:.6g}, zero point {int(ref.zero_points[0])} (output)",
                           f"scale {t.scales[0]:.6g}, zero point {int(t.zero_points[0])}")


def _int16_op_findings(op: tuple[int, str], tensor: _Tensor, target: str) -> Iterator[Finding]:
    """An op with int16 activations needs an int16x8 kernel (QUANTIZE/DEQUANTIZE requantize int8 <-> int16);
    XNNPACK takes none of them (measured: they run on the builtin kernels) and the Edge TPU runs 8-bit only."""
    if op[1] not in INT16X8_OPS and op[1] not in ("QUANTIZE", "DEQUANTIZE"):
        yield _finding("int16.no-kernel", Severity.ERROR, f"{op[1]} has no int16x8 kernel in LiteRT's builtins "
                       "(measured table: edgeq.spec.rules.INT16X8_OPS)", op, tensor,
                       "an op with an int16x8 kernel", op[1])
    if target == "xnnpack":
        yield _finding("xnnpack.int16", Severity.WARNING, f"{op[1]} with int16 activations is not delegated to "
                       "XNNPACK: it runs on the builtin kernels (slower, still correct)", op, tensor,
                       "int8 activations", "INT16")
    elif target == "edgetpu":
        yield _finding("edgetpu.int16", Severity.ERROR, f"{op[1]} has int16 activations: the Edge TPU runs "
                       "8-bit (int8/uint8) tensors only", op, tensor, "int8/uint8", "INT16")


def _op_findings(view: _View, profile_ops: frozenset[str] | None, target: str, unsupported: Severity,
                 io: str) -> Iterator[Finding]:
    boundary = set(view.inputs) | set(view.outputs) if view.index == 0 else set()  # the model's own I/O
    for index, kind, inputs, outputs in view.ops:
        op = (index, kind)
        if kind.startswith("CUSTOM:"):
            yield _finding("op.custom", Severity.ERROR, f"custom op {kind[7:]} needs its own kernel on every target",
                           op, expected="builtin ops", actual=kind)
            continue
        tensors = [view.tensors[i] for i in [*inputs, *outputs] if i >= 0]
        floats = [t for t in tensors if t.type in tfl.FLOAT_TYPE_NAMES]
        if kind in ("QUANTIZE", "DEQUANTIZE"):
            at_boundary = any(i in boundary for i in [*inputs, *outputs])
            if floats and not (at_boundary and io in ("float32", "integer")):
                yield _finding("float.qdq-inside", Severity.ERROR,
                               f"{kind} converts between float and integer inside the graph", op, floats[0],
                               "integer tensors only", floats[0].type)
            int16 = [t for t in tensors if t.type == "INT16" and not t.constant]
            if int16:
                yield from _activation_findings(view, op, int16)
                yield from _int16_op_findings(op, int16[0], target)
            continue
        if floats:
            yield _finding("float.tensor", Severity.ERROR, f"{kind} computes in float", op, floats[0],
                           "int8", floats[0].type)
        if not has_int8_kernel(kind):
            yield _finding("op.no-int8-kernel", Severity.ERROR, f"{kind} has no int8 kernel in TFLite", op,
                           expected="an op with an int8 kernel", actual=kind)
        if profile_ops is not None and kind not in profile_ops:
            yield _finding(f"{target}.unsupported-op", unsupported, f"{kind} is not supported by {target}", op,
                           expected=f"an op {target} supports", actual=kind)
        int16 = [t for t in tensors if t.type == "INT16" and not t.constant]
        if int16:
            yield from _int16_op_findings(op, int16[0], target)
        in_tensors = [view.tensors[i] for i in inputs if i >= 0]
        out_tensors = [] if kind in INDEX_OUTPUT_OPS else [view.tensors[i] for i in outputs if i >= 0]
        yield from _activation_findings(view, op, [*in_tensors, *out_tensors])
        rule = SPEC.get(kind)
        if rule is None:
            continue
        if rule.weights_input is not None and rule.weights_axis is not None:
            yield from _weight_findings(view, op, inputs, rule.weights_input, rule.weights_axis,
                                        rule.per_tensor_weights_allowed)
            if rule.bias_input is not None:
                yield from _bias_findings(view, op, inputs, rule.bias_input, rule.weights_input)
        if rule.fixed_output is not None:
            yield from _output_findings(view, op, outputs, rule.fixed_output)
        if rule.same_scale:
            yield from _same_scale_findings(view, op, inputs, outputs)


def check_model(data: bytes, target: str = "generic", io: str = "integer",
                ignore: Iterable[str] = (), what: str = "model") -> SpecReport:
    """All findings for ``data`` under ``target``; ``ignore`` drops rule ids (waivers) from the report."""
    if target not in PROFILES:
        raise UsageError(f"unknown target {target!r}; choose one of {', '.join(PROFILES)}")
    if io not in IO_CHOICES:
        raise UsageError(f"unknown io type {io!r}; choose one of {', '.join(IO_CHOICES)}")
    model = tfl.parse(data, what)
    _validate_structure(model)
    profile = PROFILES[target]
    findings: list[Finding] = []
    for index in range(len(model.subgraphs)):
        view = _View(model, index)
        found = [*_graph_findings(view, io),
                 *_op_findings(view, profile.supported_ops, target, Severity(profile.unsupported_severity), io)]
        findings.extend(dataclasses.replace(f, subgraph=index) if index else f for f in found)
    if target == "edgetpu":
        from edgeq.spec.edgetpu import edgetpu_findings

        findings.extend(edgetpu_findings(model))
    waived = set(ignore)
    return SpecReport(model_sha256=tfl.sha256(data), target=Target(target),
                      findings=tuple(f for f in findings if f.rule_id not in waived))
