"""Latency of a .tflite model on an Android device, measured by TFLite's own ``benchmark_model`` through adb.

Why the vendor binary and not our own loop: on a phone the numbers that matter are the ones the
runtime's reference tool reports, with its delegates (XNNPACK, GPU, NNAPI) wired exactly as TFLite
wires them. This module only moves files, runs the tool with explicit flags, parses what it prints
and cleans up. Every adb call has a timeout and kills its process group when it expires, every
failure is one line naming the step, and the tool's full output is kept so any number can be traced
back to the log it came from. No TensorFlow import; adb and the binary are the only dependencies.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple, get_args

from edgeq.artifacts import Artifact
from edgeq.errors import BackendUnavailable, InputError, UsageError
from edgeq.subprocesses import stop_group
from edgeq.tflite.model import check_identifier

Accelerator = Literal["cpu", "xnnpack", "gpu", "nnapi"]
ACCELERATORS: tuple[str, ...] = get_args(Accelerator)
# The name benchmark_model prints for each delegate ("Explicitly applied GPU delegate, ...").
DELEGATE_NAMES = {"xnnpack": "XNNPACK", "gpu": "GPU", "nnapi": "NNAPI"}
DEFAULT_REMOTE_DIR = "/data/local/tmp/edgeq"
REMOTE_MODEL = "model.tflite"
REMOTE_BINARY = "benchmark_model"
INSTALL_HINT = ("install Android platform-tools (Debian/Ubuntu: apt-get install adb) "
                "or set EDGEQ_ADB to the adb executable")
SHORT_STEP_S = 60.0  # mkdir, chmod, cleanup: anything slower than this is a hung device, not a slow one
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


# --- parsing benchmark_model output ------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<avg>{_NUMBER})")
_OLD_TIMINGS = re.compile(r"Average inference timings in us:")
_STATS = re.compile(r"\bcount=(?P<count>\d+)(?P<rest>[^\n]*)")
_STAT_FIELD = re.compile(rf"(\w+)=({_NUMBER})")
_MEMORY_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>{_NUMBER}) "
    rf"overall=(?P<overall>{_NUMBER})")
# Older builds printed the same init/overall pair as "Peak memory footprint (MB): init=... overall=...".
_MEMORY_OLD = re.compile(rf"Peak memory footprint \(MB\): init=(?P<init>{_NUMBER}) overall=(?P<overall>{_NUMBER})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUMBER})")
_DELEGATE_FULL = re.compile(
    r"Explicitly applied (?P<name>.+?) delegate, and the model graph will be completely executed by the delegate")
_DELEGATE_PARTIAL = re.compile(
    r"Explicitly applied (?P<name>.+?) delegate, and the model graph will be partially executed by the "
    r"delegate w/ (?P<kernels>\d+) delegate kernels")
_DELEGATE_NONE = re.compile(
    r"Though (?P<name>.+?) delegate is explicitly applied, the model graph will not be executed by the delegate")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    value = float(text)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class DelegateReport:
    """What benchmark_model said about one explicitly applied delegate."""

    name: str  # as printed: XNNPACK, GPU, NNAPI, Hexagon, ...
    applied: bool  # False: "Though X delegate is explicitly applied, the model graph will not be executed"
    fully: bool  # the whole graph runs in the delegate
    kernels: int | None = None  # delegate kernels (partitions) when partially applied


@dataclass(frozen=True)
class BenchmarkOutput:
    """The numbers in one benchmark_model log, None where the log lacks them. Times in us, memory in MB."""

    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    avg_us: float | None
    count: int | None = None
    std_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegates: tuple[DelegateReport, ...] = ()
    error_lines: tuple[str, ...] = ()

    def delegate(self, accelerator: str) -> tuple[bool | None, bool | None]:
        """(applied, fully delegated) for the delegate behind ``accelerator``; (None, None) when not reported."""
        name = DELEGATE_NAMES.get(accelerator)
        for report in self.delegates:
            if name is not None and report.name.upper() == name:
                return report.applied, report.fully
        return None, None


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse what benchmark_model printed (plain, ``INFO:``-prefixed or logcat-prefixed lines alike).

    The steady-state statistics are the last ``count=`` line before the "Inference timings" summary:
    the one before it is the warm-up, and op-profiling tables printed after it have their own counts.
    """
    text = text.replace("\r\n", "\n")
    timings = _TIMINGS.search(text)
    if timings is None:
        if _OLD_TIMINGS.search(text):
            raise InputError("benchmark_model printed the pre-2.0 'Average inference timings' format; "
                             "use a current benchmark_model build")
        raise InputError(f"benchmark_model output has no 'Inference timings in us' line: {_first_error(text)}")
    stats: dict[str, float | None] = {}
    count = None
    runs = [m for m in _STATS.finditer(text) if m.start() < timings.start()]
    if runs:
        last = runs[-1]
        count = int(last.group("count"))
        stats = {key: _number(value) for key, value in _STAT_FIELD.findall(last.group("rest"))}
        if "(all same)" in last.group("rest") or (count == 1 and "min" not in stats):
            value = stats.get("curr")  # "count=N curr=X(all same)": every run took X
            stats = {"min": value, "max": value, "avg": value, "std": 0.0, **stats}
    memory = _MEMORY_DELTA.search(text) or _MEMORY_OLD.search(text)
    peak = _PEAK.search(text)
    delegates = []
    for line in text.splitlines():
        if full := _DELEGATE_FULL.search(line):
            delegates.append(DelegateReport(full.group("name"), True, True))
        elif partial := _DELEGATE_PARTIAL.search(line):
            delegates.append(DelegateReport(partial.group("name"), True, False, int(partial.group("kernels"))))
        elif none := _DELEGATE_NONE.search(line):
            delegates.append(DelegateReport(none.group("name"), False, False))
    return BenchmarkOutput(
        init_us=_number(timings.group("init")), first_us=_number(timings.group("first")),
        warmup_avg_us=_number(timings.group("warmup")), avg_us=_number(timings.group("avg")),
        count=count, std_us=stats.get("std"), min_us=stats.get("min"), max_us=stats.get("max"),
        p5_us=stats.get("p5"), median_us=stats.get("median"), p95_us=stats.get("p95"),
        memory_init_mb=_number(memory.group("init")) if memory else None,
        memory_overall_mb=_number(memory.group("overall")) if memory else None,
        peak_memory_mb=_number(peak.group("peak")) if peak else None,
        delegates=tuple(delegates), error_lines=tuple(_error_lines(text)),
    )


