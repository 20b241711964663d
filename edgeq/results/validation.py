"""What ``validate`` proves: FP32 vs INT8 per method, per condition and per layer, the pick and the gate.

The types follow report.json's ``validation``, ``layers``, ``histograms``, ``model`` and
``calibration_samples`` sections (docs/report.md describes every key); edgeq.validate.protocol fills them.
A value JSON cannot hold (an infinite SQNR) is ``None``, and where that matters a flag says why
(``bit_exact``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeq.artifacts import Estimator, OutlierSample, Preprocessing, SensitivityReport
from edgeq.results.document import FLATTEN, OMIT_EMPTY, OMIT_NONE, Document, Interval, Number
from edgeq.results.gates import Gate
from edgeq.results.graph import GraphReport
from edgeq.results.provenance import Provenance


class Comparison(enum.StrEnum):
    """How INT8 compares with FP32 by the interval of the drop: an interval containing 0 is a tie."""

    TIE = "tie"
    WORSE = "worse"
    BETTER = "better"


class Half(enum.StrEnum):
    """The two halves of the evaluation set (edgeq.validate.verdicts.split_halves)."""

    SELECTION = "selection"  # picks the method, by fidelity to FP32
    GATE = "gate"  # measures the picked method's drop


@dataclass(frozen=True, kw_only=True)
class ConditionAccuracy(Document):
    """Top-1 and top-5 on the samples of one condition."""

    n: int
    top1: float
    top5: float
    agreement: float | None = field(default=None, metadata=OMIT_NONE)  # INT8 only: share with FP32's top-1


@dataclass(frozen=True, kw_only=True)
class Baseline(Document):
    """The FP32 model on the whole evaluation set."""

    top1: float
    top1_ci: Interval  # Wilson 95 %
    top5: float
    n: int
    per_condition: dict[str, ConditionAccuracy]


@dataclass(frozen=True, kw_only=True)
class SelectionScore(Document):
    """A method's fidelity to FP32 on the selection half, and its place in the ranking that picked the best.

    The ranked output's task gives the first key: ``agreement`` for classification, else ``metric`` and its
    ``value`` (detection ``recall``, segmentation ``mean_iou``, landmarks ``mean_error_norm``); a generic output
    has neither and is ranked by SQNR, then error."""

    n: int
    agreement: float | None = field(default=None, metadata=OMIT_NONE)  # classification: share with FP32's class
    metric: str | None = field(default=None, metadata=OMIT_NONE)  # another task's ranking metric
    value: float | None = field(default=None, metadata=OMIT_NONE)  # its value; None: nothing to measure it on
    output_sqnr_db: float | None  # None: bit-exact (then bit_exact) or not measured
    bit_exact: bool
    output_mae: float | None
    rank: int  # 1: most faithful; equal ranks are exact ties


@dataclass(frozen=True, kw_only=True)
class MethodResult(Document):
    """One calibration method's INT8 model against FP32 on the whole evaluation set.

    Top-1, top-5 and the drop need labels and a classification output; without them they are left out. The
    output SQNR and error are the ranked output's (the classifier's scores, else the first declared output)."""

    method: Estimator
    top1: float | None = field(default=None, metadata=OMIT_NONE)
    top1_ci: Interval | None = field(default=None, metadata=OMIT_NONE)  # Wilson 95 %
    top5: float | None = field(default=None, metadata=OMIT_NONE)
    drop_pp: float | None = field(default=None, metadata=OMIT_NONE)  # FP32 top-1 minus INT8 top-1, in points
    drop_ci_pp: Interval | None = field(default=None, metadata=OMIT_NONE)  # paired (Newcombe) 95 %
    vs_fp32: Comparison | None = field(default=None, metadata=OMIT_NONE)
    agreement: float | None = field(default=None, metadata=OMIT_NONE)  # classification outputs only
    output_sqnr_db: float | None  # None: bit-exact (then bit_exact) or not finite
    bit_exact: bool
    output_mae: float | None
    per_condition: dict[str, ConditionAccuracy]  # top-1 per condition; empty without labels
    size_ratio: float  # FP32 bytes / INT8 bytes
    selection: SelectionScore


@dataclass(frozen=True, kw_only=True)
class SplitHalf(Document):
    n: int
    per_condition: dict[str, int] | None = field(default=None, metadata=OMIT_NONE)  # for sets with conditions


@dataclass(frozen=True, kw_only=True)
class SplitRecord(Document):
    """How the evaluation set was cut into the selection and gate halves: enough to reproduce it."""

    seed: int
    stratified_by: tuple[str, ...]
    selection: SplitHalf
    gate: SplitHalf


@dataclass(frozen=True, kw_only=True)
class SelectionRecord(Document):
    """The fidelity ranking on the selection half that picked the best method."""

    split: Half = Half.SELECTION
    n: int
    by: tuple[str, ...]  # the ranking keys, in order
    ranking: tuple[tuple[Estimator, ...], ...]  # groups from most to least faithful; a group ties exactly
    tied_with_best: tuple[Estimator, ...]


@dataclass(frozen=True, kw_only=True)
class HeldOutGate(Document):
    """The picked method's drop on the held-out gate half and the max-drop verdict on it."""

    split: Half = Half.GATE
    method: Estimator
    n: int
    fp32_top1: float
    fp32_top1_ci: Interval
    int8_top1: float
    int8_top1_ci: Interval
    drop_pp: float
    drop_ci_pp: Interval
    vs_fp32: Comparison
    max_drop_pp: Number | None
    passed: bool | None  # None: no limit set
    clear: bool | None  # the whole interval on the verdict's side of the limit
    detail: str


