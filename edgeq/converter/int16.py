"""Selective 16-bit activations: a8w8 everywhere, a16w8 on the ops that produce chosen tensors (issue 16).

TF's MLIR quantizer (edgeq.converter.quantize) makes one activation type per model. Google's ai-edge-quantizer
(AEQ, ``ai_edge_quantizer``, the ``full`` extra) takes a recipe per op, so the few tensors whose range does
not fit 256 steps can get 65536 while the rest of the model stays int8. Only AEQ's public API is used:
``quantizer.Quantizer``, ``add_static_config`` (one scope regex per op) and ``quantize(calibration_result)``.
AEQ's own calibrator is not run: edgeq's ranges (``choose_ranges``, keyed by tensor name) are handed to
``quantize`` as the calibration result, in the structure AEQ's calibrator returns (``qtyping.QSV``:
``{"min": array, "max": array}`` of shape ``(1,) * rank``, float32), so every estimator, override and sample
guard of edgeq applies here exactly as in ``convert``.

What AEQ makes of it (ai-edge-quantizer 0.10, measured in tests/test_int16.py and docs/int16.md):

- AEQ gives each op one activation type for all its inputs and outputs. A tensor asked for in int16 therefore
  makes its producer AND every op reading it a16w8 (otherwise its readers would get an int8 copy made with the
  same range, and int16 would buy nothing); those ops' other inputs and outputs are int16 too;
- an a16w8 op reads and writes int16, symmetric (zero point 0), with int8 symmetric per-channel weights and an
  int64 bias (what LiteRT's int16x8 CONV_2D/DEPTHWISE_CONV_2D need);
- at every int8 -> int16 edge AEQ inserts a QUANTIZE (a requantize: int8 in, int16 out, a new tensor
  ``<name>_quantized``) and another at every int16 -> int8 edge; the original tensor keeps its name and its
  producer's type. When the int16 side is a model output, the output becomes the new ``<name>_quantized``;
- model inputs/outputs are int8 by default (AEQ quantizes its INPUT/OUTPUT virtual ops like any op).

Ops AEQ has no recipe for stay float between DEQUANTIZE/QUANTIZE; ``quantize_mixed`` refuses such a result
(InputError naming the op), as ``convert`` does without ``--allow-float-ops``, and it loads the result on
LiteRT's CPU builtin kernels once before returning it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.artifacts import IOType
from edgeq.converter.quantize import BOUNDARY_OPS, float_ops
from edgeq.errors import InputError, require
from edgeq.quiet import native_output_captured
from edgeq.spec.rules import INT16X8_OPS
from edgeq.tflite import model as tfl

#: AEQ scopes longer than this are truncated before its regex search (tfl_flatbuffer_utils.get_op_scope).
_AEQ_SCOPE_MAX = 10000
#: TFLite op names that AEQ's qtyping.TFLOperationName spells differently.
_AEQ_OP_NAMES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}


@dataclass(frozen=True)
class Int16Candidate:
    """One activation tensor of a float model and whether ``quantize_mixed`` can make it int16."""

    tensor: str
    op_type: str  # the producing op ("INPUT" for a model input)
    op_index: int | None
    supported: bool
    reason: str
    ops: tuple[int, ...] = ()  # the ops made a16w8 for it: its producer and every op that reads it


def _graph_ops(parsed: Any) -> tuple[dict[int, tuple[int, str]], dict[int, list[tuple[int, str]]]]:
    """Main graph: tensor index -> (op index, op type) of its producer, and -> the ops that read it."""
    producers: dict[int, tuple[int, str]] = {}
    consumers: dict[int, list[tuple[int, str]]] = {}
    for i, op in enumerate(parsed.subgraphs[0].operators or []):
        kind = tfl.op_type(parsed, op)
        for t in op.outputs if op.outputs is not None else []:
            if t >= 0:
                producers[int(t)] = (i, kind)
        for t in dict.fromkeys(int(t) for t in (op.inputs if op.inputs is not None else []) if t >= 0):
            consumers.setdefault(t, []).append((i, kind))
    return producers, consumers


def int16_candidates(float_model: bytes) -> list[Int16Candidate]:
    """Every float activation of the main graph, saying whether ``quantize_mixed`` can make it int16, and why not.

    A tensor is int16 only if every op touching it is: AEQ gives each op one activation type for its inputs and
    outputs, and an int8 op reading it would get an int8 copy made with the same range (a QUANTIZE), losing
    what int16 bought. So its producer and all its readers must be in ``INT16X8_OPS`` (LiteRT's CPU builtins
    run them with int16 activations and int8 weights, measured in edgeq/spec/rules.py, and AEQ has an a16w8
    recipe for them). Model inputs cannot be int16: their type is the model's I/O type."""
    parsed = tfl.parse(float_model, "the float model")
    producers, consumers = _graph_ops(parsed)
    found = []
    for tensor in tfl.float_activations(parsed):
        if tensor.subgraph != 0:
            continue
        if tensor.index not in producers:
            found.append(Int16Candidate(tensor.name, "INPUT", None, False,
                                        "a model input: its type is the model's I/O type"))
            continue
        index, kind = producers[tensor.index]
        readers = consumers.get(tensor.index, [])
        lacking = [(i, k) for i, k in [(index, kind), *readers] if k not in INT16X8_OPS]
        ops = tuple(sorted({index, *(i for i, _ in readers)}))
        if lacking:
            role = "produced" if lacking[0][0] == index else "read"
            reason = (f"{role} by {lacking[0][1]} (op {lacking[0][0]}), which has no int16x8 kernel in LiteRT's "
                      "CPU builtins or no a16w8 recipe in ai-edge-quantizer")
            found.append(Int16Candidate(tensor.name, kind, index, False, reason, ops))
        else:
            found.append(Int16Candidate(tensor.name, kind, index, True,
                                        f"{kind} and its {len(readers)} reader(s) have int16x8 kernels", ops))
    return found


