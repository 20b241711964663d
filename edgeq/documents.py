"""The body of each verb's ``--json`` document, as types: what a CI script may rely on.

The verbs build these documents as plain dicts (``edgeq.cli.output.emit_json`` adds the envelope); the
types here say which keys each holds, and :mod:`edgeq.schemas` turns them into the published JSON Schemas
(docs/schemas/). A key a verb adds must be added here too, or the schema test fails; nested results reuse
the typed dataclasses (edgeq.artifacts, edgeq.results) that report.json and the sidecars already use.

No ``from __future__ import annotations`` here: TypedDict reads ``NotRequired`` only from evaluated annotations.
"""

from typing import Any, Literal, NotRequired, TypedDict

from edgeq.artifacts import Estimator, OutlierSample, Preprocessing, QuantizedArtifact, SensitivityReport, SpecReport
from edgeq.results.gates import Gate
from edgeq.tflite.instrument import InstrumentSidecar

Number = int | float
ExitStatus = Literal[0, 1]  # 0: every gate passed; 1: a gate failed (the document still says which)


class CheckDocument(TypedDict):
    model: str
    passed: bool  # no error finding (the exit status: 0 passed, 1 not)
    report: SpecReport
    size: dict[str, Any]  # edgeq.spec.size.SizeBreakdown
    edgetpu_partition: NotRequired[dict[str, Any]]  # --target edgetpu: the predicted partition
    edgetpu_compiler: NotRequired[dict[str, Any]]  # --compile: edgetpu_compiler's log, or why it did not run


class CalibrateDocument(TypedDict):
    model: str
    calib: str
    stats: str  # the statistics file written
    tensors: int
    samples: int
    outlier_samples: list[OutlierSample]


class ConvertDocument(TypedDict):
    model: str  # the INT8 .tflite written
    sidecar_path: str
    sidecar: QuantizedArtifact  # the sidecar's content


class TensorRatioEntry(TypedDict):
    name: str
    production_max: float
    ratio: float | None  # calibration max|x| / production max|x|; null when production is 0
    flagged: bool


class SegmentCoverageEntry(TypedDict):
    device: str
    app_version: str
    tags: dict[str, str]
    flagged: int
    tensors: list[TensorRatioEntry]  # every compared tensor the segment logged


class WindowCoverageEntry(TypedDict):
    start: float  # epoch seconds (UTC) of the window [start, start + window_seconds)
    tensors: int
    flagged: int
    worst_ratio: float | None
    worst_tensor: str


class ProductionLogCoverage(TypedDict):
    logs: list[str]
    instrumented_sidecar: str
    model_sha256: str  # the instrumented model whose records were merged (others are refused)
    source_check: str  # "MODEL", or the converter sidecar that ties an INT8 instrumented model to MODEL
    window_seconds: Number | None
    segment_by: list[str] | None  # device, app_version, tag:NAME; null: every dimension together
    records: int
    inferences: int
    read: dict[str, Any]  # edgeq.production.ReadReport: files, records, bad per reason, examples
    not_logged: list[str]  # MODEL's activations no record carried: not compared, not covered
    not_in_model: list[str]  # logged tensors that are no activation of MODEL
    saturated: list[str]  # int8 tensors whose logged codes reached the end of their range
    segments: list[SegmentCoverageEntry]
    windows: list[WindowCoverageEntry]


class CoverageDocument(TypedDict):
    threshold: Number
    flagged: int  # layers flagged (exit 1 when any)
    preprocessing: Preprocessing | None
    preprocessing_source: str
    warnings: list[str]
    layers: list[dict[str, Any]]  # edgeq.calib.coverage.LayerCoverage, non-finite floats as null
    per_condition_max: dict[str, list[float | None]]
    candidate_max: NotRequired[dict[str, list[float | None]]]  # --candidates: per condition, per layer max|x|
    outlier_samples: list[OutlierSample]
    production_source: NotRequired[Literal["images", "logs"]]  # --production or --production-log
    production_log: NotRequired[ProductionLogCoverage]  # --production-log: per segment, per window, the read


class DatagenDocument(TypedDict):
    path: str  # the set's folder
    samples: int
    fingerprint: str
    counts: dict[str, int]  # samples per condition
    rejects: list[dict[str, str]]  # undecodable images skipped
    files: dict[str, str]  # manifest.jsonl, datagen.json, preview.png -> path


class EvalDocument(TypedDict):
    model: str
    model_sha256: str
    data: str
    backend: str
    interpreter: str  # the runtime that ran the model, with its version
    n: int
    top1: NotRequired[float]  # labelled data
    top5: NotRequired[float]
    agreement: NotRequired[float | None]  # with --reference
    per_condition: NotRequired[dict[str, dict[str, Any]]]
    fidelity: NotRequired[dict[str, dict[str, Any]]]  # with --reference: per output, overall and per condition
    preprocessing: Preprocessing | None
    preprocessing_source: str
    warnings: list[str]


