"""Channel equalization: an exact float-graph transform that moves per-channel scale between layers.

Per-tensor INT8 activations lose resolution when a few channels of a tensor are far larger than the rest
(outlier channels). When the tensor is computed by a layer with constant weights (a *producer*: CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, or a MUL by a constant such as LayerNorm's gamma) and read only by layers
with constant weights (*consumers*: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), channel ``c`` can be divided by
any ``s_c > 0`` on the producer's side and multiplied back into the consumers' input weights: the float model
computes the same function, and the activation between them gets the range we choose.

Between producer and consumers only positive-homogeneous, channel-preserving ops may sit (``f(x / s) = f(x) / s``
per channel for ``s > 0``): fused activation NONE or RELU (not RELU6, RELU_N1_TO_1 or TANH), MAX/AVERAGE pooling,
PAD with zeros (not on the channel axis), MEAN/SUM/REDUCE_MAX over non-channel axes, RELU, LEAKY_RELU, and
RESHAPE/SQUEEZE/EXPAND_DIMS, whose channel indices are mapped exactly (a flatten of HWC with channels last maps
position ``j`` to channel ``j % C``). ADD/SUB of a constant scales the constant along; ADD/SUB of two tensors and
MUL by a non-constant per-row factor join both sides into one *group* (a residual stream, LayerNorm's
``x * (gamma * rsqrt) + (beta - mean * gamma * rsqrt)``). A group's tensors share one scale vector; nothing in it
may be a model output or read by any other op.

``scope="pairs"`` (the default) changes only groups of one producer and one consumer (Nagel et al. 2019's
layer pairs); ``scope="groups"`` also changes the rest (residual streams, a tensor read by several layers).

Two ways to choose ``s``: from weights only (cross-layer equalization, Nagel et al. 2019,
``s_c = sqrt(r1_c / r2_c)`` with ``r1``/``r2`` the producers'/consumers' per-channel weight ranges, iterated
because a layer belongs to two groups), or SmoothQuant's migration (Xiao et al. 2022,
``s_c = a_c^α / r2_c^(1-α)`` with ``a_c`` the activation's measured per-channel absmax).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgeq.errors import InputError, UsageError
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

#: Cumulative per-channel scales stay within [1 / MAX_SCALE, MAX_SCALE]: beyond that float32 weights
#: underflow towards denormals or the scale undoes a legitimately dead channel.
MAX_SCALE = 1e4
#: Cross-layer equalization stops when no scale of an iteration moves by more than this factor.
CONVERGED = 1.0 + 1e-3
DEFAULT_ITERATIONS = 20

Scope = Literal["pairs", "groups"]

_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_HOMOGENEOUS_ACTIVATIONS = (0, 1)  # ActivationFunctionType NONE, RELU
_FUSED_ONLY = ("MAX_POOL_2D", "AVERAGE_POOL_2D")  # single input, fused activation must be NONE or RELU
_ELEMENTWISE = ("RELU", "LEAKY_RELU")
_RESHAPES = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
_REDUCTIONS = ("MEAN", "SUM", "REDUCE_MAX")
_PASS_THROUGH = (*_FUSED_ONLY, *_ELEMENTWISE, *_RESHAPES, *_REDUCTIONS, "PAD")
_ACTIVATION_NAMES = {2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass(frozen=True)
class EqualizedGroup:
    """One group the transform changed: the activation it rebalanced and the scales it divided it by."""

    tensor: str  # the producer's output (the activation whose channels were rescaled)
    producers: tuple[str, ...]  # op types, e.g. ("CONV_2D",)
    consumers: tuple[str, ...]
    channels: int
    min_scale: float  # activation channel c was divided by s_c, s within [min_scale, max_scale]
    max_scale: float
    method: str  # "cle" or "smoothquant(alpha=0.5)"


@dataclass(frozen=True)
class Skipped:
    """A producer's output left alone, and why (RELU6 on the way, a second reader, a model output, ...)."""

    tensor: str
    reason: str


