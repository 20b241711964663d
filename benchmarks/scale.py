"""Scaling of the data-parallel work on this machine: calibration statistics on 1 and 2 workers, Ray against
worker processes at a small and a large sample count, and statistics collection against bare inference.

Everything is measured side by side in one run, in interleaved rounds (each round runs every configuration
once; the table shows each configuration's median over the rounds), because the machine is shared and noisy.
Every executor's statistics are checked equal to the local pass (bit-identity) before a figure is printed.

    python benchmarks/scale.py [--samples 128] [--small 8] [--rounds 3] [--write docs/scale.md]

Models: MobileNetV2-224 with random weights (float32, built once into --work) and the demo CNN.
Data: uniform random inputs in [-1, 1] (what the issue measured; activation statistics do not need real images
to cost what they cost).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from markdown import write_generated  # noqa: E402

from edgeq.calib.collect import ActivationStats, collect  # noqa: E402
from edgeq.calib.data import CalibrationSet  # noqa: E402
from edgeq.calib.parallel import collect_sharded  # noqa: E402
from edgeq.execute import open_executor, parse_executor  # noqa: E402
from edgeq.tflite.runtime import CpuKernels, make_interpreter  # noqa: E402

BEGIN, END = "<!-- scale:begin (benchmarks/scale.py writes this part) -->", "<!-- scale:end -->"
EXECUTORS = ("processes", "ray")


def data_for(model: bytes, n: int) -> CalibrationSet:
    interpreter, _ = make_interpreter(model, CpuKernels.XNNPACK, threads=1)
    shape = tuple(interpreter.get_input_details()[0]["shape"][1:])
    x = np.random.default_rng(0).uniform(-1, 1, (n, *shape)).astype(np.float32)
    return CalibrationSet(source=f"uniform[{n}]", arrays=(x,), preprocessing=None, conditions=None)


def bare(model: bytes, data: CalibrationSet, kernels: CpuKernels) -> float:
    """Seconds to invoke the plain model once per sample, 1 thread (the interpreter built beforehand)."""
    interpreter, _ = make_interpreter(model, kernels, threads=1)
    index = interpreter.get_input_details()[0]["index"]
    start = time.perf_counter()
    for sample in data.arrays[0]:
        interpreter.set_tensor(index, sample[None])
        interpreter.invoke()
    return time.perf_counter() - start


def timed(action: Callable[[], ActivationStats]) -> tuple[float, ActivationStats]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def same(a: ActivationStats, b: ActivationStats) -> bool:
    return a.tensors == b.tensors and a.extremes == b.extremes and a.samples == b.samples


def executor_run(model: bytes, data: CalibrationSet, name: str, workers: int,
                 reference: ActivationStats) -> tuple[float, float]:
    """(seconds from opening the executor to the merged statistics, seconds of a second pass on the open one)."""
    start = time.perf_counter()
    with open_executor(parse_executor(name, workers)) as executor:
        first = collect_sharded(model, data, executor)
        cold = time.perf_counter() - start
        warm, second = timed(lambda: collect_sharded(model, data, executor))
    if not (same(first, reference) and same(second, reference)):
        raise SystemExit(f"{name} with {workers} workers gave other statistics than the local pass")
    return cold, warm


def measure(model: bytes, n: int, rounds: int, executors: bool) -> dict[str, float]:
    """Per configuration, the median seconds over ``rounds`` interleaved rounds."""
    data = data_for(model, n)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        row = {"bare xnnpack": bare(model, data, CpuKernels.XNNPACK), "bare cpu": bare(model, data, CpuKernels.CPU)}
        row["collect local"], reference = timed(lambda: collect(model, data))
        if executors:
            for name in EXECUTORS:
                for workers in (1, 2):
                    cold, warm = executor_run(model, data, name, workers, reference)
                    row[f"{name} {workers}w"], row[f"{name} {workers}w warm"] = cold, warm
        for key, seconds in row.items():
            times.setdefault(key, []).append(seconds)
    return {key: statistics.median(values) for key, values in times.items()}


def mobilenet(work: Path) -> bytes:
    path = work / "mobilenet_v2_224_float32.tflite"
    if not path.is_file():
        from mobilenet_models import mobilenet_v2_224_float

        work.mkdir(parents=True, exist_ok=True)
        mobilenet_v2_224_float(work)
    return path.read_bytes()


def report(name: str, n: int, t: dict[str, float]) -> list[str]:
    lines = [f"**{name}, {n} samples** (median of the rounds; throughput = samples / seconds)", "",
             "| configuration | seconds | samples/s | vs bare XNNPACK |", "|---|---|---|---|"]
    for key, seconds in t.items():
        lines.append(f"| {key} | {seconds:.3f} | {n / seconds:.1f} | {seconds / t['bare xnnpack']:.2f}x |")
    lines.append("")
    if "processes 1w" in t:
        for name_ in EXECUTORS:
            lines.append(f"- {name_}: 2 workers vs 1, throughput {t[f'{name_} 1w'] / t[f'{name_} 2w']:.2f}x "
                         f"(from opening the executor) and {t[f'{name_} 1w warm'] / t[f'{name_} 2w warm']:.2f}x "
                         "(second pass on the open executor)")
        lines.append(f"- ray vs processes, 2 workers: {t['ray 2w'] / t['processes 2w']:.2f}x the time from opening, "
                     f"{t['ray 2w warm'] / t['processes 2w warm']:.2f}x on the open executor")
        lines.append(f"- local pass vs processes with 1 worker (the executor's own overhead): "
                     f"{t['processes 1w warm'] / t['collect local']:.2f}x")
    lines.append(f"- statistics collection (local) vs bare inference of the same samples: "
                 f"{t['collect local'] / t['bare xnnpack']:.2f}x bare XNNPACK, "
                 f"{t['collect local'] / t['bare cpu']:.2f}x the builtin kernels")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeq-scale-bench"))
    parser.add_argument("--samples", type=int, default=128, help="the large N (MobileNetV2)")
    parser.add_argument("--small", type=int, default=8, help="the small N (MobileNetV2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="put the results into this Markdown page (docs/scale.md)")
    args = parser.parse_args()
    model = mobilenet(args.work)
    demo = (ROOT / "tests/data/demo/cnn_digits_float32.tflite").read_bytes()
    runs = [("MobileNetV2-224 float32", model, args.samples, True),
            ("MobileNetV2-224 float32", model, args.small, True), ("demo CNN float32", demo, 512, True),
            ("MobileNetV2-224 float32 (collection only)", model, 100, False)]
    lines = []
    for name, flatbuffer, n, executors in runs:
        t = measure(flatbuffer, n, args.rounds, executors)
        block = report(name, n, t)
        print("\n".join(block), flush=True)
        lines += block
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
               f"{platform.release()}, Python {platform.python_version()}")
    stamp = f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; {args.rounds} interleaved rounds."
    print(stamp)
    if args.write:
        write_generated(args.write, "\n".join([stamp, "", *lines]).rstrip(), BEGIN, END, "Scaling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