@dataclass(frozen=True, kw_only=True)
class ValidationSummary(Document):
    """report.json's ``validation``: the methods side by side, the pick, the gate and the triage advice.

    ``baseline`` and ``gate`` (the held-out top-1 drop) need labels and a classification output."""

    eval_set: str
    calibration: str
    confidence: float
    baseline: Baseline | None = field(default=None, metadata=OMIT_NONE)  # None: no labels or no classifier
    methods: tuple[MethodResult, ...]
    best_method: Estimator
    split: SplitRecord
    selection: SelectionRecord
    gate: HeldOutGate | None = field(default=None, metadata=OMIT_NONE)  # None: no top-1 to measure
    max_drop_pp: Number | None
    passed: bool  # the max-drop gate and every fidelity gate (report.json's outputs.gates) passed
    advice: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class FidelityFigures(Document):
    """One output's fidelity to FP32 on ``n`` samples (edgeq.validate.tasks.OutputFidelity; docs/tasks.md)."""

    n: int
    sqnr_db: float | None  # None: not finite (exact: the outputs are identical) or no samples
    cosine: float | None  # mean over samples of each sample's cosine similarity
    max_abs_error: float | None  # in output units
    mean_abs_error: float | None
    exact: bool  # every INT8 value equals FP32's


@dataclass(frozen=True, kw_only=True)
class ClassificationFigures(Document):
    """``classification``: INT8's class against FP32's (and against labels when the set has them)."""

    n: int
    k: int  # the k of top-k: min(top_k, classes)
    agreement: float | None  # share of samples with FP32's top class
    top_k_containment: float | None  # share where FP32's top class is among INT8's k highest
    fp32_accuracy: float | None = field(default=None, metadata=OMIT_NONE)  # top-1 against the labels
    int8_accuracy: float | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class DetectionFigures(Document):
    """``detection``: FP32's detections recovered by INT8, counts pooled over the samples."""

    n: int
    fp32_detections: int
    int8_detections: int
    matched: int
    recall: float | None  # matched / FP32 detections; None without FP32 detections
    precision: float | None  # matched / INT8 detections
    mean_iou: float | None  # over matched pairs
    score_mae: float | None


@dataclass(frozen=True, kw_only=True)
class LandmarkFigures(Document):
    """``landmarks``: INT8's points against FP32's, in pixels and normalized by the landmarks' box."""

    n: int
    points: int
    mean_error_px: float | None
    p95_error_px: float | None
    max_error_px: float | None
    mean_error_norm: float | None
    p95_error_norm: float | None
    unscaled_samples: int  # samples whose FP32 points span no box (left out of the normalized figures)


@dataclass(frozen=True, kw_only=True)
class SegmentationFigures(Document):
    """``segmentation``: INT8's mask against FP32's."""

    n: int
    classes: int
    mean_iou: float | None  # mean over samples of each sample's IoU
    class_iou: tuple[float | None, ...]  # per class, pooled intersection over pooled union
    mean_class_iou: float | None


@dataclass(frozen=True, kw_only=True)
class OutputFigures(Document):
    """An output's fidelity on some samples and, when its task is not ``generic``, the task's figures."""

    fidelity: FidelityFigures
    classification: ClassificationFigures | None = field(default=None, metadata=OMIT_NONE)
    detection: DetectionFigures | None = field(default=None, metadata=OMIT_NONE)
    landmarks: LandmarkFigures | None = field(default=None, metadata=OMIT_NONE)
    segmentation: SegmentationFigures | None = field(default=None, metadata=OMIT_NONE)

    @property
    def task_figures(self) -> ClassificationFigures | DetectionFigures | LandmarkFigures | SegmentationFigures | None:
        return self.classification or self.detection or self.landmarks or self.segmentation


