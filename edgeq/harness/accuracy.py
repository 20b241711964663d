"""Top-1 accuracy of a TFLite classifier run in a LiteRT interpreter.

Inputs are quantized and outputs dequantized with the model's own parameters, so the same code
measures float, int8 and uint8 models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import InputError


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise InputError(f"input {detail['name']!r} is {np.dtype(dtype).name} without quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_batch1(interpreter: Any, inputs: np.ndarray, output_index: int = 0) -> np.ndarray:
    """Run a single-input model one sample at a time; returns the dequantized outputs stacked."""
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[output_index]
    expected = tuple(input_detail["shape"][1:])
    if tuple(inputs.shape[1:]) != expected:
        raise InputError(f"data samples are shaped {tuple(inputs.shape[1:])}, the model expects {expected}")
    outputs = []
    for sample in inputs:
        interpreter.set_tensor(input_detail["index"], _quantize(sample[None], input_detail))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)[0])
    return np.stack(outputs)


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose highest score is the label."""
    return float(np.mean(np.argmax(scores, axis=-1) == labels))