class InstrumentDocument(TypedDict):
    model: str  # the instrumented .tflite written
    sidecar_path: str
    sidecar: InstrumentSidecar  # the sidecar's content


class BenchRatio(TypedDict):
    what: str
    ratio: float | None
    unstable: bool  # either configuration's samples were unstable (edgeq.harness.latency.classify)
    unstable_configs: list[str]
    unjudged: bool  # not unstable, but a configuration had too few runs to judge


class BenchDocument(TypedDict):
    environment: dict[str, Any]
    skipped: list[dict[str, str]]  # backends that cannot run here, with the reason
    results: list[dict[str, Any]]  # edgeq.artifacts.BenchResult, or an android benchmark_model run
    ratios: list[BenchRatio]
    warnings: list[str]
    inputs: NotRequired[dict[str, dict[str, Any]]]  # per local model: how its inputs were generated
    peak_rss_mib: float
    peak_rss_source: str  # what the peak RSS covers: the whole process


class SensitivityDocument(TypedDict):
    model: str
    float_fingerprint: str
    calib: str
    eval: str
    method: str
    samples: int
    activations: int
    weights: int
    analysis_seconds: float
    seconds: float
    preprocessing: Preprocessing | None
    preprocessing_source: str
    warnings: list[str]
    sensitivity: SensitivityReport


class ValidateDocument(TypedDict):
    model: str
    output: str  # the folder with the models and the report
    passed: bool
    exit_status: ExitStatus
    best_method: Estimator
    gates: list[Gate]
    advice: list[str]
    report: str  # report.json (kind edgeq.report): everything measured
    report_html: str
    recovered_model: str | None  # --recover: the model of the rung that met the gates


class BuildDocument(TypedDict):
    recipe: str
    name: str
    output: str
    passed: bool
    exit_status: ExitStatus
    best_method: Estimator
    gates: list[Gate]
    artifact: str  # the INT8 model to ship
    sidecar: str
    report: str  # report.json (kind edgeq.report): everything measured
    report_html: str
    reused: list[str]  # cached steps reused


class ZooModel(TypedDict):
    name: str
    dataset: str
    input_shape: list[int]
    classes: int
    epochs: int
    cached: bool
    description: str


class ZooListDocument(TypedDict):
    action: Literal["list"]
    cache: str
    models: list[ZooModel]


class ZooBuildDocument(TypedDict):
    action: Literal["build"]
    output: str
    reused: bool
    card: dict[str, Any]  # edgeq_models.zoo.ZooCard


Outcome = Literal["passed", "failed", "skipped", "error"]


class DeviceTestCase(TypedDict):
    id: str  # pytest's node id, e.g. test_device.py::test_latency_budget[xnnpack]
    test: str
    backend: str | None
    outcome: Outcome
    message: str | None  # a skip's reason or a failure's first line
    duration_s: Number
    properties: dict[str, Any]  # what the test measured: top1, samples, latency_p90_ms, latency_source, ...


class DeviceBudgetCheck(TypedDict):
    check: str  # latency, accuracy, fidelity, full_delegation
    backend: str | None
    outcome: Outcome
    message: str | None


class DeviceBudget(TypedDict):
    verdict: Literal["pass", "fail", "not judged"]
    checks: list[DeviceBudgetCheck]


class DeviceTestDocument(TypedDict):
    """edgeq.harness.device_suite.SuiteRun.to_dict."""

    suite: str  # the installed suite's folder
    pytest_exit: int
    options: dict[str, Any]  # the suite's options as pytest parsed them (model, backend, eval_set, budget, ...)
    counts: dict[str, int]  # passed, failed, skipped, error
    budget: DeviceBudget
    tests: list[DeviceTestCase]


#: Each verb's document kind -> its body's type.
DOCUMENTS: dict[str, Any] = {
    "edgeq.bench": BenchDocument,
    "edgeq.build": BuildDocument,
    "edgeq.calibrate": CalibrateDocument,
    "edgeq.check": CheckDocument,
    "edgeq.convert": ConvertDocument,
    "edgeq.coverage": CoverageDocument,
    "edgeq.datagen": DatagenDocument,
    "edgeq.device-test": DeviceTestDocument,
    "edgeq.eval": EvalDocument,
    "edgeq.instrument": InstrumentDocument,
    "edgeq.sensitivity": SensitivityDocument,
    "edgeq.validate": ValidateDocument,
    "edgeq.zoo": ZooListDocument | ZooBuildDocument,
}
