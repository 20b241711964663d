"""Images per second of every built-in condition (severity 3) at 96×96 and 224×224, 1 and 2 workers.

Usage: python benchmarks/datagen_throughput.py [--images 400] [--repeats 3] [--no-reference]

Inputs are seeded square crops of the bundled real photos, resized with INTER_AREA. Each worker
process applies the condition with the per-sample seed ``sample_seed(base, condition, index, 3)``
and returns a SHA-256 of every output image; the benchmark asserts the digests are identical for
every worker count, i.e. that the result does not depend on how the work is split. Timed: applying
the condition (not PNG encoding or disk writes); the pools are started and warmed before timing and
OpenCV runs one thread per worker, so the worker process is the unit of scaling. Workers are
spawned, not forked: in a child forked after the parent used OpenCV's thread pool,
``cv2.setNumThreads`` deadlocks (seen here with OpenCV 5.0). Best of
``--repeats``. Reference rows time transforms the built-ins deliberately do *not* use.
Target: >= 1000 img/s at 96×96 for every condition except fog-like ones.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

SEVERITY = 3
BASE_SEED = 20261123
TARGET_96 = 1000.0
SIZES = (96, 224)
WORKERS = (1, 2)
# Conditions the built-ins avoid because of their cost, timed for the record (custom-file format).
REFERENCE_YAML = """\
ref_randomfog:
  description: "albumentations RandomFog (particle model) at a severity-3-like fog coefficient"
  transforms:
    - RandomFog: {fog_coef_range: [0.3, 0.4]}
ref_shotnoise:
  description: "built-in noise with ShotNoise (Poisson in linear light) instead of ISONoise"
  transforms:
    - GaussNoise: {std_range: [0.03, 0.045], mean_range: [0.0, 0.0], per_channel: true}
    - ShotNoise: {scale_range: [0.005, 0.01]}
"""

# Per worker process: the inputs (rebuilt from the seed, not pickled) and the conditions by name.
_IMAGES: dict[int, np.ndarray] = {}
_REGISTRY: dict = {}


def make_inputs(size: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` seeded square crops (50–100 % of the short side) of the bundled photos, resized."""
    import cv2

    from datagen.bundled import load_photos

    photos = list(load_photos().values())
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out[i] = cv2.resize(photo[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    return out


def _init_worker(registry: dict, count: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    _REGISTRY.update(registry)
    for size in SIZES:
        _IMAGES[size] = make_inputs(size, count)


def _work(job: tuple[str, int, int, int]) -> list[str]:
    """Apply one condition to images [start, stop) of one size; SHA-256 of each output."""
    from datagen.condition_engine import apply_condition, sample_seed

    name, size, start, stop = job
    condition, images = _REGISTRY[name], _IMAGES[size]
    digests = []
    for index in range(start, stop):
        out, _ = apply_condition(images[index], condition, SEVERITY, sample_seed(BASE_SEED, name, index, SEVERITY))
        digests.append(hashlib.sha256(out.tobytes()).hexdigest())
    return digests


def measure(pool, name: str, size: int, count: int, chunk: int, repeats: int) -> tuple[float, list[str]]:
    """Best images/s over ``repeats`` runs, and the per-image digests (the same every run)."""
    jobs = [(name, size, start, min(start + chunk, count)) for start in range(0, count, chunk)]
    pool.map(_work, jobs[:2])  # warm: pipelines are built once per process
    best, digests = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = [d for part in pool.map(_work, jobs, chunksize=1) for d in part]
        rate = count / (time.perf_counter() - started)
        assert digests is None or result == digests, f"{name}: a repeat gave different images"
        best, digests = max(best, rate), result
    assert digests is not None
    return best, digests


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="images per size and condition")
    parser.add_argument("--reference-images", type=int, default=40, help="images for the slow reference rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference rows")
    args = parser.parse_args()

    import albumentations
    import cv2

    from datagen.conditions import CONDITIONS
    from datagen.custom_conditions import load_custom_conditions

    registry = dict(CONDITIONS)
    if not args.no_reference:
        with tempfile.TemporaryDirectory() as tmp:
            ref_file = Path(tmp) / "reference.yaml"
            ref_file.write_text(REFERENCE_YAML)
            registry.update(load_custom_conditions(ref_file))
    rows = list(registry)

    context = mp.get_context("spawn")
    init_args = (registry, max(args.images, args.reference_images))
    pools = {n: context.Pool(n, initializer=_init_worker, initargs=init_args) for n in WORKERS}
    results: dict[tuple[str, int, int], float] = {}
    try:
        for name in rows:
            count = args.reference_images if name.startswith("ref_") else args.images
            for size in SIZES:
                seen: dict[int, list[str]] = {}
                for workers, pool in pools.items():
                    chunk = max(1, count // (8 * workers))
                    results[name, size, workers], seen[workers] = measure(pool, name, size, count, chunk, args.repeats)
                first = seen[WORKERS[0]]
                assert all(d == first for d in seen.values()), f"{name} {size}px: output depends on worker count"
                print(f"{name} {size}px: " + ", ".join(f"{w} worker(s) {results[name, size, w]:.0f} img/s"
                                                        for w in WORKERS) + " (identical outputs)", file=sys.stderr)
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()

    print(f"{datetime.date.today()}, {os.cpu_count()} cores {platform.machine()} ({cpu_model()}), "
          f"Python {platform.python_version()}, "
          f"albumentations {albumentations.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}; "
          f"severity {SEVERITY}, {args.images} images per cell ({args.reference_images} for reference rows), "
          f"best of {args.repeats}; outputs identical for 1 and 2 workers: yes")
    print()
    print("| condition | 96 px, 1 worker | 96 px, 2 workers | 224 px, 1 worker | 224 px, 2 workers "
          "| ≥ 1000 img/s at 96 px |")
    print("|---|---:|---:|---:|---:|---|")
    for name in rows:
        cells = [f"{results[name, size, w]:.0f}" for size in SIZES for w in WORKERS]
        best_96 = max(results[name, 96, w] for w in WORKERS)
        single_96 = results[name, 96, 1]
        verdict = ("yes" if single_96 >= TARGET_96 else
                   "with 2 workers" if best_96 >= TARGET_96 else "**no**")
        label = f"{name} (reference, not built in)" if name.startswith("ref_") else name
        print(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
