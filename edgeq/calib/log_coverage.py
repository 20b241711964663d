"""Calibration coverage against production *logs*: what an instrumented model recorded in the field.

The app runs the model ``edgeq instrument`` built and logs per inference the min and max of each activation
(docs/production_log.md). Here those logs are merged (streaming, ``edgeq.production.read_log``) and compared
with the calibration set exactly as production images are (``edgeq.calib.coverage.CalibrationSide``): per
tensor over all records, per segment (device, app version, tags) and per time window, so drift is visible.

The instrument sidecar ties the logs to MODEL: its ``sha256`` is the only model whose records are merged
(others are refused and counted), its tensor names are the only names a record may carry, and its
``source_sha256`` must be MODEL's file (or, for an INT8 model, the converter sidecar beside it must name MODEL
as its source): statistics of another model are never compared silently. INT8 tensors log quantized codes;
they are dequantized with the sidecar's scale and zero point, and a value that is no int8 code is refused.
Min/max logs hold no distribution, so no p99.99 is reported from them (None, never invented).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import QuantizedArtifact
from edgeq.calib.collect import collect
from edgeq.calib.coverage import CalibrationSide, Collect, CoverageReport, calibration_side
from edgeq.calib.data import CalibrationSet
from edgeq.calib.estimators import SampleGuard
from edgeq.errors import InputError, UsageError
from edgeq.intake.float_model import FloatModel
from edgeq.production import ProductionStats, ReadReport, SegmentKey, TensorExtremes, read_log
from edgeq.tflite.instrument import InstrumentSidecar
from edgeq.tflite.model import TensorKey

ReadLog = Callable[..., tuple[ProductionStats, ReadReport]]  # edgeq.production.read_log's signature
#: Default drift window: one UTC day (a year of logs is 365 windows x tensors in memory).
DEFAULT_WINDOW_SECONDS = 86400.0
INT8_CODES = (-128, 127)
_MAX_SIDECAR_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LoggedTensor:
    """An instrumented activation as the sidecar describes it: how its logged values map to real ones."""

    name: str
    dtype: str  # float32, or int8 (value = scale * (code - zero_point))
    scale: float | None = None
    zero_point: int | None = None

    def real(self, extremes: TensorExtremes, where: str) -> tuple[float, float]:
        """The logged (min, max) as real values; an int8 tensor's must be int8 codes (else InputError)."""
        if self.dtype != "int8":
            return extremes.min, extremes.max
        if self.scale is None or self.zero_point is None or not self.scale > 0:
            raise InputError(f"the instrument sidecar gives int8 tensor {self.name!r} no positive scale and zero "
                             "point: its logged codes cannot be dequantized")
        for value in (extremes.min, extremes.max):
            if value != math.floor(value) or not INT8_CODES[0] <= value <= INT8_CODES[1]:
                raise InputError(f"{where}: tensor {self.name!r} is int8 in the instrumented model, but its logged "
                                 f"value {value!r} is no int8 code (were the values dequantized before logging?)")
        return (self.scale * (extremes.min - self.zero_point), self.scale * (extremes.max - self.zero_point))

    def saturated(self, extremes: TensorExtremes) -> bool:
        """An int8 tensor at the end of its range on a side that is not 0: production reached the range's edge
        (the model clamps there, so how far beyond it went is unknowable from int8 logs)."""
        return bool(self.saturated_edges(extremes))

    def saturated_edges(self, extremes: TensorExtremes) -> tuple[float, ...]:
        """The real values of the range's edges the logged codes reached (a side that is not 0)."""
        if self.dtype != "int8" or self.scale is None or self.zero_point is None:
            return ()
        return tuple(self.scale * (code - self.zero_point) for code, reached in
                     ((INT8_CODES[0], extremes.min == INT8_CODES[0]), (INT8_CODES[1], extremes.max == INT8_CODES[1]))
                     if reached and code != self.zero_point)


