"""The TRANSPOSE_CONV bias-scale rule reads the activation by its role (operand 2), not operand 0 (the int32
output shape, which has no scale and made the rule return silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import Severity
from edgeq.spec.check import ACTIVATION_OPERAND, check_model
from edgeq.tflite import model as tfl


@pytest.fixture(scope="module")
def transpose_conv_int8(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import keras

    folder = tmp_path_factory.mktemp("tconv")
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", bias_initializer="random_normal")(x)
    keras.Model(inputs, x).save(folder / "tconv.keras")
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32))
    edgeq.convert(folder / "tconv.keras", folder / "tconv.tflite", calib=folder / "x.npy")
    return (folder / "tconv.tflite").read_bytes()


def _transpose_conv(parsed: Any) -> Any:
    graph = parsed.subgraphs[0]
    return graph, next(op for op in graph.operators if tfl.op_type(parsed, op) == "TRANSPOSE_CONV")


def test_keras_conv2d_transpose_has_a_bias_operand(transpose_conv_int8: bytes) -> None:
    graph, op = _transpose_conv(tfl.parse(transpose_conv_int8))
    roles = [tfl.tensor_type_name(graph.tensors[i].type) for i in op.inputs]
    assert roles == ["INT32", "INT8", "INT8", "INT32"]  # output shape, weights, input, bias
    assert ACTIVATION_OPERAND["TRANSPOSE_CONV"] == 2
    assert check_model(transpose_conv_int8).passed


def test_doubled_transpose_conv_bias_scale_is_caught(transpose_conv_int8: bytes) -> None:
    parsed = tfl.parse(transpose_conv_int8)
    graph, op = _transpose_conv(parsed)
    bias = graph.tensors[op.inputs[3]]
    bias.quantization.scale = np.asarray(bias.quantization.scale) * 2
    findings = [f for f in check_model(tfl.serialize(parsed)).findings if f.severity is Severity.ERROR]
    assert [(f.rule_id, f.op_type) for f in findings] == [("bias.scale", "TRANSPOSE_CONV")]
    x_scale = float(graph.tensors[op.inputs[2]].quantization.scale[0])
    w_scale = float(graph.tensors[op.inputs[1]].quantization.scale[0])
    expected = float(findings[0].expected.strip("[]").split(",")[0])  # type: ignore[union-attr]
    actual = float(findings[0].actual.strip("[]").split(",")[0])  # type: ignore[union-attr]
    assert expected == pytest.approx(x_scale * w_scale, rel=1e-5)
    assert actual == pytest.approx(2 * expected, rel=1e-4)


def test_check_cli_names_the_subgraph_of_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finding in subgraph 2 (not run by the main graph, checked all the same) shows as op '2:0' in the
    table and carries subgraph 2 in JSON."""
    import json

    from tflite_builders import GraphBuilder

    from edgeq.cli import main as cli

    builder = GraphBuilder()
    x = builder.tensor("x", [2], "INT8")
    y = builder.tensor("y", [2], "INT8")
    builder.op("ABS", [x], [y])
    data = builder.build([x], [y])
    parsed = tfl.parse(data)
    body = tfl.schema().SubGraphT()
    half, out = tfl.schema().TensorT(), tfl.schema().TensorT()
    for tensor, name in ((half, "half"), (out, "out")):
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, np.asarray([2], np.int32), \
            tfl.tensor_type("FLOAT32"), 0
    body.tensors, body.inputs, body.outputs = [half, out], np.asarray([0], np.int32), np.asarray([1], np.int32)
    op = tfl.schema().OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.asarray([0], np.int32), np.asarray([1], np.int32)
    body.operators, body.name = [op], "unused_body"
    parsed.subgraphs = [parsed.subgraphs[0], parsed.subgraphs[0], body]
    (tmp_path / "m.tflite").write_bytes(tfl.serialize(parsed))
    assert cli.main(["check", str(tmp_path / "m.tflite")]) == 1
    table = capsys.readouterr().out
    assert "float.tensor" in table and " 2:0 " in table
    assert cli.main(["check", str(tmp_path / "m.tflite"), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["report"]["findings"]
    floats = [(f["subgraph"], f["op_index"], f["tensor"]) for f in findings if f["rule_id"] == "float.tensor"]
    assert floats == [(2, 0, "half")]
