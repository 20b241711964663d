"""Backends by name, one registry: ref, cpu, xnnpack (LiteRT in process), litert-cpu/gpu/npu (LiteRT's
CompiledModel accelerators), edgetpu[:device], tflm; android is remote.

``BACKENDS`` is the only list of backends: parsing a name, checking availability and opening a
session all read it, so adding a backend is its own module plus one entry here. Entries for optional
backends (Edge TPU, TFLite Micro, Android) import their module only when called, because those
modules are slow to load or need packages that may be missing. Each in-process backend returns a
Session (edgeq.harness.session). A backend that cannot run here says so with a reason (Availability)
instead of silently falling back to another one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from edgeq.errors import BackendUnavailable, UsageError
from edgeq.harness.litert_session import LiteRTSession
from edgeq.harness.session import Availability, Delegation, Session
from edgeq.tflite.runtime import CpuKernels, load_runtime, make_interpreter

#: ``availability(option)``: whether the backend can run here, and if not, why. Never raises.
AvailabilityCheck = Callable[[str | None], Availability]
#: ``open_session(model, option, threads)``: the model loaded on the backend; BackendUnavailable when it cannot run.
SessionOpener = Callable[[bytes | Path, str | None, int], Session]


@dataclass(frozen=True)
class BackendSpec:
    """One backend: how its name parses, whether it can run here, and how it loads a model."""

    name: str
    takes_option: bool | Literal["required"]  # the part after the colon: edgetpu's device, android's serial
    availability: AvailabilityCheck
    open_session: SessionOpener | None  # None: the backend runs remotely and has no in-process session
    option_name: str = ""  # a required option as written in messages: android:SERIAL
    missing_option: str = ""  # the message when a required option is missing

    @property
    def remote(self) -> bool:
        """Runs elsewhere (through 'edgeq bench'), not in this process."""
        return self.open_session is None

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.option_name}" if self.takes_option == "required" else self.name


def lazy(target: str) -> Callable[..., Any]:
    """``"module:function"`` as a function that imports the module when first called, not before."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call


# --- LiteRT in process: reference, builtin and XNNPACK kernels ------------------------------------------------

def delegation_of(interpreter: Any, delegate: str) -> Delegation | None:
    """Which original nodes the delegate nodes replaced: walk back from each DELEGATE node's outputs
    through the original ops until its own inputs. Exact, because a partition's boundary tensors are
    the delegate node's inputs and outputs."""
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    if not delegates:
        return Delegation(delegate, len(original), 0, 0, tuple(sorted({op["op_name"] for op in original})))
    producer = {int(t): op for op in original for t in op["outputs"]}
    taken: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            op = producer.get(tensor)
            if op is None or tensor in boundary or op["index"] in taken:
                continue
            taken.add(op["index"])
            stack.extend(int(t) for t in op["inputs"] if t >= 0)
    left = tuple(sorted({op["op_name"] for op in original if op["index"] not in taken}))
    return Delegation(delegate, len(original), len(taken), len(delegates), left)


def _litert_availability(option: str | None) -> Availability:
    try:
        load_runtime()
    except BackendUnavailable as exc:
        return Availability(False, str(exc))
    return Availability(True)


def _litert_session(kernels: CpuKernels, model: bytes | Path, option: str | None, threads: int) -> Session:
    interpreter, runtime = make_interpreter(model, kernels, threads=threads)
    delegation = delegation_of(interpreter, "XNNPACK") if kernels is CpuKernels.XNNPACK else None
    return LiteRTSession(interpreter, kernels.value, f"{runtime.name} {runtime.version}", delegation)


# --- adapters for backend modules whose own signatures differ from the registry's --------------------------------

def _tflm_availability(option: str | None) -> Availability:
    from edgeq.harness import tflm

    return tflm.availability()


def _tflm_session(model: bytes | Path, option: str | None, threads: int) -> Session:
    from edgeq.harness import tflm

    return tflm.open_session(model)


def _compiled_availability(backend: str, option: str | None) -> Availability:
    from edgeq.harness import compiled_model

    return compiled_model.availability(backend)


def _compiled_session(backend: str, model: bytes | Path, option: str | None, threads: int) -> Session:
    from edgeq.harness import compiled_model

    return compiled_model.open_session(backend, model, option, threads)


def _android_availability(serial: str | None) -> Availability:
    from edgeq.harness import adb

    ok, reason = adb.availability(serial)
    return Availability(ok, reason)


# --- the registry ---------------------------------------------------------------------------------------------

#: Every backend, in the order messages list them. Add one here (and its module): nothing else changes.
BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("ref", False, _litert_availability, partial(_litert_session, CpuKernels.REF)),
    BackendSpec("cpu", False, _litert_availability, partial(_litert_session, CpuKernels.CPU)),
    BackendSpec("xnnpack", False, _litert_availability, partial(_litert_session, CpuKernels.XNNPACK)),
    *(BackendSpec(name, False, partial(_compiled_availability, name), partial(_compiled_session, name))
      for name in ("litert-cpu", "litert-gpu", "litert-npu")),
    BackendSpec("edgetpu", True, lazy("edgeq.harness.edgetpu:availability"),
                lazy("edgeq.harness.edgetpu:open_session")),
    BackendSpec("tflm", False, _tflm_availability, _tflm_session),
    BackendSpec("android", "required", _android_availability, None, option_name="SERIAL",
                missing_option="the android backend needs a device serial: android:SERIAL (see 'adb devices')"),
)}

LOCAL_BACKENDS = tuple(name for name, spec in BACKENDS.items() if not spec.remote)


@dataclass(frozen=True)
class BackendName:
    kind: str  # a key of BACKENDS
    option: str | None = None  # edgetpu device ("usb:0") or android serial

    def __str__(self) -> str:
        return self.kind if self.option is None else f"{self.kind}:{self.option}"

    @property
    def remote(self) -> bool:
        """Runs elsewhere, not in this process (see BackendSpec.remote)."""
        return _spec(self.kind, self.kind).remote


def _spec(kind: str, text: str) -> BackendSpec:
    spec = BACKENDS.get(kind)
    if spec is None:
        choices = ", ".join(s.usage for s in BACKENDS.values())
        raise UsageError(f"unknown backend {text!r}; choose from {choices}")
    return spec


def parse_backend(text: str) -> BackendName:
    kind, _, option = text.strip().partition(":")
    spec = _spec(kind, text)
    if spec.takes_option == "required" and not option:
        raise UsageError(spec.missing_option)
    if option and not spec.takes_option:
        raise UsageError(f"backend {kind} takes no option, got {text!r}")
    return BackendName(kind, option or None)


def availability(backend: BackendName) -> Availability:
    """Whether ``backend`` can run here, and if not, why."""
    return _spec(backend.kind, str(backend)).availability(backend.option)


def open_session(model: bytes | Path, backend: BackendName, threads: int = 1) -> Session:
    """Load ``model`` on ``backend``; BackendUnavailable (exit 3) when it cannot run here."""
    if threads < 1:
        raise UsageError("threads must be at least 1")
    spec = _spec(backend.kind, str(backend))
    if spec.open_session is None:
        raise UsageError(f"the {spec.name} backend runs remotely: use 'edgeq bench' (it has no in-process session)")
    return spec.open_session(model, backend.option, threads)
