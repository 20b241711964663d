"""Read a calibration set written by ``edgeq datagen``, and regenerate it from its manifest alone.

A set folder is input like any other: ``datagen.json`` and ``manifest.jsonl`` are read within size
budgets, must be UTF-8 JSON, and every field is checked (types, ranges, known conditions, hashes,
shard names) before it is used; the shards' headers are checked before their arrays are allocated,
and the images and manifest must hash to the set's recorded fingerprint. A damaged or edited set is
an ``InputError`` naming the first problem found.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datagen.arrays import load_npz
from datagen.limits import (
    MAX_ARRAY_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SET_BYTES,
    MAX_SIDE,
    decode_utf8,
    human_bytes,
    quote,
    read_capped,
)
from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError

SET_FILE = "datagen.json"
MANIFEST_FILE = "manifest.jsonl"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_RECORD_KEYS = frozenset({"id", "source_id", "source_sha256", "label", "condition", "severity", "seed",
                          "conversion", "applied", "shard", "index"})
_CONFIG_KEYS = frozenset({"source", "conditions", "n", "severity", "seed", "size", "channels", "preprocessing",
                          "strict", "custom_conditions"})


@dataclass(frozen=True)
class CalibrationSetDir:
    path: Path
    document: dict[str, Any]
    records: tuple[dict[str, Any], ...]
    images: np.ndarray
    labels: np.ndarray | None
    config: Any = None  # the DatagenConfig the set was generated with

    @property
    def preprocessing(self) -> Preprocessing | None:
        spec = self.document.get("preprocessing")
        return Preprocessing.from_dict(spec) if spec else None

    @property
    def conditions(self) -> list[str]:
        return [r["condition"] for r in self.records]


def is_set(path: str | Path) -> bool:
    return (Path(path) / SET_FILE).is_file()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(decode_utf8(data, where, "calibration set file"))
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where} is not valid JSON ({type(exc).__name__})") from None


def _config(document: dict[str, Any], where: str) -> Any:
    """The DatagenConfig recorded in ``document``, every field type- and range-checked."""
    from datagen.generate import DatagenConfig, check_config

    raw = document.get("config")
    if not isinstance(raw, dict) or set(raw) != _CONFIG_KEYS:
        raise InputError(f"{where}: 'config' must be an object with the keys {', '.join(sorted(_CONFIG_KEYS))}")
    conditions = raw["conditions"]
    if not isinstance(conditions, list) or not all(isinstance(c, list) for c in conditions):
        raise InputError(f"{where}: config.conditions must be a list of [name, weight], got {quote(conditions)}")
    size = raw["size"]
    if size is not None and not isinstance(size, list):
        raise InputError(f"{where}: config.size must be null or [height, width], got {quote(size)}")
    if raw["preprocessing"] is not None:
        raise InputError(f"{where}: config.preprocessing must be null (the spec is stored under 'preprocessing')")
    preprocessing = document.get("preprocessing")
    if preprocessing is not None:
        preprocessing = Preprocessing.from_dict(preprocessing)
    config = DatagenConfig(
        source=raw["source"], conditions=tuple(tuple(c) for c in conditions), n=raw["n"],  # type: ignore[misc]
        severity=raw["severity"], seed=raw["seed"], size=tuple(size) if size is not None else None,  # type: ignore[arg-type]
        channels=raw["channels"], preprocessing=preprocessing, strict=raw["strict"],
        custom_conditions=raw["custom_conditions"])
    check_config(config, InputError, where)
    return config


def _check_document(document: Any, where: str, records: int) -> Any:
    from datagen.generate import SET_FORMAT, SET_VERSION

    if not isinstance(document, dict):
        raise InputError(f"{where} must hold a JSON object")
    if document.get("format") != SET_FORMAT or document.get("version") != SET_VERSION:
        raise InputError(f"{where} is not an edgeq calibration set of version {SET_VERSION}")
    config = _config(document, where)
    shape = document.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) for v in shape)
            or not all(1 <= v <= MAX_SIDE for v in shape[:2]) or shape[2] != config.channels):
        raise InputError(f"{where}: 'shape' must be [height, width, {config.channels}], got {quote(shape)}")
    if config.size is not None and list(config.size) != shape[:2]:
        raise InputError(f"{where}: 'shape' {quote(shape)} does not match config.size {quote(list(config.size))}")
    if document.get("samples") != config.n or records != config.n:
        raise InputError(f"{where}: config.n is {config.n}, 'samples' says {quote(document.get('samples'))} and "
                         f"the manifest lists {records}")
    if config.n * math.prod(shape) > MAX_SET_BYTES:
        raise InputError(f"{where}: {config.n} samples of {quote(shape)} exceed the "
                         f"{human_bytes(MAX_SET_BYTES)} budget")
    if not isinstance(document.get("labels"), bool):
        raise InputError(f"{where}: 'labels' must be true or false")
    fingerprint = document.get("fingerprint")
    if not isinstance(fingerprint, str) or not _SHA256_RE.fullmatch(fingerprint):
        raise InputError(f"{where}: 'fingerprint' must be a sha256 hex digest, got {quote(fingerprint)}")
    counts = document.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(k, str) and _is_int(v) for k, v in counts.items()):
        raise InputError(f"{where}: 'counts' must map condition names to sample counts")
    rejects = document.get("rejects")
    if not isinstance(rejects, list) or not all(
            isinstance(r, dict) and isinstance(r.get("source_id"), str) and isinstance(r.get("reason"), str)
            for r in rejects):
        raise InputError(f"{where}: 'rejects' must be a list of {{source_id, reason}}")
    return config


def _check_record(record: Any, i: int, config: Any, labelled: bool, where: str) -> None:
    from datagen.generate import MAX_SEED, SHARD_SIZE

    line = f"{where} line {i + 1}"
    if not isinstance(record, dict) or set(record) != _RECORD_KEYS:
        raise InputError(f"{line}: a record must be an object with the keys {', '.join(sorted(_RECORD_KEYS))}")
    names = [c[0] for c in config.conditions]
    problems = [
        (isinstance(record["id"], str) and 0 < len(record["id"]) <= 200, "id"),
        (isinstance(record["source_id"], str) and 0 < len(record["source_id"]) <= 4096, "source_id"),
        (isinstance(record["source_sha256"], str) and _SHA256_RE.fullmatch(record["source_sha256"]), "source_sha256"),
        ((_is_int(record["label"]) if labelled else record["label"] is None), "label"),
        (record["condition"] in names, "condition (not one of the set's conditions)"),
        (record["severity"] == config.severity and _is_int(record["severity"]), "severity"),
        (_is_int(record["seed"]) and 0 <= record["seed"] <= MAX_SEED, "seed"),
        (isinstance(record["conversion"], str), "conversion"),
        (isinstance(record["applied"], list), "applied"),
        (record["shard"] == f"images-{i // SHARD_SIZE:05d}.npz", "shard"),
        (record["index"] == i % SHARD_SIZE and _is_int(record["index"]), "index"),
    ]
    for ok, field_name in problems:
        if not ok:
            value = record.get(field_name.split()[0])
            raise InputError(f"{line}: bad {field_name}: {quote(value)}")


def load_set(path: str | Path) -> CalibrationSetDir:
    """Images, labels, manifest records and configuration of a set folder, all checked."""
    folder = Path(path)
    document_path, manifest_path = folder / SET_FILE, folder / MANIFEST_FILE
    document = _parse_json(read_capped(document_path, MAX_DOCUMENT_BYTES, "calibration set file"), str(document_path))
    manifest = read_capped(manifest_path, MAX_MANIFEST_BYTES, "calibration set manifest")
    lines = [line for line in decode_utf8(manifest, manifest_path, "calibration set manifest").split("\n") if line]
    config = _check_document(document, str(document_path), len(lines))
    records = tuple(_parse_json(line.encode(), f"{manifest_path} line {i + 1}") for i, line in enumerate(lines))
    labelled = document["labels"]
    for i, record in enumerate(records):
        _check_record(record, i, config, labelled, str(manifest_path))
    counts: dict[str, int] = {}
    for record in records:
        counts[record["condition"]] = counts.get(record["condition"], 0) + 1
    if counts != document["counts"]:
        raise InputError(f"{document_path}: 'counts' {quote(document['counts'])} do not match the manifest")
    shape = tuple(document["shape"])
    digest = hashlib.sha256()
    images, labels = [], []
    for shard in dict.fromkeys(r["shard"] for r in records):
        members = [r for r in records if r["shard"] == shard]
        arrays = load_npz(folder / shard, MAX_ARRAY_BYTES)
        where = folder / shard
        if set(arrays) != ({"images", "labels"} if labelled else {"images"}):
            raise InputError(f"{where}: expected the arrays {'images and labels' if labelled else 'images'}, "
                             f"got {quote(sorted(arrays))}")
        shard_images = arrays["images"]
        if shard_images.dtype != np.uint8 or shard_images.shape != (len(members), *shape):
            raise InputError(f"{where}: expected uint8 images of shape {(len(members), *shape)}, got "
                             f"{shard_images.dtype} {shard_images.shape}")
        if labelled:
            shard_labels = arrays["labels"]
            if shard_labels.dtype != np.int64 or shard_labels.shape != (len(members),) \
                    or shard_labels.tolist() != [r["label"] for r in members]:
                raise InputError(f"{where}: labels do not match the manifest")
            labels.append(shard_labels)
        digest.update(np.ascontiguousarray(shard_images).tobytes())
        images.append(shard_images)
    digest.update(manifest)
    if digest.hexdigest() != document["fingerprint"]:
        raise InputError(f"{folder}: images or manifest changed since the set was written (fingerprint mismatch)")
    stacked = np.concatenate(images)
    return CalibrationSetDir(path=folder, document=document, records=records, images=stacked,
                             labels=np.concatenate(labels) if labels else None, config=config)


def regenerate(path: str | Path) -> np.ndarray:
    """Render every sample again from the manifest and the original source: the bytes must match."""
    from datagen.condition_engine import apply_condition
    from datagen.conditions import get_condition, registry_with
    from datagen.custom_conditions import load_custom_conditions
    from datagen.generate import _decoded
    from datagen.sources import DecodeError, open_source

    loaded = load_set(path)
    config = loaded.config
    custom = load_custom_conditions(config.custom_conditions) if config.custom_conditions else {}
    registry = registry_with(custom)
    conditions = {name: get_condition(name, registry) for name, _ in config.conditions}
    source = open_source(config.source)
    items = {item.id: item for item in source.items}
    out = []
    for record in loaded.records:
        item = items.get(record["source_id"])
        if item is None or item.sha256 != record["source_sha256"]:
            raise InputError(f"source image {quote(record['source_id'])} is missing or changed since generation")
        try:
            image, _ = _decoded(source, item, config)
        except (DecodeError, ValueError, OSError) as exc:
            raise InputError(f"source image {quote(record['source_id'])} cannot be decoded any more: {exc}") from None
        rendered, _ = apply_condition(image, conditions[record["condition"]], record["severity"], record["seed"])
        out.append(rendered)
    return np.stack(out)
