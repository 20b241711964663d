"""Gate rows: what ``edgeq validate`` and ``edgeq build`` judged, each with its verdict and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeq.results.document import OMIT_NONE, Document, Interval, Number


@dataclass(frozen=True, kw_only=True)
class SliceStability(Document):
    """Medians of consecutive slices of one latency measurement (edgeq.harness.budget.Stability)."""

    slices: int
    slice_runs: int
    slice_median_min_ms: float
    slice_median_max_ms: float
    spread: float | None  # (max - min) / median of the slice medians; None: not finite (a zero median)


@dataclass(frozen=True, kw_only=True)
class LatencyVerdict(Document):
    """A latency budget's verdict on one thread count (edgeq.harness.budget.LatencyVerdict, with its budget)."""

    threads: int
    passed: bool
    percentile: Number
    max_ms: Number
    min_samples: int
    max_spread: Number | None
    value_ms: float  # the budget's percentile of the samples
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_sample_ms: float
    stall_fraction: float
    stability: SliceStability | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class Gate(Document):
    """One gate: ``max_drop``, ``spec:TARGET``, ``latency:BACKEND``, ``coverage``, ``max_regression:KEY``, or a
    fidelity limit of ``validate`` (``min_output_sqnr:OUTPUT``, ``min_agreement:OUTPUT``,
    ``min_detection_recall:OUTPUT``, ``min_mask_iou:OUTPUT``, ``max_landmark_error:OUTPUT``).

    The max-drop gate also carries its held-out measurement (``clear`` to ``drop_ci_pp``), a fidelity limit
    its held-out ``n``, measured ``value`` and ``limit``, a latency gate one verdict per measured thread count;
    other gates leave those keys out.
    """

    name: str
    passed: bool
    detail: str
    # max_drop: its held-out measurement; clear: the whole interval on the verdict's side of the limit
    clear: bool | None = field(default=None, metadata=OMIT_NONE)
    n: int | None = field(default=None, metadata=OMIT_NONE)
    drop_pp: float | None = field(default=None, metadata=OMIT_NONE)
    drop_ci_pp: Interval | None = field(default=None, metadata=OMIT_NONE)
    # a fidelity limit: the measured value (None: not finite or not measurable; the detail says which)
    value: float | None = field(default=None, metadata=OMIT_NONE)
    limit: Number | None = field(default=None, metadata=OMIT_NONE)
    # latency: one verdict per thread count; None when nothing was measured
    verdicts: tuple[LatencyVerdict, ...] | None = field(default=None, metadata=OMIT_NONE)
    # False: the gate could not be judged (max_regression without a comparable baseline figure); it passes,
    # and the summary and JUnit show it as skipped. None (left out): judged
    judged: bool | None = field(default=None, metadata=OMIT_NONE)