@dataclass(frozen=True, kw_only=True)
class OutputResult(Document):
    """One model output of one method's INT8 model against FP32: on the whole set (the figures, as in
    :class:`OutputFigures`) and per condition."""

    output: str
    fidelity: FidelityFigures
    classification: ClassificationFigures | None = field(default=None, metadata=OMIT_NONE)
    detection: DetectionFigures | None = field(default=None, metadata=OMIT_NONE)
    landmarks: LandmarkFigures | None = field(default=None, metadata=OMIT_NONE)
    segmentation: SegmentationFigures | None = field(default=None, metadata=OMIT_NONE)
    per_condition: dict[str, OutputFigures] = field(default_factory=dict, metadata=OMIT_EMPTY)

    @property
    def figures(self) -> OutputFigures:
        """The whole set's figures."""
        return OutputFigures(fidelity=self.fidelity, classification=self.classification, detection=self.detection,
                             landmarks=self.landmarks, segmentation=self.segmentation)


@dataclass(frozen=True, kw_only=True)
class MethodOutputs(Document):
    method: Estimator
    outputs: tuple[OutputResult, ...]  # in the model's output order


@dataclass(frozen=True, kw_only=True)
class OutputDeclaration(Document):
    """A model output and the task it is judged by (edgeq.validate.tasks.OutputTask)."""

    name: str
    shape: tuple[int, ...]  # per invocation, as the model declares it
    task: str
    declared: bool  # False: the default (classification for a lone class-score output with labels, else generic)
    config: dict[str, Any] = field(default_factory=dict, metadata=OMIT_EMPTY)  # the keys that differ from defaults


@dataclass(frozen=True, kw_only=True)
class OutputsReport(Document):
    """report.json's ``outputs``: every model output's fidelity to FP32 and its task's figures, per method, and
    the fidelity gates judged on the held-out gate half (edgeq.validate.outputs)."""

    model_outputs: tuple[OutputDeclaration, ...]
    ranked_by: str  # the output whose task's metric, SQNR and error rank the methods
    methods: tuple[MethodOutputs, ...]
    gates: tuple[Gate, ...] = field(default=(), metadata=OMIT_EMPTY)


@dataclass(frozen=True, kw_only=True)
class LayerDiagnostics(Document):
    """One activation tensor, FP32 vs INT8 on the same inputs (edgeq.validate.diagnostics.per_layer)."""

    name: str
    op: str
    sqnr_db: float | None  # accumulated: everything up to here; None: not finite (an exact layer, no signal)
    local_sqnr_db: float | None  # this layer's own range and rounding; None: not finite
    rmse_over_scale: float
    saturation: float
    clip_fraction: float
    subgraph: int = field(default=0, metadata=OMIT_EMPTY)  # 0: the main graph; else a loop body, branch


@dataclass(frozen=True, kw_only=True)
class LayerReport(Document):
    method: Estimator  # the picked method's INT8 model
    samples: int
    rows: tuple[LayerDiagnostics, ...]
    worst: tuple[str, ...]  # names of the layers whose own quantization hurts most


@dataclass(frozen=True, kw_only=True)
class Histogram(Document):
    """A worst layer's calibration histogram with every estimator's range as convert chooses it."""

    name: str
    bin_edges: tuple[float, ...]  # one more than counts
    counts: tuple[int, ...]
    ranges: dict[str, Interval]  # estimator -> [lo, hi]


@dataclass(frozen=True, kw_only=True)
class ModelSummary(Document):
    source: str
    float_bytes: int
    int8_bytes: int
    size_ratio: float
    sha256: str  # of the picked INT8 model
    name: str | None = field(default=None, metadata=OMIT_NONE)  # a build's recipe name


@dataclass(frozen=True, kw_only=True)
class SampleGuardSettings(Document):
    enabled: bool
    factor: Number
    follow: Number
    min_samples: int


@dataclass(frozen=True, kw_only=True)
class TrimmedRange(Document):
    """A range the sample guard chose without one sample, and the range with it."""

    tensor: str
    sample: int
    stretch: float | None
    min: float
    max: float
    untrimmed: Interval | None


