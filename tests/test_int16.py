"""Selective int16 activations through ai-edge-quantizer (edgeq.converter.int16) and the int16x8 check rules.

The fixture is a two-conv Keras net with known weights, loaded through edgeq's intake. Its fidelity is judged
against a slow, obvious numpy evaluation of the same convolutions, not against stored numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.artifacts import IOType, Severity
from edgeq.converter.int16 import int16_candidates, quantize_mixed
from edgeq.errors import InputError
from edgeq.spec.check import check_model
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

pytest.importorskip("ai_edge_quantizer")

RNG = np.random.default_rng(16)
W1 = (RNG.normal(size=(3, 3, 3, 8)) * 0.4).astype(np.float32)
B1 = (RNG.normal(size=(8,)) * 0.1).astype(np.float32)
W2 = (RNG.normal(size=(3, 3, 8, 4)) * 0.3).astype(np.float32)
B2 = (RNG.normal(size=(4,)) * 0.1).astype(np.float32)
SAMPLES = RNG.uniform(-1.0, 1.0, size=(6, 1, 8, 8, 3)).astype(np.float32)


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 'same' convolution, stride 1, one output pixel and channel at a time (float64)."""
    _, height, width, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((1, height, width, w.shape[3]))
    for i in range(height):
        for j in range(width):
            for c in range(w.shape[3]):
                out[0, i, j, c] = np.sum(padded[0, i:i + 3, j:j + 3, :] * w[:, :, :, c]) + b[c]
    return out


