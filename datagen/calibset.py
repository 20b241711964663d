"""Read a calibration set written by ``edgeq datagen``, and regenerate it from its manifest alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError

SET_FILE = "datagen.json"


@dataclass(frozen=True)
class CalibrationSetDir:
    path: Path
    document: dict[str, Any]
    records: tuple[dict[str, Any], ...]
    images: np.ndarray
    labels: np.ndarray | None

    @property
    def preprocessing(self) -> Preprocessing | None:
        spec = self.document.get("preprocessing")
        return Preprocessing.from_dict(spec) if spec else None

    @property
    def conditions(self) -> list[str]:
        return [r["condition"] for r in self.records]


def is_set(path: str | Path) -> bool:
    return (Path(path) / SET_FILE).is_file()


def load_set(path: str | Path) -> CalibrationSetDir:
    """Images, labels, manifest records and configuration of a set folder."""
    from datagen.generate import SET_FORMAT, SET_VERSION

    folder = Path(path)
    try:
        document = json.loads((folder / SET_FILE).read_text())
        records = tuple(json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder} is not a readable calibration set ({exc})") from None
    if document.get("format") != SET_FORMAT or document.get("version") != SET_VERSION:
        raise InputError(f"{folder} is not an edgeq calibration set of version {SET_VERSION}")
    shards = sorted({r["shard"] for r in records})
    images, labels = [], []
    try:
        for shard in shards:
            with np.load(folder / shard, allow_pickle=False) as archive:
                images.append(archive["images"])
                if "labels" in archive.files:
                    labels.append(archive["labels"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the images of {folder}: {exc}") from None
    stacked = np.concatenate(images) if images else np.zeros((0,), np.uint8)
    if len(stacked) != len(records):
        raise InputError(f"{folder}: manifest lists {len(records)} samples, the shards hold {len(stacked)}")
    return CalibrationSetDir(path=folder, document=document, records=records, images=stacked,
                             labels=np.concatenate(labels) if labels else None)


def regenerate(path: str | Path) -> np.ndarray:
    """Render every sample again from the manifest and the original source: the bytes must match."""
    from datagen.conditions import apply_condition, get_condition, load_custom_conditions, registry_with
    from datagen.generate import DatagenConfig, _decoded
    from datagen.sources import open_source

    loaded = load_set(path)
    config_doc = dict(loaded.document["config"])
    config = DatagenConfig(
        source=config_doc["source"], conditions=tuple(tuple(c) for c in config_doc["conditions"]),  # type: ignore[misc]
        n=config_doc["n"], severity=config_doc["severity"], seed=config_doc["seed"],
        size=tuple(config_doc["size"]) if config_doc["size"] else None,  # type: ignore[arg-type]
        channels=config_doc["channels"], custom_conditions=config_doc.get("custom_conditions"))
    custom = load_custom_conditions(config.custom_conditions) if config.custom_conditions else {}
    registry = registry_with(custom)
    source = open_source(config.source)
    items = {item.id: item for item in source.items}
    out = []
    for record in loaded.records:
        item = items.get(record["source_id"])
        if item is None or item.sha256 != record["source_sha256"]:
            raise InputError(f"source image {record['source_id']} is missing or changed since generation")
        image, _ = _decoded(source, item, config)
        condition = get_condition(record["condition"], registry)
        rendered, _ = apply_condition(image, condition, record["severity"], record["seed"])
        out.append(rendered)
    return np.stack(out)
