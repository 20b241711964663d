"""edgeq convert / calibrate end to end on real zoo models and real digits, through the real quantizer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
import edgeq_models.zoo as zoo
from edgeq.artifacts import Estimator, IOType, QuantizedArtifact
from edgeq.calib.collect import ActivationStats
from edgeq.cli import main as cli
from edgeq.converter.api import sidecar_path
from edgeq.errors import InputError, UsageError
from edgeq.quant_recipe import Override, QuantRecipe
from edgeq.tflite import model as tfl

PP_DIGITS = "mean=127.5,std=127.5"
PP = zoo.ZOO["cnn"].preprocessing  # what the digits models were trained with
WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def assert_full_integer(data: bytes, io: IOType = IOType.INT8, per_axis: bool = True) -> None:
    """No float compute, Q/DQ only at the boundary, int8 per-axis weights on the spec's dimension."""
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    boundary = {int(i) for i in graph.inputs} | {int(o) for o in graph.outputs}
    io_type = tfl.tensor_type({"int8": "INT8", "uint8": "UINT8", "float32": "FLOAT32"}[io.value])
    for index in boundary:
        assert graph.tensors[index].type == io_type
    for op_index, op in enumerate(graph.operators):
        kind = tfl.op_type(parsed, op)
        tensors = [graph.tensors[i] for i in [*op.inputs, *op.outputs] if i >= 0]
        if kind in ("QUANTIZE", "DEQUANTIZE"):
            touches_boundary = any(int(i) in boundary for i in [*op.inputs, *op.outputs])
            both_int = all(t.type != tfl.tensor_type("FLOAT32") for t in tensors)
            assert touches_boundary or both_int, f"{kind} inside the graph at op {op_index}"
            continue
        for t in tensors:
            assert t.type != tfl.tensor_type("FLOAT32"), f"float tensor {tfl.tensor_name(t)} in {kind} op {op_index}"
        if kind in WEIGHT_AXIS:
            weights = graph.tensors[op.inputs[1]]
            assert weights.type == tfl.tensor_type("INT8")
            q = weights.quantization
            assert np.all(np.asarray(q.zeroPoint) == 0)
            channels = weights.shape[WEIGHT_AXIS[kind]]
            if per_axis:
                assert len(q.scale) == channels and q.quantizedDimension == WEIGHT_AXIS[kind], kind
            else:
                assert len(q.scale) == 1
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                assert graph.tensors[op.inputs[2]].type == tfl.tensor_type("INT32")


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_zoo_model_converts_full_integer(name: str, tiny_zoo_int8: Mapping[str, Path]) -> None:
    """On the run's shared conversions (conftest: auto estimator, 32 calibration images), which test_check and
    test_harness use too; that the sidecar is the returned artifact is checked in test_estimators_change_ranges."""
    out = tiny_zoo_int8[name]
    assert_full_integer(out.read_bytes())
    sidecar = QuantizedArtifact.from_dict(json.loads(sidecar_path(out).read_text()))
    assert sidecar.float_ops == ()
    assert sidecar.sha256 == tfl.sha256(out.read_bytes())
    assert sidecar.size_ratio > 2.0  # small models: per-channel scales weigh more than at ImageNet scale
    assert {r.estimator for r in sidecar.ranges.ranges} <= {Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE}
    assert all(r.min <= 0.0 <= r.max and r.rule.startswith("auto") for r in sidecar.ranges.ranges)
    if name == "vit":
        assert sidecar.rewrites == {"neg_to_mul": 5}  # LayerNorm's NEG, rewritten as MUL by -1


