"""Empirical bias correction (edgeq.recover.bias_correction): only biases change, each by exactly the measured
mean error; the measurement agrees with an independent numpy reference; and the real INT8 model's output loses
most of its mean error on held-out samples when one layer's per-tensor weights round with a bias."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeq.artifacts import IOType
from edgeq.converter.quantize import quantize
from edgeq.errors import InputError
from edgeq.recover.bias_correction import BiasCorrection, correct_biases
from edgeq.recover.simulate import Simulator
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

Ranges = dict[TensorKey, tuple[float, float]]


@pytest.fixture(scope="module")
def tiny() -> bytes:
    """conv3×3+RELU → two 1×1 convs (one with per-tensor-coarse weights: an outlier 60× the rest) → ADD → GAP →
    dense without a bias."""
    import keras
    from keras import layers

    from edgeq.intake.load import keras_to_float_tflite

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3), batch_size=1)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    a = layers.Conv2D(6, 1, name="coarse")(y)
    b = layers.Conv2D(6, 1, name="fine")(y)
    y = layers.GlobalAveragePooling2D()(layers.Add()([a, b]))
    model = keras.Model(x, layers.Dense(4, use_bias=False, name="fc")(y))
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.05, (1, 1, 8, 6)).astype(np.float32)
    weights[0, 0, 0, 0] = 3.0
    model.get_layer("coarse").set_weights([weights, rng.normal(0, 0.1, 6).astype(np.float32)])
    return keras_to_float_tflite(model)


def _samples(count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(0.3, 1.0, (1, 8, 8, 3)).astype(np.float32)] for _ in range(count)]


def _minmax(model: bytes, samples: list[list[np.ndarray]]) -> Ranges:
    sim = Simulator(model, preserve_all_tensors=True)
    config = sim.float_config()
    lo: dict[TensorKey, float] = {}
    hi: dict[TensorKey, float] = {}
    for sample in samples:
        sim.run(config, [sample])
        for a in sim.activations:
            value = sim.tensor(a.key)
            lo[a.key] = min(lo.get(a.key, 0.0), float(value.min()))
            hi[a.key] = max(hi.get(a.key, 0.0), float(value.max()))
    return {key: (lo[key], hi[key]) for key in lo}


@pytest.fixture(scope="module")
def calibrated(tiny: bytes) -> tuple[Ranges, list[list[np.ndarray]], BiasCorrection]:
    samples = _samples(48, 1)
    ranges = _minmax(tiny, samples)
    return ranges, samples, correct_biases(tiny, ranges, samples, per_tensor=True)


def _run(model: bytes, samples: list[list[np.ndarray]]) -> np.ndarray:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    index, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    found = []
    for (x,) in samples:
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        found.append(interpreter.get_tensor(out).astype(np.float64))
    return np.concatenate(found)


def _constant(model: Any, tensor: Any) -> np.ndarray:
    raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype="<f4").reshape([int(d) for d in tensor.shape])


def test_real_int8_mean_error_shrinks_on_held_out_samples(tiny: bytes, calibrated: Any) -> None:
    ranges, _, result = calibrated
    held_out = _samples(48, 2)
    reference = _run(tiny, held_out)
    errors = {name: _run(quantize(model, ranges, IOType.FLOAT32, per_tensor=True), held_out) - reference
              for name, model in (("plain", tiny), ("corrected", result.model))}
    bias = {name: float(np.mean(np.abs(e.mean(axis=0)))) for name, e in errors.items()}
    mse = {name: float(np.mean(e ** 2)) for name, e in errors.items()}
    assert bias["corrected"] < 0.5 * bias["plain"], bias
    assert mse["corrected"] < mse["plain"], mse


def test_only_biases_change_each_by_the_measured_error(tiny: bytes, calibrated: Any) -> None:
    _, samples, result = calibrated
    before, after = tfl.parse(tiny), tfl.parse(result.model)
    old, new = before.subgraphs[0], after.subgraphs[0]
    assert result.samples == len(samples) and not result.skipped
    assert [r.op_type for r in result.layers] == ["CONV_2D", "CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    assert result.changed == 4
    biases: dict[int, tuple[int, int]] = {}  # tensor index in the new model -> (op, layer record)
    for k, record in enumerate(result.layers):
        op = new.operators[record.op]
        slot = 2
        assert len(op.inputs) > slot and op.inputs[slot] >= 0
        biases[int(op.inputs[slot])] = (record.op, k)
    assert [r.bias_added for r in result.layers] == [False, False, False, True]
    # the dense layer had no bias: one new tensor; nothing else was added or rewired
    assert len(new.tensors) == len(old.tensors) + 1
    for i, (o, n) in enumerate(zip(before.subgraphs[0].operators, new.operators, strict=True)):
        assert list(o.outputs) == list(n.outputs)
        assert list(o.inputs)[:2] == list(n.inputs)[:2], i
    for index, tensor in enumerate(old.tensors):
        if index in biases:
            continue
        assert bytes(before.buffers[tensor.buffer].data if before.buffers[tensor.buffer].data is not None else b"") \
            == bytes(after.buffers[new.tensors[index].buffer].data
                     if after.buffers[new.tensors[index].buffer].data is not None else b""), index
    for index, (op_index, k) in biases.items():
        record = result.layers[k]
        had = int(old.operators[op_index].inputs[2]) if len(old.operators[op_index].inputs) > 2 else -1
        original = _constant(before, old.tensors[had]) if had >= 0 else np.zeros(record.channels, np.float32)
        shift = _constant(after, new.tensors[index]).astype(np.float64) - original
        np.testing.assert_allclose(shift, -np.asarray(record.mean_error), rtol=1e-5, atol=1e-7)
        assert record.max_shift == pytest.approx(float(np.max(np.abs(shift))), rel=1e-5)
    coarse = next(r for r in result.layers if "coarse" in r.tensor)
    fine = next(r for r in result.layers if "fine" in r.tensor)
    assert coarse.max_shift > 3 * fine.max_shift  # the outlier's rounding is where the bias came from


def _conv3x3_relu(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'same' 3×3 convolution (weights [O, 3, 3, I]) + bias + RELU in float64, for one [1, H, W, I] image."""
    padded = np.pad(x[0].astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    patches = np.stack([padded[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)  # [H, W, 9, I]
    out = np.einsum("hwki,oki->hwo", patches, weights.reshape(weights.shape[0], 9, -1).astype(np.float64))
    return np.maximum(out + bias, 0.0)


def test_first_layer_error_matches_a_numpy_reference(tiny: bytes, calibrated: Any) -> None:
    """c1 is measured before any correction: float output vs the output from int8-rounded inputs and per-tensor
    int8 weights, averaged where the float output is positive (RELU's linear part), computed here by hand."""
    ranges, samples, result = calibrated
    model = tfl.parse(tiny)
    graph = model.subgraphs[0]
    op = graph.operators[result.layers[0].op]
    weights = _constant(model, graph.tensors[int(op.inputs[1])])
    bias = _constant(model, graph.tensors[int(op.inputs[2])]).astype(np.float64)
    step = np.max(np.abs(weights)) / 127.0
    rounded = np.clip(np.round(weights / step), -127, 127) * step
    lo, hi = ranges[(0, int(graph.inputs[0]))]
    scale = (hi - min(lo, 0.0)) / 255.0
    zero_point = np.clip(np.round(-128 - min(lo, 0.0) / scale), -128, 127)
    total = np.zeros(weights.shape[0])
    count = np.zeros(weights.shape[0])
    for (x,) in samples:
        x_int8 = (np.clip(np.round(x / scale) + zero_point, -128, 127) - zero_point) * scale
        reference = _conv3x3_relu(x, weights, bias).reshape(-1, weights.shape[0])
        simulated = _conv3x3_relu(x_int8, rounded, bias).reshape(-1, weights.shape[0])
        inside = reference > 0
        total += np.where(inside, simulated - reference, 0.0).sum(axis=0)
        count += inside.sum(axis=0)
    expected = total / count
    np.testing.assert_allclose(result.layers[0].mean_error, expected, rtol=2e-3, atol=2e-6)
    assert result.layers[0].linear_fraction == pytest.approx(count.sum() / (len(samples) * 64 * 8))


def test_corrected_linear_layers_have_no_simulated_mean_error_left(tiny: bytes, calibrated: Any) -> None:
    """The layers without a fused activation: after correction the simulated output of the corrected model minus
    the ORIGINAL float output averages to zero per channel on the calibration samples."""
    ranges, samples, result = calibrated
    original = Simulator(tiny, preserve_all_tensors=True)
    corrected = Simulator(result.model, per_tensor=True, preserve_all_tensors=True)
    quantized = corrected.params(ranges)
    linear = [r for r in result.layers if r.activation == "NONE"]
    left = {r.tensor: np.zeros(r.channels) for r in linear}
    keys = {tfl.tensor_name(t): (0, i) for i, t in enumerate(tfl.parse(tiny).subgraphs[0].tensors)}
    for sample in samples:
        original.run(original.float_config(), [sample])
        corrected.run(quantized, [sample])
        for r in linear:
            diff = corrected.tensor(keys[r.tensor]) - original.tensor(keys[r.tensor])
            left[r.tensor] += diff.reshape(-1, r.channels).mean(axis=0) / len(samples)
    for r in linear:
        assert np.max(np.abs(left[r.tensor])) < 1e-3 * max(r.max_shift, 1e-6) + 1e-6, (r.tensor, left[r.tensor])


def test_shared_bias_is_copied_per_layer(tiny: bytes, calibrated: Any) -> None:
    """Both 1×1 convs read one bias tensor (and its buffer): each gets its own corrected copy."""
    ranges, samples, _ = calibrated
    model = tfl.parse(tiny)
    graph = model.subgraphs[0]
    convs = [op for op in graph.operators if tfl.op_type(model, op) == "CONV_2D"][1:]
    shared = int(convs[0].inputs[2])
    convs[1].inputs[2] = shared
    sharing = tfl.serialize(model)
    result = correct_biases(sharing, ranges, samples, per_tensor=True)
    after = tfl.parse(result.model)
    ops = [op for op in after.subgraphs[0].operators if tfl.op_type(after, op) == "CONV_2D"][1:]
    first, second = (int(op.inputs[2]) for op in ops)
    assert first != second
    tensors = after.subgraphs[0].tensors
    assert tensors[first].buffer != tensors[second].buffer
    base = _constant(model, graph.tensors[shared]).astype(np.float64)
    for op, index in zip(ops, (first, second), strict=True):
        record = next(r for r in result.layers if r.op == list(after.subgraphs[0].operators).index(op))
        np.testing.assert_allclose(_constant(after, tensors[index]) - base, -np.asarray(record.mean_error),
                                   rtol=1e-5, atol=1e-7)


def test_a_model_without_layers_is_returned_unchanged() -> None:
    import keras
    from keras import layers

    from edgeq.intake.load import keras_to_float_tflite

    x = keras.Input((4, 4, 2), batch_size=1)
    flat = keras_to_float_tflite(keras.Model(x, layers.ReLU()(layers.Add()([x, x]))))
    samples = [[np.ones((1, 4, 4, 2), np.float32)]]
    result = correct_biases(flat, _minmax(flat, samples), samples)
    assert result.model == flat and result.changed == 0 and result.layers == ()


def test_bad_samples_are_refused(tiny: bytes, calibrated: Any) -> None:
    ranges, samples, _ = calibrated
    with pytest.raises(InputError, match="at least one"):
        correct_biases(tiny, ranges, [])
    with pytest.raises(InputError, match="2 arrays"):
        correct_biases(tiny, ranges, [[samples[0][0], samples[0][0]]])
