"""What ``edgeq instrument`` costs: latency (p50, interleaved) and size of instrumented vs plain models.

For each model and kernel set (XNNPACK, builtin CPU kernels; 1 thread) both interpreters are created, warmed up,
then invoked in alternating blocks (plain, instrumented, instrumented, plain, ...) on the same seeded input, so
drift of the machine hits both alike. Every activation of the main graph is instrumented (min and max).

    .venv/bin/python benchmarks/instrument_overhead.py [--work DIR] [--seconds S] [--skip-mobilenet]

Models: the demo CNN (tests/data/demo float32; device_tests/data INT8) and a MobileNetV2-224 with random weights
(benchmarks/mobilenet_models.py: keras.applications, seeded; INT8 calibrated on 32 uniform random inputs).
Random weights change no op, shape or kernel, so latency is that of the real network.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgeq.errors import InputError  # noqa: E402
from edgeq.tflite import instrument as ins  # noqa: E402
from edgeq.tflite import model as tfl  # noqa: E402
from edgeq.tflite.runtime import CpuKernels, make_interpreter, seeded_inputs  # noqa: E402

BLOCK = 5  # invokes per block before switching model
#: MobileNetV2's block outputs: each inverted-residual block's projection and residual sum (not the expansions).
BLOCK_OUTPUTS = r"^[^;]*(_project_1/|_add_1/)"


def _interpreter(model: bytes, kernels: str) -> tuple[object, list[np.ndarray]]:
    interpreter, _ = make_interpreter(model, CpuKernels(kernels), threads=1)
    details = interpreter.get_input_details()
    x = seeded_inputs([(tuple(int(d) for d in i["shape"]), np.dtype(i["dtype"])) for i in details], 0)
    for detail, array in zip(details, x, strict=True):
        interpreter.set_tensor(int(detail["index"]), array)
    return interpreter, x


def _block(interpreter: object, samples: list[float]) -> None:
    for _ in range(BLOCK):
        start = time.perf_counter()
        interpreter.invoke()  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - start)


def measure(plain: bytes, instrumented: bytes, kernels: str, seconds: float) -> dict[str, float | int]:
    a, _ = _interpreter(plain, kernels)
    b, _ = _interpreter(instrumented, kernels)
    for _ in range(3):
        _block(a, []), _block(b, [])
    times_a: list[float] = []
    times_b: list[float] = []
    deadline = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < deadline or len(times_a) < 20 * BLOCK:
        first, second = ((a, times_a), (b, times_b)) if turn % 2 == 0 else ((b, times_b), (a, times_a))
        _block(*first)
        _block(*second)
        turn += 1
    p50_a, p50_b = float(np.median(times_a)) * 1e3, float(np.median(times_b)) * 1e3
    return {"runs": len(times_a), "plain_p50_ms": p50_a, "instrumented_p50_ms": p50_b, "ratio": p50_b / p50_a}


def models(work: Path, skip_mobilenet: bool) -> dict[str, Path]:
    found = {"demo CNN float32": ROOT / "tests/data/demo/cnn_digits_float32.tflite",
             "demo CNN int8": ROOT / "device_tests/data/cnn_digits_int8.tflite"}
    # The vendored real models (MediaPipe, Apache-2.0; tests/data/mediapipe/LICENSE), as the files ship
    for path in sorted((ROOT / "tests/data/mediapipe").glob("*.tflite")):
        found[f"MediaPipe {path.stem}"] = path
    if not skip_mobilenet:
        float_path, int8_path = work / "mobilenet_v2_224_float32.tflite", work / "mobilenet_v2_224_int8.tflite"
        if not (float_path.is_file() and int8_path.is_file()):
            from mobilenet_models import mobilenet_v2_224

            work.mkdir(parents=True, exist_ok=True)
            float_path, int8_path = mobilenet_v2_224(work)
        found["MobileNetV2-224 float32"] = float_path
        found["MobileNetV2-224 int8"] = int8_path
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeq-instrument-bench"))
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per model and kernel set")
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    runs = [(name, path, None) for name, path in models(args.work, args.skip_mobilenet).items()]
    runs += [(f"{name} (block outputs)", path, BLOCK_OUTPUTS) for name, path, _ in runs if "MobileNet" in name]
    for name, path, pattern in runs:
        plain = path.read_bytes()
        tensors = ins.select(ins.activation_tensors(tfl.parse(plain)), pattern=pattern)
        instrumented, extra = ins.instrument(plain, tensors)
        try:
            ins.verify(plain, instrumented, extra, samples=1)
        except InputError as exc:  # e.g. a custom op the stock runtime lacks: nothing to measure here
            print(f"{name:42} skipped: {exc}", flush=True)
            continue
        for kernels in ("xnnpack", "cpu"):
            row = {"model": name, "kernels": kernels, "tensors": len(tensors), "extra_outputs": len(extra),
                   "plain_bytes": len(plain), "instrumented_bytes": len(instrumented),
                   **measure(plain, instrumented, kernels, args.seconds)}
            rows.append(row)
            print(f"{name:42} {kernels:8} {row['tensors']:4} tensors  p50 {row['plain_p50_ms']:8.3f} -> "
                  f"{row['instrumented_p50_ms']:8.3f} ms  x{row['ratio']:.3f}  ({row['runs']} runs each)  size "
                  f"{len(plain) / 1024:.1f} -> {len(instrumented) / 1024:.1f} KiB "
                  f"(+{(len(instrumented) - len(plain)) / len(plain) * 100:.2f} %)", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {platform.system()} {platform.release()}"
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine}; python {platform.python_version()}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
