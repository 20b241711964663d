"""Latency budgets judged the way benchmark users expect: a stated percentile over enough samples.

One number from a shared machine means little: periodic stalls put a p90 at 9 ms over a p50 of 1 ms.
So a budget names its percentile and the fewest samples it will judge, and every verdict carries
the distribution it was judged on (p50/p90/p99/max, n) and how stable the run was: the medians of
the measurement's consecutive slices (the interleaving rounds of ``run_interleaved``), whose spread
shows drift or interference that a single percentile hides. Too few samples is a failed verdict,
never a pass by default; a budget may also refuse runs less stable than it allows (``max_spread``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edgeq.artifacts import LatencyStats
from edgeq.errors import InputError

DEFAULT_CHUNK = 10  # consecutive runs per slice when the measurement did not record its slice size
STALL_FACTOR = 2.0  # a run slower than this many medians is a stall (preemption, interference), not the model


@dataclass(frozen=True)
class LatencyBudget:
    """``percentile`` of the measured per-inference latency must be at most ``max_ms``."""

    max_ms: float
    percentile: float = 90.0
    min_samples: int = 50
    max_spread: float | None = None  # refuse when (max − min slice median) / median slice median exceeds this

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_ms) and self.max_ms > 0):
            raise InputError(f"latency budget max_ms must be a positive number, got {self.max_ms!r}")
        if not (math.isfinite(self.percentile) and 0 < self.percentile <= 100):
            raise InputError(f"latency budget percentile must be in (0, 100], got {self.percentile!r}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise InputError(f"latency budget min_samples must be a positive integer, got {self.min_samples!r}")
        if self.max_spread is not None and not (math.isfinite(self.max_spread) and self.max_spread >= 0):
            raise InputError(f"latency budget max_spread must be a non-negative number, got {self.max_spread!r}")

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], where: str) -> LatencyBudget:
        """Build from a YAML/JSON mapping, naming ``where`` in every error."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - allowed)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {sorted(allowed)}")
        if "max_ms" not in document:
            raise InputError(f"{where}: missing 'max_ms'")
        values: dict[str, Any] = {}
        for name, value in document.items():
            integer = name == "min_samples"
            if value is None and name == "max_spread":
                continue
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                kind = "an integer" if integer else "a number"
                raise InputError(f"{where}.{name} must be {kind}, got {type(value).__name__}")
            values[name] = value if integer else float(value)
        try:
            return cls(**values)
        except InputError as error:
            raise InputError(f"{where}: {error}") from None


@dataclass(frozen=True)
class Stability:
    """Medians of consecutive slices of one measurement: how much the run drifted or was disturbed."""

    slices: int
    slice_runs: int
    min_ms: float
    max_ms: float
    spread: float  # (max − min) / median of the slice medians; 0 = perfectly steady

    def describe(self) -> str:
        return (f"{self.slices} slices of {self.slice_runs} runs, slice medians {self.min_ms:.3f}–{self.max_ms:.3f} ms "
                f"(spread {self.spread:.0%})")


@dataclass(frozen=True)
class LatencyVerdict:
    passed: bool
    budget: LatencyBudget
    value_ms: float  # the budget's percentile of the samples
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    stall_fraction: float  # share of runs over STALL_FACTOR × the median
    stability: Stability | None
    reason: str  # one line that names the distribution; says why when it failed

    def to_dict(self) -> dict[str, Any]:
        stability = None if self.stability is None else {
            "slices": self.stability.slices, "slice_runs": self.stability.slice_runs,
            "slice_median_min_ms": self.stability.min_ms, "slice_median_max_ms": self.stability.max_ms,
            "spread": self.stability.spread}
        return {"passed": self.passed, "percentile": self.budget.percentile, "max_ms": self.budget.max_ms,
                "min_samples": self.budget.min_samples, "max_spread": self.budget.max_spread,
                "value_ms": self.value_ms, "n": self.n, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms, "max_sample_ms": self.max_ms, "stall_fraction": self.stall_fraction,
                "stability": stability, "reason": self.reason}


def stability(samples_ms: tuple[float, ...] | list[float], slice_runs: int = 0) -> Stability | None:
    """Per-slice medians of the samples in measurement order; None with fewer than two whole slices."""
    size = slice_runs if slice_runs > 0 else DEFAULT_CHUNK
    count = len(samples_ms) // size
    if count < 2:
        return None
    medians = np.median(np.asarray(samples_ms[: count * size], dtype=np.float64).reshape(count, size), axis=1)
    center = float(np.median(medians))
    spread = float((medians.max() - medians.min()) / center) if center > 0 else math.inf
    return Stability(slices=count, slice_runs=size, min_ms=float(medians.min()), max_ms=float(medians.max()),
                     spread=spread)


def stall_fraction(samples_ms: tuple[float, ...] | list[float]) -> float:
    """Share of runs slower than STALL_FACTOR × the median: periodic stalls that move p90 but not p50."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    return float(np.mean(samples > STALL_FACTOR * np.median(samples))) if samples.size else 0.0


def summary_line(stats: LatencyStats) -> str:
    """The distribution of one measurement in a line: n, p50/p90/p99/max, stalls and slice stability."""
    samples = np.asarray(stats.samples_ms, dtype=np.float64)
    if samples.size == 0:
        return "no raw samples"
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    steady = stability(stats.samples_ms, stats.slice_runs)
    return (f"n={samples.size}: p50 {p50:.3f}, p90 {p90:.3f}, p99 {p99:.3f}, max {samples.max():.3f} ms; "
            f"{stall_fraction(stats.samples_ms):.0%} of runs over {STALL_FACTOR:g}× the median"
            + (f"; {steady.describe()}" if steady else "; too few samples for slice stability"))


def judge(stats: LatencyStats, budget: LatencyBudget) -> LatencyVerdict:
    """The verdict of ``budget`` on one measurement, read from its raw samples."""
    samples = np.asarray(stats.samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise InputError("the latency measurement has no raw samples to judge a budget on")
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise InputError("the latency measurement holds negative or non-finite samples")
    value, p50, p90, p99 = (float(v) for v in np.percentile(samples, [budget.percentile, 50, 90, 99]))
    steady = stability(stats.samples_ms, stats.slice_runs)
    label = f"p{budget.percentile:g}"
    distribution = summary_line(stats)
    problems = []
    if samples.size < budget.min_samples:
        problems.append(f"only {samples.size} samples, the budget needs at least {budget.min_samples}")
    if value > budget.max_ms:
        stalled = p50 <= budget.max_ms and value > STALL_FACTOR * p50
        problems.append(f"{label} {value:.3f} ms > budget {budget.max_ms:g} ms"
                        + (" (the median meets it: the tail is stalls — other load on the machine or a "
                           "throttled core; measure on a quiet, pinned device)" if stalled else ""))
    if budget.max_spread is not None and (steady is None or steady.spread > budget.max_spread):
        problems.append("stability unknown (fewer than two slices)" if steady is None else
                        f"unstable run: slice-median spread {steady.spread:.0%} > allowed {budget.max_spread:.0%}")
    head = "; ".join(problems) if problems else f"{label} {value:.3f} ms <= budget {budget.max_ms:g} ms"
    return LatencyVerdict(passed=not problems, budget=budget, value_ms=value, n=int(samples.size), p50_ms=p50,
                          p90_ms=p90, p99_ms=p99, max_ms=float(samples.max()),
                          stall_fraction=stall_fraction(stats.samples_ms), stability=steady,
                          reason=f"{head} ({distribution})")
