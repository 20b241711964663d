"""LiteRT's own accelerators through its CompiledModel API: the litert-cpu, litert-gpu and litert-npu backends.

``ai_edge_litert`` 2.x runs a model on a ``HardwareAccelerator`` (CPU = XNNPACK, GPU = WebGPU/OpenCL,
NPU = a vendor dispatch library) through ``CompiledModel`` rather than the Interpreter. Two facts of
the library shape this module:

- GPU and NPU are asked for *with* CPU fallback (as the library recommends: ops the accelerator lacks
  run on the CPU), but NPU|CPU compiles silently on the CPU when no NPU is registered. So before a
  model is compiled, the accelerator is probed alone on a one-op model; only if that compiles is the
  backend available. A real NPU that refuses the probe's float ADD is reported unavailable too (the
  reason says what the library said).
- The library's exception for a missing accelerator is a source location
  (``compiled_model.cc:1036``); the cause ("No adapters found", "libvulkan.so.1: cannot open...",
  "NPU accelerator could not be loaded") is only in its native log on fd 2. The log is captured while
  the library works and its error/warning lines become the reason.
"""

from __future__ import annotations

import gc
import re
import weakref
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendUnavailable, InputError
from edgeq.harness.litert_session import check_inputs, first_line
from edgeq.harness.session import Availability, TensorInfo
from edgeq.quiet import native_output_captured

#: backend name -> the accelerator's name in ai_edge_litert.HardwareAccelerator
ACCELERATORS = {"litert-cpu": "CPU", "litert-gpu": "GPU", "litert-npu": "NPU"}

_LEVEL = re.compile(r"^(ERROR|WARNING|Warning|E\d{4}\s+\S+\s+\d+)\S*:?\s*")
_LOCATION = re.compile(r"\[[^\]]*\.(?:cc|h|cpp):\d+\]\s*")
_PATH = re.compile(r"(?:/[^\s/:]+)+/([^\s/:]+)")
_NOISE = ("Logging before InitGoogle", "Source Location Trace", "Failed to get or create delegate")


#: Words that tie a native log line to one accelerator (the log also carries the other accelerators' news).
_TOPICS = {"GPU": ("gpu", "vulkan", "opencl", "adapter", "metal"),
           "NPU": ("npu", "plugin", "dispatch", "openvino", "qualcomm", "mediatek"),
           "CPU": ("cpu", "xnnpack")}


def _reason_lines(lines: list[str], accelerator: str, limit: int = 3) -> list[str]:
    """The native log's error and warning lines about ``accelerator``, without levels, source locations,
    directory paths or the wrapping "with error: ERROR" of a nested message."""
    found: list[str] = []
    for raw in lines:
        line = raw.strip().lstrip("└").strip()
        if not (_LEVEL.match(line) or raw.strip().startswith("└")) or any(n in line for n in _NOISE):
            continue
        text = _PATH.sub(r"\1", _LOCATION.sub("", _LEVEL.sub("", line)))
        text = re.sub(r"\s*with error:\s*ERROR:?\s*$", "", text).strip(" :.")
        if text and not text.startswith("ERROR") and text not in found:
            found.append(text)
    topical = [t for t in found if any(word in t.lower() for word in _TOPICS[accelerator])]
    return (topical or found)[:limit]


def _reason(message: str, log: list[str], accelerator: str) -> str:
    said = [_LOCATION.sub("", line.strip().lstrip("└").strip()).removeprefix("ERROR:").strip()
            for line in message.splitlines()]
    head = next((s for s in reversed(said) if s), "") or "the runtime refused it"
    details = _reason_lines(log, accelerator)
    return head + (f" (runtime log: {'; '.join(details)})" if details else "")


def _api() -> Any:
    try:
        from ai_edge_litert import compiled_model
    except ImportError as exc:
        raise BackendUnavailable(f"ai_edge_litert has no CompiledModel API here: {exc}") from None
    return compiled_model


def _options(api: Any, accelerator: str, threads: int, fallback: bool) -> Any:
    accel = getattr(api.HardwareAccelerator, accelerator)
    if fallback and accelerator != "CPU":
        accel |= api.HardwareAccelerator.CPU
    return api.Options(hardware_accelerators=accel, cpu_options=api.CpuOptions(num_threads=threads))


def _compile(data: bytes, accelerator: str, threads: int, fallback: bool) -> Any:
    """A CompiledModel, or BackendUnavailable with the library's reason (its log included)."""
    api = _api()
    failure: str | None = None
    with native_output_captured((2,)) as log:
        try:
            model = api.CompiledModel.from_buffer(data, options=_options(api, accelerator, threads, fallback))
        except (RuntimeError, ValueError) as exc:
            failure = str(exc)  # not the exception: its frames hold the runtime environment alive
        gc.collect()  # the failed attempt's environment logs its teardown now, into the capture
    if failure is not None:
        raise BackendUnavailable(f"LiteRT {accelerator} accelerator: {_reason(failure, log.lines, accelerator)}")
    return model


