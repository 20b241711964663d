"""Generate a condition-stratified calibration set: plan the samples, render them, write the set.

Planning and rendering are separate: the plan (which source image under which condition, with which
seed) is a pure function of the source, the configuration and the seed; rendering one sample depends
only on its plan entry. So no sample depends on generation order or worker count, and the manifest
alone reproduces every sample byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.conditions import Condition, apply_condition, get_condition, sample_seed
from datagen.sources import Source, SourceItem, open_source, to_channels
from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError, UsageError
from edgeq.npzio import save_npz
from edgeq.versions import package_versions

SET_FORMAT = "edgeq-calibration-set"
SET_VERSION = 1
SHARD_SIZE = 4096
SET_PACKAGES = ("edgeq", "albumentations", "opencv-python-headless", "numpy", "pillow")  # recorded per set


@dataclass(frozen=True)
class DatagenConfig:
    source: str
    conditions: tuple[tuple[str, float], ...]  # (name, weight)
    n: int = 256
    severity: int = 3
    seed: int = 0
    size: tuple[int, int] | None = None  # (height, width)
    channels: int = 3
    preprocessing: Preprocessing | None = None
    strict: bool = False  # fail on an undecodable image instead of skipping it
    custom_conditions: str | None = None  # path of a YAML/JSON file with extra conditions


@dataclass(frozen=True)
class PlannedSample:
    id: str
    source_id: str
    source_sha256: str
    label: int | None
    condition: str
    severity: int
    seed: int


@dataclass
class GeneratedSet:
    path: Path
    samples: list[dict[str, Any]]
    counts: dict[str, int]
    rejects: list[dict[str, str]] = field(default_factory=list)
    fingerprint: str = ""


def parse_conditions(text: str) -> tuple[tuple[str, float], ...]:
    """``noise,low_light:2,original`` -> ((noise, 1), (low_light, 2), (original, 1))."""
    parsed = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"bad condition weight in {part!r}") from None
        if value <= 0:
            raise UsageError(f"condition weight must be positive in {part!r}")
        parsed.append((name, value))
    if not parsed:
        raise UsageError("give at least one condition")
    if len({n for n, _ in parsed}) != len(parsed):
        raise UsageError("a condition is listed twice")
    return tuple(parsed)


def quotas(n: int, weights: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Split ``n`` by weight with the largest-remainder method (ties: the order given)."""
    total = sum(w for _, w in weights)
    exact = [n * w / total for _, w in weights]
    counts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return {name: c for (name, _), c in zip(weights, counts, strict=True)}


def _balanced_order(items: Sequence[SourceItem], rng: np.random.Generator) -> list[SourceItem]:
    """Items interleaved across strata (round robin over sorted strata, each shuffled by ``rng``)."""
    strata: dict[str, list[SourceItem]] = {}
    for item in items:
        strata.setdefault(item.stratum or "", []).append(item)
    shuffled = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(strata.items())]
    order = []
    for rank in range(max(len(g) for g in shuffled)):
        order.extend(g[rank] for g in shuffled if rank < len(g))
    return order


def _decoded(source: Source, item: SourceItem, config: DatagenConfig) -> tuple[np.ndarray, str]:
    image, note = source.decode(item)
    image, channel_note = to_channels(image, config.channels)
    notes = [n for n in (note, channel_note) if n]
    if config.size is not None and image.shape[:2] != config.size:
        from PIL import Image

        height, width = config.size
        plane = image[..., 0] if image.shape[2] == 1 else image
        resized = np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR))
        image = resized.reshape(height, width, image.shape[2])
        notes.append(f"resized to {height}x{width} (bilinear)")
    return np.ascontiguousarray(image), "; ".join(notes)


def plan(source: Source, config: DatagenConfig,
         decodable: Callable[[SourceItem], bool]) -> tuple[list[PlannedSample], list[dict[str, str]]]:
    """Which source image under which condition: balanced across strata, seeded per condition."""
    counts = quotas(config.n, config.conditions)
    samples: list[PlannedSample] = []
    rejected: dict[str, str] = {}
    for name, _ in config.conditions:
        rng = np.random.default_rng(sample_seed(config.seed, name, "plan", config.severity))
        chosen = []
        for item in _balanced_order(source.items, rng):
            if len(chosen) == counts[name]:
                break
            if item.id in rejected:
                continue
            if not decodable(item):
                rejected[item.id] = "cannot decode"
                continue
            chosen.append(item)
        if len(chosen) < counts[name]:
            raise InputError(f"condition '{name}' needs {counts[name]} images but {source.spec} has only "
                             f"{len(chosen)} usable; lower --n or add images")
        for k, item in enumerate(chosen):
            samples.append(PlannedSample(
                id=f"{name}-{k:05d}", source_id=item.id, source_sha256=item.sha256, label=item.label,
                condition=name, severity=config.severity,
                seed=sample_seed(config.seed, name, item.id, config.severity)))
    return samples, [{"source_id": k, "reason": v} for k, v in sorted(rejected.items())]


