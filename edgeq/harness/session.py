"""What every in-process backend hands the harness: a loaded model that can be fed and invoked.

Backends (LiteRT CPU/XNNPACK/reference kernels, the Edge TPU delegate, TFLite Micro) differ in
how they load a model; latency and accuracy code only ever sees this protocol. Never imports
TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the runtime sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float = 0.0  # 0.0: not quantized
    zero_point: int = 0


@dataclass(frozen=True)
class Delegation:
    """How much of the graph a delegate took."""

    delegate: str
    nodes_total: int
    nodes_delegated: int
    partitions: int
    undelegated_ops: tuple[str, ...] = field(default_factory=tuple)

    @property
    def full(self) -> bool:
        return self.nodes_delegated == self.nodes_total and self.partitions == 1


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


class Session(Protocol):
    """A model loaded on one backend, ready to run one batch-1 sample at a time."""

    backend: str  # e.g. "xnnpack", "edgetpu:usb:0", "tflm"
    runtime: str  # e.g. "ai_edge_litert 2.3.0"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    delegation: Delegation | None

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        """Raw arrays already in each input's dtype (quantization is the caller's job)."""

    def invoke(self) -> None: ...

    def get_outputs(self) -> list[np.ndarray]:
        """Raw output arrays in each output's dtype."""
