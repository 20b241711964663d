"""Production activation logs (issue 18): the JSONL and .npz formats, the strict streaming reader, the exact merge."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import tracemalloc
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.errors import InputError, UsageError
from edgeq.production import (
    ProductionStats,
    ReadReport,
    Reason,
    Record,
    SegmentKey,
    append_record,
    iter_records,
    merge_records,
    read_log,
    write_shard,
)
from edgeq.production import reader as reader_module
from edgeq.production.schema import FILE_NAME, record_schema
from edgeq.production.writer import record_line

SHA = "ab" * 32
OTHER = "cd" * 32
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "schemas" / FILE_NAME


def _line(**overrides: object) -> str:
    obj: dict[str, object] = {"version": 1, "model_sha256": SHA, "time": 1764440000.5,
                              "tensors": {"conv1": [-1.5, 2.0], "fc": [0.0, 7.25]}}
    obj.update(overrides)
    return json.dumps(obj)


def _read(*paths: Path, **kwargs: object) -> tuple[list[Record], ReadReport]:
    report = ReadReport()
    return list(iter_records(paths, report=report, **kwargs)), report  # type: ignore[arg-type]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    written = [append_record(log, model_sha256=SHA, time=1764440000.0 + i, tensors={"a": (-i, i + 0.5), "b": (0, 1)},
                             count=1 + i, device="Pixel 8" if i % 2 else "", app_version="3.1",
                             tags={"country": "DE"} if i == 2 else None) for i in range(4)]
    records, report = _read(log)
    assert records == written
    assert (report.files, report.records, report.inferences, report.bad_total) == (1, 4, 10, 0)
    assert records[2].segment == SegmentKey("", "3.1", (("country", "DE"),))
    assert log.read_text().count("\n") == 4


def test_append_record_takes_numpy_scalars_and_refuses_non_string_names(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    lo, hi = np.float32(-1.5), np.float32(2.25)
    record = append_record(log, model_sha256=SHA, time=np.float64(12.5), tensors={"a": (lo, hi)}, count=np.int64(3))
    assert record.tensors["a"] == (-1.5, 2.25) and record.count == 3
    assert _read(log)[0] == [record]
    with pytest.raises(UsageError, match="wrong_type"):
        append_record(log, model_sha256=SHA, time=1.0, tensors={"a": (0.0, 1.0)}, tags={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="wrong_type"):
        append_record(log, model_sha256=SHA, time=1.0, tensors={"a": (np.bool_(False), 1.0)})


def test_npz_round_trip(tmp_path: Path) -> None:
    shard = tmp_path / "shard-0001.npz"
    mins = np.array([[-1.0, 0.0], [-2.5, -0.25], [-0.5, 0.0]], dtype=np.float32)
    maxs = mins + np.float32(3.0)
    n = write_shard(shard, model_sha256=SHA, tensors=["a", "b"], mins=mins, maxs=maxs,
                    times=np.array([10.0, 20.0, 30.0]), counts=np.array([1, 2, 3]), devices=["x", "y", "x"],
                    app_versions=["1", "1", "2"], tags={"cam": ["front", "", "back"]})
    assert n == 3
    records, report = _read(shard)
    assert report.bad_total == 0 and report.inferences == 6
    assert [r.tensors["a"] for r in records] == [(-1.0, 2.0), (-2.5, 0.5), (-0.5, 2.5)]
    assert [r.segment for r in records] == [SegmentKey("x", "1", (("cam", "front"),)), SegmentKey("y", "1", ()),
                                            SegmentKey("x", "2", (("cam", "back"),))]
    with np.load(shard) as arrays:  # the documented layout
        assert set(arrays.files) == {"version", "model_sha256", "tensors", "min", "max", "time", "count", "device",
                                     "app_version", "tag_keys", "tag_values"}


def test_the_published_schema_is_the_code_and_real_records_validate(tmp_path: Path) -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == record_schema()
    validator = jsonschema.Draft202012Validator(record_schema())
    log = tmp_path / "app.jsonl"
    append_record(log, model_sha256=SHA, time=5.0, tensors={"a": (0.0, 1.0)})
    append_record(log, model_sha256=SHA, time=6, tensors={"a": (-1, 1)}, count=4, device="d", app_version="v",
                  tags={"k": "v"})
    for line in log.read_text().splitlines():
        validator.validate(json.loads(line))
    assert not validator.is_valid(json.loads(_line(extra=1)))
    assert not validator.is_valid(json.loads(_line(version=2)))
    assert not validator.is_valid(json.loads(_line(tensors={"a": [1.0]})))


def test_malformed_lines_are_counted_by_reason_and_good_lines_still_read(tmp_path: Path) -> None:
    lines = [
        _line().encode(),                                            # 1 good
        b'{"version": 1, "model_sha256": "\xff\xfe"}',               # 2 invalid UTF-8
        b"[1, 2, 3]",                                                # 3 not an object
        b"{not json",                                                # 4 invalid JSON
        _line(tensors={"a": [float("nan"), 1.0]}).encode(),          # 5 NaN (json.dumps writes NaN)
        _line(tensors={"a": [0.0, float("inf")]}).encode(),          # 6 Infinity
        _line().replace("7.25", "1e400").encode(),                   # 7 a huge float
        _line().replace("7.25", "1" + "0" * 300).encode(),           # 8 a huge integer
        _line().replace("7.25", "1e39").encode(),                    # 9 beyond float32
        _line(tensors={"a": [2.0, 1.0]}).encode(),                   # 10 min > max
        _line(version=2).encode(),                                   # 11 unknown version
        json.dumps({"version": 1, "time": 1.0, "tensors": {}}).encode(),  # 12 missing model_sha256
        _line(colour="red").encode(),                                # 13 unknown key
        _line(time="2026-11-29T00:00:00Z").encode(),                 # 14 wrong type
        _line(count=True).encode(),                                  # 15 a boolean count
        b"   ",                                                      # 16 blank: skipped, not counted
        _line(device="Pixel 8").encode(),                            # 17 good
        b"[" * 100000,                                               # 18 deeply nested
        _line()[:40].encode(),                                       # 19 truncated last line (no newline)
    ]
    log = tmp_path / "app.jsonl"
    log.write_bytes(b"\n".join(lines))
    records, report = _read(log)
    assert [r.segment.device for r in records] == ["", "Pixel 8"]
    assert report.bad == {Reason.INVALID_UTF8: 1, Reason.NOT_AN_OBJECT: 1, Reason.INVALID_JSON: 2,
                          Reason.NON_FINITE: 5, Reason.MIN_ABOVE_MAX: 1, Reason.UNKNOWN_VERSION: 1,
                          Reason.MISSING_KEY: 1, Reason.UNKNOWN_KEY: 1, Reason.WRONG_TYPE: 2,
                          Reason.TRUNCATED_LINE: 1}
    positions = {e.position: e.reason for e in report.examples}
    assert positions[f"{log}:2"] is Reason.INVALID_UTF8
    assert positions[f"{log}:19"] is Reason.TRUNCATED_LINE
    assert json.loads(json.dumps(report.to_dict()))["bad"]["non_finite"] == 5


def test_examples_are_capped_but_every_bad_line_is_counted(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    log.write_text("[]\n" * 50)
    report = ReadReport(max_examples=3)
    assert list(iter_records([log], report=report)) == []
    assert report.bad == {Reason.NOT_AN_OBJECT: 50} and len(report.examples) == 3


def test_an_over_long_line_is_refused_without_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(reader_module, "_CHUNK", 64)
    log = tmp_path / "app.jsonl"
    log.write_text(_line(device="x" * 5000) + "\n" + _line() + "\n")
    records, report = _read(log)
    assert len(records) == 1 and report.bad == {Reason.LINE_TOO_LONG: 1}
    assert report.examples[0].position == f"{log}:1"


def test_empty_files_and_a_directory_of_shards(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a log")
    sub = tmp_path / "day2"
    sub.mkdir()
    for i in range(3):
        write_shard(sub / f"s{i}.npz", model_sha256=SHA, tensors=["a"], mins=np.zeros((2, 1)),
                    maxs=np.ones((2, 1)), times=np.array([i, i + 0.5]))
    (sub / "app.jsonl").write_text(_line() + "\n")
    records, report = _read(tmp_path)
    assert len(records) == 7 and report.files == 6
    assert report.bad == {Reason.BAD_SHARD: 1}  # the empty .npz; the empty .jsonl is just empty
    assert report.ignored_files == [str(tmp_path / "notes.txt")]


def _shard_arrays() -> dict[str, np.ndarray]:
    return {"version": np.array(1), "model_sha256": np.array(SHA), "tensors": np.array(["a", "b"]),
            "min": np.zeros((3, 2), np.float32), "max": np.ones((3, 2), np.float32), "time": np.arange(3.0)}


@pytest.mark.parametrize("change, reason", [
    (lambda a: a.pop("max"), Reason.BAD_SHARD),
    (lambda a: a.update(max=np.ones((3, 3), np.float32)), Reason.BAD_SHARD),
    (lambda a: a.update(time=np.arange(4.0)), Reason.BAD_SHARD),
    (lambda a: a.update(min=np.zeros((3, 2), np.int32)), Reason.BAD_SHARD),
    (lambda a: a.update(tensors=np.array(["a", "a"])), Reason.BAD_SHARD),
    (lambda a: a.update(extra=np.zeros(1)), Reason.BAD_SHARD),
    (lambda a: a.update(version=np.array(9)), Reason.UNKNOWN_VERSION),
    (lambda a: a.update(model_sha256=np.array("nope")), Reason.WRONG_TYPE),
    (lambda a: a.update(tag_keys=np.array(["k"])), Reason.BAD_SHARD),
])
def test_a_shard_with_missing_or_mismatched_arrays_is_one_bad_shard(tmp_path: Path, change, reason: Reason) -> None:
    arrays = _shard_arrays()
    change(arrays)
    shard = tmp_path / "bad.npz"
    np.savez(shard, **arrays)
    good = tmp_path / "good.jsonl"
    good.write_text(_line() + "\n")
    records, report = _read(shard, good)
    assert len(records) == 1 and report.bad == {reason: 1}
    assert report.examples[0].position == str(shard)


@pytest.mark.parametrize("content", [b"hello, not a zip", b"PK\x03\x04truncated", pickle.dumps([1, 2])])
def test_a_file_named_npz_that_is_no_npz(tmp_path: Path, content: bytes) -> None:
    shard = tmp_path / "x.npz"
    shard.write_bytes(content)
    assert _read(shard)[1].bad == {Reason.BAD_SHARD: 1}


def test_a_single_npy_or_pickled_arrays_named_npz(tmp_path: Path) -> None:
    npy = tmp_path / "a.npz"
    with npy.open("wb") as f:
        np.save(f, np.zeros(3))
    objects = tmp_path / "b.npz"
    np.savez(objects, **{**_shard_arrays(), "tensors": np.array(["a", "b"], dtype=object)})
    assert _read(npy, objects)[1].bad == {Reason.BAD_SHARD: 2}


def test_a_shard_declaring_more_than_the_budget_is_refused_before_allocating(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.production import shard as shard_module

    path = tmp_path / "s.npz"
    np.savez_compressed(path, **{**_shard_arrays(), "min": np.zeros((3, 2)), "max": np.ones((3, 2))})
    assert len(_read(path)[0]) == 3
    monkeypatch.setattr(shard_module, "MAX_SHARD_BYTES", 100)  # the arrays declare more than 100 bytes
    records, report = _read(path)
    assert records == [] and report.bad == {Reason.BAD_SHARD: 1} and "declares" in report.examples[0].detail


def test_float32_times_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", **{**_shard_arrays(), "time": np.arange(3, dtype=np.float32)})
    assert "float64" in _read(tmp_path / "s.npz")[1].examples[0].detail


def test_bad_rows_of_a_shard_are_refused_one_by_one(tmp_path: Path) -> None:
    arrays = _shard_arrays()
    arrays["min"][1, 1] = np.nan
    arrays["min"][2, 0] = 5.0  # above its max
    arrays["count"] = np.array([1, 1, 1])
    np.savez(tmp_path / "s.npz", **arrays)
    records, report = _read(tmp_path / "s.npz")
    assert len(records) == 1 and report.bad == {Reason.NON_FINITE: 1, Reason.MIN_ABOVE_MAX: 1}
    assert [e.position for e in report.examples] == [f"{tmp_path / 's.npz'}[1]", f"{tmp_path / 's.npz'}[2]"]


def test_model_sha256_mismatch_and_unknown_tensors_are_reported(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    log.write_text("\n".join([_line(), _line(model_sha256=OTHER), _line(tensors={"mystery": [0, 1]})]) + "\n")
    write_shard(tmp_path / "other.npz", model_sha256=OTHER, tensors=["conv1"], mins=np.zeros((4, 1)),
                maxs=np.ones((4, 1)), times=np.arange(4.0))
    records, report = _read(log, tmp_path / "other.npz", expected_sha256=SHA, expected_tensors={"conv1", "fc"})
    assert len(records) == 1
    assert report.bad == {Reason.MODEL_MISMATCH: 2, Reason.UNKNOWN_TENSOR: 1}
    assert "4 records" in report.examples[-1].detail
    assert len(_read(log, expected_sha256=[SHA, OTHER])[0]) == 3


def test_an_unreadable_path_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(iter_records([tmp_path / "missing.jsonl"]))
    locked = tmp_path / "locked.npz"
    locked.write_text("x")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: the refusal is simulated
        real_open = Path.open

        def refuse(self: Path, *args: object, **kwargs: object) -> object:
            if self == locked:
                raise PermissionError(13, "Permission denied")
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InputError, match=r"cannot read .*locked.npz: Permission denied$"):
        list(iter_records([locked]))


def test_writers_refuse_what_the_reader_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="min_above_max"):
        append_record(tmp_path / "a.jsonl", model_sha256=SHA, time=1.0, tensors={"a": (2.0, 1.0)})
    with pytest.raises(UsageError, match="non_finite"):
        write_shard(tmp_path / "a.npz", model_sha256=SHA, tensors=["a"], mins=np.full((1, 1), np.nan),
                    maxs=np.ones((1, 1)), times=np.zeros(1))
    with pytest.raises(UsageError):
        write_shard(tmp_path / "a.npz", model_sha256=SHA, tensors=["a"], mins=np.zeros((1, 1)),
                    maxs=np.ones((1, 1)), times=np.zeros(1), tags={"k": ["a", "b"]})
    assert not list(tmp_path.iterdir())


def test_merge_per_segment_and_window(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    for time, lo, hi, device, count in [(0.0, -1, 1, "a", 1), (59.0, -3, 0.5, "a", 2), (61.0, -0.5, 9, "b", 1)]:
        append_record(log, model_sha256=SHA, time=time, tensors={"t": (lo, hi)}, device=device, count=count)
    stats, report = read_log([log], window_seconds=60)
    assert report.records == 3 and stats.inferences == 4 and stats.models == {SHA: 3}
    a = stats.segments[SegmentKey("a")]["t"]
    assert (a.min, a.max, a.records, a.inferences, a.first_time, a.last_time) == (-3, 1, 2, 3, 0.0, 59.0)
    assert sorted(stats.windows) == [0, 1] and stats.windows[1]["t"].max == 9
    assert stats.tensors()["t"].min == -3 and stats.tensors()["t"].max == 9
    assert json.loads(json.dumps(stats.to_dict()))["windows"][1]["start"] == 60
    with pytest.raises(UsageError):
        stats.merge(ProductionStats(window_seconds=30))
    with pytest.raises(UsageError):
        merge_records([], window_seconds=0)


_values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_records = st.builds(
    lambda pairs, time, count, device, tag, model: Record(
        model_sha256=model, time=time, count=count, segment=SegmentKey(device, "", tag),
        tensors={name: (min(lo, hi) + 0.0, max(lo, hi) + 0.0) for name, lo, hi in pairs}),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), _values, _values), max_size=3),
    st.floats(0, 1e5, allow_nan=False), st.integers(1, 5), st.sampled_from(["", "p8", "s23"]),
    st.sampled_from([(), (("cam", "front"),)]), st.sampled_from([SHA, OTHER]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_records, max_size=25), st.lists(st.integers(0, 3), max_size=25), st.randoms())
def test_the_merge_is_exact_over_any_split_and_order(records: list[Record], parts: list[int], rnd) -> None:
    whole = merge_records(records, window_seconds=100.0)
    groups: list[list[Record]] = [[], [], [], []]
    for i, record in enumerate(records):
        groups[parts[i] if i < len(parts) else 0].append(record)
    partial = [merge_records(g, window_seconds=100.0) for g in groups]
    rnd.shuffle(partial)
    left = partial[0].merge(partial[1]).merge(partial[2].merge(partial[3]))
    right = partial[3].merge(partial[2].merge(partial[1].merge(partial[0])))
    assert left == whole == right
    assert left.to_dict() == whole.to_dict()  # the same output, order of merging aside
    a, b = partial[0], partial[1]
    assert a.merge(b) == b.merge(a)
    assert a.merge(ProductionStats(window_seconds=100.0)) == a


def _repeat(path: Path, line: bytes, size: int) -> int:
    lines = size // len(line) + 1
    with path.open("wb") as f:
        for _ in range(lines // 1000):
            f.write(line * 1000)
        f.write(line * (lines % 1000))
    return lines


def _peak(run) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_reader_streams_a_50_mb_log_in_bounded_memory(tmp_path: Path) -> None:
    """Memory is bounded by one line, not the file: a whole pass over 50 MB of 200 KB lines peaks near one line
    (holding the records or the file would take 50 MB), and the first records of a 50 MB file of realistic
    lines arrive before the file is read (no wall-clock assertions: tracemalloc counts bytes)."""
    wide = Record(model_sha256=SHA, time=1764440000.0, tensors={"a": (-1.0, 1.0)},
                  segment=SegmentKey(tags=(("note", "x" * 200_000),)))
    wide_log = tmp_path / "wide.jsonl"
    lines = _repeat(wide_log, record_line(wide), 50 * 1024 * 1024)
    (stats, report), peak = _peak(lambda: read_log([wide_log], window_seconds=3600))
    assert report.records == lines and stats.tensors()["a"].records == lines
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"

    realistic = Record(model_sha256=SHA, time=1764440000.0,
                       tensors={f"model/block_{i}/conv/Relu6;model/block_{i}/bn/FusedBatchNormV3": (-i, i + 0.123456789)
                                for i in range(24)})
    log = tmp_path / "big.jsonl"
    lines = _repeat(log, record_line(realistic), 50 * 1024 * 1024)
    assert log.stat().st_size >= 50 * 1024 * 1024
    stream = iter_records([log])
    assert inspect.isgenerator(stream)

    def last_of_2000() -> Record:
        for _ in range(1999):
            next(stream)
        return next(stream)

    last, peak = _peak(last_of_2000)
    assert last == realistic
    assert peak < 1024 * 1024, f"peak {peak} bytes"
    assert sum(1 for _ in stream) == lines - 2000


def test_the_production_stage_sits_low() -> None:
    """numpy only: no TensorFlow, no CLI, no stage above files/npzio, lazy imports included."""
    import ast
    import subprocess
    import sys

    package = Path(__file__).resolve().parent.parent / "edgeq" / "production"
    imported: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    edgeq_imports = {name for name in imported if name.startswith("edgeq.") and not name.startswith("edgeq.production")}
    assert edgeq_imports <= {"edgeq.errors", "edgeq.files", "edgeq.npzio"}, edgeq_imports
    assert not {name.split(".")[0] for name in imported} & {"tensorflow", "tflite_runtime", "ai_edge_litert"}
    probe = "import sys, edgeq.production; print(sorted(m for m in ('tensorflow', 'edgeq.cli') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
