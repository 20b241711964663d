"""Latency the way benchmark_model measures it, for several configurations interleaved.

Per configuration: init time (load + allocate + delegate), the first (cold) inference, warm-up by count
and by time, then measured runs by count and minimum time. Configurations run in rounds, a slice of each
per round, so drift on a shared machine hits them all alike and their ratios stay meaningful.

Interleaving keeps ratios fair only while the machine's disturbance is mild: a run where another process
took the core for a while gives a median that is not the model's. :func:`classify` reads that from the
raw samples (the tail over the median, and the drift between the medians of the run's thirds) so a
ratio built on such samples is marked instead of trusted.
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
from edgeq.progress import task
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


#: p90 / p50 above this: over a tenth of the runs took 1.5x the median or more. On a quiet, pinned core
#: per-invoke times of the same model vary by a few percent (docs/harness.md: edgeq and litert-benchmark
#: medians agree within 2.1 %), so a tail this heavy is other work on the machine, not the model.
TAIL_LIMIT = 1.5
#: (max - min) / median of the medians of the run's three consecutive thirds, above this: the machine's
#: speed changed during the run (frequency scaling, another process). A third holds at least
#: MIN_SAMPLES // 3 runs, enough that its median moves by a few percent by chance, far below 25 %.
DRIFT_LIMIT = 0.25
#: Fewer samples than this: too few thirds of five to judge (stability unknown, never "stable").
MIN_SAMPLES = 15


@dataclass(frozen=True)
class Stability:
    """How far one configuration's samples can be trusted (see TAIL_LIMIT and DRIFT_LIMIT)."""

    tail: float  # p90 / p50
    drift: float  # spread of the medians of consecutive thirds, relative to their median
    third_medians_ms: tuple[float, ...]
    stable: bool | None  # None: fewer than MIN_SAMPLES samples
    reasons: tuple[str, ...] = ()  # why not stable, one phrase each

    def to_dict(self) -> dict[str, object]:
        return {"stable": self.stable, "tail_p90_p50": round(self.tail, 4), "drift_thirds": round(self.drift, 4),
                "third_medians_ms": [round(v, 4) for v in self.third_medians_ms], "reasons": list(self.reasons),
                "tail_limit": TAIL_LIMIT, "drift_limit": DRIFT_LIMIT}


def classify(samples_ms: list[float] | tuple[float, ...] | np.ndarray) -> Stability:
    """Stability of one configuration from its raw samples in measurement order."""
    values = np.asarray(samples_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Stability(math.nan, math.nan, (), None, ("no samples",))
    p50, p90 = np.percentile(values, [50, 90])
    tail = float(p90 / p50) if p50 > 0 else math.inf
    thirds = tuple(float(np.median(part)) for part in np.array_split(values, 3) if part.size)
    center = float(np.median(thirds))
    drift = float((max(thirds) - min(thirds)) / center) if center > 0 else math.inf
    if values.size < MIN_SAMPLES:
        return Stability(tail, drift, thirds, None, (f"only {values.size} samples (stability needs {MIN_SAMPLES})",))
    reasons = []
    if tail > TAIL_LIMIT:
        reasons.append(f"p90/p50 {tail:.2f} > {TAIL_LIMIT:g}")
    if drift > DRIFT_LIMIT:
        reasons.append(f"medians of thirds {' / '.join(f'{t:.3g}' for t in thirds)} ms differ by {drift:.0%} "
                       f"> {DRIFT_LIMIT:.0%}")
    return Stability(tail, drift, thirds, not reasons, tuple(reasons))


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
    with task("warming up", len(measurements)) as warmed:
        for m in measurements:
            m.slice_runs = config.slice_runs
            m.session.set_inputs(random_inputs(m.session, config.seed))
            m.first_ms = _timed_invoke(m.session)
            started, done = time.perf_counter(), 0
            while done < config.warmup_runs or time.perf_counter() - started < config.warmup_seconds:
                m.session.invoke()
                done += 1
            warmed.advance()
    started = time.perf_counter()
    spent = dict.fromkeys(range(len(measurements)), 0.0)

    def finished(i: int) -> bool:
        m = measurements[i]
        enough = len(m.samples_ms) >= config.runs and spent[i] >= config.min_seconds * 1e3
        return enough or time.perf_counter() - started > config.max_seconds

    with task("benchmarking", config.runs * len(measurements), callback=progress) as counted:
        while not all(finished(i) for i in range(len(measurements))):
            for i, m in enumerate(measurements):
                if finished(i):
                    continue
                for _ in range(config.slice_runs):
                    sample = _timed_invoke(m.session)
                    m.samples_ms.append(sample)
                    spent[i] += sample
            counted.update(sum(min(len(m.samples_ms), config.runs) for m in measurements))


#: Where peak_rss_mib comes from, said beside the figure: it is the whole process, not one configuration.
PEAK_RSS_SOURCE = "getrusage(RUSAGE_SELF).ru_maxrss: this whole process (runtime, every model loaded so far)"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB). Configurations run interleaved in one
    process, so this cannot be split per model or backend."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class Ratio:
    """p50 of one configuration over another's; ``unstable`` when either one's samples are not stable."""

    what: str
    ratio: float
    unstable: bool
    unstable_configs: tuple[str, ...] = ()
    unjudged: bool = False  # not unstable, but one side had too few runs (MIN_SAMPLES) to judge

    def text(self) -> str:
        return f"{self.ratio:.3f}" + (" (unstable)" if self.unstable else
                                      " (too few runs to judge stability)" if self.unjudged else "")

    def to_dict(self) -> dict[str, object]:
        return {"what": self.what, "ratio": self.ratio, "unstable": self.unstable,
                "unstable_configs": list(self.unstable_configs), "unjudged": self.unjudged}


def ratio_of(what: str, numerator: Measurement, denominator: Measurement) -> Ratio:
    """Median latency ratio; below 1 means the numerator is faster."""
    verdicts = {m.label: classify(m.samples_ms).stable for m in (numerator, denominator)}
    shaky = tuple(label for label, stable in verdicts.items() if stable is False)
    return Ratio(what, ratio(numerator, denominator), bool(shaky), shaky,
                 unjudged=not shaky and None in verdicts.values())


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    """Median latency ratio; below 1 means the numerator is faster."""
    a, b = numerator.stats().p50_ms, denominator.stats().p50_ms
    return a / b if b > 0 else math.inf