@dataclass(frozen=True)
class Equalization:
    """The equalized float model and what changed."""

    model: bytes
    groups: tuple[EqualizedGroup, ...]
    skipped: tuple[Skipped, ...]
    iterations: int  # passes run (1 for SmoothQuant)
    output_change: float = 0.0  # largest relative output change on the check input (float32 rounding), when checked


@dataclass(frozen=True)
class _Edit:
    """Constant operand ``slot`` of op ``op`` scaled along ``axis``: entry ``k`` by ``s[channel_of[k]] ** power``."""

    op: int
    slot: int
    axis: int
    channel_of: np.ndarray
    power: int  # -1: producer side (weights, bias, affine constants), +1: consumer input weights
    role: str  # "weight" (a producer's range), "bias", "constant", "consumer"


@dataclass
class _Group:
    seed: int
    channels: int
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # tensor -> channel of each last-axis position
    edits: dict[tuple[int, int, int], _Edit] = field(default_factory=dict)

    def ops(self, power: int) -> list[int]:
        return sorted({e.op for e in self.edits.values() if e.power == power and e.role in ("weight", "consumer")})


class _Refused(Exception):
    """This tensor cannot be rescaled; the message says why."""


class _Graph:
    """The main graph's wiring and constants, and the edits that write new weights."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.subgraphs[0]
        self.types = [tfl.op_type(model, op) for op in self.graph.operators]
        self.producer: dict[int, int] = {}
        self.readers: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(self.graph.operators):
            for out in _ints(op.outputs):
                self.producer[out] = i
            for slot, index in enumerate(_ints(op.inputs)):
                if index >= 0:
                    self.readers.setdefault(index, []).append((i, slot))
        self.outputs = set(_ints(self.graph.outputs))
        self.inputs = set(_ints(self.graph.inputs))
        self.owned: set[int] = set()  # tensors this run gave a buffer of their own
        self.buffer_users: dict[int, int] = {}
        for graph in model.subgraphs:
            for tensor in graph.tensors:
                self.buffer_users[int(tensor.buffer)] = self.buffer_users.get(int(tensor.buffer), 0) + 1
        for entry in model.metadata or []:
            self.buffer_users[int(entry.buffer)] = self.buffer_users.get(int(entry.buffer), 0) + 1

    def tensor(self, index: int) -> Any:
        return self.graph.tensors[index]

    def name(self, index: int) -> str:
        return tfl.tensor_name(self.tensor(index))

    def last_dim(self, index: int) -> int:
        shape = self.tensor(index).shape
        return int(shape[-1]) if shape is not None and len(shape) else 1

    def rank(self, index: int) -> int:
        shape = self.tensor(index).shape
        return 0 if shape is None else len(shape)

    def constant(self, index: int) -> np.ndarray | None:
        """The float32 values of a constant tensor, or None when it is computed (or not float32)."""
        if index < 0:
            return None
        tensor = self.tensor(index)
        if not tfl.is_constant(self.model, tensor) or tensor.sparsity is not None:
            return None
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None  # stored outside the flatbuffer (offset/size): not edited here
        raw = np.asarray(data, dtype=np.uint8).tobytes()
        if tensor.type == tfl.tensor_type("FLOAT32"):
            shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
            return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        if tensor.type == tfl.tensor_type("INT32"):
            return np.frombuffer(raw, dtype="<i4").copy()
        return None

    def activation(self, op: Any) -> int:
        options = op.builtinOptions
        return int(getattr(options, "fusedActivationFunction", 0) or 0) if options is not None else 0

    def write(self, op_index: int, slot: int, values: np.ndarray) -> None:
        """New values for a constant operand; a tensor or buffer shared with anything else is copied first, so
        only this op sees the change."""
        S = tfl.schema()  # noqa: N806
        op = self.graph.operators[op_index]
        index = int(op.inputs[slot])
        payload = np.frombuffer(np.ascontiguousarray(values, dtype="<f4").tobytes(), dtype=np.uint8).copy()
        if index not in self.owned:
            tensor = self.tensor(index)
            if len(self.readers.get(index, [])) > 1 or index in self.outputs:
                self.readers[index].remove((op_index, slot))
                tensor = copy.copy(tensor)
                self.graph.tensors.append(tensor)
                index = len(self.graph.tensors) - 1
                inputs = np.array(op.inputs, dtype=np.int32)
                inputs[slot] = index
                op.inputs = inputs
                self.readers[index] = [(op_index, slot)]
                self.buffer_users[int(tensor.buffer)] += 1
            if self.buffer_users[int(tensor.buffer)] > 1:
                self.buffer_users[int(tensor.buffer)] -= 1
                self.model.buffers.append(S.BufferT())
                tensor.buffer = len(self.model.buffers) - 1
                self.buffer_users[int(tensor.buffer)] = 1
            self.owned.add(index)
        self.model.buffers[self.tensor(index).buffer].data = payload


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _remap(channel_of: np.ndarray, length: int) -> np.ndarray:
    """Channel of each of ``length`` last-axis positions after a reshape (row-major order kept): position ``j``
    holds the flat elements ``f`` with ``f % length == j``, whose channel before was ``channel_of[f % len]``."""
    before = len(channel_of)
    if length % before == 0:
        return np.tile(channel_of, length // before)
    if before % length == 0:
        rows = channel_of.reshape(before // length, length)
        if np.all(rows == rows[0]):
            return rows[0].copy()
    raise _Refused(f"a reshape from {before} to {length} last-axis positions mixes channels")


def _search(g: _Graph, seed: int) -> _Group:
    """The group of tensors that must share ``seed``'s per-channel scale, or _Refused."""
    group = _Group(seed=seed, channels=g.last_dim(seed))
    todo = [seed]
    group.maps[seed] = np.arange(group.channels)

    def join(index: int, channel_of: np.ndarray) -> None:
        if index in group.maps:
            if not np.array_equal(group.maps[index], channel_of):
                raise _Refused(f"'{g.name(index)}' is reached with two different channel orders")
            return
        if g.last_dim(index) != len(channel_of):
            raise _Refused(f"'{g.name(index)}' broadcasts over the channel axis")
        group.maps[index] = channel_of
        todo.append(index)

    def edit(op: int, slot: int, axis: int, channel_of: np.ndarray, power: int, role: str) -> None:
        values = g.constant(int(g.graph.operators[op].inputs[slot]))
        if values is None or values.dtype != np.float32:
            raise _Refused(f"{g.types[op]} (op {op}) has a non-constant or non-float operand {slot}")
        axis = axis % max(values.ndim, 1)
        if values.ndim == 0 or values.shape[axis] != len(channel_of):
            raise _Refused(f"{g.types[op]} (op {op}) operand {slot} does not have one entry per channel")
        group.edits[(op, slot, axis)] = _Edit(op, slot, axis, channel_of, power, role)

    def homogeneous(op_index: int) -> None:
        op = g.graph.operators[op_index]
        if g.activation(op) not in _HOMOGENEOUS_ACTIVATIONS:
            kind = _ACTIVATION_NAMES.get(g.activation(op), str(g.activation(op)))
            raise _Refused(f"{g.types[op_index]} (op {op_index}) has fused {kind}, which is not positive-homogeneous")

    while todo:
        index = todo.pop()
        channel_of = group.maps[index]
        if index in g.outputs:
            raise _Refused(f"'{g.name(index)}' is a model output")
        if index in g.inputs or index not in g.producer:
            raise _Refused(f"'{g.name(index)}' is a model input")
        if g.tensor(index).type != tfl.tensor_type("FLOAT32"):
            raise _Refused(f"'{g.name(index)}' is not float32")
        _backward(g, group, index, channel_of, join, edit, homogeneous)
        for op_index, slot in g.readers.get(index, []):
            _forward(g, group, index, channel_of, op_index, slot, join, edit, homogeneous)
    _validate(g, group)
    if not group.ops(+1):
        raise _Refused("no layer with constant weights reads it")
    return group


