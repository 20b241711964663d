"""FP32 vs INT8 latency on cpu and xnnpack at 1 and 2 threads, and file sizes, as ratios.

Usage: python benchmarks/int8_speedup.py [--runs 100] [--min-seconds 1]
Models: every zoo model (full recipe, cached) and a MobileNetV2-224 (random weights). All
configurations of one model are measured interleaved in one run (edgeq.harness.latency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def zoo_pair(name: str, folder: Path) -> tuple[Path, Path]:
    import edgeq
    from edgeq.intake.load import load_float_model
    from edgeq_models import ZOO, build

    built = build(name)
    float_path = folder / f"{name}_float32.tflite"
    float_path.write_bytes(load_float_model(built.path).flatbuffer)
    int8_path = folder / f"{name}_int8.tflite"
    calib = "lfw:train" if ZOO[name].dataset == "lfw" else "digits:train"
    edgeq.convert(built.path, int8_path, calib=calib, limit=128, preprocessing=ZOO[name].preprocessing)
    return float_path, int8_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    from mobilenet_models import mobilenet_v2_224

    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.harness.latency import LatencyConfig, open_timed, run_interleaved
    from edgeq.tfimport import import_tensorflow
    from edgeq_models import ZOO

    import_tensorflow()
    config = LatencyConfig(runs=args.runs, min_seconds=args.min_seconds)
    print("| model | size fp32 KiB | size int8 KiB | size ratio | backend | threads | fp32 p50 ms | int8 p50 ms | "
          "int8 speed-up |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = {name: zoo_pair(name, folder) for name in ZOO}
        pairs["mobilenet_v2_224"] = mobilenet_v2_224(folder)
        for name, (float_path, int8_path) in pairs.items():
            keys, ms = [], []
            for backend in ("cpu", "xnnpack"):
                for threads in (1, 2):
                    for path in (float_path, int8_path):
                        opener = lambda p=path, b=backend, t=threads: open_session(p.read_bytes(), parse_backend(b), t)  # noqa: E731
                        ms.append(open_timed(path.name, opener))
                        keys.append((backend, threads, path))
            run_interleaved(ms, config)
            result = dict(zip(keys, ms, strict=True))
            f_kib, i_kib = float_path.stat().st_size / 1024, int8_path.stat().st_size / 1024
            for backend in ("cpu", "xnnpack"):
                for threads in (1, 2):
                    fp = result[(backend, threads, float_path)].stats().p50_ms
                    q = result[(backend, threads, int8_path)].stats().p50_ms
                    print(f"| {name} | {f_kib:.0f} | {i_kib:.0f} | {f_kib / i_kib:.2f} | {backend} | {threads} | "
                          f"{fp:.3f} | {q:.3f} | {fp / q:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