def _reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float net by hand: (the first conv's output, the model output)."""
    hidden = _conv_same(x, W1, B1)
    return hidden, _conv_same(hidden, W2, B2)


@pytest.fixture(scope="module")
def float_net(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import keras

    from edgeq.intake.load import load_float_model

    folder = tmp_path_factory.mktemp("int16")
    inputs = keras.Input((8, 8, 3), batch_size=1, name="image")
    first = keras.layers.Conv2D(8, 3, padding="same", name="conv1")
    second = keras.layers.Conv2D(4, 3, padding="same", name="conv2")
    model = keras.Model(inputs, second(first(inputs)))
    first.set_weights([W1, B1])
    second.set_weights([W2, B2])
    model.save(folder / "net.keras")
    return load_float_model(folder / "net.keras").flatbuffer


def _names(float_model: bytes) -> dict[str, str]:
    """'input', 'hidden' (the first conv's output), 'output': tensor names in the float model."""
    candidates = int16_candidates(float_model)
    inputs = [c.tensor for c in candidates if c.op_type == "INPUT"]
    convs = [c.tensor for c in candidates if c.op_type == "CONV_2D"]
    assert len(inputs) == 1 and len(convs) == 2
    return {"input": inputs[0], "hidden": convs[0], "output": convs[1]}


def _ranges(float_model: bytes, hidden: tuple[float, float] | None = None) -> dict[str, tuple[float, float]]:
    """Min/max of every activation over SAMPLES from the numpy reference; ``hidden`` overrides conv1's range."""
    names = _names(float_model)
    outs = [_reference(x) for x in SAMPLES]
    hid = np.stack([h for h, _ in outs])
    out = np.stack([o for _, o in outs])
    ranges = {names["input"]: (float(SAMPLES.min()), float(SAMPLES.max())),
              names["hidden"]: hidden or (float(hid.min()), float(hid.max())),
              names["output"]: (float(out.min()), float(out.max()))}
    return ranges


def _tensors(model: bytes) -> dict[str, Any]:
    graph = tfl.parse(model).subgraphs[0]
    return {tfl.tensor_name(t): t for t in graph.tensors}


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    """One inference on LiteRT's builtin kernels (no delegate), quantizing the input and dequantizing the output."""
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if inp["dtype"] == np.float32:
        interpreter.set_tensor(inp["index"], x)
    else:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        raw = np.clip(np.round(x / scale) + zero, info.min, info.max)
        interpreter.set_tensor(inp["index"], raw.astype(inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.float32:
        return y.astype(np.float64)
    scale, zero = out["quantization"]
    return (y.astype(np.float64) - zero) * scale


def test_mixed_model_runs_with_int16_only_where_asked(float_net: bytes) -> None:
    names = _names(float_net)
    mixed = quantize_mixed(float_net, _ranges(float_net), [names["hidden"]], IOType.INT8)
    tensors = _tensors(mixed)
    hidden = tensors[names["hidden"]]
    assert tfl.tensor_type_name(hidden.type) == "INT16"
    assert list(hidden.quantization.zeroPoint) == [0]
    # Its producer conv1 and its reader conv2 are a16w8: conv1's int8 input is requantized into
    # '<input>_quantized' by a QUANTIZE, and conv2's int16 output into the int8 model output '<output>_quantized'.
    types = {name: tfl.tensor_type_name(t.type) for name, t in tensors.items()}
    int16 = {name for name, kind in types.items() if kind == "INT16"}
    assert int16 == {names["hidden"], f"{names['input']}_quantized", names["output"]}
    assert all(list(tensors[name].quantization.zeroPoint) == [0] for name in int16)
    assert types[names["input"]] == types[f"{names['output']}_quantized"] == "INT8"
    parsed = tfl.parse(mixed)
    graph = parsed.subgraphs[0]
    ops = [tfl.op_type(parsed, op) for op in graph.operators]
    assert ops == ["QUANTIZE", "CONV_2D", "CONV_2D", "QUANTIZE"]  # int8->int16, a16w8, a16w8, int16->int8
    assert [tfl.tensor_type_name(graph.tensors[op.inputs[2]].type) for op in graph.operators if len(op.inputs) == 3] \
        == ["INT64", "INT64"]  # the int16x8 convolutions' biases
    assert [tfl.tensor_name(graph.tensors[i]) for i in graph.outputs] == [f"{names['output']}_quantized"]
    assert _run(mixed, SAMPLES[0]).shape == (1, 8, 8, 4)
    assert not [f for f in check_model(mixed, io="int8").findings if f.severity is Severity.ERROR]
    # nothing asked: all int8 (AEQ's a8w8), int32 biases, no QUANTIZE
    all_int8 = quantize_mixed(float_net, _ranges(float_net), [], IOType.INT8)
    assert "INT16" not in {tfl.tensor_type_name(t.type) for t in _tensors(all_int8).values()}


def test_int16_on_a_badly_ranged_tensor_improves_fidelity(float_net: bytes) -> None:
    names = _names(float_net)
    ranges = _ranges(float_net, hidden=(-400.0, 400.0))  # the real values span a few units: 3 int8 steps
    all_int8 = quantize_mixed(float_net, ranges, [], IOType.INT8)
    mixed = quantize_mixed(float_net, ranges, [names["hidden"]], IOType.INT8)
    err8, err16 = [], []
    for x in SAMPLES:
        want = _reference(x)[1]
        err8.append(np.sqrt(np.mean((_run(all_int8, x) - want) ** 2)))
        err16.append(np.sqrt(np.mean((_run(mixed, x) - want) ** 2)))
    assert max(err16) * 10 < min(err8), (err16, err8)


def test_io_types(float_net: bytes) -> None:
    names = _names(float_net)
    ranges = _ranges(float_net)
    floating = quantize_mixed(float_net, ranges, [names["hidden"]], IOType.FLOAT32)
    graph = tfl.parse(floating).subgraphs[0]
    assert {tfl.tensor_type_name(graph.tensors[i].type) for i in [*graph.inputs, *graph.outputs]} == {"FLOAT32"}
    want = _reference(SAMPLES[1])[1]
    assert np.sqrt(np.mean((_run(floating, SAMPLES[1]) - want) ** 2)) < 0.01 * np.abs(want).max()
    unsigned = quantize_mixed(float_net, ranges, [], IOType.UINT8)  # all int8 inside, uint8 <-> int8 QUANTIZE
    graph = tfl.parse(unsigned).subgraphs[0]
    assert {tfl.tensor_type_name(graph.tensors[i].type) for i in [*graph.inputs, *graph.outputs]} == {"UINT8"}
    assert np.sqrt(np.mean((_run(unsigned, SAMPLES[1]) - want) ** 2)) < 0.05 * np.abs(want).max()
    # AEQ would convert uint8 <-> int16 in one QUANTIZE, which LiteRT refuses: refused before quantizing
    with pytest.raises(InputError, match="uint8 I/O cannot meet int16 at model input/output"):
        quantize_mixed(float_net, ranges, [names["hidden"]], IOType.UINT8)


def test_bad_names_are_input_errors(float_net: bytes) -> None:
    names = _names(float_net)
    with pytest.raises(InputError, match="no float activation tensor named 'nope'"):
        quantize_mixed(float_net, _ranges(float_net), ["nope"], IOType.INT8)
    with pytest.raises(InputError, match="a model input"):
        quantize_mixed(float_net, _ranges(float_net), [names["input"]], IOType.INT8)
    partial = {k: v for k, v in _ranges(float_net).items() if k != names["output"]}
    with pytest.raises(InputError, match="no range for 1 activation"):
        quantize_mixed(float_net, partial, [], IOType.INT8)


def _edit(model: bytes, name: str, change: Any) -> bytes:
    parsed = tfl.parse(model)
    tensor = next(t for t in parsed.subgraphs[0].tensors if tfl.tensor_name(t) == name)
    change(parsed, tensor)
    return tfl.serialize(parsed)


def test_check_flags_a_non_symmetric_int16_tensor_and_the_edge_tpu(float_net: bytes) -> None:
    names = _names(float_net)
    mixed = quantize_mixed(float_net, _ranges(float_net), [names["hidden"]], IOType.INT8)

    def shift(_: Any, tensor: Any) -> None:
        tensor.quantization.zeroPoint = np.array([5], dtype=np.int64)

    corrupted = check_model(_edit(mixed, names["hidden"], shift), io="int8")
    hits = [f for f in corrupted.findings if f.rule_id == "int16.zero-point"]
    assert hits and hits[0].severity is Severity.ERROR and hits[0].tensor == names["hidden"]
    edgetpu = check_model(mixed, target="edgetpu", io="int8")
    assert {f.op_type for f in edgetpu.findings if f.rule_id == "edgetpu.int16" and f.severity is Severity.ERROR} \
        == {"QUANTIZE", "CONV_2D"}
    xnnpack = check_model(mixed, target="xnnpack", io="int8")
    assert {f.op_type for f in xnnpack.findings if f.rule_id == "xnnpack.int16"} == {"QUANTIZE", "CONV_2D"}


def _int16_hidden_conv(float_net: bytes) -> tuple[Any, Any, Any]:
    """The mixed model (parsed) with the hidden activation at int16, its main graph, and the conv computing it."""
    names = _names(float_net)
    parsed = tfl.parse(quantize_mixed(float_net, _ranges(float_net), [names["hidden"]], IOType.INT8))
    graph = parsed.subgraphs[0]
    conv = next(op for op in graph.operators if tfl.op_type(parsed, op) == "CONV_2D"
                and tfl.tensor_name(graph.tensors[op.outputs[0]]) == names["hidden"])
    return parsed, graph, conv


def test_check_wants_an_int64_bias_on_int16_conv(float_net: bytes) -> None:
    parsed, graph, conv = _int16_hidden_conv(float_net)
    bias = graph.tensors[conv.inputs[2]]
    buffer = parsed.buffers[bias.buffer]
    values = np.frombuffer(bytes(bytearray(buffer.data)), np.int64).astype(np.int32)
    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    bias.type = tfl.tensor_type("INT32")
    findings = check_model(tfl.serialize(parsed), io="int8").findings
    assert [(f.rule_id, f.expected, f.actual) for f in findings if f.rule_id == "bias.dtype"] == \
        [("bias.dtype", "INT64", "INT32")]


def test_check_flags_int16_on_an_op_without_an_int16x8_kernel(float_net: bytes) -> None:
    parsed, _, conv = _int16_hidden_conv(float_net)
    conv.opcodeIndex = tfl.opcode_index(parsed, "RSQRT")  # measured 548 int16 steps off: not in INT16X8_OPS
    findings = check_model(tfl.serialize(parsed), io="int8").findings
    assert any(f.rule_id == "int16.no-kernel" and f.op_type == "RSQRT" for f in findings)


def test_float_ops_left_by_aeq_are_refused(tmp_path: Path) -> None:
    import keras

    from edgeq.intake.load import load_float_model

    inputs = keras.Input((4, 4, 2), batch_size=1)
    x = keras.layers.Conv2D(3, 1)(inputs)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)  # AEQ 0.10 has no LEAKY_RELU recipe
    keras.Model(inputs, keras.layers.Conv2D(2, 1)(x)).save(tmp_path / "leaky.keras")
    flat = load_float_model(tmp_path / "leaky.keras").flatbuffer
    ranges = {t.name: (-4.0, 4.0) for t in tfl.float_activations(tfl.parse(flat))}
    with pytest.raises(InputError, match="ai-edge-quantizer left LEAKY_RELU in float"):
        quantize_mixed(flat, ranges, [], IOType.INT8)
    # the first conv's output is read by LEAKY_RELU, which has no int16x8 path: it cannot be int16
    assert [(c.op_type, c.supported) for c in int16_candidates(flat)] == [
        ("INPUT", False), ("CONV_2D", False), ("LEAKY_RELU", False), ("CONV_2D", True)]


def test_a_model_without_signatures_is_quantized(float_net: bytes) -> None:
    """ai-edge-quantizer 0.10 iterates the signature list unconditionally: a model without one (MediaPipe's
    selfie segmenter) raised TypeError inside it, an exit 4."""
    parsed = tfl.parse(float_net)
    parsed.signatureDefs = None
    bare = tfl.serialize(parsed)
    assert tfl.parse(bare).signatureDefs is None
    names = _names(bare)
    mixed = tfl.parse(quantize_mixed(bare, _ranges(bare), [names["hidden"]], IOType.INT8))
    graph = mixed.subgraphs[0]
    hidden = next(t for t in graph.tensors if tfl.tensor_name(t) == names["hidden"])
    assert tfl.tensor_type_name(hidden.type) == "INT16"
