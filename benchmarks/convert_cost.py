"""Wall time and peak memory of edgeq calibrate+convert against TensorFlow's own INT8 conversion.

Usage: python benchmarks/convert_cost.py [--samples 200] [--repeats 3] [--size 224]
Model: Keras MobileNetV2 (alpha 1.0, random weights: cost does not depend on them). Both sides get
the same calibration samples (seeded real photos from the bundled pool, resized) and start from the
same saved .keras file. Each measurement runs in a fresh subprocess (peak RSS = that process's
ru_maxrss, imports included), and the two tools alternate so drift on a shared machine hits both.
Targets: edgeq <= 1.3x the wall time and <= 1.2x the peak memory of the TF converter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
tool, model_path, calib_path, out_path = sys.argv[1:5]
from edgeq.tfimport import import_tensorflow
tf = import_tensorflow()
import numpy as np
if tool == "edgeq":
    from edgeq.artifacts import Preprocessing
    from edgeq.converter.api import convert
    convert(model_path, out_path, calib=calib_path, preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)))
else:
    import keras
    from edgeq.quiet import native_output_captured
    model = keras.saving.load_model(model_path, compile=False)
    images = np.load(calib_path)
    inp = keras.Input(tuple(model.inputs[0].shape[1:]), batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [((img[None].astype(np.float32) - 127.5) / 127.5)] for img in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with native_output_captured():
        data = converter.convert()
    open(out_path, "wb").write(data)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def calibration_images(samples: int, size: int) -> np.ndarray:
    """``samples`` random crops of the bundled real photos, resized to size×size, seeded."""
    from PIL import Image

    from datagen.bundled import load_photos

    photos = list(load_photos().values())
    rng = np.random.default_rng(0)
    out = np.empty((samples, size, size, 3), np.uint8)
    for i in range(samples):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(crop)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    from edgeq.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        model_path, calib_path = Path(tmp) / "mobilenet_v2.keras", Path(tmp) / "calib.npy"
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(input_shape=(args.size, args.size, 3), alpha=1.0, weights=None).save(model_path)
        np.save(calib_path, calibration_images(args.samples, args.size))
        runs: dict[str, list[dict[str, float]]] = {"edgeq": [], "tf": []}
        for r in range(args.repeats):
            for tool in ("edgeq", "tf") if r % 2 == 0 else ("tf", "edgeq"):
                result = subprocess.run([sys.executable, "-c", CHILD, tool, str(model_path), str(calib_path),
                                         str(Path(tmp) / f"{tool}.tflite")], capture_output=True, text=True)
                if result.returncode != 0:
                    print(result.stderr[-2000:], file=sys.stderr)
                    return 2
                runs[tool].append(json.loads(result.stdout.strip().splitlines()[-1]))
                print(f"  run {r + 1} {tool}: {runs[tool][-1]}", file=sys.stderr, flush=True)
    med = {tool: {k: statistics.median(run[k] for run in rs) for k in ("seconds", "peak_mib")}
           for tool, rs in runs.items()}
    time_ratio = med["edgeq"]["seconds"] / med["tf"]["seconds"]
    mem_ratio = med["edgeq"]["peak_mib"] / med["tf"]["peak_mib"]
    print(f"MobileNetV2 alpha 1.0, {args.size}x{args.size}, {args.samples} calibration samples, "
          f"median of {args.repeats} alternating runs, each in a fresh process")
    print("| tool | wall s | peak RSS MiB |")
    print("|---|---:|---:|")
    for tool in ("edgeq", "tf"):
        print(f"| {tool} | {med[tool]['seconds']:.1f} | {med[tool]['peak_mib']:.0f} |")
    print(f"| edgeq / tf | {time_ratio:.2f}x (target <= 1.3x) | {mem_ratio:.2f}x (target <= 1.2x) |")
    return 0 if time_ratio <= 1.3 and mem_ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
