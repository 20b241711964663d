"""Generate a condition-stratified calibration set: plan the samples, render them, write the set.

Planning and rendering are separate: the plan (which source image under which condition, with which
seed) is a pure function of the source, the configuration and the seed; rendering one sample depends
only on its plan entry. So no sample depends on generation order or worker count, and the manifest
alone reproduces every sample byte for byte.

Safety: paths are resolved and checked before any work (:mod:`datagen.outputs`); rendering streams
into a staging folder beside the output, one shard at a time; an error, Ctrl-C or SIGTERM stops the
worker processes and removes the staging folder, so the output either appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.condition_engine import apply_condition, sample_seed
from datagen.conditions import SEVERITIES, Condition, get_condition
from datagen.limits import (
    MAX_SAMPLES,
    MAX_SET_BYTES,
    MAX_WORKERS,
    check_size,
    clip,
    human_bytes,
    quote,
)
from datagen.outputs import (
    MARKER_TEXT,
    OUTPUT_MARKER,
    check_overlap,
    check_replaceable,
    install,
    resolve,
    staging_folder,
)
from datagen.sources import DecodeError, Source, SourceItem, open_source, source_path, to_channels
from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError, Terminated, UsageError  # Terminated: SIGTERM/SIGHUP, unwound like Ctrl-C
from edgeq.execute import Executor, ExecutorSpec, Job, open_executor
from edgeq.execute.base import no_state
from edgeq.execute.processes import termination_signals
from edgeq.npzio import save_npz
from edgeq.progress import task
from edgeq.versions import package_versions

SET_FORMAT = "edgeq-calibration-set"
SET_VERSION = 1
SHARD_SIZE = 4096
SET_PACKAGES = ("edgeq", "albumentations", "opencv-python-headless", "numpy", "pillow")  # recorded per set
#: Largest condition weight (``noise:2``): weights are relative, this only keeps the arithmetic finite.
MAX_WEIGHT = 1e6
MAX_SEED = 2**63 - 1




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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _weight(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0 < value <= MAX_WEIGHT)


def parse_conditions(text: str) -> tuple[tuple[str, float], ...]:
    """``noise,low_light:2,original`` -> ((noise, 1), (low_light, 2), (original, 1))."""
    parsed = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"bad condition weight in {quote(part)}") from None
        if not _weight(value):
            raise UsageError(f"condition weight must be a number in (0, {MAX_WEIGHT:g}] in {quote(part)}")
        parsed.append((name, value))
    if not parsed:
        raise UsageError("give at least one condition")
    if len({n for n, _ in parsed}) != len(parsed):
        raise UsageError("a condition is listed twice")
    return tuple(parsed)


def check_config(config: DatagenConfig, error: type[Exception] = UsageError, where: str = "") -> None:
    """Every field of ``config`` of the right type and within its range (``error`` otherwise)."""
    prefix = f"{where}: " if where else ""

    def fail(message: str) -> None:
        raise error(prefix + message)

    if not isinstance(config.source, str) or not config.source:
        fail(f"source must be a non-empty string, got {quote(config.source)}")
    conditions = config.conditions
    if not isinstance(conditions, tuple | list) or not conditions:
        fail(f"conditions must be a non-empty list of (name, weight), got {quote(conditions)}")
    for entry in conditions:
        if (not isinstance(entry, tuple | list) or len(entry) != 2 or not isinstance(entry[0], str)
                or not entry[0] or not _weight(entry[1])):
            fail(f"each condition must be (name, weight in (0, {MAX_WEIGHT:g}]), got {quote(entry)}")
    if len({entry[0] for entry in conditions}) != len(conditions):
        fail("a condition is listed twice")
    if not _is_int(config.n) or not 1 <= config.n <= MAX_SAMPLES:
        fail(f"--n must be an integer in 1..{MAX_SAMPLES}, got {quote(config.n)}")
    if not _is_int(config.severity) or config.severity not in SEVERITIES:
        fail(f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {quote(config.severity)}")
    if not _is_int(config.seed) or not 0 <= config.seed <= MAX_SEED:
        fail(f"--seed must be an integer in 0..2**63-1, got {quote(config.seed)}")
    if config.size is not None:
        check_size(config.size, "--size", error)
    if not _is_int(config.channels) or config.channels not in (1, 3):
        fail(f"channels must be 1 or 3, got {quote(config.channels)}")
    if not isinstance(config.strict, bool):
        fail(f"strict must be true or false, got {quote(config.strict)}")
    if config.custom_conditions is not None and (not isinstance(config.custom_conditions, str)
                                                 or not config.custom_conditions):
        fail(f"custom_conditions must be a path, got {quote(config.custom_conditions)}")
    pp = config.preprocessing
    if pp is not None:
        if not isinstance(pp, Preprocessing):
            fail(f"preprocessing must be a Preprocessing, got {type(pp).__name__}")
        if pp.size is not None:
            check_size(pp.size, "preprocessing size", error)
        for name, values in (("mean", pp.mean), ("std", pp.std)):
            if (not isinstance(values, tuple | list) or len(values) not in (1, config.channels)
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                               for v in values)):
                fail(f"preprocessing {name} must be 1 or {config.channels} finite numbers, got {quote(values)}")
        if any(v == 0 for v in pp.std):
            fail("preprocessing std must not contain 0")


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
    if config.size is not None and image.shape[:2] != tuple(config.size):
        from PIL import Image

        height, width = config.size
        plane = image[..., 0] if image.shape[2] == 1 else image
        resized = np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR))
        image = resized.reshape(height, width, image.shape[2])
        notes.append(f"resized to {height}x{width} (bilinear)")
    return np.ascontiguousarray(image), "; ".join(notes)


def plan(source: Source, config: DatagenConfig,
         decodable: Callable[[SourceItem], str | None]) -> tuple[list[PlannedSample], list[dict[str, str]]]:
    """Which source image under which condition: balanced across strata, seeded per condition.

    ``decodable(item)`` returns None for a usable image, or why it cannot be used (a reject).
    """
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
            reason = decodable(item)
            if reason is not None:
                rejected[item.id] = reason
                continue
            chosen.append(item)
        if len(chosen) < counts[name]:
            example = next(iter(sorted(rejected.items())), None)
            hint = f" ({len(rejected)} rejected, e.g. {example[0]}: {example[1]})" if example else ""
            raise InputError(f"condition '{name}' needs {counts[name]} images but {source.spec} has only "
                             f"{len(chosen)} usable{hint}; lower --n or add images")
        for k, item in enumerate(chosen):
            samples.append(PlannedSample(
                id=f"{name}-{k:05d}", source_id=item.id, source_sha256=item.sha256, label=item.label,
                condition=name, severity=config.severity,
                seed=sample_seed(config.seed, name, item.id, config.severity)))
    return samples, [{"source_id": k, "reason": v} for k, v in sorted(rejected.items())]


def _render(args: tuple[np.ndarray, Condition, int, int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    image, condition, severity, seed = args
    return apply_condition(image, condition, severity, seed)


def _render_item(_state: None, job: tuple[np.ndarray, Condition, int, int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    return _render(job)


def _render_all(jobs: list[tuple[np.ndarray, Condition, int, int]], executor: Executor | None,
                consume: Callable[[tuple[np.ndarray, list[dict[str, Any]]]], None]) -> None:
    """Render ``jobs`` in order and hand each result to ``consume``; workers never outlive this call."""
    if executor is None or executor.workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            consume(_render(job))
        return
    with contextlib.closing(executor.imap(Job(no_state, _render_item), jobs, chunksize=16)) as results:
        for result in results:  # closing stops the workers now if consume fails or a signal arrives
            consume(result)


class _SignalState:
    """Which signals :func:`_signals_as_exceptions` took over (one generation at a time per process)."""

    active = False
    taken: tuple[int, ...] = ()


def _handle_signal(signum: int, _frame: object) -> None:
    for s in _SignalState.taken:  # one is enough: a second signal must not interrupt the cleanup
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """While generating in the main thread, SIGTERM/SIGHUP raise :class:`Terminated` so cleanup runs.

    Only signals still at their default disposition are taken over (the ``edgeq`` command installs its
    own equivalent handler first), and only for the duration.
    """
    if threading.current_thread() is not threading.main_thread() or _SignalState.active:
        yield
        return
    previous = {s: signal.getsignal(s) for s in termination_signals()}
    taken = [s for s, handler in previous.items() if handler is signal.SIG_DFL]
    for s in taken:
        signal.signal(s, _handle_signal)
    _SignalState.active, _SignalState.taken = True, tuple(taken)
    try:
        yield
    finally:
        _SignalState.active, _SignalState.taken = False, ()
        for s in taken:
            signal.signal(s, previous[s])


def _inputs(config: DatagenConfig) -> list[tuple[str, Path]]:
    """The resolved paths generation reads (source, custom conditions)."""
    inputs = []
    source = source_path(config.source)
    if source is not None:
        inputs.append(("source", resolve(source, "source")))
    if config.custom_conditions:
        inputs.append(("custom-conditions file", resolve(config.custom_conditions, "custom-conditions")))
    return inputs


def generate(config: DatagenConfig, output: str | Path, workers: int = 1, force: bool = False,
             progress: Callable[[int, int], None] | None = None, executor: Executor | None = None) -> GeneratedSet:
    """Render the set into a staging folder beside ``output`` and move it into place when complete.

    ``force`` replaces an existing *edgeq* set at ``output`` (see :mod:`datagen.outputs`); anything else
    there is refused. The output may not overlap the source or the custom-conditions file. Samples render on
    ``executor`` (docs/executors.md) when one is given, else on ``workers`` spawned processes; the set's bytes do
    not depend on either.
    """
    from datagen.conditions import registry_with
    from datagen.custom_conditions import load_custom_conditions

    check_config(config)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be an integer in 1..{MAX_WORKERS}, got {quote(workers)}")
    output = Path(output)
    resolved = resolve(output, "output")
    check_overlap(resolved, _inputs(config))
    if os.path.lexists(output):
        if not force:
            raise InputError(f"{output} exists; choose a new folder or pass --force")
        check_replaceable(output)
    registry = registry_with(load_custom_conditions(config.custom_conditions) if config.custom_conditions else {})
    conditions = {name: get_condition(name, registry) for name, _ in config.conditions}
    with _signals_as_exceptions():
        source = open_source(config.source)
        decoded: dict[str, tuple[np.ndarray, str]] = {}
        held = 0

        def decodable(item: SourceItem) -> str | None:
            nonlocal held
            if item.id in decoded:  # already decoded for another condition
                return None
            try:
                decoded[item.id] = _decoded(source, item, config)
            except (DecodeError, ValueError, OSError) as exc:
                reason = f"cannot decode: {clip(str(exc), 200)}" if str(exc) else "cannot decode"
                if config.strict:
                    raise InputError(f"{item.id}: {reason} (--strict)") from None
                return reason
            held += decoded[item.id][0].nbytes
            if held > MAX_SET_BYTES:
                raise InputError(f"the decoded source images need more than {human_bytes(MAX_SET_BYTES)}; "
                                 f"give a smaller --size or lower --n")
            return None

        planned, rejects = plan(source, config, decodable)
        shapes = {decoded[s.source_id][0].shape for s in planned}
        if len(shapes) > 1:
            raise InputError(f"source images have different sizes {sorted(shapes)[:3]}...; give --size HxW")
        shape = shapes.pop()
        total = len(planned) * math.prod(shape)
        if total > MAX_SET_BYTES:
            raise InputError(f"{len(planned)} samples of {'x'.join(map(str, shape))} need {human_bytes(total)}, "
                             f"more than the {human_bytes(MAX_SET_BYTES)} budget; lower --n or --size")
        used = {s.source_id for s in planned}
        for key in [k for k in decoded if k not in used]:
            del decoded[key]
        jobs = [(decoded[s.source_id][0], conditions[s.condition], s.severity, s.seed) for s in planned]
        with contextlib.ExitStack() as stack:
            if executor is None and workers > 1:
                executor = stack.enter_context(open_executor(ExecutorSpec("processes", workers=workers)))
            return _write_set(output, config, source, planned, jobs, decoded, rejects, conditions, force, executor,
                              progress)


def _write_set(output: Path, config: DatagenConfig, source: Source, planned: list[PlannedSample],
               jobs: list[tuple[np.ndarray, Condition, int, int]], decoded: Mapping[str, tuple[np.ndarray, str]],
               rejects: list[dict[str, str]], conditions: Mapping[str, Condition], force: bool,
               executor: Executor | None,
               progress: Callable[[int, int], None] | None) -> GeneratedSet:
    """Render ``jobs`` into a staging folder shard by shard, finish the set there and move it into place."""
    from datagen.preview import PER_ROW, contact_sheet

    labelled = all(s.label is not None for s in planned)
    with staging_folder(output) as staging:
        digest = hashlib.sha256()
        records: list[dict[str, Any]] = []
        shard: list[np.ndarray] = []
        thumbs: list[tuple[np.ndarray, str]] = []
        per_condition: dict[str, int] = {}

        def flush() -> None:
            start = len(records) - len(shard)
            arrays = {"images": np.stack(shard)}
            if labelled:
                arrays["labels"] = np.array([s.label for s in planned[start : len(records)]], np.int64)
            _write(lambda: save_npz(staging / f"images-{start // SHARD_SIZE:05d}.npz", arrays), output)
            digest.update(arrays["images"].tobytes())
            shard.clear()

        def consume(result: tuple[np.ndarray, list[dict[str, Any]]]) -> None:
            image, applied = result
            i = len(records)
            sample = planned[i]
            records.append({**asdict(sample), "conversion": decoded[sample.source_id][1], "applied": applied,
                            "shard": f"images-{i // SHARD_SIZE:05d}.npz", "index": i % SHARD_SIZE})
            shard.append(image)
            if per_condition.get(sample.condition, 0) < PER_ROW:
                per_condition[sample.condition] = per_condition.get(sample.condition, 0) + 1
                thumbs.append((image, sample.condition))
            if len(shard) == SHARD_SIZE:
                flush()
            rendered.update(len(records))

        with task("rendering", len(jobs), callback=progress) as rendered:
            _render_all(jobs, executor, consume)
        if shard:
            flush()
        manifest = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        digest.update(manifest)
        counts: dict[str, int] = {}
        for r in records:
            counts[r["condition"]] = counts.get(r["condition"], 0) + 1
        document = {
            "format": SET_FORMAT, "version": SET_VERSION,
            "config": {**asdict(config), "preprocessing": None},
            "preprocessing": config.preprocessing.to_dict() if config.preprocessing else None,
            "source": {"spec": source.spec, "items": len(source.items), "class_names": list(source.class_names)},
            "conditions": {name: {"description": c.description, "spec": c.spec} for name, c in conditions.items()},
            "counts": counts, "samples": len(records), "shape": list(jobs[0][0].shape),
            "labels": labelled, "rejects": rejects, "versions": package_versions(SET_PACKAGES),
            "fingerprint": digest.hexdigest(),
        }
        text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
        _write(lambda: (staging / "manifest.jsonl").write_bytes(manifest), output)
        _write(lambda: (staging / "datagen.json").write_text(text), output)
        _write(lambda: contact_sheet(np.stack([t[0] for t in thumbs]), [t[1] for t in thumbs],
                                     staging / "preview.png"), output)
        _write(lambda: (staging / OUTPUT_MARKER).write_text(MARKER_TEXT), output)
        _write(lambda: os.chmod(staging, 0o755), output)
        if not _write(lambda: install(staging, output, force), output):
            # Another process (a concurrent build) finished the same set first. Sets are deterministic, so
            # a complete one with the same fingerprint is this set; anything else is a real conflict.
            if _fingerprint_of(output) != document["fingerprint"]:
                raise InputError(f"{output} appeared while generating and holds a different set")
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return GeneratedSet(path=output, samples=records, counts=counts, rejects=rejects,
                        fingerprint=document["fingerprint"])


def _write(action: Callable[[], Any], output: Path) -> Any:
    """Run one write into the staging folder; a full disk or an I/O error is the environment's, not a bug."""
    try:
        return action()
    except OSError as exc:
        raise InputError(f"cannot write the set {output}: {exc.strerror or clip(str(exc), 160)}") from None


def _fingerprint_of(output: Path) -> str | None:
    try:
        document = json.loads((output / "datagen.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return document.get("fingerprint") if isinstance(document, dict) else None
