"""One unusual calibration image in 64: output SQNR with and without edgeq's sample guard, on a real detector.

Usage: python benchmarks/outlier_samples.py [--methods auto,mse,percentile,kl,minmax]

Model: MediaPipe's face_detection_short_range (tests/data/mediapipe/). Data: the 21 photos bundled with the
installed packages, resized to 128x128 and fed as (x - 127.5) / 127.5, split as in mediapipe_accuracy.py
(every third photo held out). Calibration: the 14 other photos under six variants (as is, mirrored, flipped
upside down, x0.7, x1.2, x0.85 + 20), the first 63 of them, and the same 63 with one all-black image inserted
as sample 40 (64 in all). Evaluation: the 7 held-out photos and their mirror images. Output SQNR = 10 log10(sum
y^2 / sum (y - y_int8)^2) per output tensor, float model vs the INT8 model's dequantized output, LiteRT's
builtin CPU kernels. Prints a Markdown table (docs/converter.md keeps the latest).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mediapipe_accuracy import MODELS, input_size, output_names, photos, run_outputs, split, to_model_input

MODEL = "face_detection_short_range"
BLACK_AT = 40


def calibration_sets() -> tuple[dict[str, np.ndarray], np.ndarray]:
    images = photos(input_size(MODELS[MODEL]))[1]
    calib, held = split(len(images))
    c = images[calib].astype(np.float32)
    variants = [c, c[:, :, ::-1], c[:, ::-1], c * 0.7, c * 1.2, c * 0.85 + 20]
    base = np.clip(np.concatenate(variants)[:63], 0, 255).astype(np.uint8)
    black = np.zeros_like(base[:1])
    evaluation = to_model_input(images[held])
    return ({"63 photos": to_model_input(base),
             "63 photos + 1 black": to_model_input(np.concatenate([base[:BLACK_AT], black, base[BLACK_AT:]]))},
            np.concatenate([evaluation, evaluation[:, :, ::-1]]))


def main(argv: list[str]) -> int:
    from edgeq.artifacts import Estimator
    from edgeq.converter.api import convert
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.validate.diagnostics import output_sqnr_db

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="auto,mse,percentile,kl,minmax")
    args = parser.parse_args(argv)
    model = MODELS[MODEL]
    sets, x = calibration_sets()
    reference, labels = run_outputs(model, x), output_names(model)
    print(f"| calibration | method | sample guard | {' | '.join(f'SQNR {n}' for n in labels)} | outlier samples |")
    print("|---|---|---|" + "---|" * len(labels) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sets.items():
            np.save(Path(tmp) / "calib.npy", data)
            for method in args.methods.split(","):
                for guard in (True, False):
                    out = Path(tmp) / "m.tflite"
                    artifact = convert(model, out, calib=Path(tmp) / "calib.npy",
                                       recipe=QuantRecipe(method=Estimator(method), sample_guard=guard))
                    approx = run_outputs(out, x)
                    sqnr = " | ".join(f"{output_sqnr_db(r, a):.1f} dB" for r, a in zip(reference, approx, strict=True))
                    named = "; ".join(f"sample {o.sample}: {o.tensors} tensors, up to {o.max_factor:.1f}x, "
                                      f"{o.trimmed} ranges without it" for o in artifact.outlier_samples) or "none"
                    print(f"| {name} | {method} | {'on' if guard else 'off'} | {sqnr} | {named} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
