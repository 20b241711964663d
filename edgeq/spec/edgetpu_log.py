"""Run Coral's ``edgetpu_compiler`` and read what it says, so a prediction can be checked against it.

The compiler is a closed x86-64 Linux binary from Coral's apt repository; where it is missing,
``run_compiler`` raises ``BackendUnavailable`` and the static prediction in ``edgetpu.py`` is all
there is. ``parse_compiler_log`` reads both forms the compiler writes: its standard output
(``edgetpu_compiler -s``: summary, memory use, per-op table) and the ``*_edgetpu.log`` operation log
file (``Input:``/``Output:`` header and the per-op table only). Unknown lines are ignored, so output
of other compiler versions degrades to fewer known fields, never to an error. When several models are
co-compiled, the summary fields describe the first one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from edgeq.errors import BackendUnavailable, InputError
from edgeq.subprocesses import stop_group
from edgeq.tflite import model as tfl

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_MEMORY = r"([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB)"
_PATTERNS = {
    "version": re.compile(r"^Edge TPU Compiler version (\S+)"),
    "compiled_ms": re.compile(r"^Models? compiled successfully in (\d+) ms"),
    "input_model": re.compile(r"^Input(?: model)?: (.+?)\s*$"),
    "output_model": re.compile(r"^Output(?: model)?: (.+?)\s*$"),
    "on_chip": re.compile(rf"^On-chip memory used for caching model parameters: {_MEMORY}"),
    "on_chip_remaining": re.compile(rf"^On-chip memory remaining for caching model parameters: {_MEMORY}"),
    "off_chip": re.compile(rf"^Off-chip memory used for streaming uncached model parameters: {_MEMORY}"),
    "subgraphs": re.compile(r"^Number of Edge TPU subgraphs: (\d+)"),
    "total_ops": re.compile(r"^Total number of operations: (\d+)"),
    "operation_log": re.compile(r"^Operation log: (.+?)\s*$"),
    "tpu_ops": re.compile(r"^Number of operations that will run on Edge TPU: (\d+)"),
    "cpu_ops": re.compile(r"^Number of operations that will run on CPU: (\d+)"),
}
_TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]*|CUSTOM\S*)\s+(\d+)\s+(\S.*?)\s*$")
_PARTIAL = "not all operations are supported by the Edge TPU"
_FAILED = ("Compilation failed", "Internal compiler error", "Invalid model")


@dataclass(frozen=True)
class CompilerReport:
    """What one ``edgetpu_compiler`` run reported. Fields the log did not contain are None."""

    compiled: bool
    ops_on_tpu: int | None
    ops_on_cpu: int | None
    subgraphs: int | None  # "Number of Edge TPU subgraphs"
    on_chip_bytes: int | None  # on-chip memory used for caching model parameters
    off_chip_bytes: int | None  # off-chip memory used for streaming uncached parameters
    per_op: tuple[tuple[str, int, str], ...]  # (operator, count, status) rows of the operation table
    output_model: str | None
    raw_log: str
    compiler_version: str | None = None
    total_ops: int | None = None
    on_chip_remaining_bytes: int | None = None
    compile_ms: int | None = None
    error: str | None = None  # the compiler's own reason, when it failed


def memory_bytes(value: str, unit: str) -> int:
    """``3.38``, ``MiB`` -> bytes, as the compiler rounds them (binary units)."""
    return round(float(value) * _UNITS[unit])


def parse_compiler_log(text: str) -> CompilerReport:
    """Read ``edgetpu_compiler`` stdout or its ``*_edgetpu.log`` operation log into a report."""
    found: dict[str, str | tuple[str, str]] = {}
    rows: list[tuple[str, int, str]] = []
    in_table = False
    errors: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if in_table:
            row = _TABLE_ROW.match(line)
            if row:
                rows.append((row[1], int(row[2]), row[3]))
                continue
            if line:
                in_table = False  # the table ends at the first line that is not a row
        for key, pattern in _PATTERNS.items():
            match = pattern.match(line)
            if match and key not in found:
                found[key] = match.groups() if len(match.groups()) > 1 else match[1]
                break
        if line.startswith(("ERROR:", *_FAILED)):
            errors.append(line)

    def word(key: str) -> str | None:
        value = found.get(key)
        return value if isinstance(value, str) else None

    def number(key: str) -> int | None:
        value = word(key)
        return None if value is None else int(value)

    def size(key: str) -> int | None:
        value = found.get(key)
        return memory_bytes(*value) if isinstance(value, tuple) else None

    failed = any(line.startswith(_FAILED) for line in errors)
    succeeded = "compiled_ms" in found or "Compilation succeeded" in text
    # The operation log file has no success line; the compiler only writes it, with an Output line, on success.
    compiled = not failed and (succeeded or ("output_model" in found and bool(rows)))
    tpu, cpu, total = number("tpu_ops"), number("cpu_ops"), number("total_ops")
    if tpu is None and rows:
        tpu = sum(count for _, count, status in rows if status == MAPPED)
        cpu = sum(count for _, count, status in rows if status != MAPPED)
    elif tpu is None and compiled and total is not None and _PARTIAL not in text:
        tpu, cpu = total, 0  # a full mapping compiled without -s prints no table and no split
    return CompilerReport(
        compiled=compiled, ops_on_tpu=tpu, ops_on_cpu=cpu, subgraphs=number("subgraphs"),
        on_chip_bytes=size("on_chip"), off_chip_bytes=size("off_chip"), per_op=tuple(rows),
        output_model=word("output_model"), raw_log=text, compiler_version=word("version"),
        total_ops=total, on_chip_remaining_bytes=size("on_chip_remaining"), compile_ms=number("compiled_ms"),
        error="; ".join(errors) if failed else None,
    )


def find_compiler() -> str | None:
    """The ``edgetpu_compiler`` executable on PATH, or None."""
    return shutil.which(COMPILER)


def _stop(process: subprocess.Popen[str]) -> str:
    """Kill the compiler and everything it started (it forks a child to compile), and collect its output."""
    return stop_group(process, "")


def run_compiler(model_path: str | Path, out_dir: str | Path, timeout_s: float = 120) -> CompilerReport:
    """Compile ``model_path`` into ``out_dir`` with ``edgetpu_compiler -s`` and parse what it printed.

    A model the compiler rejects is a result, not an error: the report says ``compiled=False`` with the
    compiler's reason. Errors are for what prevents an answer: no compiler here, a compiler that cannot
    start or hangs past ``timeout_s`` (``BackendUnavailable``), or an input that is not a model
    (``InputError``).
    """
    compiler = find_compiler()
    if compiler is None:
        raise BackendUnavailable(f"{COMPILER} is not on PATH: it comes from Coral's apt repository "
                                 "(package edgetpu-compiler, x86-64 Linux only); the prediction from "
                                 "'edgeq.spec.edgetpu.predict_partition' needs no compiler")
    if timeout_s <= 0:
        raise InputError(f"timeout must be positive, got {timeout_s}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"no such model file: {model_path}")
    with model_path.open("rb") as handle:
        tfl.check_identifier(handle.read(8), str(model_path))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {exc.strerror}") from None
    command = [compiler, "-s", "-o", str(out_dir), str(model_path)]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", start_new_session=True)
    except OSError as exc:
        raise BackendUnavailable(f"cannot run {compiler}: {exc.strerror or exc}") from None
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        partial = _stop(process).strip().splitlines()
        last = f" (last output: {partial[-1]!r})" if partial else ""
        raise BackendUnavailable(f"{COMPILER} did not finish within {timeout_s:g} s and was stopped{last}") from None
    except BaseException:
        _stop(process)
        raise
    report = parse_compiler_log(out or "")
    if process.returncode != 0 and report.compiled:
        report = _failed(report, f"{COMPILER} exited with status {process.returncode}")
    elif not report.compiled and report.error is None:
        report = _failed(report, f"{COMPILER} exited with status {process.returncode} without a result")
    return report


def _failed(report: CompilerReport, why: str) -> CompilerReport:
    return replace(report, compiled=False, error=report.error or why)