@pytest.mark.parametrize("io", [IOType.UINT8, IOType.FLOAT32])
def test_io_types(io: IOType, tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    edgeq.convert(tiny_zoo["cnn"], out, calib="digits:train", limit=16, preprocessing=PP, recipe=QuantRecipe(io=io))
    assert_full_integer(out.read_bytes(), io)


def test_per_tensor_weights(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    edgeq.convert(tiny_zoo["mobilenet_v2"], out, calib="digits:train", limit=16, preprocessing=PP,
                  recipe=QuantRecipe(per_tensor=True))
    assert_full_integer(out.read_bytes(), per_axis=False)


def test_conversion_is_byte_identical(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "m.tflite", tmp_path / "b" / "m.tflite"
    for out in (a, b):
        edgeq.convert(tiny_zoo["resnet"], out, calib="digits:train", limit=24, preprocessing=PP,
                      recipe=QuantRecipe(method=Estimator.KL))
    assert a.read_bytes() == b.read_bytes()
    side_a, side_b = (json.loads(sidecar_path(p).read_text()) for p in (a, b))
    assert {k: v for k, v in side_a.items() if k != "path"} == {k: v for k, v in side_b.items() if k != "path"}


def test_estimators_change_ranges_and_the_model(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    results = {}
    for method in (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL):
        out = tmp_path / f"{method.value}.tflite"
        artifact = edgeq.convert(tiny_zoo["cnn"], out, calib="digits:train", limit=32, preprocessing=PP,
                                 recipe=QuantRecipe(method=method, percentile=99.0))
        assert {r.estimator for r in artifact.ranges.ranges} == {method}
        assert QuantizedArtifact.from_dict(json.loads(sidecar_path(out).read_text())) == artifact  # what it wrote
        results[method] = artifact
    minmax = {r.name: r for r in results[Estimator.MINMAX].ranges.ranges}
    for r in results[Estimator.PERCENTILE].ranges.ranges:
        assert minmax[r.name].min <= r.min and r.max <= minmax[r.name].max  # percentile ⊆ observed
    assert len({a.sha256 for a in results.values()}) == 4


def test_stats_reuse_gives_the_same_model(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.npz"
    code = cli.main(["calibrate", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--limit", "20",
                     "--preprocess", PP_DIGITS, "-o", str(stats_file)])
    assert code == 0
    direct, reused = tmp_path / "direct.tflite", tmp_path / "reused.tflite"
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--limit", "20",
                     "--preprocess", PP_DIGITS, "-o", str(direct)]) == 0
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--stats", str(stats_file), "-o", str(reused)]) == 0
    assert direct.read_bytes() == reused.read_bytes()
    loaded = ActivationStats.load(stats_file)
    assert loaded.samples == 20 and loaded.preprocessing is not None


def test_stats_from_another_model_are_refused(tiny_zoo: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    stats_file = tmp_path / "stats.npz"
    assert cli.main(["calibrate", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--limit", "4",
                     "--preprocess", PP_DIGITS, "-o", str(stats_file)]) == 0
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(tiny_zoo["resnet"]), "--stats", str(stats_file), "-o", str(out)]) == 2
    assert "collected on a different model" in capsys.readouterr().err
    assert not out.exists()


def test_recipe_override_applies_and_unmatched_rule_is_an_error(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    recipe = QuantRecipe(method=Estimator.MINMAX, overrides=(Override(method=Estimator.MSE, ops="SOFTMAX"),))
    artifact = edgeq.convert(tiny_zoo["cnn"], tmp_path / "m.tflite", calib="digits:train", limit=8, preprocessing=PP,
                             recipe=recipe)
    by_estimator = {r.name: r for r in artifact.ranges.ranges if r.estimator is Estimator.MSE}
    assert len(by_estimator) == 1 and "recipe override #1" in next(iter(by_estimator.values())).rule
    bad = QuantRecipe(overrides=(Override(method=Estimator.KL, tensors="no_such_layer*"),))
    with pytest.raises(InputError, match=r"override #1 \(tensors='no_such_layer\*'\) matches no activation"):
        edgeq.convert(tiny_zoo["cnn"], tmp_path / "n.tflite", calib="digits:train", limit=8, preprocessing=PP,
                      recipe=bad)
    assert not (tmp_path / "n.tflite").exists()


def test_recipe_file_yaml(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("method: percentile\npercentile: 99.9\nio: uint8\n"
                           "overrides:\n  - tensors: '*probs*'\n    method: minmax\n")
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--limit", "8",
                     "--preprocess", PP_DIGITS, "--recipe", str(recipe_file), "-o", str(out)]) == 0
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["io_type"] == "uint8" and sidecar["recipe"]["percentile"] == 99.9
    assert_full_integer(out.read_bytes(), IOType.UINT8)


def _sin_model(path: Path) -> Path:
    """A float .tflite with SIN, an op TFLite has no int8 kernel for."""
    import keras

    from edgeq.intake.load import keras_to_float_tflite

    inputs = keras.Input((8,), batch_size=1)
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.Lambda(keras.ops.sin)(x)
    path.write_bytes(keras_to_float_tflite(keras.Model(inputs, keras.layers.Dense(4)(x))))
    return path


def test_unquantizable_op_is_named_or_left_float(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _sin_model(tmp_path / "sin.tflite")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(model), "--calib", str(tmp_path / "x.npy"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot quantize SIN" in err and "--allow-float-ops" in err
    assert not out.exists() and not sidecar_path(out).exists()
    assert cli.main(["convert", str(model), "--calib", str(tmp_path / "x.npy"), "-o", str(out),
                     "--allow-float-ops"]) == 0
    assert any(op.startswith("SIN") for op in json.loads(sidecar_path(out).read_text())["float_ops"])


def test_multi_input_multi_output(tmp_path: Path) -> None:
    import keras

    a, b = keras.Input((6,), name="a"), keras.Input((4, 4, 2), name="b")
    merged = keras.layers.Concatenate()([keras.layers.Dense(5)(a), keras.layers.Flatten()(b)])
    model = keras.Model([a, b], [keras.layers.Dense(3, name="head1")(merged),
                                 keras.layers.Dense(2, activation="softmax", name="head2")(merged)])
    model.save(tmp_path / "multi.keras")
    rng = np.random.default_rng(1)
    probe = edgeq.calibrate(tmp_path / "multi.keras", _npz(tmp_path, rng, {"a": (6,), "b": (4, 4, 2)}))
    names = sorted({n.split(":")[0] for n in [*probe.stats.names.values()]})
    assert probe.stats.samples == 10 and names
    out = tmp_path / "multi.tflite"
    edgeq.convert(tmp_path / "multi.keras", out, calib=tmp_path / "calib.npz")
    assert_full_integer(out.read_bytes())
    parsed = tfl.parse(out.read_bytes())
    assert len(parsed.subgraphs[0].inputs) == 2 and len(parsed.subgraphs[0].outputs) == 2
    # the search measures single-input models: a clear refusal before any work, nothing written
    searched = tmp_path / "searched.tflite"
    with pytest.raises(UsageError, match="single-input models; this one has 2 inputs"):
        edgeq.convert(tmp_path / "multi.keras", searched, calib=tmp_path / "calib.npz",
                      recipe=QuantRecipe(method=Estimator.SEARCH))
    assert not searched.exists()


def _npz(tmp_path: Path, rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> Path:
    import edgeq.tflite.runtime as runtime
    from edgeq.intake.load import load_float_model

    float_model = load_float_model(tmp_path / "multi.keras")
    interpreter, _ = runtime.make_interpreter(float_model.flatbuffer)
    arrays: dict[str, Any] = {}
    for detail in interpreter.get_input_details():
        key = "a" if tuple(detail["shape"][1:]) == shapes["a"] else "b"
        arrays[detail["name"]] = rng.normal(size=(10, *shapes[key])).astype(np.float32)
    np.savez(tmp_path / "calib.npz", **arrays)
    return tmp_path / "calib.npz"


def test_saved_model_with_dynamic_batch(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    from edgeq.quiet import native_output_captured

    model = zoo.load_model(tiny_zoo["cnn"])
    with native_output_captured():
        model.export(tmp_path / "saved")  # serving signature with batch None
    out = tmp_path / "m.tflite"
    edgeq.convert(tmp_path / "saved", out, calib="digits:train", limit=8, preprocessing=PP)
    assert_full_integer(out.read_bytes())
    detail = tfl.parse(out.read_bytes()).subgraphs[0]
    assert list(detail.tensors[detail.inputs[0]].shape) == [1, 32, 32, 3]


def test_float16_tflite_from_another_exporter(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    import keras

    from edgeq.quiet import native_output_captured
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()
    model = zoo.load_model(tiny_zoo["cnn"])
    inputs = keras.Input((32, 32, 3), batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, model(inputs)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    with native_output_captured():
        (tmp_path / "fp16.tflite").write_bytes(converter.convert())
    out = tmp_path / "m.tflite"
    artifact = edgeq.convert(tmp_path / "fp16.tflite", out, calib="digits:train", limit=8, preprocessing=PP)
    assert artifact.rewrites["fold_float16_dequantize"] > 0
    assert_full_integer(out.read_bytes())


def test_image_folder_and_json_preprocessing(tiny_zoo: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Real photos as PNG/JPEG files in class folders, resized to the model input, spec from JSON."""
    from PIL import Image

    from datagen.bundled import load_photos

    photos = load_photos(["skimage/astronaut", "skimage/coffee", "sklearn/china.jpg"])
    for i, (name, photo) in enumerate(photos.items()):
        folder = tmp_path / "images" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(folder / f"{name.replace('/', '_')}.{'png' if i % 2 else 'jpg'}")
    spec = tmp_path / "prep.json"
    spec.write_text(json.dumps({"mean": [127.5], "std": [127.5]}))
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--calib", str(tmp_path / "images"), "--preprocess", str(spec),
                     "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "calibration samples  3" in summary and "float ops left       none" in summary
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["calibration_samples"] == 3
    assert sidecar["preprocessing"]["mean"] == [127.5]
    assert_full_integer(out.read_bytes())


def test_int8_model_keeps_fp32_accuracy_on_real_digits(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    """The converted model is not just well-formed: it predicts like the float model it came from."""
    from datagen.bundled import load_digits
    from edgeq.harness.accuracy import run_batch1
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import apply_preprocessing
    from edgeq.tflite.runtime import make_interpreter

    pp = zoo.ZOO["resnet"].preprocessing
    out = tmp_path / "m.tflite"
    edgeq.convert(tiny_zoo["resnet"], out, calib="digits:train", limit=64, preprocessing=pp)
    x = apply_preprocessing(pp, load_digits("test").images[:60])
    float_scores = run_batch1(make_interpreter(load_float_model(tiny_zoo["resnet"]).flatbuffer)[0], x)
    int8_scores = run_batch1(make_interpreter(out)[0], x)
    assert np.mean(float_scores.argmax(-1) == int8_scores.argmax(-1)) >= 0.95
    assert np.abs(float_scores - int8_scores).max() < 0.2  # softmax outputs, int8 step 1/256
