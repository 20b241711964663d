"""A build's latency measurement as report data: each configuration's row (with init, first inference,
delegation and stability) and the run's summary (INT8/FP32 ratios, environment, peak RSS)."""

from __future__ import annotations

import math
from typing import Any

from edgeq.harness.latency import DRIFT_LIMIT, PEAK_RSS_SOURCE, TAIL_LIMIT, Measurement, classify, peak_rss_mib
from edgeq.results.build import LatencyRow, Precision
from edgeq.results.latency import LatencyDelegation, LatencyRatio, LatencyStability, LatencySummary


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def stability(samples_ms: tuple[float, ...] | list[float]) -> LatencyStability:
    s = classify(samples_ms)
    return LatencyStability(stable=s.stable, tail_p90_p50=_finite(round(s.tail, 4)),
                            drift_thirds=_finite(round(s.drift, 4)),
                            third_medians_ms=tuple(round(v, 4) for v in s.third_medians_ms), reasons=s.reasons)


def row(m: Measurement, backend: str, threads: int, precision: str) -> LatencyRow:
    """One configuration as the report keeps it."""
    stats = m.stats()
    d = m.session.delegation
    delegation = None if d is None else LatencyDelegation(
        delegate=d.delegate, nodes_total=d.nodes_total, nodes_delegated=d.nodes_delegated, partitions=d.partitions,
        undelegated_ops=tuple(d.undelegated_ops))
    return LatencyRow(label=m.label, backend=backend, threads=threads, model=Precision(precision),
                      p50_ms=stats.p50_ms, p90_ms=stats.p90_ms, mean_ms=stats.mean_ms, samples_ms=stats.samples_ms,
                      slice_runs=stats.slice_runs, init_ms=round(m.init_ms, 4),
                      first_inference_ms=round(m.first_ms, 4), delegation=delegation,
                      stability=stability(stats.samples_ms))


def ratios(rows: tuple[LatencyRow, ...] | list[LatencyRow]) -> tuple[LatencyRatio, ...]:
    """INT8 over FP32 for every backend and thread count measured with both."""
    found = []
    by_key = {(r.backend, r.threads, r.model): r for r in rows}
    for (backend, threads, precision), int8 in by_key.items():
        fp32 = by_key.get((backend, threads, Precision.FP32))
        if precision is not Precision.INT8 or fp32 is None:
            continue
        verdicts = [(r.stability or stability(r.samples_ms)).stable for r in (int8, fp32)]
        unstable = False in verdicts
        found.append(LatencyRatio(backend=backend, threads=threads, int8_p50_ms=int8.p50_ms, fp32_p50_ms=fp32.p50_ms,
                                  ratio=int8.p50_ms / fp32.p50_ms if fp32.p50_ms > 0 else None, unstable=unstable,
                                  unjudged=not unstable and None in verdicts))
    return tuple(found)


#: In a build the process also converted and validated (TensorFlow loaded): its peak is mostly theirs.
BUILD_RSS_SOURCE = PEAK_RSS_SOURCE + ", after conversion and validation in the same process"


def summary(rows: tuple[LatencyRow, ...], environment: dict[str, Any], peak_mib: float | None = None,
            rss_source: str = BUILD_RSS_SOURCE) -> LatencySummary:
    """The run's summary; ``peak_mib`` defaults to this process's peak RSS now."""
    return LatencySummary(ratios=ratios(rows), environment={k: str(v) for k, v in environment.items()},
                          peak_rss_mib=round(peak_rss_mib() if peak_mib is None else peak_mib, 1),
                          peak_rss_source=rss_source, tail_limit=TAIL_LIMIT, drift_limit=DRIFT_LIMIT)
