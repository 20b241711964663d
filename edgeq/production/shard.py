"""The .npz shard layout: columnar arrays of many records of one model, checked array by array and row by row.

Arrays (docs/production_log.md): ``version`` (0-d int), ``model_sha256`` (0-d str), ``tensors`` [T] str,
``min`` and ``max`` [R, T] float, ``time`` [R] float; optional ``count`` [R] int, ``device`` and
``app_version`` [R] str, ``tag_keys`` [K] str with ``tag_values`` [R, K] str ("" = tag absent).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import numpy as np

from edgeq.production.format import (
    FLOAT32_MAX,
    BadValue,
    Reason,
    Record,
    SegmentKey,
    check_count,
    check_sha256,
    check_time,
    check_version,
)

REQUIRED = ("version", "model_sha256", "tensors", "min", "max", "time")
#: The most bytes a shard's arrays may declare in total (the reader holds one shard at a time).
MAX_SHARD_BYTES = 1 << 30
OPTIONAL = ("count", "device", "app_version", "tag_keys", "tag_values")


def _strings(array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    if array.dtype.kind != "U" or array.ndim != ndim:
        raise BadValue(Reason.BAD_SHARD, f"{name} must be a {ndim}-d string array, not {array.dtype} {array.shape}")
    return array


def check_layout(arrays: Mapping[str, np.ndarray]) -> tuple[int, str, list[str]]:
    """Check the shard-wide arrays and every shape; return (version, model_sha256, tensor names)."""
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise BadValue(Reason.BAD_SHARD, f"missing arrays: {', '.join(missing)}")
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise BadValue(Reason.BAD_SHARD, f"unknown arrays: {', '.join(unknown[:5])}")
    version_array = arrays["version"]
    if version_array.shape != () or version_array.dtype.kind not in "iu":
        raise BadValue(Reason.BAD_SHARD, "version must be a 0-d integer array")
    version = check_version(int(version_array))
    sha = check_sha256(str(_strings(arrays["model_sha256"], "model_sha256", 0)))
    names = [str(n) for n in _strings(arrays["tensors"], "tensors", 1)]
    if len(set(names)) != len(names):
        raise BadValue(Reason.BAD_SHARD, "tensors holds a name twice")
    rows = arrays["time"].shape[0] if arrays["time"].ndim == 1 else -1
    time_dtype = arrays["time"].dtype
    if rows < 0 or not (time_dtype.kind in "iu" or (time_dtype.kind == "f" and time_dtype.itemsize >= 8)):
        # float32 epoch seconds would be 128 s coarse today: refused rather than silently rounded
        raise BadValue(Reason.BAD_SHARD, f"time must be a 1-d float64 or integer array, not {time_dtype}")
    for name in ("min", "max"):
        if arrays[name].dtype.kind != "f" or arrays[name].shape != (rows, len(names)):
            raise BadValue(Reason.BAD_SHARD, f"{name} must be a float array of shape {(rows, len(names))}, not "
                                             f"{arrays[name].dtype} {arrays[name].shape}")
    if "count" in arrays and (arrays["count"].dtype.kind not in "iu" or arrays["count"].shape != (rows,)):
        raise BadValue(Reason.BAD_SHARD, f"count must be an integer array of shape {(rows,)}")
    for name in ("device", "app_version"):
        if name in arrays and _strings(arrays[name], name, 1).shape != (rows,):
            raise BadValue(Reason.BAD_SHARD, f"{name} must have {rows} rows")
    if ("tag_keys" in arrays) != ("tag_values" in arrays):
        raise BadValue(Reason.BAD_SHARD, "tag_keys and tag_values come together")
    if "tag_keys" in arrays:
        keys = _strings(arrays["tag_keys"], "tag_keys", 1)
        if _strings(arrays["tag_values"], "tag_values", 2).shape != (rows, keys.shape[0]):
            raise BadValue(Reason.BAD_SHARD, f"tag_values must have shape {(rows, keys.shape[0])}")
    return version, sha, names


def _row_problem(lo: np.ndarray, hi: np.ndarray, names: list[str]) -> BadValue | None:
    for what, values in (("min", lo), ("max", hi)):
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
        if bad.any():
            column = int(np.argmax(bad))
            return BadValue(Reason.NON_FINITE, f"{what} of {names[column]!r} is {float(values[column])!r}")
    above = lo > hi
    if above.any():
        column = int(np.argmax(above))
        return BadValue(Reason.MIN_ABOVE_MAX, f"{names[column]!r}: min {float(lo[column])!r} > "
                                              f"max {float(hi[column])!r}")
    return None


def rows(arrays: Mapping[str, np.ndarray], version: int, sha: str,
         names: list[str]) -> Iterator[tuple[int, Record | BadValue]]:
    """Each row's Record, or the BadValue that refuses it, with the row index."""
    lo_all = np.asarray(arrays["min"], dtype=np.float64)
    hi_all = np.asarray(arrays["max"], dtype=np.float64)
    times = arrays["time"]
    counts = arrays.get("count")
    devices, apps = arrays.get("device"), arrays.get("app_version")
    tag_keys = [str(k) for k in arrays["tag_keys"]] if "tag_keys" in arrays else []
    tag_values = arrays.get("tag_values")
    for row in range(times.shape[0]):
        problem = _row_problem(lo_all[row], hi_all[row], names)
        if problem is not None:
            yield row, problem
            continue
        try:
            time = check_time(times[row].item())
            count = check_count(counts[row].item()) if counts is not None else 1
        except BadValue as exc:
            yield row, exc
            continue
        tags: tuple[tuple[str, str], ...] = ()
        if tag_values is not None:
            tags = tuple(sorted((key, str(value)) for key, value in zip(tag_keys, tag_values[row], strict=True)
                                if value != ""))
        segment = SegmentKey(device=str(devices[row]) if devices is not None else "",
                             app_version=str(apps[row]) if apps is not None else "", tags=tags)
        tensors = {name: (float(lo) + 0.0, float(hi) + 0.0)
                   for name, lo, hi in zip(names, lo_all[row], hi_all[row], strict=True)}
        yield row, Record(model_sha256=sha, time=time, tensors=tensors, count=count, segment=segment,
                          version=version)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> np.ndarray:
    """One array, its header checked first: plain dtype, a size within ``budget`` and within the member."""
    fmt = np.lib.format
    with archive.open(info) as member:
        version = fmt.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(member)
        if dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"{info.filename} holds {dtype} data (objects are never unpickled)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > budget or nbytes > info.file_size:
            raise ValueError(f"{info.filename} declares {nbytes} bytes: over the shard budget or the member's size")
    with archive.open(info) as member:
        return fmt.read_array(member, allow_pickle=False)


def load_arrays(handle: BinaryIO, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an open .npz file; raises BadValue on anything that is not a valid, plain npz.

    Headers are read before data, so a shard declaring more than ``limit`` bytes in total (MAX_SHARD_BYTES;
    a decompression bomb) is refused without allocating it. Any exception while decoding counts as a bad
    shard (a corrupt zip raises BadZipFile, zlib.error, EOFError, ValueError, ... depending on where it is
    cut): the file was opened, so what fails is its content.
    """
    budget = MAX_SHARD_BYTES if limit is None else limit
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(handle) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename[:80]!r} is not an .npy array")
                array = _read_member(archive, info, budget)
                budget -= array.nbytes
                arrays[info.filename[:-4]] = array
    except Exception as exc:  # any decoding failure: see the docstring
        raise BadValue(Reason.BAD_SHARD, f"not a readable .npz ({type(exc).__name__}: {exc})"[:200]) from None
    return arrays
