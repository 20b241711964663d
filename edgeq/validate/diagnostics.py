"""Per-layer diagnostics: the float and INT8 models run on the same inputs with every tensor kept.

Tensors are matched by (subgraph, name) (the quantizer keeps activation names and subgraph order), in every
subgraph: control flow is replayed (edgeq.calib.collect.GraphReplay), so a loop body's tensor is compared
iteration by iteration, float against INT8, for as many iterations as both ran. Per matched tensor:
SQNR in dB (signal power over quantization-error power), rmse in units of the tensor's scale (about
0.29 is pure uniform rounding noise; much more means clipping or accumulated error from earlier
layers), saturation (share of int8 values at qmax, or at qmin unless qmin encodes 0) and the share of
float values more than half a step outside the representable range (clipping). Each tensor's figures are a
:class:`edgeq.results.validation.LayerDiagnostics` (an SQNR that is not finite, as for an exact layer, is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.calib.collect import GraphReplay
from edgeq.metrics import sqnr_db
from edgeq.results.validation import LayerDiagnostics
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

QRANGE = {"INT8": (-128, 127), "UINT8": (0, 255)}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class _Accumulator:
    signal: float = 0.0
    error: float = 0.0
    local_error: float = 0.0
    error_in_steps: float = 0.0
    count: int = 0
    saturated: int = 0
    clipped: int = 0


def _quantized_tensors(parsed: Any) -> dict[tuple[int, str], tuple[int, float, int, int, int, str]]:
    """(subgraph, name) -> (index, scale, zero point, qmin, qmax, producing op) for per-tensor 8-bit
    activations of every subgraph."""
    producer = tfl.producers(parsed)
    found = {}
    for g in tfl.reachable_subgraphs(parsed):
        for index, tensor in enumerate(parsed.subgraphs[g].tensors):
            kind = tfl.tensor_type_name(tensor.type)
            q = tensor.quantization
            if (kind not in QRANGE or tfl.is_constant(parsed, tensor) or q is None or q.scale is None
                    or len(q.scale) != 1):
                continue
            qmin, qmax = QRANGE[kind]
            found[(g, tfl.tensor_name(tensor))] = (index, float(q.scale[0]), int(q.zeroPoint[0]), qmin, qmax,
                                                   producer.get((g, index), "INPUT"))
    return found


class _Recorder:
    """Runs one model on one sample and keeps every value of the watched tensors, per (subgraph, tensor)."""

    def __init__(self, model: bytes, keys: list[TensorKey]) -> None:
        self.interpreter, _ = make_interpreter(model, CpuKernels.CPU, preserve_all_tensors=True)
        self.input = self.interpreter.get_input_details()[0]
        self.values: dict[TensorKey, list[np.ndarray]] = {}
        self.replay = GraphReplay(tfl.parse(model), model, keys,
                                  lambda key, value, _: self.values.setdefault(key, []).append(value))

    def run(self, x: np.ndarray, sample: int) -> dict[TensorKey, list[np.ndarray]]:
        self.values = {}
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        self.replay.measure(0, self.interpreter, sample)
        return self.values


def per_layer(float_model: bytes, int8_model: bytes, x: np.ndarray) -> list[LayerDiagnostics]:
    """Diagnostics for every activation present in both models, in the INT8 model's (subgraph, tensor) order."""
    float_tensors = {(a.subgraph, a.name): a.index for a in tfl.float_activations(tfl.parse(float_model))}
    int8_parsed = tfl.parse(int8_model)
    quantized = {key: info for key, info in _quantized_tensors(int8_parsed).items() if key in float_tensors}
    f_run = _Recorder(float_model, [(g, float_tensors[(g, name)]) for g, name in quantized])
    q_run = _Recorder(int8_model, [(g, info[0]) for (g, _), info in quantized.items()])
    q_in = q_run.input
    acc = {key: _Accumulator() for key in quantized}
    for i, sample in enumerate(x):
        f_values = f_run.run(sample[None].astype(np.float32), i)
        scale, zero_point = q_in["quantization"]
        if np.issubdtype(q_in["dtype"], np.integer):
            limits = np.iinfo(q_in["dtype"])
            q_sample = np.clip(np.rint(sample[None] / scale) + zero_point, limits.min, limits.max).astype(q_in["dtype"])
        else:
            q_sample = sample[None].astype(np.float32)
        q_values = q_run.run(q_sample, i)
        for (g, name), (index, s, z, qmin, qmax, _) in quantized.items():
            pairs = zip(f_values.get((g, float_tensors[(g, name)]), []), q_values.get((g, index), []), strict=False)
            for float_value, int8_value in pairs:
                _accumulate(acc[(g, name)], float_value, int8_value, s, z, qmin, qmax)
    rows = []
    for (g, name), (_, _, _, _, _, op) in sorted(quantized.items(), key=lambda item: (item[0][0], item[1][0])):
        a = acc[(g, name)]
        if a.count == 0:
            continue
        rows.append(LayerDiagnostics(name=name, op=op, sqnr_db=_finite(_db(a.signal, a.error)),
                                     local_sqnr_db=_finite(_db(a.signal, a.local_error)),
                                     rmse_over_scale=math.sqrt(a.error_in_steps / a.count),
                                     saturation=a.saturated / a.count, clip_fraction=a.clipped / a.count,
                                     subgraph=g))
    return rows


def _accumulate(a: _Accumulator, float_value: np.ndarray, int8_value: np.ndarray, s: float, z: int, qmin: int,
                qmax: int) -> None:
    reference = np.asarray(float_value).astype(np.float64).ravel()
    raw = np.asarray(int8_value).astype(np.int64).ravel()
    if raw.size != reference.size:
        return
    approx = (raw - z) * s
    err = reference - approx
    own = (np.clip(np.rint(reference / s) + z, qmin, qmax) - z) * s
    a.local_error += float(np.dot(reference - own, reference - own))
    a.signal += float(np.dot(reference, reference))
    a.error += float(np.dot(err, err))
    a.error_in_steps += float(np.dot(err, err)) / (s * s)
    a.count += raw.size
    # qmin is no saturation when it encodes 0 (ReLU outputs: zero point = qmin)
    a.saturated += int(np.count_nonzero((raw == qmax) | ((raw == qmin) & (qmin != z))))
    low, high = (qmin - z) * s - s / 2, (qmax - z) * s + s / 2
    a.clipped += int(np.count_nonzero((reference < low) | (reference > high)))


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def worst(rows: list[LayerDiagnostics], k: int = 3) -> list[LayerDiagnostics]:
    """The k layers whose own quantization hurts most: lowest local SQNR. Accumulated SQNR would blame
    every layer downstream of a bad one; the local figure points at the cause."""
    measured = [r for r in rows if r.local_sqnr_db is not None]
    return sorted(measured, key=lambda r: r.local_sqnr_db or 0.0)[:k]


def output_sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    err = reference.astype(np.float64) - approx.astype(np.float64)
    return sqnr_db(float(np.sum(reference.astype(np.float64) ** 2)), float(np.sum(err * err)))
