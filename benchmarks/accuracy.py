"""FP32 vs INT8 top-1 of every zoo model, per estimator, next to TensorFlow's own INT8 converter.

Usage: python benchmarks/accuracy.py [--samples 256] [--models cnn,vit] [--cache-dir DIR]
All INT8 columns use the same calibration samples (the first N of a seeded shuffle of the train
split); every accuracy is measured with the LiteRT interpreter on the held-out test split. Prints a
Markdown table (docs/accuracy.md keeps the latest) and exits 1 when a target is missed:
auto within 1.0 pp of FP32 on every model and within 0.3 pp on the CNNs, and no worse than the TF
converter by more than noise (two test images).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeq.artifacts import Estimator, IOType, Preprocessing
from edgeq.converter.api import calibrate, convert
from edgeq.harness.accuracy import run_batch1, top1
from edgeq.intake.load import keras_to_float_tflite
from edgeq.preprocess import apply_preprocessing
from edgeq.quant_recipe import QuantRecipe
from edgeq.quiet import native_output_captured
from edgeq.tfimport import import_tensorflow
from edgeq.tflite.runtime import make_interpreter
from edgeq_models import ZOO, build, load_model
from edgeq_models.zoo import load_splits

METHODS = (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL, Estimator.AUTO)
CNNS = {"cnn", "resnet", "mobilenet_v2", "face_cnn"}


def tf_reference_int8(keras_model: object, calibration: np.ndarray) -> bytes:
    """TensorFlow's own full-integer path: TFLiteConverter with a representative dataset."""
    tf = import_tensorflow()
    import keras

    inputs = keras.Input(tuple(keras_model.inputs[0].shape[1:]), batch_size=1)  # type: ignore[attr-defined]
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, keras_model(inputs)))  # type: ignore[operator]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with native_output_captured():
        return bytes(converter.convert())


def evaluate(model: bytes | Path, x: np.ndarray, labels: np.ndarray) -> float:
    interpreter, _ = make_interpreter(model)
    return top1(run_batch1(interpreter, x), labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    import_tensorflow()
    header = ["model", "FP32", "TF converter", *[m.value for m in METHODS], "auto Δ pp"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            started = time.perf_counter()
            entry = ZOO[name]
            built = build(name, cache=args.cache_dir)
            train, _, test = load_splits(entry.dataset)
            order = np.random.default_rng(0).permutation(len(train))[: args.samples]
            calib_file = Path(tmp) / f"{name}_calib.npy"
            np.save(calib_file, train.images[order])
            pp: Preprocessing = entry.preprocessing
            x_test = apply_preprocessing(pp, test.images)
            keras_model = load_model(built.path)
            fp32 = evaluate(keras_to_float_tflite(keras_model), x_test, test.labels)
            tf_int8 = evaluate(tf_reference_int8(keras_model, apply_preprocessing(pp, train.images[order])),
                               x_test, test.labels)
            stats_file = calibrate(built.path, calib_file, preprocessing=pp).stats.save(Path(tmp) / f"{name}.npz")
            scores = {}
            for method in METHODS:
                out = Path(tmp) / f"{name}_{method.value}.tflite"
                convert(built.path, out, stats=stats_file, recipe=QuantRecipe(method=method, io=IOType.INT8))
                scores[method] = evaluate(out, x_test, test.labels)
            drop = (fp32 - scores[Estimator.AUTO]) * 100
            noise = 2 / len(test) * 100
            limit = 0.3 if name in CNNS else 1.0
            ok = drop <= limit + 1e-9 and (tf_int8 - scores[Estimator.AUTO]) * 100 <= noise + 1e-9
            if not ok:
                missed.append(name)
            cells = [name, f"{fp32:.2%}", f"{tf_int8:.2%}", *[f"{scores[m]:.2%}" for m in METHODS],
                     f"{drop:+.2f} (≤ {limit}) {'ok' if ok else 'MISSED'}"]
            print("| " + " | ".join(cells) + " |", flush=True)
            print(f"  ({name}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
