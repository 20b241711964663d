"""Simulated quantization: the float model with every activation and weight quantization switchable at run time.

Reconverting a model per experiment costs seconds; sensitivity analysis and range search need thousands of
experiments. So the float flatbuffer is rewritten once into a *probe*: after every float activation tensor T
of the main graph, ``T + g·(fq(T) − T)`` with ``fq(T) = clamp(round(T·(1/s)), qmin, qmax)·s``, and every
conv / depthwise / dense / transpose-conv filter W becomes ``W + g·(Q(W) − W)`` with Q(W) the per-channel
symmetric int8 weights edgeq's quantizer would write. The scale, bounds and gate of each tensor are inputs of
the probe (one ``[A, 5]`` parameter array and one ``[W]`` gate array), so trying another range, another bit
width or switching a tensor off is a new parameter array, not a new model.

What it does not simulate: the integer kernels' own arithmetic (requantization multipliers, lookup tables),
int32 bias rounding, ops that share one scale across their inputs, and tensors inside control-flow
subgraphs (left float). ``edgeq.recover.sensitivity`` reports how far the simulation is from the real
INT8 model on the same data, so a reader knows what the ranking rests on.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import InputError, UsageError
from edgeq.metrics import sqnr_db
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

#: Ops whose filter (input 1) TF's quantizer stores as int8, and the filter's output-channel axis.
WEIGHT_AXES: dict[str, int] = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}
#: Ops whose int8 output parameters the quantizer fixes whatever range was measured: (scale, zero point).
FIXED_OUTPUT: dict[str, tuple[float, int]] = {"SOFTMAX": (1 / 256, -128), "LOGISTIC": (1 / 256, -128),
                                              "TANH": (1 / 128, 0)}
#: Ops whose int8 output TF's quantizer gives its input's scale and zero point (the TFLite int8 spec's "same
#: scale" restriction): their outputs take the range of their first input.
SAME_SCALE_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE",
                            "SLICE", "STRIDED_SLICE", "GATHER", "PAD", "PADV2", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
                            "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "BATCH_TO_SPACE_ND",
                            "SPACE_TO_BATCH_ND", "SPLIT", "SPLIT_V", "UNPACK", "TILE"})
#: The operand holding a same-scale op's data when it is not the first (SPLIT's first operand is the axis).
DATA_OPERAND = {"SPLIT": 1}
#: Same-scale ops that only move or pick values (no arithmetic): their output needs no quantization of its own.
DATA_MOVEMENT_OPS = SAME_SCALE_OPS - {"AVERAGE_POOL_2D", "RESIZE_BILINEAR"}
ACTIVATION_PARAMS = 5
WEIGHT_MODES = ("gated", "float", "quantized")  # per activation: 1/scale, qmin, qmax, scale, gate
INT8 = (-128, 127)
INT16 = (-32768, 32767)
CAP_DB = 100.0  # an output reproduced exactly scores this, so that means over outputs stay finite


@dataclass(frozen=True)
class SimTensor:
    """A tensor the probe can quantize: an activation (its range is a parameter) or a weight (fixed per-channel
    int8 values). ``producer`` is the op computing an activation, or the op reading a weight."""

    key: TensorKey
    name: str
    producer: str
    kind: str  # "activation" | "weight"


def round_half_away(values: np.ndarray | float) -> np.ndarray:
    """Round half away from zero, as TF's quantizer rounds zero points and weights (numpy rounds half to even:
    for the common input range [-1, 1] the zero point is -128 + 127.5, a tie, and the converter makes it -1)."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def int8_params(lo: float, hi: float) -> tuple[float, float, float, float]:
    """(1/scale, qmin, qmax, scale) with qmin/qmax in steps around zero, as the quantizer derives them from a
    range: the range is widened to include 0, scale = (hi − lo)/255, zero point rounded into [−128, 127]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    zero_point = int(np.clip(round_half_away(INT8[0] - lo / scale), *INT8))
    return 1.0 / scale, float(INT8[0] - zero_point), float(INT8[1] - zero_point), scale


def fixed_params(scale: float, zero_point: int) -> tuple[float, float, float, float]:
    return 1.0 / scale, float(INT8[0] - zero_point), float(INT8[1] - zero_point), scale


def int16_params(lo: float, hi: float) -> tuple[float, float, float, float]:
    """Symmetric int16 (zero point 0), as LiteRT's int16x8 kernels require."""
    bound = max(abs(float(lo)), abs(float(hi)))
    scale = bound / INT16[1] if np.isfinite(bound) and bound > 0 else 1.0
    return 1.0 / scale, float(INT16[0]), float(INT16[1]), scale