# --- the benchmark -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AndroidBenchmark(Artifact):
    """One benchmark_model run on a device: its numbers (us, MB), what it said about delegation, and its log.

    ``delegate_applied`` / ``fully_delegated`` are None for ``cpu`` and when the binary did not report;
    ``commands`` are the adb invocations in order, so the run can be repeated by hand.
    """

    kind: ClassVar[str] = "android_benchmark"
    serial: str
    accelerator: str
    threads: int
    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    avg_us: float | None
    std_us: float | None
    min_us: float | None
    max_us: float | None
    count: int | None
    memory_init_mb: float | None
    memory_overall_mb: float | None
    peak_memory_mb: float | None
    delegate_applied: bool | None
    fully_delegated: bool | None
    raw_output: str
    commands: tuple[tuple[str, ...], ...]
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    delegates: tuple[DelegateReport, ...] = ()
    warnings: tuple[str, ...] = ()  # error lines of a run that still finished, a failed cleanup


_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)+$")
_MASK = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")


def benchmark_command(remote_dir: str, accelerator: Accelerator, threads: int, runs: int = 50,
                      warmup_runs: int = 1, min_seconds: float | None = None, taskset: str | None = None,
                      report_peak_memory: bool = False) -> list[str]:
    """The device-side command line: exactly one delegate flag true, the other two explicitly false.

    ``cpu`` sets ``--use_xnnpack=false`` too, which makes benchmark_model drop the default XNNPACK
    delegate and run TFLite's builtin kernels; ``gpu``/``nnapi`` leave XNNPACK off as well, so what the
    delegate does not take runs on the builtin kernels (``fully_delegated`` says whether that happened).
    """
    def flag(name: str) -> str:
        return "true" if accelerator == name else "false"

    command = ["taskset", taskset] if taskset else []
    command += [f"{remote_dir}/{REMOTE_BINARY}", f"--graph={remote_dir}/{REMOTE_MODEL}",
                f"--num_threads={threads}", f"--num_runs={runs}", f"--warmup_runs={warmup_runs}"]
    if min_seconds is not None:
        command.append(f"--min_secs={min_seconds:g}")
    command += [f"--use_xnnpack={flag('xnnpack')}", f"--use_gpu={flag('gpu')}", f"--use_nnapi={flag('nnapi')}",
                "--enable_op_profiling=false"]
    if report_peak_memory:
        command.append("--report_peak_memory_footprint=true")
    return command


