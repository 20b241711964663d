"""``make demo``: build a zoo model, convert it to a batch-1 float TFLite model, and measure both.

Run as ``python -m edgeq.cli.demo [--model NAME] [-o DIR]``. The Keras and LiteRT accuracies on the
held-out test split are printed side by side; they should agree to the sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgeq.cli.main import _quiet_frameworks
from edgeq.cli.output import print_table


def run(model_name: str, out_dir: Path) -> int:
    from edgeq.converter.load import keras_to_float_tflite
    from edgeq.files import write_bytes_atomic
    from edgeq.harness.accuracy import run_batch1, top1
    from edgeq.preprocess import apply_preprocessing
    from edgeq.tfimport import import_tensorflow
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    import_tensorflow("the demo")
    from edgeq_models.train import keras_accuracy
    from edgeq_models.zoo import build, entry, load_model, test_split

    started = time.perf_counter()
    print(f"[1/3] zoo model '{model_name}': training or reusing the cache ...", flush=True)
    built = build(model_name)
    card = built.card
    print(f"      {'reused' if built.reused else 'trained'}: {card.params:,} params, "
          f"recipe {card.key}, {built.path}")
    keras_model = load_model(built.path)
    test = test_split(model_name)
    pp = entry(model_name).preprocessing
    keras_top1 = keras_accuracy(keras_model, test, pp)

    print("[2/3] converting to a float TFLite model with a static batch-1 input ...", flush=True)
    flatbuffer = keras_to_float_tflite(keras_model)
    tflite_path = write_bytes_atomic(out_dir / f"{model_name}_float32.tflite", flatbuffer)

    print(f"[3/3] evaluating with the LiteRT interpreter on {test.name} ({len(test)} images) ...", flush=True)
    interpreter, runtime = make_interpreter(flatbuffer, CpuKernels.XNNPACK, threads=1)
    x = apply_preprocessing(pp, test.images)
    scores = run_batch1(interpreter, x)
    litert_top1 = top1(scores, test.labels)
    keras_pred = keras_model.predict(x, batch_size=256, verbose=0).argmax(-1)
    agreement = float((scores.argmax(-1) == keras_pred).mean())

    print()
    print_table(["model", "runtime", "top-1", "size"], [
        [f"{model_name} (Keras)", "keras", f"{keras_top1:.2%}", "-"],
        [tflite_path.name, f"{runtime.name} {runtime.version}", f"{litert_top1:.2%}",
         f"{len(flatbuffer) / 1024:.1f} KiB"],
    ])
    print(f"\nprediction agreement Keras vs LiteRT: {agreement:.2%} of {len(test)} test images")
    print(f"float model: {tflite_path}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0 if agreement >= 0.99 else 1  # a float conversion must not change predictions


def main() -> int:
    parser = argparse.ArgumentParser(description="edgeq demo: zoo model -> float TFLite -> LiteRT accuracy")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("-o", "--out-dir", default="out/demo")
    args = parser.parse_args()
    _quiet_frameworks()
    return run(args.model, Path(args.out_dir))


if __name__ == "__main__":
    sys.exit(main())
