"""Hard cases for INT8 recovery (issue 16): trained zoo models with a few activation channels made 30-100x larger.

Usage: python benchmarks/outlier_models.py [--out DIR] [--samples 256]

Each model is a cached zoo model (``cnn``, ``mobilenet_v2``) whose float function is unchanged: one intermediate
activation, feeding layers with constant weights, gets 3-4 channels multiplied by 30-100x with
``edgeq.recover.equalize.scale_channels`` (the producer's weights scaled up, the readers' weights scaled down),
asserted identical in float on the test split. Per-tensor activation ranges then spend the int8 grid on those
channels and the others lose resolution. Prints, per model: FP32 top-1 on digits:test, edgeq ``minmax`` INT8
top-1 of the original and of the outlier model (256 calibration images: the first N of a seeded shuffle of the
train split, as benchmarks/accuracy.py), and of the outlier model after cross-layer equalization
(``equalize(scope="groups")``) and after SmoothQuant-style migration (α = 0.5, absmax over the calibration
images). ``build_outlier_models(out_dir)`` is what benchmarks/recovery.py calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OutlierCase:
    """Which zoo model, which activation (by the Keras layer whose op computes it), which channels, how much."""

    name: str  # the file is <name>.tflite
    model: str
    layer: str  # matched as "/<layer>_1/" in the tensor name TF gives the op's output
    factors: dict[int, float]


CASES = (
    # b1's and b2's conv outputs go through MAX_POOL_2D into the next conv: plain pairs. The scaled channels are
    # the ones with the largest ranges on 32 train images (so the tensor's range grows by the full factor).
    OutlierCase("cnn_b1_outliers", "cnn", "b1_relu", {8: 70.0, 4: 50.0, 15: 30.0}),
    OutlierCase("cnn_b2_outliers", "cnn", "b2_relu", {26: 100.0, 4: 60.0, 21: 30.0}),
    # ir1's projection feeds ir2's expansion and the residual ADD, whose sum feeds ir3's expansion: a group of
    # two producers and two readers (MobileNetV2 has no plain pair: every other conv ends in RELU6).
    OutlierCase("mobilenet_v2_ir1_outliers", "mobilenet_v2", "ir1_project_bn", {2: 100.0, 9: 70.0, 17: 50.0, 30: 30.0}),
)


def _tensor(float_model: bytes, layer: str) -> str:
    from edgeq.recover.equalize import equalizable

    names = [n for n in equalizable(float_model, scope="groups") if f"/{layer}_1/" in n]
    if len(names) != 1:
        raise RuntimeError(f"expected one rescalable activation of layer {layer}, found {names}")
    return names[0]


def _float_outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    from edgeq.harness.accuracy import run_batch1
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    return run_batch1(interpreter, x)


def _test_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    from edgeq.preprocess import apply_preprocessing
    from edgeq_models import ZOO
    from edgeq_models.zoo import load_splits

    _, _, test = load_splits(ZOO[name].dataset)
    return apply_preprocessing(ZOO[name].preprocessing, test.images), test.labels


def build_outlier_models(out_dir: Path, cache: str | None = None) -> list[Path]:
    """Write ``<case name>.tflite`` for every case into ``out_dir`` (float models, same function as the zoo
    model's float flatbuffer; asserted on the test split) and return their paths."""
    from edgeq.intake.load import load_float_model
    from edgeq.recover.equalize import scale_channels
    from edgeq_models import build

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case in CASES:
        original = load_float_model(build(case.model, cache=cache).path).flatbuffer
        hard = scale_channels(original, _tensor(original, case.layer), case.factors)
        x, _ = _test_split(case.model)
        before, after = _float_outputs(original, x), _float_outputs(hard, x)
        if not np.allclose(before, after, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(before)))):
            raise AssertionError(f"{case.model}: scaling channels changed the float outputs")
        path = out_dir / f"{case.name}.tflite"
        path.write_bytes(hard)
        written.append(path)
    return written


def _int8_top1(model: Path, calib: Path, name: str, x: np.ndarray, labels: np.ndarray, tmp: Path) -> float:
    from edgeq.artifacts import Estimator
    from edgeq.converter.api import convert
    from edgeq.harness.accuracy import run_batch1, top1
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.tflite.runtime import make_interpreter
    from edgeq_models import ZOO

    out = tmp / f"{model.stem}_minmax.tflite"
    convert(model, out, calib=calib, recipe=QuantRecipe(method=Estimator.MINMAX),
            preprocessing=ZOO[name].preprocessing)
    interpreter, _ = make_interpreter(out)
    return top1(run_batch1(interpreter, x), labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to keep the outlier models (default: temp)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    from edgeq.harness.accuracy import top1
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import apply_preprocessing
    from edgeq.recover.equalize import channel_absmax, equalizable, equalize
    from edgeq.tfimport import import_tensorflow
    from edgeq_models import ZOO, build
    from edgeq_models.zoo import load_splits

    import_tensorflow()
    header = ["model", "outlier channels", "FP32", "minmax INT8 (original)", "minmax INT8 (outliers)", "drop pp",
              "minmax INT8 (outliers, CLE)", "minmax INT8 (outliers, SmoothQuant α=0.5)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        paths = build_outlier_models(args.out or tmp / "outliers", args.cache_dir)
        for case, hard_path in zip(CASES, paths, strict=True):
            train, _, _ = load_splits(ZOO[case.model].dataset)
            order = np.random.default_rng(0).permutation(len(train))[: args.samples]
            calib = tmp / f"{case.name}_calib.npy"
            np.save(calib, train.images[order])
            x, labels = _test_split(case.model)
            original = tmp / f"{case.model}.tflite"
            original.write_bytes(load_float_model(build(case.model, cache=args.cache_dir).path).flatbuffer)
            equalized = tmp / f"{case.name}_cle.tflite"
            hard = hard_path.read_bytes()
            equalized.write_bytes(equalize(hard, scope="groups").model)
            smoothed = tmp / f"{case.name}_smoothquant.tflite"
            pp_calib = apply_preprocessing(ZOO[case.model].preprocessing, train.images[order])
            absmax = channel_absmax(hard, ([image] for image in pp_calib), equalizable(hard, scope="groups"))
            smoothed.write_bytes(equalize(hard, strength=0.5, channel_absmax=absmax, scope="groups").model)
            fp32 = top1(_float_outputs(hard, x), labels)
            scores = [_int8_top1(p, calib, case.model, x, labels, tmp) for p in (original, hard_path, equalized,
                                                                                  smoothed)]
            drop = (fp32 - scores[1]) * 100
            if drop <= 5.0:
                failed.append(case.name)
            factors = ", ".join(f"c{c}×{f:g}" for c, f in case.factors.items())
            cells = [case.name, factors, f"{fp32:.2%}", f"{scores[0]:.2%}", f"{scores[1]:.2%}", f"{drop:+.1f}",
                     f"{scores[2]:.2%}", f"{scores[3]:.2%}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    if failed:
        print(f"not a hard case (minmax INT8 within 5 pp of FP32): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