def _validate(model: Path, serial: str | None, binary: Path, accelerator: str, threads: int, runs: int,
              warmup_runs: int, min_seconds: float | None, taskset: str | None, timeout_s: float,
              remote_dir: str) -> None:
    if accelerator not in ACCELERATORS:
        raise UsageError(f"unknown Android accelerator {accelerator!r}; choose one of {', '.join(ACCELERATORS)}")
    if serial is not None and (not serial or any(c.isspace() for c in serial)):
        raise UsageError(f"not a device serial: {serial!r} (see 'adb devices')")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    if runs < 1 or warmup_runs < 0:
        raise UsageError(f"need runs >= 1 and warmup runs >= 0, got {runs} and {warmup_runs}")
    if min_seconds is not None and not min_seconds >= 0:
        raise UsageError(f"min_seconds must be >= 0, got {min_seconds}")
    if taskset is not None and (not _MASK.match(taskset) or int(taskset, 16) == 0):
        raise UsageError(f"taskset mask must be a non-zero hex CPU mask such as f0, got {taskset!r}")
    if not timeout_s > 0:
        raise UsageError(f"timeout must be positive, got {timeout_s}")
    if not _REMOTE_DIR.match(remote_dir) or ".." in remote_dir.split("/"):
        raise UsageError(f"remote dir must be an absolute path at least two levels deep of plain names, "
                         f"got {remote_dir!r}")
    if not model.is_file():
        raise InputError(f"no such model file: {model}")
    with model.open("rb") as handle:
        check_identifier(handle.read(8), str(model))
    if not binary.is_file():
        raise InputError(f"no such benchmark_model binary: {binary}")
    with binary.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            raise InputError(f"{binary} is not an executable (ELF) file: pass the native benchmark_model binary, "
                             "not the benchmark APK")


