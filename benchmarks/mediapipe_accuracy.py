"""Output SQNR of edgeq's INT8 conversions of the vendored MediaPipe face detectors, on real photos.

Usage: python benchmarks/mediapipe_accuracy.py [--methods auto,minmax,percentile,mse,kl]

Models: tests/data/mediapipe/ (float16 weights; sparse float16 weights behind DENSIFY). Data: the 21
unlabelled photos bundled with the installed packages (datagen.bundled.load_photos), resized (bilinear) to
the model's own input size and fed as (x - 127.5) / 127.5, i.e. RGB in [-1, 1] as MediaPipe does. Every
third photo (indices 0, 3, ..., 18: 7 photos, among them the astronaut) is held out; the other 14 calibrate.
Output SQNR = 10 log10(sum y^2 / sum (y - y_int8)^2) per output tensor, over all held-out photos (and over
all 21), float model vs the INT8 model's dequantized output, both run with LiteRT's builtin CPU kernels.
Prints a Markdown table (docs/accuracy.md keeps the latest).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "face_detection_short_range": ROOT / "tests" / "data" / "mediapipe" / "face_detection_short_range.tflite",
    "face_detection_full_range_sparse": ROOT / "tests" / "data" / "mediapipe" /
    "face_detection_full_range_sparse.tflite",
}
HELD_OUT_EVERY = 3


def input_size(model: Path) -> tuple[int, int]:
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    _, height, width, _ = (int(d) for d in interpreter.get_input_details()[0]["shape"])
    return height, width


def photos(size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """The bundled photos as uint8 (N, H, W, 3), resized to ``size`` (height, width)."""
    from PIL import Image

    from datagen.bundled import load_photos

    pool = load_photos()
    images = [np.asarray(Image.fromarray(p).resize((size[1], size[0]), Image.Resampling.BILINEAR)) for p in
              pool.values()]
    return list(pool), np.stack(images)


def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration indices, held-out indices)."""
    held = np.arange(0, n, HELD_OUT_EVERY)
    return np.setdiff1d(np.arange(n), held), held


def to_model_input(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) - 127.5) / 127.5).astype(np.float32)


def run_outputs(model: Path | bytes, x: np.ndarray) -> list[np.ndarray]:
    """Every output, dequantized to float, for float inputs ``x`` (N, H, W, 3), one sample at a time."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    detail = interpreter.get_input_details()[0]
    outputs = interpreter.get_output_details()
    collected: list[list[np.ndarray]] = [[] for _ in outputs]
    for sample in x:
        value = sample[None]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            limits = np.iinfo(detail["dtype"])
            value = np.clip(np.rint(value / scale) + zero, limits.min, limits.max).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        for k, out in enumerate(outputs):
            y = interpreter.get_tensor(out["index"])
            if y.dtype != np.float32:
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            collected[k].append(y.astype(np.float32))
    return [np.concatenate(c) for c in collected]


def output_names(model: Path | bytes) -> list[str]:
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    return [str(d["name"]) for d in interpreter.get_output_details()]


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    from edgeq.validate.diagnostics import output_sqnr_db

    return output_sqnr_db(reference, approx)


@dataclass(frozen=True)
class Result:
    model: str
    method: str
    float_bytes: int
    int8_bytes: int
    size: str
    held_out: dict[str, float]  # output name -> SQNR dB on the held-out photos
    all_photos: dict[str, float]
    top_score: tuple[float, float]  # highest face score on the astronaut photo: float, int8 (sigmoid of logits)


def measure(name: str, method: str, out_dir: Path) -> Result:
    from edgeq.artifacts import Estimator, Preprocessing
    from edgeq.converter.api import convert
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.spec.size import size_change

    model = MODELS[name]
    size = input_size(model)
    names, images = photos(size)
    calib, held = split(len(images))
    np.save(out_dir / f"{name}_calib.npy", images[calib])
    out = out_dir / f"{name}_{method}.tflite"
    artifact = convert(model, out, calib=out_dir / f"{name}_calib.npy",
                       preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)),
                       recipe=QuantRecipe(method=Estimator(method)))
    x = to_model_input(images)
    reference, approx = run_outputs(model, x), run_outputs(out, x)
    labels = output_names(model)
    astronaut = names.index("skimage/astronaut")
    scores = next(labels.index(n) for n in labels if "class" in n or n.endswith("Identity_1"))
    top = tuple(float(1 / (1 + np.exp(-y[astronaut].max()))) for y in (reference[scores], approx[scores]))
    return Result(model=name, method=method, float_bytes=artifact.float_bytes, int8_bytes=artifact.int8_bytes,
                  size=size_change(artifact.float_bytes, artifact.int8_bytes),
                  held_out={n: sqnr_db(r[held], a[held]) for n, r, a in zip(labels, reference, approx, strict=True)},
                  all_photos={n: sqnr_db(r, a) for n, r, a in zip(labels, reference, approx, strict=True)},
                  top_score=(top[0], top[1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="auto,minmax,percentile,mse,kl")
    args = parser.parse_args(argv)
    print("| model | method | output | SQNR held-out (7) | SQNR all (21) | size float → int8 | astronaut score "
          "float / int8 |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            for method in args.methods.split(","):
                r = measure(name, method, Path(tmp))
                for output in r.held_out:
                    print(f"| {name} | {method} | {output} | {r.held_out[output]:.1f} dB | "
                          f"{r.all_photos[output]:.1f} dB | {r.float_bytes / 1024:.1f} → {r.int8_bytes / 1024:.1f} KiB "
                          f"({r.size}) | {r.top_score[0]:.3f} / {r.top_score[1]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
