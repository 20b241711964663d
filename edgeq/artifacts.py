"""Frozen dataclasses that cross stage boundaries, and their JSON-safe (de)serialization.

Every artifact serializes to a plain dict carrying ``kind`` and ``schema_version``; ``from_dict``
rebuilds it from the type hints, refusing another kind or a newer schema with a clear message.
Values that appear in JSON and take one of a fixed set of values are str-Enums.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from edgeq.errors import InputError

SCHEMA_VERSION = 1

A = TypeVar("A", bound="Artifact")


class Estimator(enum.StrEnum):
    """Activation-range estimators."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    KL = "kl"
    AUTO = "auto"
    SEARCH = "search"  # per-tensor, by measured end-to-end fidelity (edgeq.recover.search); needs calibration data


class IOType(enum.StrEnum):
    """Data type of a quantized model's inputs and outputs."""

    INT8 = "int8"
    UINT8 = "uint8"
    FLOAT32 = "float32"


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Target(enum.StrEnum):
    """Deployment targets the spec checker has profiles for."""

    GENERIC = "generic"
    XNNPACK = "xnnpack"
    EDGETPU = "edgetpu"
    NNAPI = "nnapi"
    TFLM = "tflm"


class ChannelOrder(enum.StrEnum):
    RGB = "rgb"
    BGR = "bgr"


