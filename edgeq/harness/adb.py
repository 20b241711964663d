"""adb as a transport: find the executable, list and judge devices, and run one command with a timeout.

Split from the benchmark protocol (android.py) because every adb step, whatever it is for, needs the
same three things: a process group that is killed when its timeout expires, a one-line reason when
it fails, and the command logged so the run can be repeated by hand. No TensorFlow import; adb is
the only dependency.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from edgeq.errors import BackendUnavailable, UsageError
from edgeq.subprocesses import stop_group

INSTALL_HINT = ("install Android platform-tools (Debian/Ubuntu: apt-get install adb) "
                "or set EDGEQ_ADB to the adb executable")
_MESSAGE_CHARS = 240


# --- adb itself ------------------------------------------------------------------------------------------------

def find_adb() -> str | None:
    """The adb executable: ``EDGEQ_ADB`` when set (a path or a name on PATH), else ``adb`` on PATH."""
    override = os.environ.get("EDGEQ_ADB")
    if override:
        return shutil.which(override)
    return shutil.which("adb")


def _missing_adb_reason() -> str:
    override = os.environ.get("EDGEQ_ADB")
    if override:
        return f"EDGEQ_ADB={override} is not an executable; point it at platform-tools' adb or unset it"
    return f"adb is not on PATH: {INSTALL_HINT}"


@dataclass(frozen=True)
class AdbDevice:
    """One line of ``adb devices -l``: serial, state ('device' when usable) and the key:value details."""

    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)


class Availability(NamedTuple):
    """Whether a benchmark can run on a device now, and a one-line reason either way (unpacks as a pair)."""

    available: bool
    reason: str


_DETAIL = re.compile(r"^[a-z_]+:\S*$")


def parse_adb_devices(text: str) -> list[AdbDevice]:
    """Devices listed by ``adb devices -l``; daemon chatter and the header are skipped.

    A state can be several words ("no permissions (user in plugdev group; ...)"), so the state runs
    until the first ``key:value`` detail (usb:, product:, model:, device:, transport_id:).
    """
    devices = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("*", "List of devices", "adb ", "error:")):
            continue
        serial, *rest = line.split()
        if not rest:
            continue
        state: list[str] = []
        details: dict[str, str] = {}
        for token in rest:
            if state and _DETAIL.match(token):
                key, _, value = token.partition(":")
                details[key] = value
            elif not details:
                state.append(token)
        devices.append(AdbDevice(serial, " ".join(state), details))
    return devices


def _state_reason(device: AdbDevice) -> str | None:
    """Why a listed device cannot be used, or None when its state is 'device'."""
    state = device.state
    if state == "device":
        return None
    if state == "unauthorized":
        return (f"device {device.serial} is unauthorized: unlock it and accept the 'Allow USB debugging' "
                "prompt, then retry")
    if state == "offline":
        return f"device {device.serial} is offline: reconnect the cable or run 'adb reconnect'"
    if state.startswith("no permissions"):
        return (f"adb has no permission to open device {device.serial}: add a udev rule for it "
                "(or join the plugdev group) and replug")
    return f"device {device.serial} is in state {state!r}, not 'device'"


def _describe(device: AdbDevice) -> str:
    model = device.details.get("model")
    return f"device {device.serial} is ready" + (f" ({model})" if model else "")


def _check_device(adb: str, serial: str | None, log: list[tuple[str, ...]],
                  timeout_s: float) -> tuple[Availability, str | None]:
    """Run ``adb devices -l`` and judge ``serial`` (or the only device) from it; also the serial to use."""
    rc, out = _adb(adb, ["devices", "-l"], "adb devices", serial or "this host", timeout_s, log)
    if rc != 0:
        return Availability(False, f"'adb devices' failed (exit {rc}): {_first_error(out)}"), None
    devices = parse_adb_devices(out)
    listed = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
    if serial is None:
        ready = [d for d in devices if d.state == "device"]
        if not devices:
            return Availability(False, "no Android device is attached (adb devices lists none): connect one "
                                       "with USB debugging enabled"), None
        if len(devices) == 1 and not ready:
            return Availability(False, _state_reason(devices[0]) or ""), None
        if len(ready) != 1:
            return Availability(False, f"{len(devices)} devices are attached ({listed}); "
                                       "name one as android:SERIAL"), None
        return Availability(True, _describe(ready[0])), ready[0].serial
    matches = [d for d in devices if d.serial == serial]
    if not matches:
        return Availability(False, f"device {serial} is not attached (adb devices lists: {listed})"), None
    reason = _state_reason(matches[0])
    if reason is not None:
        return Availability(False, reason), None
    return Availability(True, _describe(matches[0])), serial


def availability(serial: str | None = None, timeout_s: float = 30) -> Availability:
    """Can ``run_benchmark`` reach ``serial`` now? Never raises for a missing adb or device: it says why."""
    adb = find_adb()
    if adb is None:
        return Availability(False, _missing_adb_reason())
    try:
        return _check_device(adb, serial, [], timeout_s)[0]
    except BackendUnavailable as exc:
        return Availability(False, str(exc))


def serial_from_backend(spec: str) -> str | None:
    """The serial in a backend spec: 'android:SERIAL' gives SERIAL, plain 'android' gives None (the only device)."""
    name, sep, serial = spec.partition(":")
    if name != "android":
        raise UsageError(f"not an Android backend: {spec!r} (expected android or android:SERIAL)")
    if sep and not serial.strip():
        raise UsageError("android: needs a device serial after the colon (see 'adb devices')")
    return serial.strip() or None


# --- running commands --------------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


_ERROR_LINE = re.compile(
    r"ERROR\b|\berror:|\bError:|\bFailed\b|\bfailed\b|\bFAILED\b|Aborted|Segmentation fault|CANNOT LINK EXECUTABLE|"
    r"Permission denied|No such file|not found|can't execute|Exec format error|Read-only file system|"
    r"inaccessible or not found|Killed")


def _error_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if _ERROR_LINE.search(line)]


def _first_error(text: str) -> str:
    """The line that best explains a failure: the first error-looking line, else the last line printed."""
    errors = _error_lines(text)
    if errors:
        return _one_line(errors[0])
    lines = [line for line in text.splitlines() if line.strip()]
    return _one_line(lines[-1]) if lines else "no output"


def _stop(process: subprocess.Popen[bytes]) -> str:
    """Kill adb and everything it started, and collect whatever it printed."""
    return stop_group(process, b"").decode("utf-8", "replace")


def _adb(adb: str, args: Sequence[str], step: str, serial: str, timeout_s: float,
         log: list[tuple[str, ...]]) -> tuple[int, str]:
    """Run one adb command (stdin closed: ``adb shell`` would otherwise read ours), stdout and stderr merged."""
    command = (adb, *args)
    log.append(command)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise BackendUnavailable(f"cannot run {adb}: {exc.strerror or exc}") from None
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        partial = [line for line in _stop(process).splitlines() if line.strip()]
        last = f" (last output: {_one_line(partial[-1])})" if partial else ""
        raise BackendUnavailable(f"{step} on {serial} did not finish within {timeout_s:g} s; adb was killed{last}"
                                 ) from None
    except BaseException:
        _stop(process)
        raise
    return process.returncode, (out or b"").decode("utf-8", "replace").replace("\r\n", "\n")


# Error text that fails a step even with exit status 0 (adb before 1.0.36 and Android before 7 drop the
# remote status). Narrower than _ERROR_LINE because push echoes the local path, which may contain anything.
_STEP_ERROR = re.compile(r"\berror:|\bfailed to\b|Permission denied|No such file|Read-only file system")


def _checked(adb: str, args: Sequence[str], step: str, serial: str, timeout_s: float,
             log: list[tuple[str, ...]]) -> str:
    """An adb step that must succeed: a non-zero exit, or error text from an adb too old to set one, raises."""
    rc, out = _adb(adb, args, step, serial, timeout_s, log)
    if rc != 0 or _STEP_ERROR.search(out):
        raise BackendUnavailable(f"{step} on {serial} failed (exit {rc}): {_first_error(out)}")
    return out

