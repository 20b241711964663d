"""The Edge TPU backend: a LiteRT interpreter with Coral's ``libedgetpu`` delegate.

Only models compiled by ``edgetpu_compiler`` (``*_edgetpu.tflite``) use the TPU: the compiler folds
the ops it maps into ``edgetpu-custom-op`` nodes, which are what the delegate claims; every other
node runs on the CPU. Never imports TensorFlow (unless tf.lite is the only LiteRT runtime).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq.errors import BackendUnavailable, InputError
from edgeq.harness.litert_session import LiteRTSession, first_line
from edgeq.harness.session import Availability, Delegation
from edgeq.quiet import native_output_captured
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import Runtime, load_runtime

LIBRARY = "libedgetpu.so.1"
CUSTOM_OP = "edgetpu-custom-op"
_PACKAGE_HINT = "the Edge TPU runtime comes from Coral's libedgetpu1-std package (apt-get install libedgetpu1-std)"
_CREATE_SYMBOL = "tflite_plugin_create_delegate"


# --- a Session over any LiteRT interpreter ------------------------------------------------------------------

# --- compiled-model detection ------------------------------------------------------------------------------

def _parsed(model: Any) -> Any:
    return tfl.parse(bytes(model)) if isinstance(model, bytes | bytearray | memoryview) else model


def edgetpu_delegation(model: Any) -> Delegation:
    """How many nodes of subgraph 0 are edgetpu-custom-op (TPU) versus CPU ops, from the flatbuffer.

    ``model`` is flatbuffer bytes or a parsed ``ModelT``. Each edgetpu-custom-op node is one TPU partition.
    """
    parsed = _parsed(model)
    ops = [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators or []]
    on_tpu = sum(op == f"CUSTOM:{CUSTOM_OP}" for op in ops)
    on_cpu = sorted({op for op in ops if op != f"CUSTOM:{CUSTOM_OP}"})
    return Delegation(delegate="edgetpu", nodes_total=len(ops), nodes_delegated=on_tpu, partitions=on_tpu,
                      undelegated_ops=tuple(on_cpu))


def is_compiled(model: Any) -> bool:
    """Whether edgetpu_compiler produced this model (it holds at least one edgetpu-custom-op)."""
    return edgetpu_delegation(model).nodes_delegated > 0


# --- the delegate ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _unraisable_silenced() -> Iterator[None]:
    """LiteRT's Delegate raises again from ``__del__`` when its constructor failed; that is not news."""
    saved = sys.unraisablehook
    sys.unraisablehook = lambda _args: None
    try:
        yield
    finally:
        sys.unraisablehook = saved


def _delegate_error(exc: BaseException) -> str:
    """The delegate's own words, without LiteRT's 'Failed to load delegate from ...' wrapper line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Failed to load delegate from"):
        lines = lines[1:]
    return "; ".join(lines)


def _open_delegate(runtime: Runtime, device: str | None) -> tuple[Any, str]:
    """(delegate, "") or (None, why not). The library is dlopen'ed first so each failure gets its own reason."""
    try:
        library = ctypes.CDLL(LIBRARY)
    except OSError as exc:
        said = first_line(exc).removeprefix(f"{LIBRARY}: ")
        return None, f"cannot load {LIBRARY}: {said}; {_PACKAGE_HINT}"
    if not hasattr(library, _CREATE_SYMBOL):
        return None, (f"{LIBRARY} loads but is not a TFLite delegate library (no {_CREATE_SYMBOL} symbol); "
                      f"{_PACKAGE_HINT}")
    options = {"device": device} if device else None
    delegate, error = None, ""
    with _unraisable_silenced(), native_output_captured((2,)) as captured:
        try:
            delegate = runtime.module.load_delegate(LIBRARY, options)
        except (ValueError, RuntimeError, OSError, AttributeError) as exc:
            error = _delegate_error(exc)
        # a half-built Delegate dies here, once the exception is gone, while its __del__ noise is silenced
    if delegate is not None:
        return delegate, ""
    said = error or captured.first_error_line() or next((line.strip() for line in captured.lines if line.strip()), "")
    where = f"device {device!r}" if device else "any device"
    return None, f"{LIBRARY} loaded but opened no Edge TPU at {where}: {said or 'none attached'}"


def availability(device: str | None = None) -> Availability:
    """Whether an Edge TPU answers here (``device``: usb, usb:0, pci:0, ...), and if not, why. Never raises."""
    try:
        runtime = load_runtime()
    except BackendUnavailable as exc:
        return Availability(False, str(exc))
    delegate, reason = _open_delegate(runtime, device)
    if delegate is None:
        return Availability(False, reason)
    del delegate  # release the device for the session that follows
    return Availability(True, f"{LIBRARY} opened {device or 'the first Edge TPU'}")


def _model_bytes(model: bytes | str | Path) -> bytes:
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    return tfl.read_bytes(model)


def open_session(model: bytes | str | Path, device: str | None = None, threads: int = 1) -> LiteRTSession:
    """``model`` in a LiteRT interpreter with the Edge TPU delegate; BackendUnavailable when there is no TPU.

    A model that edgetpu_compiler did not produce still runs (all on the CPU), with a warning on the session.
    """
    data = _model_bytes(model)
    parsed = tfl.parse(data)
    runtime = load_runtime()
    delegate, reason = _open_delegate(runtime, device)
    if delegate is None:
        raise BackendUnavailable(reason)
    delegation = edgetpu_delegation(parsed)
    warnings: tuple[str, ...] = ()
    if not delegation.nodes_delegated:
        warnings = (f"the model has no {CUSTOM_OP}: it is not an _edgetpu.tflite model compiled by "
                    "edgetpu_compiler, so every op runs on the CPU",)
    try:
        with native_output_captured((2,)) as captured:
            interpreter = runtime.module.Interpreter(model_content=data, experimental_delegates=[delegate],
                                                     num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        said = captured.first_error_line() or first_line(exc)
        raise InputError(f"the runtime could not load the model with the Edge TPU delegate: {said}") from None
    backend = f"edgetpu:{device}" if device else "edgetpu"
    return LiteRTSession(interpreter, backend, f"{runtime.name} {runtime.version}", delegation, warnings=warnings)