@dataclass(frozen=True, kw_only=True)
class CalibrationSamples(Document):
    """Calibration samples that alone set activation ranges, and what the sample guard did about them
    (edgeq.calib.outliers.samples_document)."""

    guard: SampleGuardSettings
    samples: int
    tensors: int
    tracked: bool
    outlier_samples: tuple[OutlierSample, ...]
    summary: tuple[str, ...]  # one line per outlier sample
    trimmed: tuple[TrimmedRange, ...]


@dataclass(frozen=True, kw_only=True)
class RungResult(Document):
    """One rung (or the starting point, rung ``start``). ``status``: ``met the gate``, ``kept`` (better on the
    selection half, gate still missed), ``reverted`` (not better: the next rung builds on the previous state),
    ``refused`` (the target or the model rules it out, ``note`` says why)."""

    rung: str
    status: str
    note: str = ""
    selection_sqnr_db: float | None = None  # the ranked output's SQNR against FP32 on the selection half
    selection_agreement: float | None = None  # classification: agreement with FP32 on the selection half
    gate_passed: bool | None = None
    gate: HeldOutGate | None = field(default=None, metadata=OMIT_NONE)  # max drop on the gate half
    gates: tuple[Gate, ...] = field(default=(), metadata=OMIT_EMPTY)  # fidelity limits on the gate half
    int8_bytes: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # backend -> median ms (one thread)
    # backends whose timed runs were unstable (edgeq.harness.latency.classify): their median may not be the model's
    latency_unstable: tuple[str, ...] = field(default=(), metadata=OMIT_EMPTY)
    model: str | None = None  # file name in the validate output directory


@dataclass(frozen=True, kw_only=True)
class RecoveryReport(Document):
    ladder: tuple[str, ...]
    targets: tuple[str, ...]
    start: RungResult
    rungs: tuple[RungResult, ...]
    met_by: str | None  # the rung that met the gate, None when none did
    passed: bool
    model: str | None  # the recovered model (file name in the validate output directory) when one met the gate
    remaining: tuple[str, ...] = ()  # when none met it: the tensors that remain the problem, most costly first
    verdict: str = ""
    gate_looks: int = 1  # models judged on the gate half in turn (the start and every rung that was built)


@dataclass(frozen=True, kw_only=True)
class ValidationReport(Document):
    """What ``edgeq.validate.protocol.validate`` returns."""

    validation: ValidationSummary
    outputs: OutputsReport | None = field(default=None, metadata=OMIT_NONE)  # None: a report from before outputs
    layers: LayerReport
    histograms: tuple[Histogram, ...]
    model: ModelSummary
    calibration_samples: CalibrationSamples
    sensitivity: SensitivityReport | None = field(default=None, metadata=OMIT_NONE)  # validate --sensitivity
    recovery: RecoveryReport | None = field(default=None, metadata=OMIT_NONE)  # validate --recover

    @property
    def best_method(self) -> Estimator:
        return self.validation.best_method

    @property
    def output_gates(self) -> tuple[Gate, ...]:
        """The fidelity gates validate judged (each a ``Gate`` row; the max-drop gate is ``gate``)."""
        return self.outputs.gates if self.outputs is not None else ()

    @property
    def passed(self) -> bool:
        return self.validation.passed

    @property
    def gate(self) -> HeldOutGate | None:
        return self.validation.gate

    @property
    def advice(self) -> tuple[str, ...]:
        return self.validation.advice


@dataclass(frozen=True, kw_only=True)
class StoredValidation(Document):
    """validation.json in a build's cache: the report and the file name of the picked INT8 model beside it."""

    report: ValidationReport = field(metadata=FLATTEN)
    best_model: str


@dataclass(frozen=True, kw_only=True)
class PreprocessingChoice(Document):
    """The preprocessing validate applied and where it came from (edgeq.preprocess.Resolved)."""

    source: str  # edgeq.preprocess.Source
    spec: Preprocessing | None
    inline: str | None  # the spec as --preprocess would take it
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ValidationRun(Document):
    """What ``edgeq validate`` writes to report.json: the report, its gate and the preprocessing."""

    title: str
    report: ValidationReport = field(metadata=FLATTEN)
    gates: tuple[Gate, ...]
    passed: bool
    preprocessing: PreprocessingChoice
    graph: GraphReport | None = field(default=None, metadata=OMIT_NONE)  # None: a report from before the op table
    provenance: Provenance | None = field(default=None, metadata=OMIT_NONE)  # None: a report from before provenance

    ENVELOPE_KIND: ClassVar[str] = "edgeq.report"  # report.json is written through edgeq.envelope