def load_sidecar(path: str | Path) -> InstrumentSidecar:
    """Read an ``edgeq instrument`` sidecar strictly (exit 2 on anything else)."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_SIDECAR_BYTES:
            raise InputError(f"{path}: over {_MAX_SIDECAR_BYTES >> 20} MiB, not an instrument sidecar")
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no such instrument sidecar: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not an instrument sidecar ({type(exc).__name__})") from None
    try:
        return InstrumentSidecar.from_dict(document)
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} is not an instrument sidecar: {exc}") from None


def find_sidecar(model: str | Path) -> Path:
    """``<stem>_instrumented.json`` beside MODEL, the name ``edgeq instrument M -o M_instrumented.tflite`` gives."""
    path = Path(model)
    found = path.with_name(f"{path.stem}_instrumented.json")
    if not found.is_file():
        raise InputError(f"no instrument sidecar {found}: pass --instrumented SIDECAR.json (written by "
                         "edgeq instrument beside the instrumented model)")
    return found


def check_source(sidecar: InstrumentSidecar, sidecar_path: str | Path, float_model: FloatModel) -> str:
    """Prove the instrumented model was made from MODEL; return how ("MODEL" or the converter sidecar's path).

    Direct: the sidecar's ``source_sha256`` is MODEL's file. INT8: the instrumented model's source is an INT8
    model whose converter sidecar (``M.json`` beside it) records that sha256 and MODEL as its source.
    """
    if sidecar.source_sha256 == float_model.source_fingerprint:
        return "MODEL"
    source = Path(sidecar.source)
    beside = Path(sidecar_path).parent
    for candidate in dict.fromkeys([source.with_suffix(".json"), beside / source.with_suffix(".json").name]):
        try:
            artifact = QuantizedArtifact.from_dict(json.loads(candidate.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError, InputError, KeyError, TypeError, AttributeError):
            continue
        if artifact.sha256 == sidecar.source_sha256 and artifact.source_fingerprint == float_model.source_fingerprint:
            return str(candidate)
    raise InputError(f"{sidecar_path}: the instrumented model was made from {sidecar.source} (sha256 "
                     f"{sidecar.source_sha256[:12]}...), which is not {float_model.source} (sha256 "
                     f"{float_model.source_fingerprint[:12]}...) nor an INT8 model converted from it (no converter "
                     "sidecar beside it says so): these logs describe another model")


def logged_tensors(sidecar: InstrumentSidecar) -> dict[str, LoggedTensor]:
    """Per instrumented tensor name, its dtype and quantization (the sidecar has one min and one max each)."""
    found: dict[str, LoggedTensor] = {}
    for output in sidecar.outputs:
        found.setdefault(output.tensor, LoggedTensor(output.tensor, output.dtype, output.scale, output.zero_point))
    return found


@dataclass(frozen=True)
class TensorRatio:
    """One tensor in one segment or window."""

    name: str
    production_max: float
    ratio: float  # calib max|x| / production max|x| (inf when production is 0)
    flagged: bool


@dataclass(frozen=True)
class SegmentCoverage:
    segment: SegmentKey
    tensors: tuple[TensorRatio, ...]  # every compared tensor the segment logged, in tensor order

    @property
    def flagged(self) -> int:
        return sum(t.flagged for t in self.tensors)

    def worst(self, n: int) -> list[TensorRatio]:
        return sorted(self.tensors, key=lambda t: t.ratio)[:n]


@dataclass(frozen=True)
class WindowCoverage:
    start: float  # epoch seconds (UTC): the window [start, start + window_seconds)
    tensors: int  # compared tensors logged in the window
    flagged: int
    worst_ratio: float
    worst_tensor: str


@dataclass(frozen=True)
class LogCoverageReport:
    """Coverage over all records (``coverage``, whose layers are the logged tensors), per segment and window."""

    coverage: CoverageReport
    model_sha256: str  # the instrumented model the records came from
    source_check: str  # how the instrumented model was tied to MODEL
    window_seconds: float | None
    segment_by: tuple[str, ...] | None  # the segment dimensions (None: device, app version and every tag)
    records: int
    inferences: int
    read: ReadReport
    segments: tuple[SegmentCoverage, ...]
    windows: tuple[WindowCoverage, ...]
    not_logged: tuple[str, ...]  # MODEL's activations no record carried: not compared, never "covered"
    not_in_model: tuple[str, ...]  # logged tensors that are no activation of MODEL (an INT8 model's own tensors)
    saturated: tuple[str, ...]  # int8 tensors whose logs reached the end of their quantized range


SEGMENT_DIMENSIONS = ("device", "app_version")  # and tag:NAME


def parse_segment_by(text: str | None) -> tuple[str, ...] | None:
    """``device,app_version,tag:camera`` -> the dimensions segments are rolled up to (None: every dimension)."""
    if text is None:
        return None
    parts = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in parts if p not in SEGMENT_DIMENSIONS and not (p.startswith("tag:") and len(p) > 4)]
    if bad or not parts:
        raise UsageError(f"--segment-by {text!r}: give device, app_version and/or tag:NAME, comma-separated")
    return parts


def roll_up(segments: Mapping[SegmentKey, Mapping[str, TensorExtremes]],
            by: Sequence[str] | None) -> dict[SegmentKey, dict[str, TensorExtremes]]:
    """The segments merged over the dimensions not in ``by`` (exact: min of mins, max of maxes, sums)."""
    if by is None:
        return {key: dict(table) for key, table in segments.items()}
    out: dict[SegmentKey, dict[str, TensorExtremes]] = {}
    for key, table in segments.items():
        projected = SegmentKey(key.device if "device" in by else "", key.app_version if "app_version" in by else "",
                               tuple((k, v) for k, v in key.tags if f"tag:{k}" in by))
        merged = out.setdefault(projected, {})
        for name, extremes in table.items():
            merged[name] = merged[name].merge(extremes) if name in merged else extremes
    return out


def _name_index(side: CalibrationSide) -> dict[str, TensorKey]:
    """MODEL's main-graph activations by name (the instrumented model is the main graph's); a name carried by
    two tensors cannot be matched and is left out."""
    index: dict[str, TensorKey] = {}
    seen: set[str] = set()
    for key, name in side.names.items():
        if key[0] != 0:
            continue
        if name in seen:
            index.pop(name, None)
            continue
        seen.add(name)
        index[name] = key
    return index


def _real_table(table: Mapping[str, TensorExtremes], logged: Mapping[str, LoggedTensor],
                index: Mapping[str, TensorKey], where: str) -> dict[TensorKey, float]:
    """Production max|x| per MODEL tensor of one merged table (dequantized; tensors not in MODEL dropped)."""
    out = {}
    for name, extremes in table.items():
        if name in index:
            lo, hi = logged[name].real(extremes, where)
            out[index[name]] = max(-lo, hi)
    return out


#: Ops whose output range the op itself bounds: an int8 output at the end of its range is the op's limit (a
#: confident softmax at code 127), not production beyond calibration.
BOUNDED_OPS = frozenset({"SOFTMAX", "LOGISTIC", "TANH"})


def saturation_gaps(table: Mapping[str, TensorExtremes], logged: Mapping[str, LoggedTensor],
                    index: Mapping[str, TensorKey], side: CalibrationSide) -> set[TensorKey]:
    """The tensors of one merged table whose int8 codes reached the end of their range where production may have
    gone beyond calibration unseen: flagged whatever their ratio (the logged max is only a lower bound).

    Not flagged: outputs of ops that bound their own range (``BOUNDED_OPS``), and a model input whose every
    reached edge lies at or beyond what the calibration set's preprocessing can produce from 8-bit pixels
    (``(0 - mean) / std`` .. ``(255 - mean) / std``): production images cannot go further. Without a known
    preprocessing an input is flagged like any tensor."""
    gaps = set()
    bounds = _pixel_bounds(side.data.preprocessing)
    for name, extremes in table.items():
        if name not in index or not (edges := logged[name].saturated_edges(extremes)):
            continue
        key = index[name]
        producer = side.first.producers[key]
        if producer in BOUNDED_OPS:
            continue
        half_step = (logged[name].scale or 0.0) / 2
        at_pixel_limit = bounds is not None and all(
            bounds[1] <= edge + half_step if edge > 0 else bounds[0] >= edge - half_step for edge in edges)
        if not (producer == "INPUT" and at_pixel_limit):
            gaps.add(key)
    return gaps


def _pixel_bounds(preprocessing: Any) -> tuple[float, float] | None:
    """The lowest and highest model input 8-bit pixels can become under ``preprocessing`` (None: unknown)."""
    if preprocessing is None:
        return None
    # mean and std are per channel or one value for all (broadcast, as preprocessing applies them)
    mean, std = np.broadcast_arrays(np.asarray(preprocessing.mean, np.float64),
                                    np.asarray(preprocessing.std, np.float64))
    values = np.concatenate([(0.0 - mean) / std, (255.0 - mean) / std])
    return float(values.min()), float(values.max())


def _ratios(side: CalibrationSide, maxima: Mapping[TensorKey, float], threshold: float,
            saturated: set[TensorKey]) -> tuple[TensorRatio, ...]:
    rows = []
    for key in sorted(maxima):
        layer = side.layer(key, maxima[key], None, threshold)
        rows.append(TensorRatio(layer.name, layer.production_max, layer.ratio, layer.flagged or key in saturated))
    return tuple(rows)


def read_production_log(logs: Sequence[str | Path], sidecar: InstrumentSidecar, window_seconds: float | None,
                        read_fn: ReadLog = read_log) -> tuple[ProductionStats, ReadReport]:
    """Every valid record of the instrumented model, merged; exit 2 when there is none (nothing compared is not
    'covered')."""
    stats, report = read_fn(logs, window_seconds=window_seconds, expected_sha256=sidecar.sha256,
                            expected_tensors=set(logged_tensors(sidecar)))
    if stats.records == 0:
        raise InputError(f"no valid record of the instrumented model (sha256 {sidecar.sha256[:12]}...) in "
                         f"{', '.join(str(p) for p in logs)}: {describe_read(report)}")
    return stats, report


def describe_read(report: ReadReport) -> str:
    """One line: files, records, inferences and what was refused by reason."""
    bad = ", ".join(f"{reason.value} {n}" for reason, n in sorted(report.bad.items(), key=lambda kv: kv[0].value))
    return (f"{report.files} files, {report.records} records ({report.inferences} inferences) read, "
            f"{report.bad_total} refused" + (f" ({bad})" if bad else ""))


def log_coverage(float_model: FloatModel, calibration: CalibrationSet, logs: Sequence[str | Path],
                 sidecar: InstrumentSidecar, sidecar_path: str | Path, threshold: float = 1.0,
                 window_seconds: float | None = DEFAULT_WINDOW_SECONDS, guard: SampleGuard | None = None, *,
                 segment_by: Sequence[str] | None = None, collect_fn: Collect = collect,
                 read_fn: ReadLog = read_log, candidates: CalibrationSet | None = None) -> LogCoverageReport:
    """Compare the calibration set with the logs of MODEL's instrumented model (see the module doc); segments are
    rolled up to ``segment_by`` (``parse_segment_by``; None: device, app version and every tag)."""
    how = check_source(sidecar, sidecar_path, float_model)
    stats, read = read_production_log(logs, sidecar, window_seconds, read_fn)
    logged = logged_tensors(sidecar)
    side = calibration_side(float_model, calibration, collect_fn, candidates)
    index = _name_index(side)
    totals = stats.tensors()
    maxima = _real_table(totals, logged, index, "the logs")
    if not maxima:
        raise InputError(f"none of the {len(totals)} logged tensors is an activation of {float_model.source}: "
                         "nothing to compare")
    saturated = tuple(name for name, e in totals.items() if name in logged and logged[name].saturated(e))
    clamped = saturation_gaps(totals, logged, index, side)
    layers = {k: side.layer(k, m, None, threshold) for k, m in maxima.items()}
    layers = {k: dataclasses.replace(layer, flagged=True, saturated=True) if k in clamped else layer
              for k, layer in layers.items()}
    report = side.report(layers, threshold, guard)
    rolled = roll_up(stats.segments, segment_by)
    segments = tuple(SegmentCoverage(key, _ratios(side, _real_table(rolled[key], logged, index,
                                                                    f"segment {key.to_dict()}"), threshold,
                                                  saturation_gaps(rolled[key], logged, index, side)))
                     for key in sorted(rolled))
    windows = []
    for i in sorted(stats.windows):
        rows = _ratios(side, _real_table(stats.windows[i], logged, index, f"window {i}"), threshold,
                       saturation_gaps(stats.windows[i], logged, index, side))
        if rows:
            worst = min(rows, key=lambda t: t.ratio)
            windows.append(WindowCoverage(stats.window_start(i), len(rows), sum(t.flagged for t in rows),
                                          worst.ratio, worst.name))
    return LogCoverageReport(
        coverage=report, model_sha256=sidecar.sha256, source_check=how, window_seconds=window_seconds,
        segment_by=None if segment_by is None else tuple(segment_by),
        records=stats.records, inferences=stats.inferences, read=read, segments=segments, windows=tuple(windows),
        not_logged=tuple(side.names[k] for k in sorted(index.values()) if k not in maxima),
        not_in_model=tuple(name for name in totals if name not in index),
        saturated=saturated)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def log_document(report: LogCoverageReport, logs: Sequence[str | Path], sidecar_path: str | Path) -> dict[str, Any]:
    """The ``production_log`` part of the ``edgeq.coverage`` document (non-finite ratios as null)."""

    def rows(tensors: Sequence[TensorRatio]) -> list[dict[str, Any]]:
        return [{"name": t.name, "production_max": t.production_max, "ratio": _finite(t.ratio),
                 "flagged": t.flagged} for t in tensors]

    return {
        "logs": [str(p) for p in logs], "instrumented_sidecar": str(sidecar_path),
        "model_sha256": report.model_sha256, "source_check": report.source_check,
        "window_seconds": report.window_seconds,
        "segment_by": None if report.segment_by is None else list(report.segment_by),
        "records": report.records, "inferences": report.inferences,
        "read": report.read.to_dict(), "not_logged": list(report.not_logged),
        "not_in_model": list(report.not_in_model), "saturated": list(report.saturated),
        "segments": [{**s.segment.to_dict(), "flagged": s.flagged, "tensors": rows(s.tensors)}
                     for s in report.segments],
        "windows": [{"start": w.start, "tensors": w.tensors, "flagged": w.flagged,
                     "worst_ratio": _finite(w.worst_ratio), "worst_tensor": w.worst_tensor} for w in report.windows],
    }


def plot_drift(report: LogCoverageReport, path: Path) -> Path:
    """Worst calibration/production ratio per time window (UTC), with the threshold: drift over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = report.coverage.threshold
    x = [datetime.fromtimestamp(w.start, tz=UTC) for w in report.windows]
    y = [w.worst_ratio if math.isfinite(w.worst_ratio) else float("nan") for w in report.windows]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot(x, y, marker="o", color="black", linewidth=1.5, label="worst tensor: calibration / production max|x|")
    flagged = [i for i, w in enumerate(report.windows) if w.flagged]
    if flagged:
        ax.scatter([x[i] for i in flagged], [y[i] for i in flagged], color="red", zorder=3,
                   label="window with a flagged tensor")
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(f"window start (UTC); windows of {report.window_seconds:g} s")
    fig.autofmt_xdate()
    ax.set_ylabel("worst ratio")
    ax.set_title("Calibration coverage of production, per time window")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
