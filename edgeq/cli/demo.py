"""``make demo``: zoo model -> float TFLite -> full-integer INT8, measured side by side on real digits.

Run as ``python -m edgeq.cli.demo [--model NAME] [--method auto] [-o DIR]``. Prints the top-1 of the
Keras model, the float TFLite model and the INT8 model on the held-out test split (LiteRT
interpreter), and exits 1 if the float conversion changes predictions or INT8 loses more than 1 pp.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgeq.cli.main import _quiet_frameworks
from edgeq.cli.output import print_table

CALIBRATION_SAMPLES = 256
MAX_INT8_DROP_PP = 1.0


def run(model_name: str, method: str, out_dir: Path) -> int:
    from edgeq.artifacts import Estimator
    from edgeq.converter.api import convert
    from edgeq.converter.load import keras_to_float_tflite
    from edgeq.converter.recipe import QuantRecipe
    from edgeq.files import write_bytes_atomic
    from edgeq.harness.accuracy import run_batch1, top1
    from edgeq.preprocess import apply_preprocessing
    from edgeq.tfimport import import_tensorflow
    from edgeq.tflite.runtime import CpuKernels, make_interpreter
    from edgeq_models.train import keras_accuracy
    from edgeq_models.zoo import build, entry, load_model, load_splits

    import_tensorflow("the demo")
    started = time.perf_counter()
    print(f"[1/4] zoo model '{model_name}': training or reusing the cache ...", flush=True)
    built = build(model_name)
    print(f"      {'reused' if built.reused else 'trained'}: {built.card.params:,} params, "
          f"recipe {built.card.key}, {built.path}")
    zoo_entry = entry(model_name)
    train, _, test = load_splits(zoo_entry.dataset)
    keras_model = load_model(built.path)
    pp = zoo_entry.preprocessing
    keras_top1 = keras_accuracy(keras_model, test, pp)
    x = apply_preprocessing(pp, test.images)

    print("[2/4] converting to a float TFLite model with a static batch-1 input ...", flush=True)
    flatbuffer = keras_to_float_tflite(keras_model)
    float_path = write_bytes_atomic(out_dir / f"{model_name}_float32.tflite", flatbuffer)

    print(f"[3/4] INT8 conversion, method {method}, {CALIBRATION_SAMPLES} calibration images of "
          f"{train.name} ...", flush=True)
    calib_file = out_dir / f"{model_name}_calibration.npy"
    order = np.random.default_rng(0).permutation(len(train))[:CALIBRATION_SAMPLES]
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(calib_file, train.images[order])
    artifact = convert(built.path, out_dir / f"{model_name}_int8.tflite", calib=calib_file, preprocessing=pp,
                       recipe=QuantRecipe(method=Estimator(method)))

    print(f"[4/4] evaluating with the LiteRT interpreter on {test.name} ({len(test)} images) ...", flush=True)
    float_interpreter, runtime = make_interpreter(flatbuffer, CpuKernels.XNNPACK, threads=1)
    float_scores = run_batch1(float_interpreter, x)
    int8_interpreter, _ = make_interpreter(Path(artifact.path), CpuKernels.XNNPACK, threads=1)
    int8_scores = run_batch1(int8_interpreter, x)
    keras_pred = keras_model.predict(x, batch_size=256, verbose=0).argmax(-1)
    float_agreement = float((float_scores.argmax(-1) == keras_pred).mean())
    int8_agreement = float((int8_scores.argmax(-1) == float_scores.argmax(-1)).mean())
    float_top1, int8_top1 = top1(float_scores, test.labels), top1(int8_scores, test.labels)

    print()
    print_table(["model", "runtime", "top-1", "agrees with FP32", "size"], [
        [f"{model_name} (Keras)", "keras", f"{keras_top1:.2%}", "-", "-"],
        [float_path.name, f"{runtime.name} {runtime.version}", f"{float_top1:.2%}", f"{float_agreement:.2%}",
         f"{len(flatbuffer) / 1024:.1f} KiB"],
        [Path(artifact.path).name, f"{runtime.name} {runtime.version}", f"{int8_top1:.2%}",
         f"{int8_agreement:.2%}", f"{artifact.int8_bytes / 1024:.1f} KiB"],
    ])
    drop = (float_top1 - int8_top1) * 100
    chosen = sorted({r.estimator.value for r in artifact.ranges.ranges})
    print(f"\nINT8: {drop:+.2f} pp vs FP32 (gate {MAX_INT8_DROP_PP} pp), {artifact.size_ratio:.2f}x smaller, "
          f"estimators chosen: {', '.join(chosen)}")
    print(f"artifacts: {artifact.path} and its sidecar {Path(artifact.path).with_suffix('.json')}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0 if float_agreement >= 0.99 and drop <= MAX_INT8_DROP_PP else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="edgeq demo: zoo model -> float TFLite -> INT8, measured")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--method", default="auto", choices=["minmax", "percentile", "mse", "kl", "auto"])
    parser.add_argument("-o", "--out-dir", default="out/demo")
    args = parser.parse_args()
    _quiet_frameworks()
    return run(args.model, args.method, Path(args.out_dir))


if __name__ == "__main__":
    sys.exit(main())