def _backward(g: _Graph, group: _Group, index: int, channel_of: np.ndarray, join: Any, edit: Any,
              homogeneous: Any) -> None:
    """Make the op computing ``index`` produce it divided by ``s``."""
    op_index = g.producer[index]
    op = g.graph.operators[op_index]
    kind = g.types[op_index]
    inputs = _ints(op.inputs)
    if kind in _WEIGHT_OPS:
        homogeneous(op_index)
        axis = 3 if kind == "DEPTHWISE_CONV_2D" else 0
        edit(op_index, 1, axis, channel_of, -1, "weight")
        if len(inputs) > 2 and inputs[2] >= 0:
            edit(op_index, 2, 0, channel_of, -1, "bias")
        if kind == "FULLY_CONNECTED" and op.builtinOptions is not None and int(op.builtinOptions.weightsFormat):
            raise _Refused(f"FULLY_CONNECTED (op {op_index}) has shuffled weights")
    elif kind == "MUL":
        homogeneous(op_index)
        carried = [i for i in inputs if i in group.maps]
        if len(carried) == 1 and inputs.count(carried[0]) == 1:
            return
        if carried:
            raise _Refused(f"MUL (op {op_index}) multiplies the group by itself")
        for slot, operand in enumerate(inputs):
            values = g.constant(operand)
            if values is not None and values.ndim and values.shape[-1] == len(channel_of):
                edit(op_index, slot, -1, channel_of, -1, "weight")
                return
        wide = [i for i in inputs if g.last_dim(i) == len(channel_of) and g.constant(i) is None]
        if len(wide) != 1 or len(channel_of) == 1:
            raise _Refused(f"MUL (op {op_index}) of two per-channel tensors: which one to rescale is ambiguous")
        join(wide[0], channel_of)
    elif kind in ("ADD", "SUB"):
        homogeneous(op_index)
        for slot, operand in enumerate(inputs):
            if g.constant(operand) is not None:
                edit(op_index, slot, -1, channel_of, -1, "constant")
            else:
                join(operand, channel_of)
    elif kind in _PASS_THROUGH:
        _check_pass_through(g, op_index)
        source = inputs[0]
        join(source, _remap(channel_of, g.last_dim(source)) if kind in _RESHAPES else channel_of)
    else:
        raise _Refused(f"'{g.name(index)}' is computed by {kind} (op {op_index}), which cannot absorb a scale")


