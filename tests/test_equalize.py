"""Channel equalization (edgeq.recover.equalize) is exact in float, balances outlier channels, and leaves alone
what it cannot rescale exactly (RELU6, a second reader, a model output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.errors import InputError, UsageError
from edgeq.recover.equalize import channel_absmax, equalizable, equalize, scale_channels
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter


def _save(tmp: Path, name: str, build: object) -> bytes:
    import keras

    from edgeq.intake.load import load_float_model

    keras.utils.set_random_seed(0)
    model = build()  # type: ignore[operator]
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-trivial biases and BN-like spreads, so equalization has work to do
        layer.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in layer.get_weights()])
    path = tmp / f"{name}.keras"
    model.save(path)
    return load_float_model(path).flatbuffer


def _chain() -> object:
    """Every pair kind: CONV→MAX_POOL→CONV, CONV→PAD→DEPTHWISE, DEPTHWISE→AVG_POOL→CONV, CONV→flatten→FC, FC→FC."""
    import keras
    from keras import layers

    x = keras.Input((8, 8, 3), name="image")
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    y = layers.MaxPooling2D(name="pool")(y)
    y = layers.Conv2D(6, 1, name="c2")(y)
    y = layers.ZeroPadding2D(1, name="pad")(y)
    y = layers.DepthwiseConv2D(3, activation="relu", name="dw")(y)
    y = layers.AveragePooling2D(2, name="avg")(y)
    y = layers.Conv2D(5, 1, activation="relu", name="c3")(y)
    y = layers.Flatten(name="flat")(y)
    y = layers.Dense(12, activation="relu", name="fc1")(y)
    return keras.Model(x, layers.Dense(4, name="fc2")(y))


def _branches() -> object:
    """A residual stream (ADD), a tensor read by two convs, a conv shared by two branches (one weight tensor), a
    RELU6 producer, a MEAN over space, and an intermediate that is also a model output."""
    import keras
    from keras import layers

    x = keras.Input((8, 8, 3), name="image")
    r6 = layers.Conv2D(6, 3, padding="same", activation="relu6", name="r6")(x)
    stem = layers.Conv2D(6, 1, name="stem")(r6)
    body = layers.Conv2D(6, 1, activation="relu", name="body_a")(stem)
    body = layers.Conv2D(6, 1, name="body_b")(body)
    stream = layers.Add(name="add")([stem, body])
    twice = layers.Conv2D(4, 1, activation="relu", name="twice")(stream)
    left = layers.Conv2D(4, 1, name="left")(twice)
    right = layers.Conv2D(4, 3, name="right")(twice)
    shared = layers.Conv2D(4, 1, name="shared")
    a = shared(layers.Conv2D(4, 1, activation="relu", name="feed_a")(left))
    b = shared(layers.Conv2D(4, 1, activation="relu", name="feed_b")(x))
    seen = layers.Conv2D(4, 1, activation="relu", name="seen")(a)
    merged = layers.Concatenate(name="cat")([layers.GlobalAveragePooling2D(name="gap")(seen),
                                             layers.GlobalAveragePooling2D(name="gapb")(b),
                                             layers.GlobalAveragePooling2D(name="gapr")(right)])
    out = layers.Dense(3, name="out")(layers.Dense(8, activation="relu", name="fc")(merged))
    gap_out = layers.GlobalAveragePooling2D(name="gap_out")(layers.Conv2D(3, 1, name="head")(seen))
    return keras.Model(x, [out, gap_out, seen])


def _layernorm() -> object:
    """Tokens: FC → LayerNorm (gamma, beta: the SmoothQuant pattern) → FC → FC (3-D inputs, keep_num_dims)."""
    import keras
    from keras import layers

    x = keras.Input((6, 8), name="tokens")
    y = layers.Dense(8, name="embed")(x)
    y = layers.LayerNormalization(name="ln")(y)
    y = layers.Dense(10, activation="relu", name="up")(y)
    return keras.Model(x, layers.Dense(4, name="down")(y))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("equalize")
    return {name: _save(tmp, name, build) for name, build in
            (("chain", _chain), ("branches", _branches), ("layernorm", _layernorm))}


def _inputs(model: bytes, seed: int, count: int = 1) -> list[list[np.ndarray]]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, d["shape"]).astype(np.float32) for d in interpreter.get_input_details()]
            for _ in range(count)]


def _outputs(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    for detail, value in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def _same_function(before: bytes, after: bytes, seed: int = 7) -> None:
    for inputs in _inputs(before, seed, count=3):
        for old, new in zip(_outputs(before, inputs), _outputs(after, inputs), strict=True):
            scale = float(np.max(np.abs(old)))
            assert np.max(np.abs(old - new)) <= 1e-5 * scale, (np.max(np.abs(old - new)), scale)


def _activation(model: bytes, name: str, inputs: list[np.ndarray]) -> np.ndarray:
    graph = tfl.parse(model).subgraphs[0]
    index = next(i for i, t in enumerate(graph.tensors) if tfl.tensor_name(t) == name)
    interpreter, _ = make_interpreter(model, CpuKernels.CPU, preserve_all_tensors=True)
    for detail, value in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return interpreter.get_tensor(index).copy()


def _name(model: bytes, layer: str) -> str:
    """The tensor a Keras layer's op computes (its name carries the layer's)."""
    candidates = {g for g in equalizable(model) if f"/{layer}_1/" in g or f"/{layer}/" in g}
    assert len(candidates) == 1, (layer, candidates)
    return candidates.pop()


def _absmax(model: bytes) -> dict[str, np.ndarray]:
    names = list(equalizable(model))
    return channel_absmax(model, _inputs(model, 3, count=4), names)


@pytest.mark.parametrize("name", ["chain", "branches", "layernorm"])
@pytest.mark.parametrize("mode", ["cle", "cle-groups", "smoothquant"])
def test_equalize_keeps_the_float_function(models: dict[str, bytes], name: str, mode: str) -> None:
    model = models[name]
    if mode == "smoothquant":
        result = equalize(model, strength=0.5, channel_absmax=_absmax(model), scope="groups")
    else:
        result = equalize(model, scope="groups" if mode == "cle-groups" else "pairs")
    assert result.groups, result.skipped
    assert all(g.min_scale > 0 and g.max_scale >= g.min_scale for g in result.groups)
    assert any(g.min_scale != 1.0 or g.max_scale != 1.0 for g in result.groups)
    _same_function(model, result.model)


def test_every_supported_pattern_is_found(models: dict[str, bytes]) -> None:
    pairs = {(g.producers, g.consumers) for g in equalize(models["chain"]).groups}
    assert pairs == {(("CONV_2D",), ("CONV_2D",)), (("CONV_2D",), ("DEPTHWISE_CONV_2D",)),
                     (("DEPTHWISE_CONV_2D",), ("CONV_2D",)), (("CONV_2D",), ("FULLY_CONNECTED",)),
                     (("FULLY_CONNECTED",), ("FULLY_CONNECTED",))}
    # LayerNorm's x * (gamma * rsqrt) + (beta - mean * gamma * rsqrt): gamma's MUL is the producer.
    ln = {(g.producers, g.consumers) for g in equalize(models["layernorm"]).groups}
    assert (("MUL",), ("FULLY_CONNECTED",)) in ln and (("FULLY_CONNECTED",), ("FULLY_CONNECTED",)) in ln
    groups = {(g.producers, g.consumers) for g in equalize(models["branches"], scope="groups").groups}
    assert (("CONV_2D", "CONV_2D"), ("CONV_2D", "CONV_2D")) in groups  # stem + body_b -> body_a, twice
    assert (("CONV_2D",), ("CONV_2D", "CONV_2D")) in groups  # twice -> left, right


def test_what_cannot_be_rescaled_exactly_is_left_alone(models: dict[str, bytes]) -> None:
    model = models["branches"]
    result = equalize(model, scope="groups")
    reasons = {s.tensor: s.reason for s in result.skipped}
    changed = {g.tensor for g in result.groups}
    relu6 = next(t for t in reasons if "/r6_1/" in t)
    assert "RELU6" in reasons[relu6] and relu6 not in changed
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    seen = interpreter.get_output_details()[2]["name"]  # the conv "seen": read by "head" and a model output
    assert "model output" in reasons[seen] and seen not in changed
    with pytest.raises(InputError, match="RELU6"):
        scale_channels(model, relu6, {0: 10.0})
    with pytest.raises(InputError, match="model output"):
        scale_channels(model, seen, {0: 10.0})
    # Pairs only (the default): the residual stream and the tensor read by two convs are left alone.
    pairs = equalize(model)
    twice = _name(model, "twice")
    assert twice not in {g.tensor for g in pairs.groups}
    assert "not a pair" in {s.tensor: s.reason for s in pairs.skipped}[twice]
    assert not any(len(g.producers) > 1 for g in pairs.groups)


def test_bad_arguments_are_refused(models: dict[str, bytes]) -> None:
    model = models["chain"]
    with pytest.raises(InputError, match="channel_absmax"):
        equalize(model, strength=0.5)
    with pytest.raises(InputError, match="per-channel absmax of"):
        equalize(model, strength=0.5, channel_absmax={})
    with pytest.raises(UsageError):
        equalize(model, strength=1.5, channel_absmax={})
    with pytest.raises(InputError, match="no tensor named"):
        scale_channels(model, "nope", {0: 2.0})
    with pytest.raises(InputError, match="out of range"):
        scale_channels(model, _name(model, "c1"), {99: 2.0})
    with pytest.raises(InputError, match="positive"):
        scale_channels(model, _name(model, "c1"), {0: 0.0})


@settings(max_examples=12)
@given(layer=st.sampled_from(["c1", "c2", "dw", "c3", "fc1"]),
       factors=st.dictionaries(st.integers(0, 4), st.floats(1e-2, 1e2), min_size=1, max_size=4))
def test_scale_channels_keeps_the_float_function(models: dict[str, bytes], layer: str,
                                                 factors: dict[int, float]) -> None:
    model = models["chain"]
    name = _name(model, layer)
    scaled = scale_channels(model, name, factors)
    _same_function(model, scaled)
    x = _inputs(model, 5)[0]
    before, after = _activation(model, name, x), _activation(scaled, name, x)
    expected = before.copy()
    for channel, factor in factors.items():
        expected[..., channel] *= factor
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(expected))))


def test_scale_channels_through_a_residual_stream(models: dict[str, bytes]) -> None:
    model = models["branches"]
    stem = _name(model, "stem")
    _same_function(model, scale_channels(model, stem, {1: 40.0, 4: 0.05}))


def _per_tensor_sqnr(x: np.ndarray, channels: np.ndarray) -> float:
    """SQNR (dB) of int8 per-tensor min/max quantization of ``x``, measured on ``channels`` only."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = (hi - lo) / 255
    q = np.clip(np.round((x - lo) / step), 0, 255) * step + lo
    signal, noise = x[..., channels], (x - q)[..., channels]
    return float(10 * np.log10(np.sum(signal**2) / max(np.sum(noise**2), 1e-30)))


