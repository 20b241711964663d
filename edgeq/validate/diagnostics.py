"""Per-layer diagnostics: the float and INT8 models run on the same inputs with every tensor kept.

Tensors are matched by name (the quantizer keeps activation names). Per matched tensor:
SQNR in dB (signal power over quantization-error power), rmse in units of the tensor's scale (about
0.29 is pure uniform rounding noise; much more means clipping or accumulated error from earlier
layers), saturation (share of int8 values at qmax, or at qmin unless qmin encodes 0) and the share of
float values more than half a step outside the representable range (clipping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

QRANGE = {"INT8": (-128, 127), "UINT8": (0, 255)}


@dataclass(frozen=True)
class LayerDiagnostics:
    name: str
    op: str
    sqnr_db: float  # float tensor vs the INT8 model's tensor: everything accumulated up to here
    local_sqnr_db: float  # float tensor vs itself quantized with this tensor's range: this layer's own share
    rmse_over_scale: float
    saturation: float
    clip_fraction: float

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "op": self.op, "sqnr_db": _finite(self.sqnr_db),
                "local_sqnr_db": _finite(self.local_sqnr_db),
                "rmse_over_scale": self.rmse_over_scale, "saturation": self.saturation,
                "clip_fraction": self.clip_fraction}


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


def _quantized_tensors(parsed: object) -> dict[str, tuple[int, float, int, int, int, str]]:
    """name -> (index, scale, zero point, qmin, qmax, producing op) for per-tensor 8-bit activations."""
    graph = parsed.subgraphs[0]  # type: ignore[attr-defined]
    producer = {}
    for op in graph.operators:
        for out in op.outputs:
            producer[int(out)] = tfl.op_type(parsed, op)
    found = {}
    for index, tensor in enumerate(graph.tensors):
        kind = tfl.tensor_type_name(tensor.type)
        q = tensor.quantization
        if kind not in QRANGE or tfl.is_constant(parsed, tensor) or q is None or q.scale is None or len(q.scale) != 1:
            continue
        qmin, qmax = QRANGE[kind]
        found[tfl.tensor_name(tensor)] = (index, float(q.scale[0]), int(q.zeroPoint[0]), qmin, qmax,
                                          producer.get(index, "INPUT"))
    return found


def per_layer(float_model: bytes, int8_model: bytes, x: np.ndarray) -> list[LayerDiagnostics]:
    """Diagnostics for every activation present in both models, in the INT8 model's tensor order."""
    float_tensors = {a.name: a.index for a in tfl.float_activations(tfl.parse(float_model))}
    int8_parsed = tfl.parse(int8_model)
    quantized = {name: info for name, info in _quantized_tensors(int8_parsed).items() if name in float_tensors}
    f_interp, _ = make_interpreter(float_model, CpuKernels.CPU, preserve_all_tensors=True)
    q_interp, _ = make_interpreter(int8_model, CpuKernels.CPU, preserve_all_tensors=True)
    f_in = f_interp.get_input_details()[0]
    q_in = q_interp.get_input_details()[0]
    acc = {name: _Accumulator() for name in quantized}
    for sample in x:
        f_interp.set_tensor(f_in["index"], sample[None].astype(np.float32))
        f_interp.invoke()
        scale, zero_point = q_in["quantization"]
        if np.issubdtype(q_in["dtype"], np.integer):
            limits = np.iinfo(q_in["dtype"])
            q_sample = np.clip(np.rint(sample[None] / scale) + zero_point, limits.min, limits.max).astype(q_in["dtype"])
        else:
            q_sample = sample[None].astype(np.float32)
        q_interp.set_tensor(q_in["index"], q_sample)
        q_interp.invoke()
        for name, (index, s, z, qmin, qmax, _) in quantized.items():
            reference = f_interp.get_tensor(float_tensors[name]).astype(np.float64).ravel()
            raw = q_interp.get_tensor(index).astype(np.int64).ravel()
            if raw.size != reference.size:
                continue
            approx = (raw - z) * s
            err = reference - approx
            a = acc[name]
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
    rows = []
    for name, (_, _, _, _, _, op) in sorted(quantized.items(), key=lambda item: item[1][0]):
        a = acc[name]
        if a.count == 0:
            continue
        rows.append(LayerDiagnostics(name=name, op=op, sqnr_db=_db(a.signal, a.error),
                                     local_sqnr_db=_db(a.signal, a.local_error),
                                     rmse_over_scale=math.sqrt(a.error_in_steps / a.count),
                                     saturation=a.saturated / a.count, clip_fraction=a.clipped / a.count))
    return rows


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def worst(rows: list[LayerDiagnostics], k: int = 3) -> list[LayerDiagnostics]:
    """The k layers whose own quantization hurts most: lowest local SQNR. Accumulated SQNR would blame
    every layer downstream of a bad one; the local figure points at the cause."""
    finite = [r for r in rows if math.isfinite(r.local_sqnr_db)]
    return sorted(finite, key=lambda r: r.local_sqnr_db)[:k]


def output_sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    err = reference.astype(np.float64) - approx.astype(np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
