"""Latency of a .tflite model on an Android device, measured by TFLite's own ``benchmark_model`` through adb.

Why the vendor binary and not our own loop: on a phone the numbers that matter are the ones the
runtime's reference tool reports, with its delegates (XNNPACK, GPU, NNAPI) wired exactly as TFLite
wires them. This module is the run protocol: it checks the arguments, moves files, runs the tool
with explicit flags and cleans up; ``adb.py`` runs each adb step and ``android_log.py`` parses what
the tool prints. Every adb call has a timeout and kills its process group when it expires, every
failure is one line naming the step, and the tool's full output is kept so any number can be traced
back to the log it came from. No TensorFlow import; adb and the binary are the only dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, get_args

from edgeq.artifacts import Artifact
from edgeq.errors import BackendUnavailable, InputError, UsageError
from edgeq.harness.adb import _adb, _check_device, _checked, _first_error, _missing_adb_reason, _one_line, find_adb
from edgeq.harness.android_log import DelegateReport, parse_benchmark_output
from edgeq.tflite.model import check_identifier

Accelerator = Literal["cpu", "xnnpack", "gpu", "nnapi"]
ACCELERATORS: tuple[str, ...] = get_args(Accelerator)
DEFAULT_REMOTE_DIR = "/data/local/tmp/edgeq"
REMOTE_MODEL = "model.tflite"
REMOTE_BINARY = "benchmark_model"
SHORT_STEP_S = 60.0  # mkdir, chmod, cleanup: anything slower than this is a hung device, not a slow one


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
