"""What ``edgeq build`` proves on top of validation: target checks, latency, gates, the calibration set,
coverage and where the artifact went (edgeq.build.pipeline fills these)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from edgeq.artifacts import Finding, Target
from edgeq.quant_recipe import QuantRecipe
from edgeq.results.baseline import BaselineComparison, BenchEnvironment
from edgeq.results.document import FLATTEN, OMIT_EMPTY, OMIT_NONE, Document, Number
from edgeq.results.gates import Gate
from edgeq.results.graph import GraphReport
from edgeq.results.latency import LatencyDelegation, LatencyStability, LatencySummary
from edgeq.results.provenance import Provenance
from edgeq.results.validation import ValidationReport


class Precision(enum.StrEnum):
    INT8 = "int8"  # the artifact
    FP32 = "fp32"  # the float model it came from


@dataclass(frozen=True, kw_only=True)
class CheckSummary(Document):
    """``edgeq check`` of the artifact for one target."""

    target: Target
    passed: bool
    errors: int
    warnings: int
    findings: tuple[Finding, ...]  # the first edgeq.build.pipeline.MAX_FINDINGS


@dataclass(frozen=True, kw_only=True)
class LatencyRow(Document):
    """One benchmarked configuration, with every timed run (also the build's bench cache, one row each)."""

    label: str
    backend: str
    threads: int
    model: Precision
    p50_ms: float
    p90_ms: float
    mean_ms: float
    samples_ms: tuple[float, ...]  # in measurement order
    slice_runs: int  # consecutive runs per interleaving slice
    # init (interpreter creation, allocation, delegate) and the first inference; None: a row from before them
    init_ms: float | None = field(default=None, metadata=OMIT_NONE)
    first_inference_ms: float | None = field(default=None, metadata=OMIT_NONE)
    delegation: LatencyDelegation | None = field(default=None, metadata=OMIT_NONE)  # None: no delegate
    stability: LatencyStability | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class CalibrationSetSummary(Document):
    """The calibration set: from its datagen.json, or for data used as is (.npy, .npz, an image folder) its path
    and sample count."""

    source: str
    samples: int
    counts: dict[str, int]  # samples per condition
    preview_png: str | None  # base64, as datagen wrote it


@dataclass(frozen=True, kw_only=True)
class ConversionSettings(Document):
    """What the build recipe set for every conversion (its ``input_shape`` and ``quantization``)."""

    input_shape: tuple[int, ...] | None = field(default=None, metadata=OMIT_NONE)  # None: the model's own
    quantization: QuantRecipe  # the artifact's convert recipe (as its sidecar's ``recipe``: the picked method)


@dataclass(frozen=True, kw_only=True)
class CoverageLayer(Document):
    name: str
    calib_max: float  # max|x| over the calibration set
    production_max: float  # max|x| over the evaluation set
    ratio: float | None  # calib_max / production_max; None: production never leaves 0
    flagged: bool
    # calibration conditions that alone reach production's range (edgeq coverage computes them)
    closing_conditions: tuple[str, ...] = field(default=(), metadata=OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class CoverageSection(Document):
    """Does the calibration set cover the evaluation set's activations, layer by layer?"""

    threshold: Number
    flagged: int
    layers: tuple[CoverageLayer, ...]
    per_condition_max: dict[str, tuple[float, ...]]  # condition -> max|x| per layer, in the order of layers


@dataclass(frozen=True, kw_only=True)
class ArtifactPaths(Document):
    path: str
    sidecar: str


@dataclass(frozen=True, kw_only=True)
class BuildReport(Document):
    """What ``edgeq build`` writes to report.json: the validation report (its model named after the recipe)
    and everything the build checked, measured and gated."""

    title: str
    validation_report: ValidationReport = field(metadata=FLATTEN)
    check: tuple[CheckSummary, ...]
    latency: tuple[LatencyRow, ...]
    gates: tuple[Gate, ...]
    passed: bool
    calibration: CalibrationSetSummary
    # the recipe's conversion settings, when it gives input_shape or quantization
    conversion: ConversionSettings | None = field(default=None, metadata=OMIT_NONE)
    coverage: CoverageSection | None = field(default=None, metadata=OMIT_NONE)
    artifact: ArtifactPaths
    graph: GraphReport | None = field(default=None, metadata=OMIT_NONE)  # None: a report from before the op table
    provenance: Provenance | None = field(default=None, metadata=OMIT_NONE)  # None: a report from before provenance
    # what the latency figures depend on beyond the model (None: a report from before it was recorded)
    bench_environment: BenchEnvironment | None = field(default=None, metadata=OMIT_NONE)
    # the deltas against an older build (``--baseline``); None: none was given
    baseline_comparison: BaselineComparison | None = field(default=None, metadata=OMIT_NONE)
    # ratios, environment and peak RSS of the latency measurement; None: nothing was measured, or an older report
    latency_summary: LatencySummary | None = field(default=None, metadata=OMIT_NONE)

    ENVELOPE_KIND: ClassVar[str] = "edgeq.report"  # report.json is written through edgeq.envelope
