"""Backends by name: ref, cpu, xnnpack (LiteRT in process), edgetpu[:device], tflm; android is remote.

Each in-process backend returns a Session (edgeq.harness.session). A backend that cannot run here
says so with a reason (Availability) instead of silently falling back to another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import BackendUnavailable, UsageError
from edgeq.harness.litert_session import LiteRTSession
from edgeq.harness.session import Availability, Delegation, Session
from edgeq.tflite.runtime import CpuKernels, load_runtime, make_interpreter

LOCAL_BACKENDS = ("ref", "cpu", "xnnpack", "edgetpu", "tflm")


@dataclass(frozen=True)
class BackendName:
    kind: str  # ref | cpu | xnnpack | edgetpu | tflm | android
    option: str | None = None  # edgetpu device ("usb:0") or android serial

    def __str__(self) -> str:
        return self.kind if self.option is None else f"{self.kind}:{self.option}"


def parse_backend(text: str) -> BackendName:
    kind, _, option = text.strip().partition(":")
    if kind not in (*LOCAL_BACKENDS, "android"):
        raise UsageError(f"unknown backend {text!r}; choose from {', '.join(LOCAL_BACKENDS)}, android:SERIAL")
    if kind == "android" and not option:
        raise UsageError("the android backend needs a device serial: android:SERIAL (see 'adb devices')")
    if option and kind not in ("edgetpu", "android"):
        raise UsageError(f"backend {kind} takes no option, got {text!r}")
    return BackendName(kind, option or None)


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


def availability(backend: BackendName) -> Availability:
    """Whether ``backend`` can run here, and if not, why."""
    if backend.kind in ("ref", "cpu", "xnnpack"):
        try:
            load_runtime()
        except BackendUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)
    if backend.kind == "edgetpu":
        from edgeq.harness import edgetpu

        return edgetpu.availability(backend.option)
    if backend.kind == "tflm":
        from edgeq.harness import tflm

        return tflm.availability()
    from edgeq.harness import android

    ok, reason = android.availability(backend.option)
    return Availability(ok, reason)


def open_session(model: bytes | Path, backend: BackendName, threads: int = 1) -> Session:
    """Load ``model`` on ``backend``; BackendUnavailable (exit 3) when it cannot run here."""
    if threads < 1:
        raise UsageError("threads must be at least 1")
    if backend.kind in ("ref", "cpu", "xnnpack"):
        kernels = CpuKernels(backend.kind)
        interpreter, runtime = make_interpreter(model, kernels, threads=threads)
        delegation = delegation_of(interpreter, "XNNPACK") if kernels is CpuKernels.XNNPACK else None
        return LiteRTSession(interpreter, str(backend), f"{runtime.name} {runtime.version}", delegation)
    if backend.kind == "edgetpu":
        from edgeq.harness import edgetpu

        return edgetpu.open_session(model, backend.option, threads)
    if backend.kind == "tflm":
        from edgeq.harness import tflm

        return tflm.open_session(model)
    raise UsageError("the android backend runs remotely: use 'edgeq bench' (it has no in-process session)")