def _forward(g: _Graph, group: _Group, index: int, channel_of: np.ndarray, op_index: int, slot: int, join: Any,
             edit: Any, homogeneous: Any) -> None:
    """Make reader ``op_index`` of ``index`` compensate (weights) or pass the scale on (its output joins)."""
    op = g.graph.operators[op_index]
    kind = g.types[op_index]
    inputs = _ints(op.inputs)
    outputs = _ints(op.outputs)
    if kind in _WEIGHT_OPS and slot == 0:
        weights = g.constant(inputs[1])
        if weights is None or weights.ndim not in (2, 4):
            raise _Refused(f"{kind} (op {op_index}) reads it with non-constant weights")
        if kind == "CONV_2D":
            edit(op_index, 1, 3, channel_of, +1, "consumer")
        elif kind == "DEPTHWISE_CONV_2D":
            multiplier = weights.shape[3] // max(len(channel_of), 1)
            if multiplier < 1 or multiplier * len(channel_of) != weights.shape[3]:
                raise _Refused(f"DEPTHWISE_CONV_2D (op {op_index}) has {weights.shape[3]} outputs for "
                               f"{len(channel_of)} channels")
            edit(op_index, 1, 3, np.repeat(channel_of, multiplier), +1, "consumer")
        else:
            edit(op_index, 1, 1, _remap(channel_of, int(weights.shape[1])), +1, "consumer")
    elif kind == "MUL":
        homogeneous(op_index)
        join(outputs[0], channel_of)
    elif kind in ("ADD", "SUB"):
        homogeneous(op_index)
        join(outputs[0], channel_of)
        for other_slot, operand in enumerate(inputs):
            if other_slot == slot:
                continue
            if g.constant(operand) is not None:
                edit(op_index, other_slot, -1, channel_of, -1, "constant")
            else:
                join(operand, channel_of)
    elif kind in _PASS_THROUGH and slot == 0:
        _check_pass_through(g, op_index)
        target = outputs[0]
        join(target, _remap(channel_of, g.last_dim(target)) if kind in _RESHAPES else channel_of)
    else:
        raise _Refused(f"'{g.name(index)}' is read by {kind} (op {op_index}), which does not pass a per-channel "
                       "scale through")


