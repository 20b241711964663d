"""Writers for apps written in Python and for tests: one JSONL line appended, or one .npz shard written.

Both run the reader's own checks first, so they never write a record the reader would refuse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from edgeq.errors import InputError, UsageError
from edgeq.files import atomic_path
from edgeq.npzio import save_npz
from edgeq.production.format import FORMAT_VERSION, BadValue, Record, record_from_json, record_to_json
from edgeq.production.shard import check_layout, rows


def _plain(value: object) -> object:
    """A numpy scalar as the Python number it holds (np.float32 is no float, np.int64 no int); others as they are."""
    return value.item() if isinstance(value, np.generic) and value.dtype.kind in "iuf" else value


def record_line(record: Record) -> bytes:
    """The JSONL line of ``record`` (compact, ASCII-safe UTF-8, newline-terminated)."""
    return (json.dumps(record_to_json(record), separators=(",", ":"), allow_nan=False) + "\n").encode()


def append_record(path: str | os.PathLike[str], *, model_sha256: str, time: float,
                  tensors: Mapping[str, tuple[float, float]], count: int = 1, device: str = "",
                  app_version: str = "", tags: Mapping[str, str] | None = None) -> Record:
    """Check one record and append it to the JSONL file ``path`` as a single write (one line per call).

    Numbers may be numpy scalars (what an interpreter's outputs hold); they are written as plain JSON numbers.
    """
    obj: dict[str, object] = {"version": FORMAT_VERSION, "model_sha256": model_sha256, "time": _plain(time),
                              "count": _plain(count), "device": device, "app_version": app_version,
                              "tags": dict(tags or {}),
                              "tensors": {name: [_plain(lo), _plain(hi)] for name, (lo, hi) in tensors.items()}}
    try:
        record = record_from_json(obj)
    except BadValue as exc:
        raise UsageError(f"not a valid production record: {exc}") from None
    line = record_line(record)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write to {path}: {exc.strerror or exc}") from None
    return record


def write_shard(path: str | os.PathLike[str], *, model_sha256: str, tensors: Sequence[str],
                mins: np.ndarray, maxs: np.ndarray, times: np.ndarray, counts: np.ndarray | None = None,
                devices: Sequence[str] | None = None, app_versions: Sequence[str] | None = None,
                tags: Mapping[str, Sequence[str]] | None = None) -> int:
    """Write one .npz shard (atomically) of ``len(times)`` records; return that count.

    ``mins``/``maxs``: [records, tensors]; ``tags``: per tag key, one value per record ("" = absent).
    """
    try:
        arrays = _shard_arrays(model_sha256, tensors, mins, maxs, times, counts, devices, app_versions, tags)
        version, sha, names = check_layout(arrays)
        for row, item in rows(arrays, version, sha, names):
            if isinstance(item, BadValue):
                raise BadValue(item.reason, f"row {row}: {item.detail}")
    except (BadValue, ValueError) as exc:
        raise UsageError(f"not a valid production shard: {exc}") from None
    with atomic_path(path, suffix=".npz") as tmp:
        save_npz(tmp, arrays, compress=True)
    return int(arrays["time"].shape[0])


def _shard_arrays(model_sha256: str, tensors: Sequence[str], mins: np.ndarray, maxs: np.ndarray,
                  times: np.ndarray, counts: np.ndarray | None, devices: Sequence[str] | None,
                  app_versions: Sequence[str] | None, tags: Mapping[str, Sequence[str]] | None,
                  ) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "version": np.array(FORMAT_VERSION, dtype=np.int64), "model_sha256": np.array(model_sha256, dtype=str),
        "tensors": np.array(list(tensors), dtype=str).reshape(-1), "min": np.asarray(mins, dtype=np.float32),
        "max": np.asarray(maxs, dtype=np.float32), "time": np.asarray(times, dtype=np.float64)}
    if counts is not None:
        arrays["count"] = np.asarray(counts, dtype=np.int64)
    if devices is not None:
        arrays["device"] = np.array(list(devices), dtype=str).reshape(-1)
    if app_versions is not None:
        arrays["app_version"] = np.array(list(app_versions), dtype=str).reshape(-1)
    if tags:
        keys = sorted(tags)
        arrays["tag_keys"] = np.array(keys, dtype=str)
        arrays["tag_values"] = np.array([list(tags[k]) for k in keys], dtype=str).T.reshape(len(arrays["time"]),
                                                                                             len(keys))
    return arrays
