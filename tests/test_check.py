"""edgeq check: converted zoo models pass; models that break the spec are caught by the specific rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import Severity
from edgeq.cli import main as cli
from edgeq.quant_recipe import QuantRecipe
from edgeq.spec.check import check_model
from edgeq.spec.size import size_breakdown
from edgeq.tflite import model as tfl
from edgeq_models import ZOO


def rules_of(data: bytes, **kwargs: Any) -> set[str]:
    return {f.rule_id for f in check_model(data, **kwargs).findings if f.severity is Severity.ERROR}


@pytest.mark.parametrize("target", ["generic", "xnnpack"])
def test_every_converted_zoo_model_passes(tiny_zoo_int8: dict[str, Path], target: str) -> None:
    for name, path in tiny_zoo_int8.items():
        report = check_model(path.read_bytes(), target=target)
        assert report.passed, (name, [f.to_dict() for f in report.findings if f.severity is Severity.ERROR])


def _edited(path: Path, edit: Callable[[Any, Any], None]) -> bytes:
    parsed = tfl.parse(path.read_bytes())
    edit(parsed, parsed.subgraphs[0])
    return tfl.serialize(parsed)


def _first_op(model: Any, graph: Any, kind: str) -> Any:
    return next(op for op in graph.operators if tfl.op_type(model, op) == kind)


def _double_bias_scale(model: Any, graph: Any) -> None:
    bias = graph.tensors[_first_op(model, graph, "CONV_2D").inputs[2]]
    bias.quantization.scale = np.asarray(bias.quantization.scale) * 2


def _weight_zero_point(model: Any, graph: Any) -> None:
    weights = graph.tensors[_first_op(model, graph, "CONV_2D").inputs[1]]
    weights.quantization.zeroPoint = np.asarray(weights.quantization.zeroPoint) + 3


def _softmax_params(model: Any, graph: Any) -> None:
    out = graph.tensors[_first_op(model, graph, "SOFTMAX").outputs[0]]
    out.quantization.scale = np.asarray([1.0 / 128.0], np.float32)


def _maxpool_scale(model: Any, graph: Any) -> None:
    pooled = graph.tensors[_first_op(model, graph, "MAX_POOL_2D").inputs[0]]  # read only by the pool
    pooled.quantization.scale = np.asarray(pooled.quantization.scale) * 1.5


def _weights_minus_128(model: Any, graph: Any) -> None:
    weights = graph.tensors[_first_op(model, graph, "CONV_2D").inputs[1]]
    buffer = model.buffers[weights.buffer]
    data = np.asarray(buffer.data, dtype=np.uint8).copy()
    data[0] = 0x80  # int8 -128
    buffer.data = data


def _dynamic_batch(model: Any, graph: Any) -> None:
    tensor = graph.tensors[graph.inputs[0]]
    tensor.shapeSignature = np.asarray([-1, *list(tensor.shape)[1:]], np.int32)


def _custom_op(model: Any, graph: Any) -> None:
    code = tfl.schema().OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.builtin_code("CUSTOM")
    code.customCode, code.version = "VendorMagic", 1
    model.operatorCodes.append(code)
    _first_op(model, graph, "MAX_POOL_2D").opcodeIndex = len(model.operatorCodes) - 1


@pytest.mark.parametrize(("edit", "rule"), [
    (_double_bias_scale, "bias.scale"),
    (_weight_zero_point, "weights.zero-point"),
    (_softmax_params, "output.fixed-params"),
    (_maxpool_scale, "same-scale"),
    (_weights_minus_128, "weights.range"),
    (_dynamic_batch, "shape.dynamic"),
    (_custom_op, "op.custom"),
])
def test_edited_flatbuffer_is_caught_by_its_rule(tiny_zoo_int8: dict[str, Path],
                                                 edit: Callable[[Any, Any], None], rule: str) -> None:
    assert rules_of(tiny_zoo_int8["cnn"].read_bytes()) == set()
    broken = _edited(tiny_zoo_int8["cnn"], edit)
    assert rules_of(broken) == {rule}


def test_bias_finding_names_expected_and_actual(tiny_zoo_int8: dict[str, Path]) -> None:
    finding = next(f for f in check_model(_edited(tiny_zoo_int8["cnn"], _double_bias_scale)).findings)
    assert finding.op_type == "CONV_2D" and finding.op_index is not None and finding.tensor
    expected = float(finding.expected.strip("[]").split(",")[0])  # type: ignore[union-attr]
    actual = float(finding.actual.strip("[]").split(",")[0])  # type: ignore[union-attr]
    assert actual == pytest.approx(2 * expected, rel=1e-4)


def test_per_tensor_weights_where_per_axis_is_required(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "per_tensor.tflite"
    edgeq.convert(tiny_zoo["mobilenet_v2"], out, calib="digits:train", limit=8, recipe=QuantRecipe(per_tensor=True),
                  preprocessing=ZOO["mobilenet_v2"].preprocessing)
    report = check_model(out.read_bytes())
    per_axis = [f for f in report.findings if f.rule_id == "weights.per-axis"]
    assert {f.op_type for f in per_axis} == {"CONV_2D", "DEPTHWISE_CONV_2D"}
    assert all(f.expected.startswith(("per-axis on dim 0", "per-axis on dim 3")) for f in per_axis)  # type: ignore[union-attr]
    # FULLY_CONNECTED may be per-tensor under the spec: reported, not failed
    assert any(f.rule_id == "weights.per-tensor" and f.severity is Severity.INFO for f in report.findings)


def _tf_int8(keras_model: Any, dynamic_batch: bool, builtins_fallback: bool) -> bytes:
    import keras

    from edgeq.quiet import native_output_captured
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()
    model = keras_model
    if not dynamic_batch:
        inputs = keras.Input(tuple(keras_model.inputs[0].shape[1:]), batch_size=1)
        model = keras.Model(inputs, keras_model(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    shape = tuple(keras_model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.normal(size=(1, *shape)).astype(np.float32)] for _ in range(8))
    if not builtins_fallback:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with native_output_captured():
        return bytes(converter.convert())


def _sin_net() -> Any:
    import keras

    inputs = keras.Input((16,))
    x = keras.layers.Lambda(keras.ops.sin)(keras.layers.Dense(16)(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")  # TF, on purpose
def test_tf_conversion_with_dynamic_batch_is_caught(tiny_zoo: dict[str, Path]) -> None:
    from edgeq_models import load_model

    data = _tf_int8(load_model(tiny_zoo["cnn"]), dynamic_batch=True, builtins_fallback=False)
    assert "shape.dynamic" in rules_of(data)


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")  # TF, on purpose
def test_tf_conversion_falling_back_to_float_is_caught() -> None:
    data = _tf_int8(_sin_net(), dynamic_batch=False, builtins_fallback=True)
    rules = rules_of(data)
    assert {"float.tensor", "float.qdq-inside", "io.type"} <= rules
    sin = [f for f in check_model(data).findings if f.op_type == "SIN"]
    assert sin and sin[0].rule_id == "float.tensor"


def test_requested_io_type(tiny_zoo_int8: dict[str, Path]) -> None:
    data = tiny_zoo_int8["cnn"].read_bytes()
    assert rules_of(data, io="int8") == set()
    assert rules_of(data, io="uint8") == {"io.type"}
    assert rules_of(data, io="float32") == {"io.type"}


def test_tflm_profile_fails_unsupported_ops_and_xnnpack_only_warns(tiny_zoo_int8: dict[str, Path]) -> None:
    vit = tiny_zoo_int8["vit"].read_bytes()
    assert check_model(vit, target="xnnpack").passed  # GELU etc. run on builtin kernels: a warning
    warned = {f.actual for f in check_model(vit, target="xnnpack").findings if f.rule_id == "xnnpack.unsupported-op"}
    assert "GELU" in warned
    assert "tflm.unsupported-op" not in rules_of(tiny_zoo_int8["cnn"].read_bytes(), target="tflm")


def test_size_breakdown_adds_up(tiny_zoo_int8: dict[str, Path], tiny_zoo: dict[str, Path]) -> None:
    data = tiny_zoo_int8["resnet"].read_bytes()
    size = size_breakdown(data, float_bytes=400_000)
    assert size.weight_bytes + size.bias_bytes + size.quantization_bytes + size.other_bytes == len(data)
    assert size.weight_bytes > 0.6 * len(data) and size.bias_bytes > 0
    assert size.ratio_to_float == pytest.approx(400_000 / len(data))


def test_cli_json_exit_codes_and_waivers(tiny_zoo_int8: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = tiny_zoo_int8["cnn"]
    assert cli.main(["check", str(good), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["passed"] is True and document["size"]["total_bytes"] == good.stat().st_size
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(_edited(good, _softmax_params))
    assert cli.main(["check", str(broken)]) == 1
    table = capsys.readouterr().out
    assert "FAIL" in table and "output.fixed-params" in table and "SOFTMAX" in table
    assert cli.main(["check", str(broken), "--ignore", "output.fixed-params"]) == 0


def _mutations(data: bytes) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    cases = [("empty", b""), ("random", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()),
             ("random with identifier", b"\x1c\x00\x00\x00TFL3" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())]
    cases += [(f"truncated to {n}", data[:n]) for n in (8, 64, 1000, len(data) // 2, len(data) - 1)]
    for i in range(40):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), 4):
            flipped[position] ^= 0xFF
        cases.append((f"byte flips {i}", bytes(flipped)))
    return cases


def test_damaged_files_exit_2_or_check_never_crash(tiny_zoo_int8: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A fixed-seed sample of truncated, byte-flipped and random files: exit 0/1/2, one line on error."""
    target = tmp_path / "m.tflite"
    exits = set()
    for label, data in _mutations(tiny_zoo_int8["cnn"].read_bytes()):
        target.write_bytes(data)
        code = cli.main(["check", str(target), "--json"])
        err = capsys.readouterr().err
        assert code in (0, 1, 2), label
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and "edgeq: error:" in err, (label, err)
        exits.add(code)
    assert 2 in exits  # truncations and random files are refused as unreadable


def test_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tmp_path / "none.tflite")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_cli_edgetpu_target_reports_partition_and_missing_compiler(tiny_zoo_int8: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tiny_zoo_int8["cnn"]), "--target", "edgetpu", "--compile", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    partition = document["edgetpu_partition"]
    assert partition["first_unsupported"] is None and partition["cpu_ops"] == 0 and partition["tpu_ops"] > 5
    assert document["edgetpu_compiler"]["ran"] is False
    assert "not on PATH" in document["edgetpu_compiler"]["reason"]
    assert cli.main(["check", str(tiny_zoo_int8["vit"]), "--target", "edgetpu"]) == 1  # GELU ends the partition
    assert "first unsupported op" in capsys.readouterr().out