def run_benchmark(model: Path, serial: str | None, binary: Path, accelerator: Accelerator, threads: int,
                  runs: int = 50, warmup_runs: int = 1, min_seconds: float | None = None, taskset: str | None = None,
                  timeout_s: float = 300, remote_dir: str = DEFAULT_REMOTE_DIR,
                  report_peak_memory: bool = False) -> AndroidBenchmark:
    """Push ``model`` and ``binary`` to ``serial``, run benchmark_model once, parse it, remove the files.

    ``serial`` None means the only attached device (an error when there are several).

    Bad arguments raise ``UsageError``/``InputError``; everything on the adb side (no adb, device not
    ready, a failed push, a binary that fails or prints no timings, a step past its timeout) raises
    ``BackendUnavailable`` with the step and the first error line. A delegate that declined the graph
    is a result, not an error: see ``delegate_applied``. ``timeout_s`` bounds each push and the run;
    mkdir, chmod and cleanup get at most ``SHORT_STEP_S``.
    """
    model, binary = Path(model), Path(binary)
    _validate(model, serial, binary, accelerator, threads, runs, warmup_runs, min_seconds, taskset, timeout_s,
              remote_dir)
    adb = find_adb()
    if adb is None:
        raise BackendUnavailable(_missing_adb_reason())
    log: list[tuple[str, ...]] = []
    short = min(timeout_s, SHORT_STEP_S)
    status, resolved = _check_device(adb, serial, log, short)
    if not status.available or resolved is None:
        raise BackendUnavailable(status.reason)
    serial = resolved
    on = ["-s", serial]
    remote_binary = f"{remote_dir}/{REMOTE_BINARY}"
    warnings: list[str] = []
    run_timed_out = False
    try:
        _checked(adb, [*on, "shell", "mkdir", "-p", remote_dir], f"mkdir {remote_dir}", serial, short, log)
        _checked(adb, [*on, "push", str(model), f"{remote_dir}/{REMOTE_MODEL}"], "push model", serial, timeout_s, log)
        _checked(adb, [*on, "push", str(binary), remote_binary], "push benchmark_model", serial, timeout_s, log)
        _checked(adb, [*on, "shell", "chmod", "+x", remote_binary], "chmod benchmark_model", serial, short, log)
        args = benchmark_command(remote_dir, accelerator, threads, runs, warmup_runs, min_seconds, taskset,
                                 report_peak_memory)
        try:
            rc, out = _adb(adb, [*on, "shell", *args], "benchmark_model run", serial, timeout_s, log)
        except BackendUnavailable:
            run_timed_out = True
            raise
    finally:
        if len(log) > 1:  # something may have been created on the device: leave nothing behind
            warnings += _cleanup(adb, on, serial, remote_dir, remote_binary, run_timed_out, short, log)
    if rc != 0:
        raise BackendUnavailable(f"benchmark_model run on {serial} failed (exit {rc}): {_first_error(out)}")
    try:
        parsed = parse_benchmark_output(out)
    except InputError as exc:
        raise BackendUnavailable(f"benchmark_model run on {serial} (exit 0): {exc}") from None
    applied, fully = parsed.delegate(accelerator)
    return AndroidBenchmark(
        serial=serial, accelerator=accelerator, threads=threads, init_us=parsed.init_us, first_us=parsed.first_us,
        warmup_avg_us=parsed.warmup_avg_us, avg_us=parsed.avg_us, std_us=parsed.std_us, min_us=parsed.min_us,
        max_us=parsed.max_us, count=parsed.count, memory_init_mb=parsed.memory_init_mb,
        memory_overall_mb=parsed.memory_overall_mb, peak_memory_mb=parsed.peak_memory_mb, delegate_applied=applied,
        fully_delegated=fully, raw_output=out, commands=tuple(log), p5_us=parsed.p5_us, median_us=parsed.median_us,
        p95_us=parsed.p95_us, delegates=parsed.delegates,
        warnings=tuple(_one_line(line) for line in parsed.error_lines) + tuple(warnings),
    )


def _cleanup(adb: str, on: list[str], serial: str, remote_dir: str, remote_binary: str, run_timed_out: bool,
             timeout_s: float, log: list[tuple[str, ...]]) -> list[str]:
    """Best effort: stop a benchmark the timeout left running on the device, then remove our directory.

    Killing the local adb does not stop the remote process; ``pkill -f`` matches only our own binary's
    full path. Cleanup failures become warnings so they never hide the error that got us here.
    """
    warnings = []
    steps = []
    if run_timed_out:
        steps.append((["shell", "pkill", "-f", remote_binary], "stop benchmark_model"))
    steps.append((["shell", "rm", "-rf", remote_dir], f"remove {remote_dir}"))
    for args, step in steps:
        try:
            rc, out = _adb(adb, [*on, *args], step, serial, timeout_s, log)
        except BackendUnavailable as exc:
            warnings.append(str(exc))
            continue
        if rc != 0 and step.startswith("remove"):
            warnings.append(f"{step} on {serial} failed (exit {rc}): {_first_error(out)}")
    return warnings
