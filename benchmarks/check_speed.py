"""How long `edgeq check` takes on a ~15 MB INT8 model (target: well under a second).

Usage: python benchmarks/check_speed.py [--repeats 10]
Builds a wide convolutional net (random weights) of about 15 MB in INT8 with edgeq convert, then
times check_model (parse + structure validation + every rule) and size_breakdown in this process,
and the whole `edgeq check` command (interpreter start-up included) in a subprocess.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(448, 3, padding="same", activation="relu")(inputs)
    for i in range(8):
        y = keras.layers.Conv2D(448, 3, padding="same", activation="relu", name=f"wide{i}")(x)
        x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import edgeq
    from edgeq.spec.check import check_model
    from edgeq.spec.size import size_breakdown
    from edgeq.tfimport import import_tensorflow

    import_tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        keras_path, calib, out = Path(tmp) / "wide.keras", Path(tmp) / "calib.npy", Path(tmp) / "wide.tflite"
        build_model(keras_path)
        np.save(calib, np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32))
        edgeq.convert(keras_path, out, calib=calib)
        data = out.read_bytes()
        timings: dict[str, list[float]] = {"check generic": [], "check edgetpu": [], "size breakdown": []}
        for _ in range(args.repeats):
            for label, fn in (("check generic", lambda: check_model(data)),
                              ("check edgetpu", lambda: check_model(data, target="edgetpu")),
                              ("size breakdown", lambda: size_breakdown(data))):
                started = time.perf_counter()
                fn()
                timings[label].append(time.perf_counter() - started)
        report = check_model(data)
        command = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([str(Path(sys.executable).with_name("edgeq")), "check", str(out), "--json"],
                           capture_output=True, check=False)
            command.append(time.perf_counter() - started)
    print(f"model: {len(data) / 1e6:.1f} MB INT8, {len(tfl_ops(data))} ops, passed={report.passed}")
    print("| step | median ms | min ms |")
    print("|---|---:|---:|")
    for label, values in timings.items():
        print(f"| {label} (in process) | {statistics.median(values) * 1e3:.0f} | {min(values) * 1e3:.0f} |")
    whole = statistics.median(command) * 1e3, min(command) * 1e3
    print(f"| `edgeq check --json` (whole command) | {whole[0]:.0f} | {whole[1]:.0f} |")
    return 0


def tfl_ops(data: bytes) -> list[object]:
    from edgeq.tflite import model as tfl

    return list(tfl.parse(data).subgraphs[0].operators)


if __name__ == "__main__":
    sys.exit(main())
