"""One production log record: its fields, and the strict check every record passes before it is used.

The same check serves the JSONL reader, the npz shard reader and the writers (so a writer never produces a
record the reader would refuse). docs/production_log.md is the user-facing description.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
#: Versions this reader understands.
KNOWN_VERSIONS = frozenset({FORMAT_VERSION})
#: Largest magnitude of a min or max: activations are float32, so a larger value is no real measurement.
FLOAT32_MAX = 3.4028234663852886e38
_PLAIN = (float, int)  # exact types: bool is an int subclass and is refused
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The keys of a JSONL record; any other key is refused (a new key is a version bump).
REQUIRED_KEYS = ("version", "model_sha256", "time", "tensors")
OPTIONAL_KEYS = ("count", "device", "app_version", "tags")
KEYS = frozenset(REQUIRED_KEYS + OPTIONAL_KEYS)


class Reason(enum.Enum):
    """Why a line, record or shard was refused. The value is what reports print."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TRUNCATED_LINE = "truncated_line"  # the file's last line has no newline and does not parse
    LINE_TOO_LONG = "line_too_long"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_KEY = "missing_key"
    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_VERSION = "unknown_version"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"  # NaN, Infinity, or a number beyond float32's range
    MIN_ABOVE_MAX = "min_above_max"
    MODEL_MISMATCH = "model_mismatch"
    UNKNOWN_TENSOR = "unknown_tensor"
    BAD_SHARD = "bad_shard"  # an .npz that is no zip, or lacks or mismatches an array (the whole shard)


class BadValue(ValueError):
    """A record failed the check: the reason and a short detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, order=True)
class SegmentKey:
    """Which slice of the fleet a record belongs to: device model, app version, tags (sorted pairs)."""

    device: str = ""
    app_version: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "app_version": self.app_version, "tags": dict(self.tags)}


@dataclass(frozen=True)
class Record:
    """A checked record: statistics of ``count`` inferences of the model ``model_sha256`` at ``time``.

    ``tensors`` maps a tensor name (as the instrument sidecar names it) to (min, max), both finite floats.
    """

    model_sha256: str
    time: float  # Unix epoch seconds, UTC
    tensors: Mapping[str, tuple[float, float]]
    count: int = 1
    segment: SegmentKey = field(default_factory=SegmentKey)
    version: int = FORMAT_VERSION


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(Reason.WRONG_TYPE, f"{what} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadValue(Reason.NON_FINITE, f"{what} is beyond float range") from None
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise BadValue(Reason.NON_FINITE, f"{what} is {number!r}")
    return number + 0.0  # -0.0 becomes 0.0: min/max of equal values then never depend on the order


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadValue(Reason.WRONG_TYPE, f"{what} is {type(value).__name__}, not a string")
    return value


def check_time(value: Any) -> float:
    time = _number(value, "time")
    if time < 0:
        raise BadValue(Reason.WRONG_TYPE, f"time {time!r} is before 1970")
    return time


def check_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(Reason.WRONG_TYPE, f"count is {type(value).__name__}, not an integer")
    if value < 1:
        raise BadValue(Reason.WRONG_TYPE, f"count {value} is below 1")
    return value


def check_sha256(value: Any) -> str:
    text = _text(value, "model_sha256")
    if not SHA256.match(text):
        raise BadValue(Reason.WRONG_TYPE, "model_sha256 is not 64 lowercase hex digits")
    return text


def check_extremes(name: str, lo: Any, hi: Any) -> tuple[float, float]:
    low, high = _number(lo, f"min of {name!r}"), _number(hi, f"max of {name!r}")
    if low > high:
        raise BadValue(Reason.MIN_ABOVE_MAX, f"{name!r}: min {low!r} > max {high!r}")
    return low, high


def check_tags(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise BadValue(Reason.WRONG_TYPE, f"tags is {type(value).__name__}, not an object")
    for key, tag in value.items():
        _text(key, "a tag name")
        _text(tag, f"tag {key!r}")
    return tuple(sorted(value.items()))


def check_tensors(value: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(value, dict):
        raise BadValue(Reason.WRONG_TYPE, f"tensors is {type(value).__name__}, not an object")
    checked: dict[str, tuple[float, float]] = {}
    for name, pair in value.items():
        if type(name) is str and type(pair) is list and len(pair) == 2:  # the fast path; any doubt: the slow one
            lo, hi = pair
            if type(lo) in _PLAIN and type(hi) in _PLAIN and -FLOAT32_MAX <= lo <= hi <= FLOAT32_MAX:
                checked[name] = (float(lo) + 0.0, float(hi) + 0.0)
                continue
        _text(name, "a tensor name")
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadValue(Reason.WRONG_TYPE, f"tensor {name!r} is not a [min, max] pair")
        checked[name] = check_extremes(name, pair[0], pair[1])
    return checked


def check_version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(Reason.WRONG_TYPE, f"version is {type(value).__name__}, not an integer")
    if value not in KNOWN_VERSIONS:
        raise BadValue(Reason.UNKNOWN_VERSION, f"version {value} (this reader knows {sorted(KNOWN_VERSIONS)})")
    return value


def record_from_json(obj: Any) -> Record:
    """Check one parsed JSONL value and return it as a Record; raise BadValue with the first problem."""
    if not isinstance(obj, dict):
        raise BadValue(Reason.NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, not an object")
    missing = [key for key in REQUIRED_KEYS if key not in obj]
    if missing:
        raise BadValue(Reason.MISSING_KEY, ", ".join(missing))
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise BadValue(Reason.UNKNOWN_KEY, ", ".join(unknown[:5]))
    version = check_version(obj["version"])
    segment = SegmentKey(device=_text(obj.get("device", ""), "device"),
                         app_version=_text(obj.get("app_version", ""), "app_version"),
                         tags=check_tags(obj.get("tags", {})))
    return Record(model_sha256=check_sha256(obj["model_sha256"]), time=check_time(obj["time"]),
                  tensors=check_tensors(obj["tensors"]), count=check_count(obj.get("count", 1)),
                  segment=segment, version=version)


def record_to_json(record: Record) -> dict[str, Any]:
    """The JSONL object of ``record``; optional keys only when they differ from their default."""
    obj: dict[str, Any] = {"version": record.version, "model_sha256": record.model_sha256, "time": record.time}
    if record.count != 1:
        obj["count"] = record.count
    if record.segment.device:
        obj["device"] = record.segment.device
    if record.segment.app_version:
        obj["app_version"] = record.segment.app_version
    if record.segment.tags:
        obj["tags"] = dict(record.segment.tags)
    obj["tensors"] = {name: [lo, hi] for name, (lo, hi) in record.tensors.items()}
    return obj


def check_expectations(record: Record, models: frozenset[str] | None, tensors: frozenset[str] | None) -> None:
    """Raise BadValue when the record comes from another model or names a tensor outside ``tensors``."""
    if models is not None and record.model_sha256 not in models:
        raise BadValue(Reason.MODEL_MISMATCH, f"model_sha256 {record.model_sha256[:12]}... is not the expected model")
    if tensors is not None:
        unknown = [name for name in record.tensors if name not in tensors]
        if unknown:
            raise BadValue(Reason.UNKNOWN_TENSOR, ", ".join(repr(n) for n in unknown[:3]))
