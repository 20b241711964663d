"""The exact, order-independent merge of production records: per segment and per time window, per tensor.

Every statistic is a min, a max or a sum of integers, so merging partial results in any grouping and order
gives exactly the one-shot result (what a distributed executor relies on). ``-0.0`` is stored as ``0.0`` by
the reader, so even the bits do not depend on the order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import UsageError
from edgeq.production.format import Record, SegmentKey
from edgeq.production.reader import ReadReport, iter_records


@dataclass(frozen=True)
class TensorExtremes:
    """One tensor over a set of records: min of mins, max of maxes, counts, first and last record time."""

    min: float
    max: float
    records: int
    inferences: int
    first_time: float
    last_time: float

    def merge(self, other: TensorExtremes) -> TensorExtremes:
        return TensorExtremes(min(self.min, other.min), max(self.max, other.max), self.records + other.records,
                              self.inferences + other.inferences, min(self.first_time, other.first_time),
                              max(self.last_time, other.last_time))

    def to_dict(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "records": self.records, "inferences": self.inferences,
                "first_time": self.first_time, "last_time": self.last_time}


Table = Mapping[str, TensorExtremes]


def _merge_tables(a: Table, b: Table) -> dict[str, TensorExtremes]:
    merged = dict(a)
    for name, extremes in b.items():
        merged[name] = merged[name].merge(extremes) if name in merged else extremes
    return merged


def _merge_keyed(a: Mapping[Any, Table], b: Mapping[Any, Table]) -> dict[Any, dict[str, TensorExtremes]]:
    merged = {key: dict(table) for key, table in a.items()}
    for key, table in b.items():
        merged[key] = _merge_tables(merged[key], table) if key in merged else dict(table)
    return merged


@dataclass(frozen=True)
class ProductionStats:
    """Merged production statistics. ``windows`` maps a window index i to the window [i*w, (i+1)*w) seconds."""

    window_seconds: float | None = None
    records: int = 0
    inferences: int = 0
    models: Mapping[str, int] = field(default_factory=dict)  # model sha256 -> records
    segments: Mapping[SegmentKey, Table] = field(default_factory=dict)
    windows: Mapping[int, Table] = field(default_factory=dict)

    def merge(self, other: ProductionStats) -> ProductionStats:
        """The statistics of both parts' records together (exact; commutative and associative)."""
        if self.window_seconds != other.window_seconds:
            raise UsageError(f"cannot merge statistics of {self.window_seconds} s and {other.window_seconds} s windows")
        models = dict(self.models)
        for sha, n in other.models.items():
            models[sha] = models.get(sha, 0) + n
        return ProductionStats(self.window_seconds, self.records + other.records,
                               self.inferences + other.inferences, models,
                               _merge_keyed(self.segments, other.segments), _merge_keyed(self.windows, other.windows))

    def tensors(self) -> dict[str, TensorExtremes]:
        """Per tensor over every segment (a roll-up is exact too: min of mins, max of maxes)."""
        total: dict[str, TensorExtremes] = {}
        for key in sorted(self.segments):
            total = _merge_tables(total, self.segments[key])
        return dict(sorted(total.items()))

    def window_start(self, index: int) -> float:
        if self.window_seconds is None:
            raise UsageError("these statistics have no time windows")
        return index * self.window_seconds

    def to_dict(self) -> dict[str, Any]:
        def table(t: Table) -> dict[str, Any]:
            return {name: t[name].to_dict() for name in sorted(t)}

        return {"window_seconds": self.window_seconds, "records": self.records, "inferences": self.inferences,
                "models": dict(sorted(self.models.items())),
                "segments": [{**key.to_dict(), "tensors": table(self.segments[key])} for key in sorted(self.segments)],
                "windows": [{"start": self.window_start(i), "tensors": table(self.windows[i])}
                            for i in sorted(self.windows)]}


def _add(table: dict[str, list[Any]], record: Record) -> None:
    for name, (lo, hi) in record.tensors.items():
        cell = table.get(name)
        if cell is None:
            table[name] = [lo, hi, 1, record.count, record.time, record.time]
            continue
        if lo < cell[0]:
            cell[0] = lo
        if hi > cell[1]:
            cell[1] = hi
        cell[2] += 1
        cell[3] += record.count
        if record.time < cell[4]:
            cell[4] = record.time
        if record.time > cell[5]:
            cell[5] = record.time


def _frozen(table: dict[str, list[Any]]) -> dict[str, TensorExtremes]:
    return {name: TensorExtremes(*cell) for name, cell in table.items()}


def merge_records(records: Iterable[Record], window_seconds: float | None = None) -> ProductionStats:
    """Merge a stream of records in one pass; memory grows with segments x tensors and windows, not records."""
    if window_seconds is not None and not (math.isfinite(window_seconds) and window_seconds > 0):
        raise UsageError(f"a time window must be a positive number of seconds, not {window_seconds!r}")
    segments: dict[SegmentKey, dict[str, list[Any]]] = {}
    windows: dict[int, dict[str, list[Any]]] = {}
    models: dict[str, int] = {}
    count = inferences = 0
    for record in records:
        count += 1
        inferences += record.count
        models[record.model_sha256] = models.get(record.model_sha256, 0) + 1
        _add(segments.setdefault(record.segment, {}), record)
        if window_seconds is not None:
            _add(windows.setdefault(math.floor(record.time / window_seconds), {}), record)
    return ProductionStats(window_seconds, count, inferences, models,
                           {key: _frozen(t) for key, t in segments.items()},
                           {key: _frozen(t) for key, t in windows.items()})


def read_log(paths: Iterable[str | os.PathLike[str]], *, window_seconds: float | None = None,
             expected_sha256: str | Collection[str] | None = None,
             expected_tensors: Collection[str] | None = None,
             max_examples: int = 20) -> tuple[ProductionStats, ReadReport]:
    """Read and merge every log of ``paths`` in one streaming pass; the statistics and what the read refused."""
    report = ReadReport(max_examples=max_examples)
    stats = merge_records(iter_records(paths, report=report, expected_sha256=expected_sha256,
                                       expected_tensors=expected_tensors), window_seconds)
    return stats, report
