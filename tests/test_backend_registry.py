"""The backend registry: every name, option rule, message and check comes from ``BACKENDS`` alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import UsageError
from edgeq.harness import backends
from edgeq.harness.backends import (
    BACKENDS,
    LOCAL_BACKENDS,
    BackendName,
    BackendSpec,
    availability,
    open_session,
    parse_backend,
)
from edgeq.harness.session import Availability, TensorInfo

UNKNOWN = ("unknown backend {!r}; choose from ref, cpu, xnnpack, litert-cpu, litert-gpu, litert-npu, edgetpu, tflm, "
           "android:SERIAL")


def test_the_registered_backends_and_their_order() -> None:
    assert list(BACKENDS) == ["ref", "cpu", "xnnpack", "litert-cpu", "litert-gpu", "litert-npu", "edgetpu", "tflm",
                             "android"]
    assert all(name == spec.name for name, spec in BACKENDS.items())
    assert LOCAL_BACKENDS == ("ref", "cpu", "xnnpack", "litert-cpu", "litert-gpu", "litert-npu", "edgetpu", "tflm")
    assert [name for name, spec in BACKENDS.items() if spec.remote] == ["android"]


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_registered_backend_parses(name: str) -> None:
    text = f"{name}:SERIAL1" if BACKENDS[name].takes_option == "required" else name
    parsed = parse_backend(text)
    assert (parsed.kind, str(parsed), parsed.remote) == (name, text, BACKENDS[name].remote)


@pytest.mark.parametrize(("text", "kind", "option"), [
    ("edgetpu", "edgetpu", None), ("edgetpu:usb:0", "edgetpu", "usb:0"), ("edgetpu:", "edgetpu", None),
    ("android:R58M123", "android", "R58M123"), (" cpu ", "cpu", None), ("cpu:", "cpu", None)])
def test_options_accepted(text: str, kind: str, option: str | None) -> None:
    assert parse_backend(text) == BackendName(kind, option)


@pytest.mark.parametrize(("text", "message"), [
    ("gpu", UNKNOWN.format("gpu")),
    ("", UNKNOWN.format("")),
    ("CPU", UNKNOWN.format("CPU")),
    ("android", "the android backend needs a device serial: android:SERIAL (see 'adb devices')"),
    ("android:", "the android backend needs a device serial: android:SERIAL (see 'adb devices')"),
    ("cpu:1", "backend cpu takes no option, got 'cpu:1'"),
    ("tflm:x", "backend tflm takes no option, got 'tflm:x'"),
    ("ref:fast", "backend ref takes no option, got 'ref:fast'"),
    ("xnnpack:4", "backend xnnpack takes no option, got 'xnnpack:4'"),
])
def test_refused_with_the_same_messages(text: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_backend(text)
    assert str(raised.value) == message


@pytest.mark.parametrize("text", ["edgetpu:usb:7", "android:no-such-serial", "tflm", "cpu"])
def test_availability_is_an_answer_with_a_reason(text: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb: android says why instead of raising
    monkeypatch.delenv("EDGEQ_ADB", raising=False)
    found = availability(parse_backend(text))
    assert isinstance(found, Availability)
    assert found.available or found.reason


def test_android_has_no_in_process_session() -> None:
    with pytest.raises(UsageError, match=r"^the android backend runs remotely: use 'edgeq bench' \(it has no "
                                         r"in-process session\)$"):
        open_session(b"", parse_backend("android:R58M123"))
    with pytest.raises(UsageError, match=r"^threads must be at least 1$"):
        open_session(b"", parse_backend("cpu"), threads=0)


def test_importing_the_registry_loads_no_optional_backend() -> None:
    code = ("import sys, edgeq.harness.backends as b\n"
            "[b.parse_backend(t) for t in ('edgetpu:usb:0', 'tflm', 'android:X')]\n"
            "sys.exit(sorted(m for m in ('edgeq.harness.edgetpu', 'edgeq.harness.tflm', 'edgeq.harness.adb',"
            " 'tflite_micro') if m in sys.modules) or None)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class _EchoSession:
    """A backend's session that returns its input: enough to show open_session reaches it."""

    def __init__(self, backend: str) -> None:
        self.backend, self.runtime, self.delegation = backend, "echo 1.0", None
        self.inputs = self.outputs = (TensorInfo("x", (1, 2), np.dtype(np.int8)),)
        self._data: list[np.ndarray] = []

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        self._data = arrays

    def invoke(self) -> None:
        pass

    def get_outputs(self) -> list[np.ndarray]:
        return self._data


def test_a_backend_registered_in_the_dict_alone_works_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[bytes | Path, str | None, int]] = []

    def echo_session(model: bytes | Path, option: str | None, threads: int) -> _EchoSession:
        opened.append((model, option, threads))
        return _EchoSession(f"echo:{option}" if option else "echo")

    spec = BackendSpec("echo", True, lambda option: Availability(option != "off", "switched off"), echo_session)
    monkeypatch.setitem(BACKENDS, "echo", spec)
    backend = parse_backend("echo:left")
    assert backend == BackendName("echo", "left") and not backend.remote
    assert availability(backend) == Availability(True, "switched off")
    assert availability(parse_backend("echo:off")) == Availability(False, "switched off")
    session = open_session(b"model", backend, threads=3)
    session.set_inputs([np.ones((1, 2), np.int8)])
    session.invoke()
    assert session.backend == "echo:left" and session.get_outputs()[0].tolist() == [[1, 1]]
    assert opened == [(b"model", "left", 3)]
    with pytest.raises(UsageError, match=r"choose from ref, cpu, xnnpack, litert-cpu, litert-gpu, litert-npu, edgetpu, "
                                         r"tflm, android:SERIAL, echo$"):
        parse_backend("nope")


def test_a_registered_remote_backend_and_a_required_option(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BackendSpec("farm", "required", lambda option: Availability(False, f"{option} is busy"), None,
                       option_name="HOST", missing_option="the farm backend needs a host: farm:HOST")
    monkeypatch.setitem(BACKENDS, "farm", spec)
    with pytest.raises(UsageError, match=r"^the farm backend needs a host: farm:HOST$"):
        parse_backend("farm")
    backend = parse_backend("farm:rack1")
    assert backend.remote and availability(backend) == Availability(False, "rack1 is busy")
    with pytest.raises(UsageError, match=r"^the farm backend runs remotely"):
        open_session(b"", backend)
    with pytest.raises(UsageError, match=r"tflm, android:SERIAL, farm:HOST$"):
        parse_backend("nope")


def test_lazy_imports_on_call_and_sees_patched_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    check = backends.lazy("edgeq.harness.tflm:availability")
    from edgeq.harness import tflm

    monkeypatch.setattr(tflm, "availability", lambda: Availability(False, "patched"))
    assert check() == Availability(False, "patched")
