"""Calibration at deployment speed: the measured activations as extra graph outputs, run on XNNPACK.

``preserve_all_tensors`` keeps every intermediate tensor readable, but LiteRT then turns XNNPACK off and the
builtin kernels are ~4x slower on a MobileNetV2. A copy of the model whose measured tensors of subgraph 0
are appended to its outputs (SignatureDefs dropped: their output lists would no longer match) keeps them
just as readable, on the runtime users deploy on. The arena planner never lets an op overwrite a graph output
nor share a graph output's memory in place, so every value read after ``invoke`` is the one its op computed;
a per-sample check that no two measured tensors overlap in memory backs that up. Graph inputs are read
from the interpreter too (they are never overwritten either).

Only for graphs that run no other subgraph: a loop body's tensors exist once per iteration, which extra
outputs cannot show (``edgeq.calib.collect`` replays those on the builtin kernels). Ops XNNPACK does not
take run on the builtin kernels inside the same interpreter, as they would when deployed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.calib.binning import Binner
from edgeq.calib.stats import TensorStats
from edgeq.errors import InputError
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter


class NonFiniteValues(ValueError):
    """A measured tensor held NaN or Inf: ``key`` names it, the caller names the sample."""

    def __init__(self, key: TensorKey) -> None:
        super().__init__(f"tensor {key} holds non-finite values")
        self.key = key


def applies(parsed: Any) -> bool:
    """Whether the main graph runs no other subgraph (WHILE, IF, CALL_ONCE ...) and computes no tensor from
    constants alone.

    XNNPACK takes an op of constants only (DEQUANTIZE of int8 weights, say) as packed static weights and never
    writes its output tensor, even one marked a graph output: what is read there is uninitialised memory. Such
    models keep the replay engine (builtin kernels, every tensor kept), which computes them."""
    return tfl.reachable_subgraphs(parsed) == [0] and not tfl.constant_derived(parsed)


def outputs_model(model: bytes, indices: Sequence[int]) -> bytes:
    """``model`` with tensors ``indices`` of subgraph 0 appended to its outputs (inputs, and tensors already
    outputs, stay where they are), and no SignatureDefs."""
    parsed = tfl.parse(model)
    graph = parsed.subgraphs[0]
    outputs = [int(i) for i in (graph.outputs if graph.outputs is not None else [])]
    skip = set(outputs) | {int(i) for i in (graph.inputs if graph.inputs is not None else [])}
    graph.outputs = np.asarray(outputs + [i for i in dict.fromkeys(indices) if i not in skip], dtype=np.int32)
    parsed.signatureDefs = []
    return tfl.serialize(parsed)


class OutputsEngine:
    """Runs the outputs model on XNNPACK (1 thread) and bins each measured tensor of one sample."""

    kernels = CpuKernels.XNNPACK

    def __init__(self, parsed: Any, model: bytes, keys: Sequence[TensorKey]) -> None:
        if not applies(parsed) or any(g != 0 for g, _ in keys):
            raise ValueError("the outputs engine measures graphs that run no other subgraph")
        del parsed
        self.keys = list(keys)
        self.interpreter, _ = make_interpreter(outputs_model(model, [i for _, i in self.keys]), self.kernels,
                                               threads=1)
        self.binner = Binner()

    def sample_stats(self, sample: Sequence[np.ndarray], number: int) -> dict[TensorKey, TensorStats]:
        """Run one sample (one array per model input; ``number`` unused) and return each tensor's statistics."""
        interpreter = self.interpreter
        for detail, array in zip(interpreter.get_input_details(), sample, strict=True):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        # Views, not copies: nothing may keep them past this call (the next invoke refuses while one lives).
        views = [interpreter.tensor(index)() for _, index in self.keys]
        _check_disjoint(views, self.keys)
        found = {}
        for key, values in zip(self.keys, views, strict=True):
            try:
                found[key] = self.binner.stats(values)
            except ValueError as exc:
                if "non-finite" in str(exc):
                    raise NonFiniteValues(key) from None
                raise
        return found


def _check_disjoint(views: Sequence[np.ndarray], keys: Sequence[TensorKey]) -> None:
    """InputError if two measured tensors share memory: one's value could then be another's."""
    spans = sorted((v.__array_interface__["data"][0], v.nbytes, key) for v, key in zip(views, keys, strict=True)
                   if v.nbytes)
    for (start, size, key), (next_start, _, other) in itertools.pairwise(spans):
        if next_start < start + size:
            raise InputError(f"cannot collect statistics on XNNPACK: tensors {key[1]} and {other[1]} of the main "
                             "graph share memory in the runtime")