def quantized_weights(values: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 weights in [-127, 127], per channel along ``axis`` (None: per tensor), dequantized."""
    if axis is None:
        bound = np.max(np.abs(values)) if values.size else 0.0
        scale = np.asarray(bound / 127.0 if bound > 0 else 1.0)
    else:
        reduce = tuple(i for i in range(values.ndim) if i != axis)
        bound = np.max(np.abs(values), axis=reduce, keepdims=True)
        scale = np.where(bound > 0, bound / 127.0, 1.0)
    return (np.clip(round_half_away(values / scale), -127, 127) * scale).astype(np.float32)


class _Graph:
    """Appends tensors and ops to the main graph of a parsed model."""

    def __init__(self, model: Any) -> None:
        self.model, self.graph, self.schema = model, model.subgraphs[0], tfl.schema()

    def tensor(self, name: str, shape: Sequence[int], type_name: str = "FLOAT32",
               values: np.ndarray | None = None) -> int:
        return tfl.add_tensor(self.model, self.graph, name, shape, type_name, values)

    def op(self, kind: str, inputs: Sequence[int], outputs: Sequence[int], options: tuple[str, Any] | None = None,
           version: int = 1) -> Any:
        op = self.schema.OperatorT()
        op.opcodeIndex = tfl.opcode_index(self.model, kind, version)
        op.inputs = np.asarray(list(inputs), dtype=np.int32)
        op.outputs = np.asarray(list(outputs), dtype=np.int32)
        if options is not None:
            op.builtinOptionsType = getattr(self.schema.BuiltinOptions, options[0])
            op.builtinOptions = options[1]
        return op

    def binary(self, kind: str, a: int, b: int, name: str, shape: Sequence[int], ops: list[Any]) -> int:
        out = self.tensor(name, shape)
        option = {"MUL": ("MulOptions", self.schema.MulOptionsT()), "ADD": ("AddOptions", self.schema.AddOptionsT()),
                  "SUB": ("SubOptions", self.schema.SubOptionsT()),
                  "DIV": ("DivOptions", self.schema.DivOptionsT())}.get(kind)
        ops.append(self.op(kind, [a, b], [out], option))
        return out

    def unary(self, kind: str, a: int, name: str, shape: Sequence[int], ops: list[Any]) -> int:
        out = self.tensor(name, shape)
        ops.append(self.op(kind, [a], [out]))
        return out

    def unpack(self, source: int, count: int, axis: int, shape: Sequence[int], name: str, ops: list[Any]) -> list[int]:
        outs = [self.tensor(f"{name}/{i}", shape) for i in range(count)]
        options = self.schema.UnpackOptionsT()
        options.num, options.axis = count, axis
        ops.append(self.op("UNPACK", [source], outs, ("UnpackOptions", options)))
        return outs


def _shape(tensor: Any) -> list[int]:
    return [int(d) for d in tensor.shape] if tensor.shape is not None else []


def _weights(model: Any, tensor: Any) -> np.ndarray:
    raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype="<f4").reshape(_shape(tensor)).astype(np.float32)


class Simulator:
    """The probe of one float model, loaded once in LiteRT's builtin CPU kernels.

    ``activations`` and ``weights`` list what the probe can quantize, in parameter order. Build parameters
    with :meth:`params` and run samples with :meth:`run`; every quantization off gives the float model's
    outputs exactly.
    """

    def __init__(self, float_model: bytes, *, per_tensor: bool = False, per_tensor_dense: bool = False,
                 preserve_all_tensors: bool = False, weights: str = "gated") -> None:
        """``weights``: ``gated`` (each weight's int8 rounding switchable, :attr:`weights` lists them; the builtin
        kernels run the probe, since a switchable filter is not a constant), or fixed ``float`` / ``quantized``
        (constants: XNNPACK runs the probe, several times faster; :attr:`weights` is empty)."""
        if weights not in WEIGHT_MODES:
            raise UsageError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
        self.per_tensor, self.per_tensor_dense, self.weight_mode = per_tensor, per_tensor_dense, weights
        parsed = tfl.parse(float_model)
        if not parsed.subgraphs:
            raise InputError("the model has no graph to simulate")
        self.float_model = float_model
        producers = tfl.producers(parsed)
        activations = [a for a in tfl.float_activations(parsed) if a.subgraph == 0]
        self.activations = tuple(SimTensor(a.key, a.name, producers.get(a.key, "INPUT"), "activation")
                                 for a in activations)
        graph = _Graph(parsed)
        main = graph.graph
        float32 = tfl.tensor_type("FLOAT32")
        weight_users: dict[int, list[Any]] = {}
        weight_axis: dict[int, int | None] = {}
        for op in main.operators:
            kind = tfl.op_type(parsed, op)
            if kind not in WEIGHT_AXES or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            index = int(op.inputs[1])
            tensor = main.tensors[index]
            buffer = parsed.buffers[tensor.buffer] if tensor.buffer < len(parsed.buffers) else None
            if tensor.type != float32 or buffer is None or buffer.data is None or not len(buffer.data):
                continue  # not a float constant in the flatbuffer (a weight stored outside it is left float)
            if not tfl.is_constant(parsed, tensor):
                continue
            per_tensor_here = per_tensor or (per_tensor_dense and kind == "FULLY_CONNECTED")
            weight_users.setdefault(index, []).append(op)
            weight_axis[index] = None if per_tensor_here else WEIGHT_AXES[kind]
        self._weight_axis = dict(weight_axis)
        self._parsed: Any = None  # the float model, parsed when with_weight first needs its values
        if weights != "gated":  # each weight gets a buffer of its own: with_weight may then patch one safely
            for index in sorted(weight_users):
                values = _weights(parsed, main.tensors[index])
                if weights == "quantized":
                    values = quantized_weights(values, weight_axis[index])
                buffer = graph.schema.BufferT()
                buffer.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8).copy()
                parsed.buffers.append(buffer)
                main.tensors[index].buffer = len(parsed.buffers) - 1
        if weights != "gated":
            weight_users = {}
        self.weights = tuple(SimTensor((0, i), tfl.tensor_name(main.tensors[i]),
                                       tfl.op_type(parsed, weight_users[i][0]), "weight") for i in sorted(weight_users))
        self.fixed = {t.key: FIXED_OUTPUT[t.producer] for t in self.activations if t.producer in FIXED_OUTPUT}
        known = {a.key for a in self.activations}
        self.same_scale: dict[TensorKey, TensorKey] = {}
        for op in main.operators:
            operand = DATA_OPERAND.get(tfl.op_type(parsed, op), 0)
            source = (0, int(op.inputs[operand])) if len(op.inputs) > operand and op.inputs[operand] >= 0 else None
            if tfl.op_type(parsed, op) in SAME_SCALE_OPS and source in known:
                for out in op.outputs:
                    self.same_scale[(0, int(out))] = self.same_scale.get(source, source)

        head: list[Any] = []
        chains: dict[int, list[Any]] = {}
        replaced: dict[int, int] = {}
        n_act, n_weight = len(self.activations), len(self.weights)
        inputs = [int(i) for i in main.inputs]
        scalars: list[list[int]] = []
        if n_act:
            self._params_input = graph.tensor("edgeq_sim/params", [n_act, ACTIVATION_PARAMS])
            rows = graph.unpack(self._params_input, n_act, 0, [ACTIVATION_PARAMS], "edgeq_sim/row", head)
            for i, row in enumerate(rows):
                scalars.append(graph.unpack(row, ACTIVATION_PARAMS, 0, [], f"edgeq_sim/p{i}", head))
        gates: list[int] = []
        if n_weight:
            self._gates_input = graph.tensor("edgeq_sim/weight_gates", [n_weight])
            gates = graph.unpack(self._gates_input, n_weight, 0, [], "edgeq_sim/wg", head)
        for w, gate in zip(self.weights, gates, strict=True):
            index = w.key[1]
            tensor = main.tensors[index]
            values = _weights(parsed, tensor)
            delta = graph.tensor(f"edgeq_sim/{w.name}/delta", values.shape,
                                 values=(quantized_weights(values, weight_axis[index]) - values).astype("<f4"))
            scaled = graph.binary("MUL", delta, gate, f"edgeq_sim/{w.name}/gd", values.shape, head)
            effective = graph.binary("ADD", index, scaled, f"edgeq_sim/{w.name}/w", values.shape, head)
            for op in weight_users[index]:
                op.inputs[1] = effective
        for i, a in enumerate(self.activations):
            if a.producer in DATA_MOVEMENT_OPS and a.key in self.same_scale:
                continue  # its values are its input's, already on the input's grid: quantizing again is identity
            _, qmin, qmax, scale, gate = scalars[i]
            t = a.key[1]
            shape = _shape(main.tensors[t])
            ops: list[Any] = []
            name = f"edgeq_sim/{a.name}"
            x = graph.binary("DIV", t, scale, f"{name}/scaled", shape, ops)  # x / s, as the harness divides
            # ROUND rounds half to even, as the harness quantizes a model's input (np.rint) and XNNPACK's and
            # the optimized QUANTIZE do; inside the graph exact ties have probability zero
            x = graph.unary("ROUND", x, f"{name}/round", shape, ops)
            x = graph.binary("MAXIMUM", x, qmin, f"{name}/lo", shape, ops)
            x = graph.binary("MINIMUM", x, qmax, f"{name}/hi", shape, ops)
            x = graph.binary("MUL", x, scale, f"{name}/fq", shape, ops)
            x = graph.binary("SUB", x, t, f"{name}/err", shape, ops)
            x = graph.binary("MUL", x, gate, f"{name}/gated", shape, ops)
            replaced[t] = graph.binary("ADD", t, x, f"{name}/out", shape, ops)
            chains[t] = ops
        chained = set(chains)
        order = list(head)
        for t in inputs:
            order.extend(chains.get(t, []))
        for op in main.operators:
            for k, t in enumerate(op.inputs):
                if int(t) in replaced:
                    op.inputs[k] = replaced[int(t)]
            order.append(op)
            for t in op.outputs:
                order.extend(chains.get(int(t), []) if int(t) in chained else [])
        main.operators = order
        main.outputs = np.asarray([replaced.get(int(t), int(t)) for t in main.outputs], dtype=np.int32)
        extra = ([self._params_input] if n_act else []) + ([self._gates_input] if n_weight else [])
        main.inputs = np.asarray(inputs + extra, dtype=np.int32)
        parsed.signatureDefs = []
        self.probe = tfl.serialize(parsed)
        self._replaced = replaced
        self._buffers = {i: int(main.tensors[i].buffer) for i in weight_axis}
        self._preserve_all_tensors = preserve_all_tensors
        kernels = CpuKernels.CPU if weights == "gated" or preserve_all_tensors else CpuKernels.XNNPACK
        self._interpreter, _ = make_interpreter(self.probe, kernels, preserve_all_tensors=preserve_all_tensors)
        details = self._interpreter.get_input_details()
        self._model_inputs = [d["index"] for d in details[: len(inputs)]]
        self._params_index = details[len(inputs)]["index"] if n_act else None
        self._gates_index = details[len(inputs) + (1 if n_act else 0)]["index"] if n_weight else None
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def tensor(self, key: TensorKey, *, quantized: bool = False) -> np.ndarray:
        """Tensor ``key`` of the float model after the last sample :meth:`run` ran (needs
        ``preserve_all_tensors``, else LiteRT reuses the memory of intermediates). ``quantized=False``: the value
        its op computed, before its own fake quantization; ``True``: the value its readers saw."""
        if not self._preserve_all_tensors:
            raise UsageError("reading intermediate tensors needs Simulator(..., preserve_all_tensors=True)")
        if key[0] != 0:
            raise InputError(f"tensor {key} is not in the main graph: the probe leaves control flow float")
        index = self._replaced.get(key[1], key[1]) if quantized else key[1]
        return np.array(self._interpreter.get_tensor(index), dtype=np.float32)

    def with_weight(self, key: TensorKey, quantized: bool) -> Simulator:
        """This probe with one weight's values swapped (its int8 rounding, or back to float) in the model bytes,
        reloaded: how a fixed-weights probe measures one weight without switchable (slower) weights."""
        if self.weight_mode == "gated" or key[1] not in self._buffers:
            raise UsageError("with_weight needs a probe with fixed weights and a conv/dense filter")
        if self._parsed is None:
            self._parsed = tfl.parse(self.float_model)
        values = _weights(self._parsed, self._parsed.subgraphs[0].tensors[key[1]])
        if quantized:
            values = quantized_weights(values, self._weight_axis[key[1]])
        span = tfl.buffer_span(self.probe, self._buffers[key[1]])
        payload = values.astype("<f4").tobytes()
        if span is None or span[1] != len(payload):
            raise UsageError(f"weight {key} keeps its data outside the flatbuffer")
        patched = bytearray(self.probe)
        patched[span[0]:span[0] + span[1]] = payload
        twin = copy.copy(self)
        twin.probe = bytes(patched)
        twin._interpreter, _ = make_interpreter(twin.probe, CpuKernels.XNNPACK)
        return twin

    def keys(self) -> list[TensorKey]:
        return [a.key for a in self.activations]

    def params(self, ranges: Mapping[TensorKey, tuple[float, float]], *, quantized: Collection[TensorKey] | None = None,
               int16: Collection[TensorKey] = (), weights: Collection[TensorKey] | None = None) -> Config:
        """A configuration: activations in ``quantized`` (default: all with a range) quantized to int8 (int16
        for those in ``int16``) with their range from ``ranges``; weights in ``weights`` (default: all) int8."""
        table = np.zeros((len(self.activations), ACTIVATION_PARAMS), dtype=np.float32)
        table[:, 0] = table[:, 3] = 1.0  # harmless scale while the gate is 0
        for i, a in enumerate(self.activations):
            on = a.key in ranges if quantized is None else a.key in quantized
            if not on:
                continue
            source = self.same_scale.get(a.key, a.key)
            if a.key in int16:
                row = int16_params(*ranges[a.key])
            elif a.key in self.fixed or source in self.fixed:  # a follower of SOFTMAX takes its fixed scale too
                row = fixed_params(*self.fixed[a.key if a.key in self.fixed else source])
            else:
                row = int8_params(*ranges.get(source, ranges[a.key]))
            table[i] = (*row, 1.0)
        gates = np.array([1.0 if weights is None or w.key in weights else 0.0 for w in self.weights], np.float32)
        return Config(table, gates)

    def float_config(self) -> Config:
        return self.params({}, quantized=set(), weights=set())

    def run(self, config: Config, samples: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The probe's outputs under ``config``, per output stacked over ``samples`` (each a list of batch-1
        arrays per model input)."""
        it = self._interpreter
        if self._params_index is not None:
            it.set_tensor(self._params_index, config.activations)
        if self._gates_index is not None:
            it.set_tensor(self._gates_index, config.weights)
        collected: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for sample in samples:
            for index, value in zip(self._model_inputs, sample, strict=True):
                it.set_tensor(index, value)
            it.invoke()
            for k, index in enumerate(self._outputs):
                collected[k].append(np.array(it.get_tensor(index), dtype=np.float32))
        return [np.concatenate([np.atleast_1d(v) for v in values], axis=0) if values else np.zeros((0,))
                for values in collected]


@dataclass(frozen=True)
class Config:
    """One simulated quantization: the ``[A, 5]`` activation parameter table and the ``[W]`` weight gates."""

    activations: np.ndarray
    weights: np.ndarray

    def with_row(self, index: int, row: Sequence[float]) -> Config:
        table = self.activations.copy()
        table[index] = row
        return Config(table, self.weights)

    def with_weight(self, index: int, gate: float) -> Config:
        gates = self.weights.copy()
        gates[index] = gate
        return Config(self.activations, gates)


def output_sqnr(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> list[float]:
    """Per output, SQNR in dB of ``outputs`` against ``reference`` over all samples, capped at ``CAP_DB``."""
    found = []
    for ref, got in zip(reference, outputs, strict=True):
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        value = sqnr_db(float(np.sum(ref64 * ref64)), float(np.sum((ref64 - got64) ** 2)))
        found.append(min(value, CAP_DB) if not np.isnan(value) else -CAP_DB)
    return found


def fidelity(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """One number to rank configurations by: the mean over outputs of their SQNR (dB), so that every output
    (boxes and scores, landmarks and flags) counts, each relative to its own signal."""
    values = output_sqnr(reference, outputs)
    return float(np.mean(values)) if values else CAP_DB
