"""Calibration statistics and production-log reads over shards on an executor, merged exactly.

Shards are contiguous sample ranges numbered by their place in the whole set (``collect``'s
``sample_indices``); their ``ActivationStats`` merge through ``SampleExtremes.merge``, which is exact and does
not depend on grouping or order, and the set's fingerprint and sample descriptions come from the whole set. So
the result is the one ``collect`` gives in one pass, bit for bit, on any executor with any number of workers.
A production log is sharded by file, and ``ProductionStats.merge`` is exact too (docs/executors.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from contextlib import closing
from functools import reduce
from typing import Any

import numpy as np

from edgeq.calib.collect import ActivationStats, Collector, assemble_stats, collect
from edgeq.calib.data import CalibrationSet
from edgeq.calib.stats import SampleExtremes
from edgeq.errors import UsageError
from edgeq.execute import Executor, Job, shards
from edgeq.execute.base import no_state
from edgeq.progress import task


def subset(data: CalibrationSet, positions: range) -> CalibrationSet:
    """The samples at ``positions`` (contiguous) of ``data``, with their conditions."""
    part = slice(positions.start, positions.stop)
    return dataclasses.replace(data, arrays=tuple(a[part] for a in data.arrays),
                               conditions=data.conditions[part] if data.conditions else data.conditions)


def _finite(data: CalibrationSet) -> bool:
    return all(a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in data.arrays)


def _collect_shard(collector: Collector, shard: tuple[CalibrationSet, list[int]]) -> ActivationStats:
    part, numbers = shard
    return collector.collect(part, sample_indices=numbers)


def check_stateless(model: bytes, executor: str) -> None:
    """Refuse to shard a model whose results depend on the invocations before them: shards run on separate
    interpreters (and a worker's shards in any order), so the result would depend on the sharding."""
    from edgeq.tflite import model as tfl

    reason = tfl.stateful_reason(tfl.parse(model))
    if reason:
        raise UsageError(f"the model keeps state between invocations ({reason}): its results depend on the order "
                         f"samples run in, which --executor {executor} does not keep; use --executor local")


def merge_stats(parts: Sequence[ActivationStats], data: CalibrationSet, *, describe: bool = True) -> ActivationStats:
    """The statistics of the whole of ``data`` from those of its disjoint shards (exact, order-independent)."""
    first = parts[0]
    extremes: dict[Any, SampleExtremes] = {key: reduce(SampleExtremes.merge, (p.extremes[key] for p in parts))
                                           for key in first.extremes}
    return assemble_stats(data, extremes, names=first.names, producers=first.producers,
                          model_fingerprint=first.model_fingerprint, describe=describe)


def collect_sharded(float_model: bytes, data: CalibrationSet, executor: Executor,
                    sample_indices: Sequence[int] | None = None) -> ActivationStats:
    """``collect(float_model, data, sample_indices=...)``, computed in shards on ``executor``: equal to it."""
    ranges = shards(len(data), executor.workers)
    if executor.name == "local" or len(ranges) <= 1 or not _finite(data):
        # one pass: a set with NaN/Inf is refused naming the sample by its place in the set, as collect does
        return collect(float_model, data, sample_indices=sample_indices)
    check_stateless(float_model, executor.name)
    numbers = None if sample_indices is None else [int(i) for i in sample_indices]
    if numbers is not None and (len(numbers) != len(data) or len(set(numbers)) != len(numbers)):
        raise ValueError("sample_indices must number every sample of the set once")
    # Each shard carries its own samples (a worker receives only what it runs: every byte of the set is sent once),
    # numbered by their place in the whole set; the model is the job's shared value, sent once per worker.
    work = [(subset(data, r), list(r) if numbers is None else numbers[r.start:r.stop]) for r in ranges]
    parts = []
    job = Job(Collector, _collect_shard, float_model)  # each worker prepares the model once
    with task("calibration statistics", len(data)) as counted, closing(executor.imap(job, work)) as results:
        for (part_data, _), part in zip(work, results, strict=True):
            parts.append(part)
            counted.advance(len(part_data))
    return merge_stats(parts, data, describe=sample_indices is None)


def _read_files(kwargs: dict[str, Any], files: list[os.PathLike[str]]) -> Any:
    from edgeq.production.merge import read_log

    return read_log(files, **kwargs)


def merge_reports(parts: Sequence[Any], ignored_files: Iterable[str]) -> Any:
    """One ``ReadReport`` for files read in order by several readers: counts summed, reasons in the order they
    first occurred, the first examples kept, as one reader over every file would have reported."""
    from edgeq.production.reader import ReadReport

    merged = ReadReport(max_examples=parts[0].max_examples, ignored_files=list(ignored_files))
    for part in parts:
        merged.files += part.files
        merged.records += part.records
        merged.inferences += part.inferences
        for reason, n in part.bad.items():
            merged.bad[reason] = merged.bad.get(reason, 0) + n
        merged.examples.extend(part.examples[: merged.max_examples - len(merged.examples)])
        merged.ignored_files.extend(part.ignored_files)
    return merged


def read_log_sharded(paths: Iterable[str | os.PathLike[str]], executor: Executor, **read_log_kwargs: Any) -> Any:
    """What ``edgeq.production.merge.read_log(paths, **read_log_kwargs)`` returns, (stats, report), with the files
    read in contiguous groups on ``executor`` and merged exactly."""
    from edgeq.production.merge import read_log
    from edgeq.production.reader import ReadReport, log_files

    paths = list(paths)
    listing = ReadReport()
    files = list(log_files(paths, listing))
    groups = [files[r.start:r.stop] for r in shards(len(files), executor.workers)]
    if executor.name == "local" or len(groups) <= 1:
        return read_log(paths, **read_log_kwargs)
    with closing(executor.imap(Job(no_state, _read_files, read_log_kwargs), groups)) as results:
        parts = list(results)
    stats = reduce(lambda a, b: a.merge(b), (s for s, _ in parts))
    return stats, merge_reports([r for _, r in parts], listing.ignored_files)