@cache
def probe_model() -> bytes:
    """A float32 ADD of two [1, 4] tensors: the smallest model any accelerator should compile."""
    from edgeq.tflite import model as tfl

    s = tfl.schema()
    model, graph, op = s.ModelT(), s.SubGraphT(), s.OperatorT()
    model.version, model.buffers = 3, [s.BufferT()]
    for name in ("a", "b", "sum"):
        tensor = s.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [1, 4], tfl.tensor_type("FLOAT32"), 0
        graph.tensors = [*(graph.tensors or []), tensor]
    model.operatorCodes = []
    op.opcodeIndex = tfl.opcode_index(model, "ADD")
    op.inputs, op.outputs = [0, 1], [2]
    graph.operators, graph.inputs, graph.outputs = [op], [0, 1], [2]
    model.subgraphs = [graph]
    return tfl.serialize(model)


@cache
def availability(backend: str) -> Availability:
    """Whether LiteRT's accelerator for ``backend`` compiles the probe model here (alone, no CPU fallback)."""
    try:
        probe = _compile(probe_model(), ACCELERATORS[backend], 1, fallback=False)
    except BackendUnavailable as exc:
        return Availability(False, str(exc))
    _release(probe)
    return Availability(True)


def _release(model: Any) -> None:
    """Close ``model`` and the LiteRT environment it was compiled in, so that the environment's accelerators
    are destroyed now, their "DestroyAccelerator" log captured, rather than at interpreter exit.

    The runtime also creates a process-wide environment of its own when a tensor buffer is first locked
    (the first write, read or run); nothing in ``ai_edge_litert`` releases it, so its teardown is logged
    after Python has exited (docs/harness.md)."""
    environment = model.environment
    with native_output_captured((2,)):
        model.close()
        environment.close()
        del model, environment
        gc.collect()


class _Resources:
    """What a session must release in order: its tensor buffers, then the model and its environment."""

    def __init__(self, model: Any) -> None:
        self.model: Any = model
        self.inputs: Any = model.create_input_buffers(0)
        self.outputs: Any = model.create_output_buffers(0)


def _free(resources: _Resources) -> None:
    model = resources.model
    resources.model = resources.inputs = resources.outputs = None
    if model is not None:
        _release(model)


def _tensor_info(detail: dict[str, Any], quantization: dict[int, tuple[float, int]]) -> TensorInfo:
    scale, zero_point = quantization.get(int(detail["index"]), (0.0, 0))
    return TensorInfo(name=str(detail["name"]), shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]), scale=scale, zero_point=zero_point)


def _quantization(data: bytes) -> dict[int, tuple[float, int]]:
    """Per-tensor scale and zero point of the main graph (CompiledModel's tensor details lack them)."""
    from edgeq.tflite import model as tfl

    found = {}
    for index, tensor in enumerate(tfl.parse(data).subgraphs[0].tensors):
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) == 1:
            found[index] = (float(q.scale[0]), int(q.zeroPoint[0]))
    return found


class CompiledModelSession:
    """The Session protocol over a LiteRT CompiledModel (first signature)."""

    def __init__(self, model: Any, data: bytes, backend: str, runtime: str) -> None:
        self.model, self.backend, self.runtime = model, backend, runtime
        self._resources = _Resources(model)
        # a session nobody closes (a caller's bug, or an error on the way) is still torn down with its log
        # captured: when it is collected, or at interpreter exit at the latest
        self._finalizer = weakref.finalize(self, _free, self._resources)
        self.delegation = None  # CompiledModel does not say which nodes an accelerator took; see fully_accelerated
        self.fully_accelerated = bool(model.is_fully_accelerated())
        signature = next(iter(model.get_signature_list()))
        quantization = _quantization(data)
        self.inputs = tuple(_tensor_info(d, quantization) for d in model.get_input_tensor_details(signature).values())
        self.outputs = tuple(_tensor_info(d, quantization)
                             for d in model.get_output_tensor_details(signature).values())

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        check_inputs(self.inputs, arrays)
        with native_output_captured((2,)):  # the first write sets up the runtime's shared environment, loudly
            for buffer, array in zip(self._resources.inputs, arrays, strict=True):
                buffer.write(np.ascontiguousarray(array))

    def invoke(self) -> None:
        try:
            self.model.run_by_index(0, self._resources.inputs, self._resources.outputs)
        except RuntimeError as exc:
            raise InputError(f"{self.backend} failed to run the model: {first_line(exc)}") from None

    def get_outputs(self) -> list[np.ndarray]:
        return [buffer.read(int(np.prod(info.shape)), info.dtype).reshape(info.shape)
                for buffer, info in zip(self._resources.outputs, self.outputs, strict=True)]

    def close(self) -> None:
        """Release the model, its buffers and its LiteRT environment now, with the runtime's teardown log
        captured (else it reaches the terminal). Idempotent."""
        self.model = None
        self._finalizer()  # runs _free once: later calls, and the finalizer itself, do nothing


def open_session(backend: str, model: bytes | Path, option: str | None, threads: int) -> CompiledModelSession:
    """``model`` compiled for the backend's accelerator (GPU/NPU with CPU fallback for ops they lack)."""
    status = availability(backend)
    if not status.available:
        raise BackendUnavailable(status.reason)
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    from edgeq.versions import package_versions

    try:
        compiled = _compile(data, ACCELERATORS[backend], threads, fallback=True)
    except BackendUnavailable as exc:  # the accelerator works (the probe compiled): this model is the problem
        raise InputError(f"{backend} could not compile the model: {exc}") from None
    return CompiledModelSession(compiled, data, backend,
                                f"ai_edge_litert {package_versions(['ai-edge-litert'])['ai-edge-litert']}")
