"""What collecting activation statistics costs next to bare inference (docs/collect_speed.md).

For each model, in one run and on the same seeded samples (uniform in [-1, 1], 1 thread): ``bare``, the float
model on XNNPACK, set_tensor + invoke per sample and nothing else; ``old``, ``collect(engine="replay")``, the
path every model took before (builtin kernels with preserve_all_tensors, every tensor copied and binned by
``TensorStats.update``); ``new``, ``collect()`` as it runs now (the outputs engine on XNNPACK, ``Binner``).
The three alternate over ``--rounds`` rounds and each reports its median, so load from other processes hits
all alike; wall and CPU (process) seconds are both kept. ``collect`` times include its setup (parsing,
building the outputs model, creating the interpreter); bare times do not.

    .venv/bin/python benchmarks/collect_speed.py [--samples 100] [--rounds 3] [--mobilenet PATH] [--write]

Models: the demo CNN (tests/data/demo) and a MobileNetV2-224 with random weights (benchmarks/mobilenet_models.py,
built into --work unless --mobilenet names one). Random weights change no op, shape or kernel.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgeq.calib.collect import collect, model_inputs  # noqa: E402
from edgeq.calib.data import CalibrationSet  # noqa: E402
from edgeq.tflite import model as tfl  # noqa: E402
from edgeq.tflite.runtime import CpuKernels, make_interpreter  # noqa: E402

DOC = ROOT / "docs" / "collect_speed.md"
BEGIN, END = "<!-- collect_speed:begin -->", "<!-- collect_speed:end -->"


def _bare(model: bytes, data: CalibrationSet) -> tuple[float, float]:
    """(wall, cpu) seconds of the invokes alone (not of creating the interpreter)."""
    interpreter, _ = make_interpreter(model, CpuKernels.XNNPACK, threads=1)
    indices = [d["index"] for d in interpreter.get_input_details()]
    samples = list(data.samples(model_inputs(interpreter)))
    wall, cpu = time.perf_counter(), time.process_time()
    for _, batch in samples:
        for index, array in zip(indices, batch, strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
    return time.perf_counter() - wall, time.process_time() - cpu


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(model: bytes, samples: int, rounds: int) -> dict[str, dict[str, float]]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    rng = np.random.default_rng(0)
    arrays = tuple(rng.uniform(-1, 1, size=(samples, *i.shape)).astype(np.float32) for i in model_inputs(interpreter))
    data = CalibrationSet(source="bench", arrays=arrays, preprocessing=None)
    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "bare": lambda: _bare(model, data), "old": lambda: _timed(lambda: collect(model, data, engine="replay")),
        "new": lambda: _timed(lambda: collect(model, data))}
    runs["bare"]()  # warm caches and imports
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            times[name].append(runs[name]())
    return {name: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
            for name, t in times.items()}


def _models(args: argparse.Namespace) -> dict[str, Path]:
    found = {"demo CNN": ROOT / "tests/data/demo/cnn_digits_float32.tflite"}
    mobilenet = args.mobilenet or args.work / "mobilenet_v2_224_float32.tflite"
    if not mobilenet.is_file():
        from mobilenet_models import mobilenet_v2_224

        args.work.mkdir(parents=True, exist_ok=True)
        mobilenet, _ = mobilenet_v2_224(args.work)
    found["MobileNetV2-224"] = mobilenet
    return found


def _label(name: str, model: bytes) -> str:
    """``name`` with the model's input shape, activation count and values binned per sample."""
    parsed = tfl.parse(model)
    activations = tfl.float_activations(parsed)
    shape = "x".join(str(int(d)) for d in parsed.subgraphs[0].tensors[int(parsed.subgraphs[0].inputs[0])].shape[1:])
    values = sum(int(np.prod(a.shape)) for a in activations)
    return f"{name} ({shape} input, {len(activations)} activations, {values / 1e6:.2f} M values a sample)"


def table(results: dict[str, dict[str, dict[str, float]]], samples: int) -> str:
    lines = [f"| model ({samples} samples, 1 thread) | bare XNNPACK s | old collect s | new collect s | "
             "old / bare | new / bare | old / new |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for clock in ("wall", "cpu"):
            bare, old, new = r["bare"][clock], r["old"][clock], r["new"][clock]
            lines.append(f"| {name}, {clock} | {bare:.3f} | {old:.3f} | {new:.3f} | {old / bare:.1f}x | "
                         f"{new / bare:.1f}x | {old / new:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeq-collect-bench"))
    parser.add_argument("--mobilenet", type=Path, help="a MobileNetV2-224 float32 .tflite to use")
    parser.add_argument("--write", action="store_true", help=f"put the table into {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {}
    for name, path in _models(args).items():
        model = path.read_bytes()
        name = _label(name, model)
        results[name] = measure(model, args.samples, args.rounds)
        print(f"{name}: " + ", ".join(f"{k} {v['wall']:.3f} s wall / {v['cpu']:.3f} s cpu"
                                      for k, v in results[name].items()), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()} " \
              f"{platform.release()}; 1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    generated = (f"{table(results, args.samples)}\n\nMeasured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine}; "
                 f"python {platform.python_version()}, numpy {np.__version__}; median of {args.rounds} rounds.")
    print("\n" + generated)
    if args.write:
        from markdown import write_generated

        write_generated(DOC, generated, BEGIN, END, "Collecting activation statistics: speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
