"""A build compared with an older one (``edgeq build --baseline OLD/report.json``): what changed, by how much,
and whether a latency change can be trusted (both measured on the same kind of machine)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from edgeq.results.document import OMIT_EMPTY, Document


@dataclass(frozen=True, kw_only=True)
class BenchEnvironment(Document):
    """What a latency figure depends on beyond the model: two builds' latencies compare only when these match.

    Python, the OS and the load at the time are left out on purpose: they move latency far less than the CPU,
    its core count and the runtime's version, and a key that never matches would make every delta unusable."""

    cpu_model: str
    cpu_count: int
    machine: str
    litert: str | None  # ai-edge-litert's version; None: not installed

    def describe(self) -> str:
        return (f"{self.cpu_model} ({self.cpu_count} cores, {self.machine}), ai-edge-litert "
                f"{self.litert or 'absent'}")


class Aspect(enum.StrEnum):
    ACCURACY = "accuracy"  # top-1 on the evaluation set, in points
    FIDELITY = "fidelity"  # an output's SQNR against FP32, in dB
    SIZE = "size"  # the INT8 file's bytes, in percent
    LATENCY = "latency"  # a benchmarked configuration's p50, in percent


#: The sign of a change that is worse: a drop in accuracy or dB, growth in size or time. The one definition the
#: max_regression gates (edgeq.build.baseline), the report and the summary all read.
WORSE: dict[Aspect, float] = {Aspect.ACCURACY: -1.0, Aspect.FIDELITY: -1.0, Aspect.SIZE: 1.0, Aspect.LATENCY: 1.0}


@dataclass(frozen=True, kw_only=True)
class Delta(Document):
    """One figure in both reports. ``change`` is ``current - baseline`` in points (accuracy) or dB (fidelity),
    and the relative change in percent (size, latency); positive is up, whatever "better" means for it."""

    aspect: Aspect
    subject: str  # "minmax", "minmax / OUTPUT", "int8 file", "xnnpack t1 int8"
    baseline: float
    current: float
    change: float
    unit: str  # of ``change``: "pp", "dB" or "%"
    published: bool  # the published model's figure (the one max_regression judges)
    # False: shown, never judged: a latency delta across different environments, an accuracy or fidelity delta
    # across different evaluation sets (or a set either report does not fingerprint)
    comparable: bool = True


@dataclass(frozen=True, kw_only=True)
class BaselineComparison(Document):
    """Deltas against the baseline report, and what it was: its edgeq and schema versions, the method it
    published, the size of its evaluation set and the environment its latency was measured on."""

    path: str
    schema_version: int  # 0: written before reports carried an envelope
    edgeq_version: str | None
    method: str  # the baseline's published method
    eval_n: int | None  # samples its figures were measured on (the current build's are in its own report)
    environment: BenchEnvironment | None  # None: the baseline did not record it (latency is then not compared)
    latency_comparable: bool
    deltas: tuple[Delta, ...]
    notes: tuple[str, ...] = field(default=(), metadata=OMIT_EMPTY)  # why some figures were not compared
