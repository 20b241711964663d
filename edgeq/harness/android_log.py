"""Parse what TFLite's ``benchmark_model`` prints: timings, memory, and what each delegate took.

Kept apart from running the tool (android.py) so a log can be read, and tested, without a device:
the parser only sees text, plain, ``INFO:``-prefixed or logcat-prefixed alike, and names the first
error line when the numbers are missing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edgeq.errors import InputError
from edgeq.harness.adb import _error_lines, _first_error

# The name benchmark_model prints for each delegate ("Explicitly applied GPU delegate, ...").
DELEGATE_NAMES = {"xnnpack": "XNNPACK", "gpu": "GPU", "nnapi": "NNAPI"}

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

