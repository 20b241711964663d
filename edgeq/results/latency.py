"""What a build measured about latency beyond each configuration's samples: init and first inference,
delegation, stability, INT8/FP32 ratios, the machine and the process's peak RSS (edgeq.build.pipeline fills
these; edgeq.report.latency shows them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeq.results.document import OMIT_EMPTY, Document


@dataclass(frozen=True, kw_only=True)
class LatencyDelegation(Document):
    """How much of the graph a delegate took (edgeq.harness.session.Delegation)."""

    delegate: str
    nodes_total: int
    nodes_delegated: int
    partitions: int
    undelegated_ops: tuple[str, ...] = field(default=(), metadata=OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class LatencyStability(Document):
    """edgeq.harness.latency.classify on one configuration's samples."""

    stable: bool | None  # None: too few samples to judge
    tail_p90_p50: float | None
    drift_thirds: float | None  # (max - min) / median of the medians of the run's thirds
    third_medians_ms: tuple[float, ...]
    reasons: tuple[str, ...] = field(default=(), metadata=OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class LatencyRatio(Document):
    """INT8 p50 over FP32 p50 on one backend and thread count; above 1: INT8 is slower."""

    backend: str
    threads: int
    int8_p50_ms: float
    fp32_p50_ms: float
    ratio: float | None  # None: the FP32 median was 0
    unstable: bool  # either configuration's samples were unstable: the ratio may not be the models'
    # neither unstable, but one had too few runs to judge (edgeq.harness.latency.MIN_SAMPLES)
    unjudged: bool = field(default=False, metadata=OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class LatencySummary(Document):
    """The run as a whole: ratios, where it ran, and the process's peak memory."""

    ratios: tuple[LatencyRatio, ...]
    environment: dict[str, str]  # edgeq.harness.environment.capture at the start of the measurement
    peak_rss_mib: float
    peak_rss_source: str  # what the figure covers (the whole process, not one configuration)
    tail_limit: float  # the stability thresholds the rows were judged by
    drift_limit: float
