"""The strict streaming reader: JSONL files line by line and .npz shards one at a time, every record checked.

Bad lines, records and shards are counted by reason and the first few kept as examples with their position
(``file:line`` for JSONL, ``file[row]`` for a shard row, ``file`` for a whole shard); the run goes on. Only a
path that cannot be read at all (missing, permission, I/O error) raises InputError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgeq.errors import InputError
from edgeq.production.format import BadValue, Reason, Record, check_expectations, record_from_json
from edgeq.production.shard import check_layout, load_arrays, rows

#: A longer line is refused without being held in memory (a record of 1000 tensors is ~60 KB).
MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 1024 * 1024
SUFFIXES = (".jsonl", ".npz")


@dataclass(frozen=True)
class BadRecord:
    """One refused line, record or shard: where, why, and a short detail."""

    position: str
    reason: Reason
    detail: str


@dataclass
class ReadReport:
    """What a read saw: files, good records and inferences, bad ones by reason, the first examples."""

    max_examples: int = 20
    files: int = 0
    records: int = 0
    inferences: int = 0
    bad: dict[Reason, int] = field(default_factory=dict)
    examples: list[BadRecord] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)  # in a directory, not .jsonl or .npz

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def refuse(self, position: str, problem: BadValue) -> None:
        self.bad[problem.reason] = self.bad.get(problem.reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(BadRecord(position, problem.reason, problem.detail))

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "records": self.records, "inferences": self.inferences,
                "bad": {reason.value: n for reason, n in sorted(self.bad.items(), key=lambda kv: kv[0].value)},
                "examples": [{"position": e.position, "reason": e.reason.value, "detail": e.detail}
                             for e in self.examples],
                "ignored_files": list(self.ignored_files)}


def _unreadable(path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot read {path}: {exc.strerror or exc}")


def log_files(paths: Iterable[str | os.PathLike[str]], report: ReadReport) -> Iterator[Path]:
    """Each file to read: a file as given, a directory's .jsonl and .npz files (recursively, sorted)."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            try:
                os.listdir(path)
            except OSError as exc:
                raise _unreadable(path, exc) from None
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if found.suffix in SUFFIXES:
                    yield found
                else:
                    report.ignored_files.append(str(found))
        elif path.exists():
            yield path
        else:
            raise InputError(f"{path}: no such file or directory")


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _reject_constant(name: str) -> None:
    raise BadValue(Reason.NON_FINITE, f"{name} is not a JSON number")


def _lines(path: Path, handle: BinaryIO, report: ReadReport) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, ended by a newline) of each line, refusing over-long lines without holding them."""
    number = 0
    while True:
        try:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(_CHUNK)
                report.refuse(f"{path}:{number}", BadValue(Reason.LINE_TOO_LONG, f"over {MAX_LINE_BYTES} bytes"))
                continue
        except OSError as exc:
            raise _unreadable(path, exc) from None
        yield number, raw, raw.endswith(b"\n")


def _parse(raw: bytes, complete: bool) -> Record | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadValue(Reason.INVALID_UTF8, f"byte {exc.start}") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BadValue):
            raise
        reason = Reason.INVALID_JSON if complete else Reason.TRUNCATED_LINE
        raise BadValue(reason, str(exc)[:120]) from None
    return record_from_json(obj)


def _jsonl(path: Path, report: ReadReport, models: frozenset[str] | None,
           tensors: frozenset[str] | None) -> Iterator[Record]:
    with _open(path) as handle:
        for number, raw, complete in _lines(path, handle, report):
            try:
                record = _parse(raw, complete)
                if record is None:
                    continue
                check_expectations(record, models, tensors)
            except BadValue as problem:
                report.refuse(f"{path}:{number}", problem)
                continue
            yield record


def _npz(path: Path, report: ReadReport, models: frozenset[str] | None,
         tensors: frozenset[str] | None) -> Iterator[Record]:
    with _open(path) as handle:
        try:
            arrays = load_arrays(handle)
            version, sha, names = check_layout(arrays)
            if models is not None and sha not in models:
                raise BadValue(Reason.MODEL_MISMATCH, f"model_sha256 {sha[:12]}... is not the expected model "
                                                      f"({arrays['time'].shape[0]} records)")
            if tensors is not None and not set(names) <= tensors:
                unknown = [n for n in names if n not in tensors]
                raise BadValue(Reason.UNKNOWN_TENSOR, ", ".join(repr(n) for n in unknown[:3]))
        except BadValue as problem:
            report.refuse(str(path), problem)
            return
    for row, item in rows(arrays, version, sha, names):
        if isinstance(item, BadValue):
            report.refuse(f"{path}[{row}]", item)
        else:
            yield item


def iter_records(paths: Iterable[str | os.PathLike[str]], *, report: ReadReport | None = None,
                 expected_sha256: str | Collection[str] | None = None,
                 expected_tensors: Collection[str] | None = None) -> Iterator[Record]:
    """Yield every valid record of ``paths`` (files or directories), in file order, checking each strictly.

    Memory stays bounded: a JSONL file is read one line at a time, shards one at a time. Refused input is
    counted in ``report`` (pass one to see it). ``expected_sha256``: the model (or models) the statistics must
    come from; ``expected_tensors``: the tensor names a record may carry (e.g. the instrument sidecar's).
    """
    report = ReadReport() if report is None else report
    models = (frozenset({expected_sha256}) if isinstance(expected_sha256, str)
              else None if expected_sha256 is None else frozenset(expected_sha256))
    names = None if expected_tensors is None else frozenset(expected_tensors)
    for path in log_files(paths, report):
        report.files += 1
        reader = _npz if path.suffix == ".npz" else _jsonl
        for record in reader(path, report, models, names):
            report.records += 1
            report.inferences += record.count
            yield record
