"""What one report page shows, whichever command wrote the report.

A report is a typed result (edgeq.results): ``edgeq build``'s BuildReport, ``edgeq validate``'s
ValidationRun, or a bare ValidationReport. :func:`page_content` lays any of them out as one
:class:`Page` by its document's top-level keys, so a section renderer reads ``page.<key>`` whatever the
report; a key the report lacks stays empty and its section is left out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgeq.artifacts import SensitivityReport
from edgeq.results.baseline import BaselineComparison
from edgeq.results.build import (
    ArtifactPaths,
    BuildReport,
    CalibrationSetSummary,
    CheckSummary,
    CoverageSection,
    LatencyRow,
)
from edgeq.results.document import top_level
from edgeq.results.gates import Gate
from edgeq.results.graph import GraphReport
from edgeq.results.latency import LatencySummary
from edgeq.results.provenance import Provenance
from edgeq.results.validation import (
    CalibrationSamples,
    Histogram,
    LayerReport,
    ModelSummary,
    OutputsReport,
    RecoveryReport,
    ValidationReport,
    ValidationRun,
    ValidationSummary,
)

Report = BuildReport | ValidationRun | ValidationReport


@dataclass(frozen=True, kw_only=True)
class Page:
    title: str | None = None
    passed: bool | None = None  # None: the report has no verdict of its own (then: from the gates)
    gates: tuple[Gate, ...] | None = None  # None: the report has no gates at all; (): none were set
    validation: ValidationSummary | None = None
    outputs: OutputsReport | None = None
    layers: LayerReport | None = None
    histograms: tuple[Histogram, ...] = ()
    model: ModelSummary | None = None
    calibration_samples: CalibrationSamples | None = None
    check: tuple[CheckSummary, ...] = ()
    latency: tuple[LatencyRow, ...] = ()
    latency_summary: LatencySummary | None = None
    calibration: CalibrationSetSummary | None = None
    coverage: CoverageSection | None = None
    artifact: ArtifactPaths | None = None
    sensitivity: SensitivityReport | None = None
    recovery: RecoveryReport | None = None
    graph: GraphReport | None = None
    provenance: Provenance | None = None
    baseline_comparison: BaselineComparison | None = None


_KEYS = frozenset(f.name for f in dataclasses.fields(Page))


def page_content(report: Report) -> Page:
    return Page(**{key: value for key, value in top_level(report).items() if key in _KEYS})
