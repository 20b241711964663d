"""Keras -> float TFLite with a static batch-1 input, run in the real LiteRT interpreter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import edgeq_models.zoo as zoo
from datagen.bundled import load_digits
from edgeq.errors import InputError
from edgeq.harness.accuracy import dequantize, quantize, run_batch1, top1
from edgeq.harness.session import TensorInfo
from edgeq.intake.load import keras_to_float_tflite
from edgeq.preprocess import apply_preprocessing
from edgeq.tflite.runtime import CpuKernels, make_interpreter


@pytest.fixture(scope="module")
def cnn_flatbuffer(tiny_zoo: Mapping[str, Path]) -> tuple[object, bytes]:
    model = zoo.load_model(tiny_zoo["cnn"])
    return model, keras_to_float_tflite(model)


def test_input_is_static_batch_1(cnn_flatbuffer: tuple[object, bytes]) -> None:
    _, flatbuffer = cnn_flatbuffer
    interpreter, runtime = make_interpreter(flatbuffer)
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape"]) == [1, 32, 32, 3]
    assert list(detail["shape_signature"]) == [1, 32, 32, 3]  # no dynamic batch left
    assert detail["dtype"] == np.float32
    assert runtime.name == "ai_edge_litert"


@pytest.mark.parametrize("kernels", list(CpuKernels))
def test_litert_matches_keras_on_real_digits(cnn_flatbuffer: tuple[object, bytes], kernels: CpuKernels) -> None:
    model, flatbuffer = cnn_flatbuffer
    data = load_digits("test")
    x = apply_preprocessing(zoo.ZOO["cnn"].preprocessing, data.images[:40])
    interpreter, _ = make_interpreter(flatbuffer, kernels)
    scores = run_batch1(interpreter, x)
    expected = model.predict(x, verbose=0)  # type: ignore[attr-defined]
    assert np.allclose(scores, expected, atol=1e-4)
    assert top1(scores, data.labels[:40]) == top1(expected, data.labels[:40])


def test_wrong_sample_shape_is_an_input_error(cnn_flatbuffer: tuple[object, bytes]) -> None:
    interpreter, _ = make_interpreter(cnn_flatbuffer[1])
    with pytest.raises(InputError, match="the model expects"):
        run_batch1(interpreter, np.zeros((1, 28, 28, 3), np.float32))


def test_garbage_model_is_an_input_error() -> None:
    with pytest.raises(InputError, match="could not load"):
        make_interpreter(b"not a flatbuffer at all" * 4)


def test_int8_io_quantization_round_trips() -> None:
    detail = TensorInfo(name="x", shape=(141,), dtype=np.dtype(np.int8), scale=0.05, zero_point=-3)
    x = np.linspace(-7.0, 7.0, 141, dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == np.int8
    assert q.min() == -128 and q.max() == 127  # +-7 / 0.05 - 3 is outside int8: clipped
    inside = (x >= -6.25) & (x <= 6.5)  # (-128 + 3) * 0.05 .. (127 + 3) * 0.05
    assert np.all(np.abs(dequantize(q, detail)[inside] - x[inside]) <= 0.025 + 1e-6)