def _spread(absmax: np.ndarray) -> float:
    live = absmax[absmax > 0]
    return float(live.max() / live.min())


@pytest.mark.parametrize("strength", [None, 0.5])
def test_outlier_channels_hurt_per_tensor_int8_and_equalization_balances_them(models: dict[str, bytes],
                                                                              strength: float | None) -> None:
    model = models["chain"]
    name = _name(model, "c2")
    outliers = {0: 50.0, 2: 50.0, 4: 50.0}
    hard = scale_channels(model, name, outliers)
    samples = _inputs(model, 11, count=4)
    normal = np.array([c for c in range(6) if c not in outliers])
    x, x_hard = _activation(model, name, samples[0]), _activation(hard, name, samples[0])
    assert _per_tensor_sqnr(x_hard, normal) < _per_tensor_sqnr(x, normal) - 20  # 50x: about 34 dB lost
    absmax = channel_absmax(hard, samples, [name])
    assert _spread(absmax[name]) > 30 * _spread(channel_absmax(model, samples, [name])[name]) / 2
    if strength is None:
        fixed = equalize(hard)
    else:
        fixed = equalize(hard, strength=strength, channel_absmax=channel_absmax(hard, samples, equalizable(hard)))
    _same_function(model, fixed.model)
    group = next(g for g in fixed.groups if g.tensor == name)
    assert group.max_scale / group.min_scale > 10
    balanced = channel_absmax(fixed.model, samples, [name])[name]
    assert _spread(balanced) < _spread(absmax[name]) / 10
    x_fixed = _activation(fixed.model, name, samples[0])
    worst = [min(_per_tensor_sqnr(v, np.array([c])) for c in range(6)) for v in (x_hard, x_fixed)]
    assert worst[1] > worst[0] + 10, worst  # the weakest channel's resolution comes back


def test_channel_absmax_is_the_per_channel_max_over_samples(models: dict[str, bytes]) -> None:
    model = models["chain"]
    name = _name(model, "c1")
    samples = _inputs(model, 2, count=3)
    expected = np.max([np.abs(_activation(model, name, s)).reshape(-1, 8).max(axis=0) for s in samples], axis=0)
    got = channel_absmax(model, ([s[0][0]] for s in samples), [name])  # without the batch axis
    np.testing.assert_allclose(got[name], expected, rtol=1e-6)
    with pytest.raises(InputError, match="no tensor named"):
        channel_absmax(model, samples, ["nope"])
