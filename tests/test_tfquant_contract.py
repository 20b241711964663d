"""Contract test for TensorFlow's private ``mlir_quantize``: stamped ranges must become the scales.

If a TensorFlow upgrade changes how min/max become quantization parameters, this fails loudly.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.artifacts import IOType
from edgeq.converter.quantize import quantize
from edgeq.tflite import model as tfl


@pytest.fixture(scope="module")
def dense_float_model() -> bytes:
    import keras

    from edgeq.intake.load import keras_to_float_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="x")
    outputs = keras.layers.Dense(8, name="fc", bias_initializer="random_normal")(inputs)
    return keras_to_float_tflite(keras.Model(inputs, outputs))


def _io_quantization(data: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    result = []
    for index in (graph.inputs[0], graph.outputs[0]):
        q = graph.tensors[index].quantization
        result.append((float(q.scale[0]), int(q.zeroPoint[0])))
    return result[0], result[1]


@pytest.mark.parametrize(("lo", "hi"), [(-1.0, 1.0), (-3.0, 5.0), (0.0, 2.0), (-0.5, 8.0)])
def test_stamped_range_sets_scale_and_zero_point(dense_float_model: bytes, lo: float, hi: float) -> None:
    graph = tfl.parse(dense_float_model).subgraphs[0]
    x, y = int(graph.inputs[0]), int(graph.outputs[0])
    quantized = quantize(dense_float_model, {x: (lo, hi), y: (-4.0, 4.0)}, IOType.INT8)
    (scale, zero_point), (out_scale, out_zero) = _io_quantization(quantized)
    assert scale == pytest.approx((hi - lo) / 255.0, rel=1e-6)
    assert zero_point == int(np.clip(round(-128 - lo / scale), -128, 127))
    assert out_scale == pytest.approx(8.0 / 255.0, rel=1e-6)
    assert -128 <= out_zero <= 127


def test_moving_an_injected_max_moves_the_scale(dense_float_model: bytes) -> None:
    graph = tfl.parse(dense_float_model).subgraphs[0]
    x, y = int(graph.inputs[0]), int(graph.outputs[0])
    narrow = quantize(dense_float_model, {x: (-1.0, 1.0), y: (-1.0, 1.0)}, IOType.INT8)
    wide = quantize(dense_float_model, {x: (-1.0, 3.0), y: (-1.0, 1.0)}, IOType.INT8)
    assert _io_quantization(wide)[0][0] == pytest.approx(2.0 * _io_quantization(narrow)[0][0], rel=1e-6)


def test_weights_are_per_axis_int8_and_bias_int32(dense_float_model: bytes) -> None:
    graph_in = tfl.parse(dense_float_model).subgraphs[0]
    ranges = {int(graph_in.inputs[0]): (-1.0, 1.0), int(graph_in.outputs[0]): (-2.0, 2.0)}
    parsed = tfl.parse(quantize(dense_float_model, ranges, IOType.INT8))
    graph = parsed.subgraphs[0]
    fc = next(op for op in graph.operators if tfl.op_type(parsed, op) == "FULLY_CONNECTED")
    weights, bias = graph.tensors[fc.inputs[1]], graph.tensors[fc.inputs[2]]
    assert weights.type == tfl.tensor_type("INT8") and len(weights.quantization.scale) == 8
    assert bias.type == tfl.tensor_type("INT32")
    input_scale = graph.tensors[fc.inputs[0]].quantization.scale[0]
    assert np.allclose(bias.quantization.scale, input_scale * np.asarray(weights.quantization.scale), rtol=1e-5)