def _check_pass_through(g: _Graph, op_index: int) -> None:
    op = g.graph.operators[op_index]
    kind = g.types[op_index]
    inputs = _ints(op.inputs)
    if kind in _FUSED_ONLY and g.activation(op) not in _HOMOGENEOUS_ACTIVATIONS:
        raise _Refused(f"{kind} (op {op_index}) has a fused activation that is not positive-homogeneous")
    rank = g.rank(inputs[0])
    if kind == "PAD":
        paddings = g.constant(inputs[1]) if len(inputs) > 1 else None
        if paddings is None or paddings.ndim != 2 or np.any(paddings[-1] != 0):
            raise _Refused(f"PAD (op {op_index}) pads the channel axis or has non-constant paddings")
    if kind in _REDUCTIONS:
        axes = g.constant(inputs[1]) if len(inputs) > 1 else None
        if axes is None or rank == 0 or any(int(a) % rank == rank - 1 for a in np.ravel(axes)):
            raise _Refused(f"{kind} (op {op_index}) reduces over the channel axis")


def _validate(g: _Graph, group: _Group) -> None:
    """Every op touching the group either absorbs the scale or passes it on exactly once (a safety net for the
    search: a MUL whose two operands both carry it would square it)."""
    absorbed = {(e.op, e.slot) for e in group.edits.values() if e.power == -1}
    for i, op in enumerate(g.graph.operators):
        inputs, outputs = _ints(op.inputs), _ints(op.outputs)
        carried_in = [s for s, t in enumerate(inputs) if t in group.maps]
        carried_out = any(t in group.maps for t in outputs)
        if not carried_in and not carried_out:
            continue
        kind = g.types[i]
        if kind == "MUL":
            count = len(carried_in) + sum((i, s) in absorbed for s in range(len(inputs)))
            if carried_out != (count == 1) or count > 1:
                raise _Refused(f"MUL (op {i}) would scale its output {count} times")
        elif kind in ("ADD", "SUB"):
            covered = all(s in carried_in or (i, s) in absorbed for s in range(len(inputs)))
            if not (carried_out and covered):
                raise _Refused(f"{kind} (op {i}) mixes scaled and unscaled operands")
        elif kind in _PASS_THROUGH and carried_out != (carried_in == [0]):
            raise _Refused(f"{kind} (op {i}) is only half in the group")


def _find_groups(g: _Graph, scope: Scope) -> tuple[list[_Group], list[Skipped]]:
    """Every group seeded at a producer's output, in graph order, deduplicated."""
    groups: list[_Group] = []
    skipped: list[Skipped] = []
    covered: set[int] = set()
    for op_index, op in enumerate(g.graph.operators):
        kind = g.types[op_index]
        inputs = _ints(op.inputs)
        if kind in _WEIGHT_OPS:
            if g.constant(inputs[1]) is None:
                continue
        elif kind == "MUL":
            if not any((v := g.constant(i)) is not None and v.ndim and v.shape[-1] > 1 for i in inputs):
                continue
        else:
            continue
        seed = _ints(op.outputs)[0]
        if seed in covered:
            continue
        try:
            group = _search(g, seed)
        except _Refused as exc:
            skipped.append(Skipped(g.name(seed), str(exc)))
            continue
        covered.update(group.maps)
        if scope == "pairs" and (len(group.ops(-1)) != 1 or len(group.ops(+1)) != 1):
            skipped.append(Skipped(g.name(seed), f"{len(group.ops(-1))} producers and {len(group.ops(+1))} "
                                                 "consumers: not a pair (scope='groups' changes it)"))
            continue
        groups.append(group)
    return groups, skipped