def _scope(parsed: Any, op: Any) -> str:
    """The scope AEQ matches recipes against: the op's output names joined by ';' with a trailing ';'."""
    graph = parsed.subgraphs[0]
    names = [tfl.tensor_name(graph.tensors[t]) for t in op.outputs if t >= 0]
    names = [n for n in names if n]
    return (";".join(names) + ";")[:_AEQ_SCOPE_MAX]


def _qsvs(parsed: Any, ranges: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, np.ndarray]]:
    """edgeq's ranges in the structure AEQ's calibrator returns: tensor name -> {"min", "max"} arrays of
    shape (1,) * rank (calibrator.get_model_qsvs; naive_min_max_quantize reads only "min" and "max")."""
    qsvs = {}
    missing = []
    for tensor in tfl.float_activations(parsed):
        if tensor.name not in ranges:
            missing.append(tensor.name)
            continue
        lo, hi = (float(v) for v in ranges[tensor.name])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise InputError(f"the range of tensor '{tensor.name}' is not a finite [min, max]: {lo}, {hi}")
        shape = (1,) * len(tensor.shape)
        qsvs[tensor.name] = {"min": np.full(shape, lo, np.float32), "max": np.full(shape, hi, np.float32)}
    if missing:
        raise InputError(f"no range for {len(missing)} activation tensor(s) of the model (first: '{missing[0]}'); "
                         "give a range for every float activation, model inputs included")
    return qsvs


def _chosen_ops(parsed: Any, int16_tensors: Collection[str]) -> list[int]:
    """The ops to make a16w8 (producers and readers of ``int16_tensors``), refusing names that cannot be int16."""
    candidates = {c.tensor: c for c in int16_candidates(tfl.serialize(parsed))}
    ops = set()
    for name in int16_tensors:
        candidate = candidates.get(name)
        if candidate is None:
            raise InputError(f"no float activation tensor named '{name}' in the model "
                             f"(it has {len(candidates)}; edgeq keeps the float model's tensor names)")
        if not candidate.supported:
            raise InputError(f"tensor '{name}' cannot be int16: {candidate.reason}")
        ops.update(candidate.ops)
    return sorted(ops)


