"""The Session protocol over a LiteRT interpreter, shared by the CPU/XNNPACK/reference and Edge TPU backends."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.harness.session import Delegation, TensorInfo


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(name=str(detail["name"]), shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]), scale=float(scale), zero_point=int(zero_point))


def check_inputs(infos: tuple[TensorInfo, ...], arrays: list[np.ndarray]) -> None:
    """Refuse arrays that do not match the model's inputs, with a message naming the input."""
    if len(arrays) != len(infos):
        raise InputError(f"the model takes {len(infos)} input(s), got {len(arrays)}")
    for info, array in zip(infos, arrays, strict=True):
        if np.dtype(array.dtype) != info.dtype:
            raise InputError(f"input {info.name!r} is {info.dtype.name}, got {np.dtype(array.dtype).name}"
                             + (" (quantize it first)" if info.scale else ""))
        if tuple(array.shape) != info.shape:
            raise InputError(f"input {info.name!r} is shaped {info.shape}, got {tuple(array.shape)}")


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class LiteRTSession:
    """The Session protocol over a LiteRT interpreter, whatever resolver or delegate it was built with."""

    def __init__(self, interpreter: Any, backend: str, runtime: str, delegation: Delegation | None, *,
                 warnings: tuple[str, ...] = ()) -> None:
        self.interpreter = interpreter
        self.backend = backend
        self.runtime = runtime
        self.delegation = delegation
        self.warnings = tuple(warnings)  # things a report should show, e.g. "not an _edgetpu.tflite model"
        try:
            input_details = interpreter.get_input_details()
            output_details = interpreter.get_output_details()
        except UnicodeDecodeError:  # LiteRT decodes tensor names as UTF-8; a damaged file's may not be
            raise InputError("damaged model: an input or output tensor name is not UTF-8 text") from None
        self._input_indices = [int(d["index"]) for d in input_details]
        self._output_indices = [int(d["index"]) for d in output_details]
        self.inputs = tuple(_tensor_info(d) for d in input_details)
        self.outputs = tuple(_tensor_info(d) for d in output_details)

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        check_inputs(self.inputs, arrays)
        for index, array in zip(self._input_indices, arrays, strict=True):
            try:
                self.interpreter.set_tensor(index, np.ascontiguousarray(array))
            except ValueError as exc:  # e.g. an input tensor that the file wrongly backs with constant data
                raise InputError(f"{self.backend} refused input data: {first_line(exc)}") from None

    def invoke(self) -> None:
        try:
            self.interpreter.invoke()
        except RuntimeError as exc:
            raise InputError(f"{self.backend} failed to run the model: {first_line(exc)}") from None

    def get_outputs(self) -> list[np.ndarray]:
        return [self.interpreter.get_tensor(index) for index in self._output_indices]