def _ranges(g: _Graph, group: _Group, power: int) -> np.ndarray:
    """Per channel, max |w| over the group's producer weights (power -1) or consumer weights (+1)."""
    found = np.zeros(group.channels, dtype=np.float64)
    for e in group.edits.values():
        if e.power != power or e.role not in ("weight", "consumer"):
            continue
        values = g.constant(int(g.graph.operators[e.op].inputs[e.slot]))
        assert values is not None
        per_entry = np.max(np.abs(np.moveaxis(values, e.axis, 0)).reshape(values.shape[e.axis], -1), axis=1)
        np.maximum.at(found, e.channel_of, per_entry.astype(np.float64))
    return found


def _apply(g: _Graph, group: _Group, scales: np.ndarray) -> None:
    for e in group.edits.values():
        values = g.constant(int(g.graph.operators[e.op].inputs[e.slot]))
        assert values is not None
        shape = [1] * values.ndim
        shape[e.axis] = -1
        factor = scales[e.channel_of].astype(np.float64) ** e.power
        g.write(e.op, e.slot, (values.astype(np.float64) * factor.reshape(shape)).astype(np.float32))


def _safe(scales: np.ndarray, low: float = 1 / MAX_SCALE, high: float = MAX_SCALE) -> np.ndarray:
    scales = np.where(np.isfinite(scales) & (scales > 0), scales, 1.0)
    return np.clip(scales, low, high)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where both are positive and finite, else 1 (a dead or broken channel)."""
    ok = np.isfinite(numerator) & np.isfinite(denominator) & (numerator > 0) & (denominator > 0)
    return np.where(ok, numerator / np.where(ok, denominator, 1.0), 1.0)


def _absmax(g: _Graph, group: _Group, channel_absmax: Mapping[str, np.ndarray]) -> np.ndarray:
    found = np.zeros(group.channels, dtype=np.float64)
    given = False
    for index, channel_of in group.maps.items():
        values = channel_absmax.get(g.name(index))
        if values is None:
            continue
        values = np.abs(np.asarray(values, dtype=np.float64).ravel())
        if values.shape != (len(channel_of),):
            raise InputError(f"channel_absmax['{g.name(index)}'] has {values.size} values; the tensor has "
                             f"{len(channel_of)} channels")
        np.maximum.at(found, channel_of, values)
        given = True
    if not given:
        raise InputError(f"SmoothQuant needs the per-channel absmax of '{g.name(group.seed)}' (the activation "
                         f"between {', '.join(g.types[o] for o in group.ops(-1))} and "
                         f"{', '.join(g.types[o] for o in group.ops(+1))}): measure it with channel_absmax()")
    return found


def equalize(float_model: bytes, *, strength: float | None = None,
             channel_absmax: Mapping[str, np.ndarray] | None = None, iterations: int = DEFAULT_ITERATIONS,
             scope: Scope = "pairs", verify: bool = True) -> Equalization:
    """Rebalance per-channel ranges between producer and consumer layers; the float function is unchanged.

    ``strength=None``: cross-layer equalization from weights alone, iterated until no scale moves by more than
    0.1 % or ``iterations`` passes. ``strength=α`` in [0, 1]: SmoothQuant's ``s = a^α / r2^(1-α)`` in one pass,
    with ``a`` from ``channel_absmax`` (keyed by tensor name, as ``channel_absmax()`` returns). ``verify`` runs
    both models on one seeded random input and raises RuntimeError (an edgeq bug) if the outputs differ.
    """
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise UsageError(f"strength must be in [0, 1] (or None for cross-layer equalization), got {strength}")
    if iterations < 1:
        raise UsageError(f"iterations must be at least 1, got {iterations}")
    if scope not in ("pairs", "groups"):
        raise UsageError(f"scope must be 'pairs' or 'groups', got {scope!r}")
    if strength is not None and channel_absmax is None:
        raise InputError("SmoothQuant-style equalization (strength set) needs channel_absmax: the per-channel "
                         "absmax of each activation, from channel_absmax(model, samples, tensors)")
    model = tfl.parse(float_model)
    g = _Graph(model)
    groups, skipped = _find_groups(g, scope)
    totals = [np.ones(group.channels) for group in groups]
    passes = 0
    if strength is not None:
        assert channel_absmax is not None
        activations = [_absmax(g, group, channel_absmax) for group in groups]  # all before any change
        for group, a, total in zip(groups, activations, totals, strict=True):
            r2 = _ranges(g, group, +1)
            scales = _safe(_ratio(a ** strength, r2 ** (1.0 - strength)))
            _apply(g, group, scales)
            total *= scales
        passes = 1
    else:
        for passes in range(1, iterations + 1):  # noqa: B007 - passes is reported
            moved = 1.0
            for group, total in zip(groups, totals, strict=True):
                r1, r2 = _ranges(g, group, -1), _ranges(g, group, +1)
                scales = _safe(np.sqrt(_ratio(r1, r2)), 1 / MAX_SCALE / total, MAX_SCALE / total)
                _apply(g, group, scales)
                total *= scales
                moved = max(moved, float(np.max(np.maximum(scales, 1 / scales))))
            if moved <= CONVERGED:
                break
    method = "cle" if strength is None else f"smoothquant(alpha={strength:g})"
    record = tuple(EqualizedGroup(
        tensor=g.name(group.seed), producers=tuple(g.types[o] for o in group.ops(-1)),
        consumers=tuple(g.types[o] for o in group.ops(+1)), channels=group.channels,
        min_scale=float(np.min(total)), max_scale=float(np.max(total)), method=method)
        for group, total in zip(groups, totals, strict=True))
    out = tfl.serialize(model) if groups else float_model
    drift = check_same_function(float_model, out, "equalization") if verify and groups else 0.0
    return Equalization(model=out, groups=record, skipped=tuple(skipped), iterations=passes, output_change=drift)


def scale_channels(float_model: bytes, producer_tensor: str, factors: Mapping[int, float], *,
                   verify: bool = True) -> bytes:
    """Multiply channels of activation ``producer_tensor`` by ``factors`` (channel -> factor > 0) and divide them
    back out of the layers that read it: the same float function with outlier channels, for building hard cases.
    Works on any group (residual streams and several readers included)."""
    model = tfl.parse(float_model)
    g = _Graph(model)
    matches = [i for i, t in enumerate(g.graph.tensors) if tfl.tensor_name(t) == producer_tensor]
    if not matches:
        raise InputError(f"no tensor named '{producer_tensor}' in the model's main graph")
    try:
        group = _search(g, matches[0])
    except _Refused as exc:
        raise InputError(f"cannot rescale the channels of '{producer_tensor}': {exc}") from None
    scales = np.ones(group.channels)
    for channel, factor in factors.items():
        if not 0 <= int(channel) < group.channels:
            raise InputError(f"channel {channel} is out of range: '{producer_tensor}' has {group.channels} channels")
        if not (np.isfinite(factor) and factor > 0):
            raise InputError(f"factor {factor} for channel {channel} must be positive and finite")
        scales[int(channel)] = 1.0 / float(factor)
    _apply(g, group, scales)
    out = tfl.serialize(model)
    if verify:
        check_same_function(float_model, out, "scaling channels")
    return out


def equalizable(float_model: bytes, scope: Scope = "groups") -> dict[str, tuple[str, ...]]:
    """Activations whose channels can be rescaled exactly: tensor name -> (producers..., '->', consumers...)."""
    g = _Graph(tfl.parse(float_model))
    groups, _ = _find_groups(g, scope)
    return {g.name(group.seed): (*[g.types[o] for o in group.ops(-1)], "->", *[g.types[o] for o in group.ops(+1)])
            for group in groups}


def _run(model: bytes, inputs: Sequence[np.ndarray] | None, seed: int = 0) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    rng = np.random.default_rng(seed)
    for k, detail in enumerate(interpreter.get_input_details()):
        value = inputs[k] if inputs is not None else rng.uniform(-1, 1, detail["shape"])
        interpreter.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]).reshape(detail["shape"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


#: How far an exact rescaling may move outputs (relative to their largest magnitude) through float32 rounding.
#: Deep real models drift further than kernels disagree with each other (the 246-op selfie segmenter: 2e-4 after
#: SmoothQuant-style scaling up to 52x, 3.7e-5 between LiteRT's builtin and XNNPACK kernels); a wrong rescaling
#: moves them by order 1.
SAME_FUNCTION_RTOL = 1e-3


def check_same_function(before: bytes, after: bytes, change: str, rtol: float = SAME_FUNCTION_RTOL) -> float:
    """The largest relative change of the outputs on one seeded random input; RuntimeError (an edgeq bug) above
    ``rtol``."""
    worst = 0.0
    for old, new in zip(_run(before, None), _run(after, None), strict=True):
        scale = max(float(np.max(np.abs(old), initial=0.0)), 1e-30)
        change_here = float(np.max(np.abs(old - new), initial=0.0)) / scale if old.shape == new.shape else np.inf
        if change_here > rtol:
            raise RuntimeError(f"{change} changed the float model's outputs (by {change_here:.3g} of their "
                               f"largest magnitude; rounding allows {rtol:g})")
        worst = max(worst, change_here)
    return worst


def channel_absmax(float_model: bytes, samples: Iterable[Sequence[np.ndarray]],
                   tensors: Collection[str]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of each named tensor over ``samples`` (one array per model input, with or
    without the batch axis): what SmoothQuant-style equalization migrates."""
    parsed = tfl.parse(float_model)
    graph = parsed.subgraphs[0]
    index = {tfl.tensor_name(t): i for i, t in enumerate(graph.tensors)}
    missing = [name for name in tensors if name not in index]
    if missing:
        raise InputError(f"no tensor named {', '.join(repr(m) for m in missing)} in the model's main graph")
    interpreter, _ = make_interpreter(float_model, CpuKernels.CPU, preserve_all_tensors=True)
    details = interpreter.get_input_details()
    found: dict[str, np.ndarray] = {}
    count = 0
    for sample in samples:
        if len(sample) != len(details):
            raise InputError(f"a sample has {len(sample)} arrays; the model has {len(details)} inputs")
        for detail, value in zip(details, sample, strict=True):
            array = np.asarray(value, dtype=detail["dtype"])
            if array.shape != tuple(detail["shape"]):
                if array.size != int(np.prod(detail["shape"])):
                    raise InputError(f"a sample for input '{detail['name']}' has shape {array.shape}; the model "
                                     f"takes {tuple(int(d) for d in detail['shape'])}")
                array = array.reshape(detail["shape"])
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        for name in tensors:
            value = np.abs(interpreter.get_tensor(index[name]).astype(np.float64))
            flat = value.reshape(-1, value.shape[-1]) if value.ndim else value.reshape(1, 1)
            current = flat.max(axis=0) if flat.shape[0] else np.zeros(flat.shape[1])
            found[name] = np.maximum(found[name], current) if name in found else current
        count += 1
    if not count:
        raise InputError("channel_absmax needs at least one sample")
    return found