def _io_configs(quantizer: Any, io: IOType) -> None:
    """Model I/O as ``io`` asks. AEQ quantizes its INPUT/OUTPUT virtual ops like any op (int8 I/O, nothing
    inserted); NO_QUANTIZE on them keeps float32 I/O with a QUANTIZE after each input and a DEQUANTIZE before
    each output (the output tensor is renamed ``<name>_dequant``); its static_wi8_au8 config makes uint8 I/O
    with a uint8 <-> int8 QUANTIZE at each end."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    boundary = (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT)
    if io is IOType.FLOAT32:
        for op in boundary:
            quantizer.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    elif io is IOType.UINT8:
        uint8 = qtyping.OpQuantizationConfig(
            activation_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=8, symmetric=False, dtype=qtyping.TensorDataType.UINT),
            compute_precision=qtyping.ComputePrecision.INTEGER, explicit_dequantize=False)
        for op in boundary:
            quantizer.update_quantization_recipe(".*", op, uint8)


def _refuse_uint8_next_to_int16(parsed: Any, chosen: list[int]) -> None:
    """AEQ converts uint8 <-> int16 in one QUANTIZE, which LiteRT's QUANTIZE kernel refuses at prepare (measured:
    "output->type == kTfLiteInt8 || ... kTfLiteInt16 || ... kTfLiteInt32 was not true")."""
    graph = parsed.subgraphs[0]
    boundary = {int(i) for i in [*graph.inputs, *graph.outputs]}
    for index in chosen:
        op = graph.operators[index]
        touching = [int(t) for t in [*op.inputs, *op.outputs] if int(t) in boundary]
        if touching:
            name = tfl.tensor_name(graph.tensors[touching[0]])
            raise InputError(f"uint8 I/O cannot meet int16 at model input/output '{name}' (op {index} "
                             f"{tfl.op_type(parsed, op)} would be int16): LiteRT has no uint8 <-> int16 QUANTIZE; "
                             "use io int8 or float32")


def _check_runs(quantized: bytes) -> None:
    """LiteRT's CPU builtin kernels (no delegate) must accept every op: loaded and allocated once."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    try:
        make_interpreter(quantized, CpuKernels.CPU)
    except InputError as exc:
        raise InputError(f"the mixed int8/int16 model does not load in LiteRT: {exc}") from None