class Interpolation(enum.StrEnum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"


class Artifact:
    """Mixin for frozen dataclasses that travel between stages as JSON."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"kind": self.kind, "schema_version": SCHEMA_VERSION, **body}

    @classmethod
    def from_dict(cls: type[A], data: dict[str, Any]) -> A:
        if not isinstance(data, dict):
            raise InputError(f"expected a {cls.kind} object, got {type(data).__name__}")
        kind, version = data.get("kind"), data.get("schema_version")
        if kind != cls.kind:
            raise InputError(f"expected a {cls.kind} artifact, got {kind!r}")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise InputError(
                f"{cls.kind} has schema version {version!r}; this edgeq reads up to {SCHEMA_VERSION}"
            )
        return _decode_dataclass(cls, data)


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, Artifact):
            return value.to_dict()
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE_TEXT[_non_finite_key(value)]  # JSON has no Infinity/NaN: strict parsers refuse them
    return value


#: How non-finite floats travel in JSON (``json.dumps`` would write the invalid tokens Infinity and NaN).
NON_FINITE_TEXT = {"inf": "inf", "-inf": "-inf", "nan": "nan"}


def _non_finite_key(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode_dataclass(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(f"{getattr(cls, 'kind', cls.__name__)} is missing field {f.name!r}")
    return cls(**kwargs)


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _decode(arg, value, where)
            except (InputError, TypeError):
                continue
        raise InputError(f"{where}: {value!r} matches none of {tp}")
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(m.value for m in tp)
            raise InputError(f"{where}: {value!r} is not one of {choices}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected an object")
        if issubclass(tp, Artifact):
            return tp.from_dict(value)
        return _decode_dataclass(tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list")
        return [_decode(args[0], v, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected an object")
        return {k: _decode(args[1], v, where) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and value in NON_FINITE_TEXT:
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise InputError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: cannot decode type {tp!r}")


@dataclass(frozen=True)
class Preprocessing(Artifact):
    """How uint8 images become model input: resize, then ``(x - mean) / std`` per channel.

    It travels with calibration and evaluation sets so every stage feeds a model the same way.
    """

    kind: ClassVar[str] = "preprocessing"
    size: tuple[int, int] | None = None  # (height, width); None keeps the image size
    interpolation: Interpolation = Interpolation.BILINEAR
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: ChannelOrder = ChannelOrder.RGB


@dataclass(frozen=True)
class SampleValue:
    """One calibration sample's extreme value on a tensor."""

    sample: int  # index in the calibration set
    value: float


@dataclass(frozen=True)
class TensorRange(Artifact):
    """The activation range chosen for one tensor, and why."""

    kind: ClassVar[str] = "tensor_range"
    name: str
    min: float
    max: float
    estimator: Estimator
    rule: str  # which rule chose the estimator ("method", "auto: outlier ratio 4.2 in [3, 10)", ...)
    outlier_ratio: float  # max|x| / p99|x|
    clip_fraction: float  # expected share of values clipped: beyond half a quantization step outside [min, max]
    top_max: tuple[SampleValue, ...] = ()  # the samples with the largest maxima, largest first
    top_min: tuple[SampleValue, ...] = ()  # the samples with the smallest minima, smallest first
    sample_stretch: float | None = None  # the most extreme sample's max|x| / every other sample's
    trimmed_sample: int | None = None  # the sample the sample guard left out of this range
    untrimmed: tuple[float, float] | None = None  # the range with every sample, when one was trimmed


@dataclass(frozen=True)
class RangeTable(Artifact):
    """Activation ranges for every float activation tensor of one model."""

    kind: ClassVar[str] = "range_table"
    model_fingerprint: str
    ranges: tuple[TensorRange, ...]


@dataclass(frozen=True)
class SampleDominance:
    """A tensor whose max|x| one calibration sample alone stretches far beyond every other sample's."""

    tensor: str
    value: float  # the sample's most extreme value on the tensor (signed)
    next_value: float  # the most extreme value of any other sample (signed)
    next_sample: int  # the sample that produced next_value
    factor: float  # |value| / |next_value|
    trimmed: bool = False  # the sample guard left the sample out of this tensor's range


@dataclass(frozen=True)
class OutlierSample:
    """A calibration sample that sets tensors' ranges on its own, named as far as the set allows."""

    sample: int  # index in the calibration set
    tensors: int  # activation tensors whose max|x| it stretches by at least the guard's factor
    max_factor: float  # the largest such stretch
    trimmed: int = 0  # tensors whose range the sample guard chose without it
    id: str | None = None  # datagen manifest id
    condition: str | None = None  # datagen condition
    source: str | None = None  # the source image (datagen source_id, or the file in an image folder)
    worst: tuple[SampleDominance, ...] = ()  # the tensors it stretches most, largest factor first


@dataclass(frozen=True)
class TensorSensitivity(Artifact):
    """One tensor's row. Fidelities are the mean over the model's outputs of their SQNR in dB (higher is better):
    ``only_db`` with just this tensor quantized (low: it alone hurts), ``all_but_db`` with every other tensor
    quantized and this one left float; ``recovers_db`` = ``all_but_db`` − the all-quantized fidelity, what
    keeping this tensor at higher precision (int16) would win at most."""

    kind: ClassVar[str] = "tensor_sensitivity"
    name: str
    tensor_kind: str  # "activation" | "weight"
    op: str  # the op computing the activation, or reading the weight
    only_db: float
    all_but_db: float
    recovers_db: float
    rank: int = 0  # 1 = the most sensitive (lowest only_db)


@dataclass(frozen=True)
class SensitivityReport(Artifact):
    kind: ClassVar[str] = "sensitivity"
    samples: int
    all_quantized_db: float  # every activation and weight quantized (simulated)
    activations_only_db: float  # weights left float
    weights_only_db: float  # activations left float
    tensors: tuple[TensorSensitivity, ...]  # ranked, most sensitive first
    shares_scale: dict[str, str]  # tensor -> the tensor whose int8 scale it takes (not analysed separately)
    real_int8_db: float | None = None  # the real INT8 model's fidelity on the same samples, when measured
    ranges: str = ""  # what the activation ranges came from (e.g. "auto")

    def most_sensitive(self, count: int, tensor_kind: str | None = "activation") -> list[TensorSensitivity]:
        rows = [r for r in self.tensors if tensor_kind is None or r.tensor_kind == tensor_kind]
        return rows[:count]


@dataclass(frozen=True)
class TensorChoice(Artifact):
    """One tensor whose estimator the search changed from auto's."""

    kind: ClassVar[str] = "search_choice"
    tensor: str
    estimator: Estimator
    percentile: float | None
    gain_db: float  # simulated held-out fidelity gained by this choice over the previous state


@dataclass(frozen=True)
class HeldOutScore(Artifact):
    """A contender's fidelity (mean over outputs of SQNR, dB) on the calibration samples held out from statistics."""

    kind: ClassVar[str] = "held_out_score"
    method: str  # "search" or a single estimator
    simulated_db: float
    real_db: float  # the real INT8 model
    calibration_db: float | None = None  # the real INT8 model on every calibration sample (statistics' included)


@dataclass(frozen=True)
class SearchRecord(Artifact):
    """What ``--method search`` did and measured (edgeq.recover.search)."""

    kind: ClassVar[str] = "search"
    fit_samples: int
    held_out_samples: int
    split_seed: int
    visited: int
    choices: tuple[TensorChoice, ...]
    scores: tuple[HeldOutScore, ...]
    chosen: str  # "search" or the single estimator that beat it on the held-out samples


@dataclass(frozen=True)
class TransformRecord(Artifact):
    """A float-graph transform applied before calibration, exact in float (edgeq.recover)."""

    kind: ClassVar[str] = "float_transform"
    name: str  # "equalize" | "bias_correction"
    changed: int  # layer groups (equalize) or biases (bias correction) changed
    settings: dict[str, str] = field(default_factory=dict)
    max_output_change: float = 0.0  # float outputs before vs after, max relative difference on the check input


@dataclass(frozen=True)
class QuantizedArtifact(Artifact):
    """An INT8 model on disk and everything needed to trust or reproduce it (the sidecar JSON)."""

    kind: ClassVar[str] = "quantized_artifact"
    path: str
    sha256: str
    source: str
    source_fingerprint: str  # sha256 of the source model file
    float_fingerprint: str  # sha256 of the float flatbuffer that was calibrated (after rewrites)
    calibration_fingerprint: str
    calibration_samples: int
    io_type: IOType
    ranges: RangeTable
    float_bytes: int
    int8_bytes: int
    size_ratio: float  # float_bytes / int8_bytes
    recipe: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    rewrites: dict[str, int] = field(default_factory=dict)  # float-graph rewrites applied, with counts
    float_ops: tuple[str, ...] = ()  # ops left in float (only with allow_float_ops)
    tool_versions: dict[str, str] = field(default_factory=dict)
    outlier_samples: tuple[OutlierSample, ...] = ()  # calibration samples that alone set tensors' ranges
    search: SearchRecord | None = None  # method search: what it chose and its held-out measurements
    transforms: tuple[TransformRecord, ...] = ()  # float-graph transforms applied before calibration (recovery)
    int16_tensors: tuple[str, ...] = ()  # activations kept at int16 (int16x8 kernels), through ai-edge-quantizer


@dataclass(frozen=True)
class Finding(Artifact):
    """One spec or deployability finding, pinned to an op and tensor."""

    kind: ClassVar[str] = "finding"
    rule_id: str
    severity: Severity
    message: str
    op_index: int | None = None
    op_type: str | None = None
    tensor: str | None = None
    expected: str | None = None
    actual: str | None = None
    subgraph: int = 0  # the subgraph op_index and tensor belong to (0: the main graph)


@dataclass(frozen=True)
class SpecReport(Artifact):
    kind: ClassVar[str] = "spec_report"
    model_sha256: str
    target: Target
    findings: tuple[Finding, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


@dataclass(frozen=True)
class LatencyStats(Artifact):
    """Summary of measured inference times in milliseconds, with the raw samples."""

    kind: ClassVar[str] = "latency_stats"
    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    samples_ms: tuple[float, ...] = ()  # in measurement order
    slice_runs: int = 0  # consecutive runs per interleaving slice (0: not recorded); stability is read per slice


@dataclass(frozen=True)
class BenchResult(Artifact):
    kind: ClassVar[str] = "bench_result"
    model_sha256: str
    backend: str
    threads: int
    runtime: str
    runtime_version: str
    init_ms: float
    first_inference_ms: float
    latency: LatencyStats
    environment: dict[str, str] = field(default_factory=dict)
    model: str = ""
    delegation: dict[str, Any] | None = None  # delegate, nodes_total, nodes_delegated, partitions, undelegated_ops