def _render(args: tuple[np.ndarray, Condition, int, int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    image, condition, severity, seed = args
    return apply_condition(image, condition, severity, seed)


def generate(config: DatagenConfig, output: str | Path, workers: int = 1, force: bool = False,
             progress: Callable[[int, int], None] | None = None) -> GeneratedSet:
    """Render the set into a temporary folder beside ``output`` and move it into place when complete."""
    from datagen.conditions import load_custom_conditions, registry_with

    if config.n < 1:
        raise UsageError("--n must be at least 1")
    if config.channels not in (1, 3):
        raise UsageError("channels must be 1 or 3")
    output = Path(output)
    if output.exists() and not force:
        raise InputError(f"{output} exists; choose a new folder or pass --force")
    registry = registry_with(load_custom_conditions(config.custom_conditions)) if config.custom_conditions \
        else registry_with({})
    conditions = {name: get_condition(name, registry) for name, _ in config.conditions}
    conditions[next(iter(conditions))].pipeline(config.severity)  # validates the severity early
    source = open_source(config.source)
    decoded: dict[str, tuple[np.ndarray, str]] = {}

    def decodable(item: SourceItem) -> bool:
        try:
            decoded[item.id] = _decoded(source, item, config)
            return True
        except (OSError, ValueError, SyntaxError) as exc:
            if config.strict:
                raise InputError(f"cannot decode {item.id}: {exc}") from None
            return False

    planned, rejects = plan(source, config, decodable)
    shapes = {decoded[s.source_id][0].shape for s in planned}
    if len(shapes) > 1:
        raise InputError(f"source images have different sizes {sorted(shapes)[:3]}...; give --size HxW")
    jobs = [(decoded[s.source_id][0], conditions[s.condition], s.severity, s.seed) for s in planned]
    results: list[tuple[np.ndarray, list[dict[str, Any]]]] = []
    if workers > 1:
        # spawn, not fork: OpenCV's thread pool does not survive fork (a child can deadlock).
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(_render, jobs, chunksize=16):
                results.append(result)
                if progress:
                    progress(len(results), len(jobs))
    else:
        for job in jobs:
            results.append(_render(job))
            if progress:
                progress(len(results), len(jobs))
    images = np.stack([r[0] for r in results])
    labels = None if any(s.label is None for s in planned) else np.array([s.label for s in planned], np.int64)
    records = []
    for i, (sample, (_, applied)) in enumerate(zip(planned, results, strict=True)):
        records.append({**asdict(sample), "conversion": decoded[sample.source_id][1], "applied": applied,
                        "shard": f"images-{i // SHARD_SIZE:05d}.npz", "index": i % SHARD_SIZE})
    return _write_set(output, config, source, images, labels, records, rejects, conditions, force)


def _write_set(output: Path, config: DatagenConfig, source: Source, images: np.ndarray, labels: np.ndarray | None,
               records: list[dict[str, Any]], rejects: list[dict[str, str]], conditions: Mapping[str, Condition],
               force: bool) -> GeneratedSet:
    from datagen.preview import contact_sheet

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        raise InputError(f"cannot write to {output.parent}: {exc.strerror or exc}") from None
    try:
        digest = hashlib.sha256()
        for start in range(0, len(images), SHARD_SIZE):
            shard = {"images": images[start : start + SHARD_SIZE]}
            if labels is not None:
                shard["labels"] = labels[start : start + SHARD_SIZE]
            name = f"images-{start // SHARD_SIZE:05d}.npz"
            save_npz(staging / name, shard)
            digest.update(shard["images"].tobytes())
        manifest = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        (staging / "manifest.jsonl").write_text(manifest)
        digest.update(manifest.encode())
        counts: dict[str, int] = {}
        for r in records:
            counts[r["condition"]] = counts.get(r["condition"], 0) + 1
        document = {
            "format": SET_FORMAT, "version": SET_VERSION,
            "config": {**asdict(config), "preprocessing": None},
            "preprocessing": config.preprocessing.to_dict() if config.preprocessing else None,
            "source": {"spec": source.spec, "items": len(source.items), "class_names": list(source.class_names)},
            "conditions": {name: {"description": c.description, "spec": c.spec} for name, c in conditions.items()},
            "counts": counts, "samples": len(records), "shape": list(images.shape[1:]),
            "labels": labels is not None, "rejects": rejects, "versions": package_versions(SET_PACKAGES),
            "fingerprint": digest.hexdigest(),
        }
        (staging / "datagen.json").write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
        contact_sheet(images, [r["condition"] for r in records], staging / "preview.png")
        os.chmod(staging, 0o755)
        if force and output.exists():
            shutil.rmtree(output)
        try:
            os.replace(staging, output)
        except OSError:
            # Another process (a concurrent build) finished the same set first. Sets are deterministic, so
            # a complete one with the same fingerprint is this set; anything else is a real conflict.
            existing = output / "datagen.json"
            if not (existing.is_file() and json.loads(existing.read_text())["fingerprint"] == document["fingerprint"]):
                raise InputError(f"{output} appeared while generating and holds a different set") from None
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return GeneratedSet(path=output, samples=records, counts=counts, rejects=rejects,
                        fingerprint=document["fingerprint"])
