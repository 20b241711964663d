"""Latency the way benchmark_model measures it, for several configurations interleaved.

Per configuration: init time (load + allocate), the first (cold) inference, warm-up by count and by
time, then measured runs by count and minimum time. Configurations run in rounds, a slice of each per
round, so drift on a shared machine hits them all alike and their ratios stay meaningful.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeq.artifacts import LatencyStats
from edgeq.harness.session import Session
from edgeq.tflite.runtime import seeded_inputs


@dataclass(frozen=True)
class LatencyConfig:
    warmup_runs: int = 1
    warmup_seconds: float = 0.5
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    slice_runs: int = 10  # runs of one configuration per round before moving to the next
    seed: int = 0


@dataclass
class Measurement:
    """Raw timings of one configuration."""

    label: str
    session: Session
    init_ms: float
    first_ms: float = 0.0
    samples_ms: list[float] = field(default_factory=list)
    slice_runs: int = 0  # set by run_interleaved: samples come in slices of this many consecutive runs

    def stats(self) -> LatencyStats:
        return summarize(self.samples_ms, self.slice_runs)


def summarize(samples_ms: list[float], slice_runs: int = 0) -> LatencyStats:
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencyStats(n=int(values.size), mean_ms=float(values.mean()), std_ms=float(values.std()),
                        min_ms=float(values.min()), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
                        max_ms=float(values.max()), samples_ms=tuple(round(float(v), 4) for v in values),
                        slice_runs=slice_runs)


def random_inputs(session: Session, seed: int) -> list[np.ndarray]:
    """Seeded random data in each input's own dtype (as benchmark_model feeds)."""
    return seeded_inputs([(info.shape, info.dtype) for info in session.inputs], seed)


def open_timed(label: str, opener: Callable[[], Session]) -> Measurement:
    started = time.perf_counter()
    session = opener()
    return Measurement(label=label, session=session, init_ms=(time.perf_counter() - started) * 1e3)


def _timed_invoke(session: Session) -> float:
    started = time.perf_counter()
    session.invoke()
    return (time.perf_counter() - started) * 1e3


def run_interleaved(measurements: list[Measurement], config: LatencyConfig,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Fill each measurement's first_ms and samples_ms."""
    for m in measurements:
        m.slice_runs = config.slice_runs
        m.session.set_inputs(random_inputs(m.session, config.seed))
        m.first_ms = _timed_invoke(m.session)
        started, done = time.perf_counter(), 0
        while done < config.warmup_runs or time.perf_counter() - started < config.warmup_seconds:
            m.session.invoke()
            done += 1
    started = time.perf_counter()
    spent = dict.fromkeys(range(len(measurements)), 0.0)

    def finished(i: int) -> bool:
        m = measurements[i]
        enough = len(m.samples_ms) >= config.runs and spent[i] >= config.min_seconds * 1e3
        return enough or time.perf_counter() - started > config.max_seconds

    while not all(finished(i) for i in range(len(measurements))):
        for i, m in enumerate(measurements):
            if finished(i):
                continue
            for _ in range(config.slice_runs):
                sample = _timed_invoke(m.session)
                m.samples_ms.append(sample)
                spent[i] += sample
        if progress is not None:
            total = sum(min(len(m.samples_ms), config.runs) for m in measurements)
            progress(total, config.runs * len(measurements))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    """Median latency ratio; below 1 means the numerator is faster."""
    a, b = numerator.stats().p50_ms, denominator.stats().p50_ms
    return a / b if b > 0 else math.inf
