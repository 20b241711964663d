"""Float .tflite exports with dynamic dimensions (TFLiteConverter.from_keras_model's default batch of -1,
fully dynamic image sizes) are made static at intake: the fixed graph computes exactly what the original
computes at that shape, the shape arithmetic is folded away, and the INT8 model is full-integer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgeq
from edgeq.errors import InputError
from edgeq.intake.load import load_float_model
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter


def _export(model: object, path: Path) -> Path:
    import tensorflow as tf

    from edgeq.quiet import native_output_captured

    with native_output_captured():
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("dynamic")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))  # batch None: exported as -1
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)  # a SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chain
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    any_size = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(any_size)
    y = keras.layers.GlobalAveragePooling2D()(y)
    rng = np.random.default_rng(0)
    np.save(folder / "x16.npy", rng.uniform(0, 1, (24, 16, 16, 3)).astype(np.float32))
    np.save(folder / "x24.npy", rng.uniform(0, 1, (24, 24, 20, 3)).astype(np.float32))
    return {"batch": _export(keras.Model(inputs, outputs), folder / "dynamic_batch.tflite"),
            "size": _export(keras.Model(any_size, y), folder / "dynamic_size.tflite"), "folder": folder}


def _signature(data: bytes) -> list[int]:
    graph = tfl.parse(data).subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    return [int(d) for d in (tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape)]


def _outputs(model: bytes, x: np.ndarray, resize: bool) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    index = interpreter.get_input_details()[0]["index"]
    if resize:
        interpreter.resize_tensor_input(index, list(x.shape), strict=False)
        interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def test_the_fixture_really_is_dynamic(exports: dict[str, Path]) -> None:
    assert _signature(exports["batch"].read_bytes())[0] == -1
    assert _signature(exports["size"].read_bytes())[:3] == [-1, -1, -1]
    ops = {tfl.op_type(m, op) for m in [tfl.parse(exports["batch"].read_bytes())] for op in m.subgraphs[0].operators}
    assert {"SHAPE", "PACK"} <= ops


def test_dynamic_batch_is_fixed_to_one_and_computes_exactly_the_same(exports: dict[str, Path]) -> None:
    original = exports["batch"].read_bytes()
    fixed = load_float_model(exports["batch"])
    assert _signature(fixed.flatbuffer) == [1, 16, 16, 3]
    assert {r.name: r.count for r in fixed.rewrites} == {"fix_input_shapes": 1, "fold_shape_computations": 3}
    parsed = tfl.parse(fixed.flatbuffer)
    assert not {tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators} & {"SHAPE", "PACK", "STRIDED_SLICE"}
    assert all(t.shapeSignature is None or -1 not in list(t.shapeSignature) for t in parsed.subgraphs[0].tensors)
    x = np.load(exports["folder"] / "x16.npy")[:1]
    for want, got in zip(_outputs(original, x, resize=True), _outputs(fixed.flatbuffer, x, resize=False), strict=True):
        np.testing.assert_array_equal(want, got)


def test_dynamic_batch_export_converts_full_integer(exports: dict[str, Path], tmp_path: Path) -> None:
    folder = exports["folder"]
    artifact = edgeq.convert(exports["batch"], tmp_path / "int8.tflite", calib=folder / "x16.npy")
    assert artifact.rewrites == {"fix_input_shapes": 1, "fold_shape_computations": 3}
    assert artifact.float_ops == ()
    parsed = tfl.parse((tmp_path / "int8.tflite").read_bytes())
    assert {tfl.tensor_type_name(t.type) for t in parsed.subgraphs[0].tensors} <= {"INT8", "INT32"}
    assert json.loads((tmp_path / "int8.json").read_text())["rewrites"] == artifact.rewrites


def test_input_shape_that_matches_a_static_export_is_accepted(exports: dict[str, Path]) -> None:
    assert _signature(load_float_model(exports["batch"], input_shape=(16, 16, 3)).flatbuffer) == [1, 16, 16, 3]


def test_input_shape_cannot_change_a_static_dimension(exports: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"sets dimension 1 .* to 8, but the model fixes it at 16"):
        load_float_model(exports["batch"], input_shape=(8, 16, 3))
    with pytest.raises(InputError, match=r"has rank 2; input .* has rank 3"):
        load_float_model(exports["batch"], input_shape=(16, 16))


def test_dynamic_image_size_needs_input_shape_and_then_matches_the_original(exports: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"dynamic dimension\(s\) \[1, 2\] .*--input-shape"):
        load_float_model(exports["size"])
    fixed = load_float_model(exports["size"], input_shape=(24, 20, 3))
    assert _signature(fixed.flatbuffer) == [1, 24, 20, 3]
    x = np.load(exports["folder"] / "x24.npy")[:1]
    want = _outputs(exports["size"].read_bytes(), x, resize=True)
    np.testing.assert_array_equal(want[0], _outputs(fixed.flatbuffer, x, resize=False)[0])


def test_a_shape_that_depends_on_the_data_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    from edgeq.quiet import native_output_captured

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def positives(x: tf.Tensor) -> tf.Tensor:
        kept = tf.gather_nd(x, tf.where(x > 0.0))  # how many survive depends on the values
        return tf.reshape(tf.reduce_sum(kept) * tf.cast(tf.shape(kept)[0], tf.float32), [1])

    with native_output_captured():
        data = tf.lite.TFLiteConverter.from_concrete_functions([positives.get_concrete_function()]).convert()
    (tmp_path / "where.tflite").write_bytes(data)
    with pytest.raises(InputError, match="depends on the input values"):
        load_float_model(tmp_path / "where.tflite")


def test_cli_refuses_a_contradicting_input_shape_in_one_line(exports: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.cli.main import main

    code = main(["convert", str(exports["batch"]), "--calib", str(exports["folder"] / "x16.npy"), "--input-shape",
                 "8,8,3", "-o", str(tmp_path / "out.tflite")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "only dynamic (-1) dimensions" in err
    assert not (tmp_path / "out.tflite").exists()


def test_a_data_dependent_shape_is_refused_even_when_the_probe_runs_agree(tmp_path: Path) -> None:
    """x > -2 holds for every value the seeded probe inputs take (uniform in [-1, 1]), so both runs see the same
    WHERE count; the shape still depends on the data, and folding it would bake in the probe's count."""
    import tensorflow as tf

    from edgeq.quiet import native_output_captured

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def kept(x: tf.Tensor) -> tf.Tensor:
        values = tf.gather_nd(x, tf.where(x > -2.0))
        return tf.reshape(tf.reduce_sum(values) * tf.cast(tf.shape(values)[0], tf.float32), [1])

    with native_output_captured():
        data = tf.lite.TFLiteConverter.from_concrete_functions([kept.get_concrete_function()]).convert()
    (tmp_path / "where_all.tflite").write_bytes(data)
    with pytest.raises(InputError, match="reads a tensor whose shape depends on the input values"):
        load_float_model(tmp_path / "where_all.tflite")
