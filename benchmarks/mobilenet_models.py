"""Shared by the latency benchmarks: a MobileNetV2-224 (random weights) as float and INT8 .tflite files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mobilenet_v2_224_float(folder: Path) -> tuple[Path, Path]:
    """(keras path, float32 .tflite path) for keras.applications.MobileNetV2(alpha=1.0, 224x224), seeded."""
    import keras

    from edgeq.intake.load import load_float_model
    from edgeq.tfimport import import_tensorflow

    import_tensorflow()
    keras_path = folder / "mobilenet_v2_224.keras"
    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None).save(keras_path)
    float_path = folder / "mobilenet_v2_224_float32.tflite"
    float_path.write_bytes(load_float_model(keras_path).flatbuffer)
    return keras_path, float_path


def mobilenet_v2_224(folder: Path, calibration_samples: int = 32) -> tuple[Path, Path]:
    """(float32 path, int8 path) for keras.applications.MobileNetV2(alpha=1.0, 224x224), seeded."""
    import edgeq

    keras_path, float_path = mobilenet_v2_224_float(folder)
    calib = folder / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (calibration_samples, 224, 224, 3)).astype(np.float32))
    int8_path = folder / "mobilenet_v2_224_int8.tflite"
    edgeq.convert(keras_path, int8_path, calib=calib)
    return float_path, int8_path