def _check_result(quantized: bytes, io: IOType, int16_tensors: Collection[str]) -> None:
    """Refuse what AEQ left float, and a requested tensor that did not come out int16 with zero point 0 (AEQ
    silently keeps the earlier recipe when its policy refuses an op's a16w8 config)."""
    left = float_ops(quantized, io)
    if left:
        causes = [op for op in left if op.op_type not in BOUNDARY_OPS] or left
        names = ", ".join(sorted({op.op_type for op in causes}))
        raise InputError(f"ai-edge-quantizer left {names} in float (first: {causes[0]}); "
                         "the mixed int8/int16 path publishes full-integer models only")
    parsed = tfl.parse(quantized, "the mixed model")
    graph = parsed.subgraphs[0]
    wanted = {IOType.INT8: "INT8", IOType.UINT8: "UINT8", IOType.FLOAT32: "FLOAT32"}[io]
    for index in [*graph.inputs, *graph.outputs]:
        kind = tfl.tensor_type_name(graph.tensors[index].type)
        if kind != wanted:
            raise InputError(f"ai-edge-quantizer made model input/output '{tfl.tensor_name(graph.tensors[index])}' "
                             f"{kind}, not {wanted}")
    by_name = {tfl.tensor_name(t): t for t in graph.tensors}
    for name in int16_tensors:
        tensor = by_name.get(name)
        kind = tfl.tensor_type_name(tensor.type) if tensor is not None else "missing"
        zero_points = tensor.quantization.zeroPoint if tensor is not None and tensor.quantization else None
        if kind != "INT16" or zero_points is None or np.any(np.asarray(zero_points) != 0):
            raise InputError(f"ai-edge-quantizer did not make tensor '{name}' int16 with zero point 0 "
                             f"(got {kind}); its producing op may have no a16w8 recipe")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def quantize_mixed(float_model: bytes, ranges: Mapping[str, tuple[float, float]], int16_tensors: Collection[str],
                   io: IOType, *, per_tensor: bool = False) -> bytes:
    """Full-integer model: int8 activations and per-channel int8 weights (a8w8), except the ops producing or
    reading ``int16_tensors``, which get int16 symmetric activations with int8 weights (a16w8), through AEQ.

    ``ranges`` are edgeq's activation ranges by tensor name, one for every float activation (model inputs
    included). ``per_tensor`` makes every weight per-tensor. Raises InputError (exit 2) for a name that is not
    an activation or that an op touching it keeps from int16 (see ``int16_candidates``), for a model with
    control-flow subgraphs, for uint8 I/O next to an int16 op, for any op AEQ leaves in float and for a result
    LiteRT's builtin kernels do not load."""
    require("ai_edge_quantizer", "selective int16 activations")
    io = IOType(io)
    parsed = tfl.parse(float_model, "the float model")
    if len(parsed.subgraphs) > 1:
        raise InputError("the mixed int8/int16 path quantizes single-graph models only; this one has "
                         f"{len(parsed.subgraphs)} subgraphs (control flow)")
    qsvs = _qsvs(parsed, ranges)
    chosen = _chosen_ops(parsed, int16_tensors)
    if io is IOType.UINT8:
        _refuse_uint8_next_to_int16(parsed, chosen)

    from ai_edge_quantizer import qtyping, quantizer

    granularity = qtyping.QuantGranularity.TENSORWISE if per_tensor else qtyping.QuantGranularity.CHANNELWISE
    graph = parsed.subgraphs[0]
    if parsed.signatureDefs is None:  # AEQ 0.10 iterates the signature list unconditionally (TypeError on None)
        parsed.signatureDefs = []
        float_model = tfl.serialize(parsed)
    try:
        with warnings.catch_warnings(), native_output_captured() as captured:
            warnings.simplefilter("ignore")
            aeq = quantizer.Quantizer(bytearray(float_model))
            aeq.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                                  weight_num_bits=8, weight_granularity=granularity)
            # Later scopes win in AEQ's recipe lookup; each op is matched by its exact scope.
            # The recipe names the op type: a model output's virtual OUTPUT op has the same scope as its producer
            # (AEQ scopes an op without outputs by its inputs) and would otherwise make the model output int16.
            for index in chosen:
                op = graph.operators[index]
                kind = tfl.op_type(parsed, op)
                scope = "^" + re.escape(_scope(parsed, op)) + "$"
                aeq.add_static_config(scope, qtyping.TFLOperationName(_AEQ_OP_NAMES.get(kind, kind)),
                                      activation_num_bits=16, weight_num_bits=8, weight_granularity=granularity)
            _io_configs(aeq, io)
            result = aeq.quantize(qsvs, enable_progress_report=False)
    except (ValueError, RuntimeError) as exc:
        detail = captured.first_error_line() or _first_line(exc)
        raise InputError(f"ai-edge-quantizer refused the model: {detail}") from exc
    except (TypeError, KeyError, IndexError, AttributeError) as exc:  # AEQ failing inside on a model it took
        raise InputError(f"ai-edge-quantizer failed on this model ({_first_line(exc)}); keep these tensors "
                         "int8") from exc
    if result.quantized_model is None:
        raise InputError("ai-edge-quantizer returned no model")
    quantized = bytes(result.quantized_model)
    _check_result(quantized, io, int16_tensors)
    _check_runs(quantized)
    return quantized
