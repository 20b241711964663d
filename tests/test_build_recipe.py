"""The build recipe expresses the conversion (issue 15): ``input_shape``, the ``quantization`` mapping (a
convert recipe: io, per_tensor, allow_float_ops, percentile, sample guard, overrides) and data used as is.

Each key is checked at load time (one line, exit 2, naming the recipe file), applied to the conversion
(read back from the artifact's own bytes and sidecar) and recorded in report.json. The model is a tiny Keras
net exported with a dynamic image size and a SIN (an op without an int8 kernel), so ``input_shape`` and
``allow_float_ops`` both change whether the build can run at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.artifacts import Estimator, IOType
from edgeq.cli import main as cli
from edgeq.quant_recipe import Override, QuantRecipe
from edgeq.results.build import BuildReport

CALIB_SAMPLES = 16


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with dynamic_size.tflite (input [-1, -1, -1, 3]), calib.npz (uint8 digits, used as is) and
    eval_set (a labelled set from edgeq datagen)."""
    import keras
    import tensorflow as tf

    from datagen.bundled import load_digits
    from edgeq.quiet import native_output_captured

    folder = tmp_path_factory.mktemp("recipe")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Lambda(keras.ops.sin)(x)  # SIN has no int8 kernel: it needs allow_float_ops
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    with native_output_captured():
        model = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()
    (folder / "dynamic_size.tflite").write_bytes(model)
    np.savez(folder / "calib.npz", images=load_digits("train").images[:CALIB_SAMPLES])
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "32",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(folder / "eval_set")]) == 0
    return folder


RECIPE = """
name: dyn
model: dynamic_size.tflite
input_shape: [32, 32, 3]
preprocess: "mean=127.5,std=127.5"
calibration: {{source: calib.npz}}
evaluation: {{source: eval_set}}
methods: [auto]
targets: [generic]
bench: {{backends: [ref], runs: 3, min_seconds: 0}}
quantization:
  io: uint8
  per_tensor: true
  allow_float_ops: {allow_float_ops}
  percentile: 99.9
  auto_thresholds: [2, 8]
  sample_guard: false
  overrides:
    - {rule}
      method: minmax
"""


def _build(work: Path, name: str, **fields: str) -> int:
    recipe = work / f"{name}.yaml"
    recipe.write_text(RECIPE.format(**{"allow_float_ops": "true", "rule": "ops: SOFTMAX", **fields}))
    return cli.main(["build", str(recipe), "-o", str(work / name)])


def test_every_conversion_key_is_applied_and_recorded(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.tflite import model as tfl
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    assert _build(work, "applied") == 0
    out = work / "applied"
    assert "calibration set: calib.npz used as is" in capsys.readouterr().out
    data = (out / "dyn_int8.tflite").read_bytes()
    interpreter, _ = make_interpreter(data, CpuKernels.CPU)
    (given,), (returned,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8 and returned["dtype"] == np.uint8  # io
    assert given["shape"].tolist() == [1, 32, 32, 3]  # input_shape fixed the dynamic H and W
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    conv = next(op for op in graph.operators if tfl.op_type(parsed, op) == "CONV_2D")
    assert len(graph.tensors[conv.inputs[1]].quantization.scale) == 1  # per_tensor weights
    sidecar = json.loads((out / "dyn_int8.json").read_text())
    assert any(op.startswith("SIN ") for op in sidecar["float_ops"])  # allow_float_ops left it in float
    expected = QuantRecipe(method=Estimator.AUTO, percentile=99.9, auto_thresholds=(2.0, 8.0), io=IOType.UINT8,
                           per_tensor=True, allow_float_ops=True, sample_guard=False,
                           overrides=(Override(method=Estimator.MINMAX, ops="SOFTMAX"),))
    assert sidecar["recipe"] == expected.to_dict()
    softmax = sidecar["ranges"]["ranges"][-1]
    assert softmax["rule"].startswith("recipe override #1 (ops='SOFTMAX')") and softmax["estimator"] == "minmax"

    report = BuildReport.from_document(json.loads((out / "report.json").read_text()))
    assert report.conversion is not None
    assert report.conversion.input_shape == (32, 32, 3) and report.conversion.quantization == expected
    calibration = report.calibration  # the .npz used as is: nothing generated
    assert calibration.source == str(work / "calib.npz") and calibration.samples == CALIB_SAMPLES
    assert calibration.counts == {} and calibration.preview_png is None
    assert report.validation_report.validation.eval_set == str(work / "eval_set")
    assert not list((out / "cache").glob("calibration-*")) and not list((out / "cache").glob("evaluation-*"))


def test_without_allow_float_ops_the_sin_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(work, "strict", allow_float_ops="false") == 2
    err = capsys.readouterr().err
    assert "cannot quantize SIN to int8" in err and len(err.strip().splitlines()) == 1
    assert not (work / "strict" / "dyn_int8.tflite").exists()


def test_an_override_that_matches_no_tensor_is_refused_before_any_work(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = work / "unmatched.yaml"
    generated = RECIPE.format(allow_float_ops="true", rule="tensors: 'no_such_tensor*'").replace(
        "{source: calib.npz}", "{source: digits:train, conditions: original, n: 8}")
    recipe.write_text(generated)
    assert cli.main(["build", str(recipe), "-o", str(work / "unmatched")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{recipe}: quantization.overrides #1 (tensors='no_such_tensor*') matches no activation tensor" in err
    assert not list((work / "unmatched").rglob("*.tflite"))
    assert not list((work / "unmatched" / "cache").iterdir())  # no set generated, nothing calibrated


BASE = "name: x\nmodel: m.tflite\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"


@pytest.mark.parametrize(("text", "fragment"), [
    (BASE + "input_shape: 32x32x3\n", "input_shape must be a list of positive integers"),
    (BASE + "input_shape: [32, 0, 3]\n", "input_shape must be a list of positive integers"),
    (BASE + "input_shape: [32.5, 32, 3]\n", "input_shape must be a list of positive integers"),
    (BASE + "quantization: [io, uint8]\n", "quantization must be a mapping of convert recipe settings"),
    (BASE + "quantization: {io: int16}\n", "quantization.io: 'int16' is not one of int8, uint8, float32"),
    (BASE + "quantization: {per_tensor: 'yes'}\n", "quantization.per_tensor: expected bool, got 'yes'"),
    (BASE + "quantization: {allow_float_ops: 1}\n", "quantization.allow_float_ops: expected bool, got 1"),
    (BASE + "quantization: {percentile: 40}\n", "quantization: percentile must be in (50, 100)"),
    (BASE + "quantization: {auto_thresholds: [3]}\n", "quantization.auto_thresholds: expected 2 items"),
    (BASE + "quantization: {sample_guard_factor: 2, sample_guard_follow: 3}\n", "quantization: sample guard"),
    (BASE + "quantization: {oi: uint8}\n", "quantization: unknown key(s) oi"),
    (BASE + "quantization: {method: kl}\n", "quantization.method: the build converts with every method"),
    (BASE + "quantization: {overrides: {ops: SOFTMAX}}\n", "quantization: 'overrides' must be a list"),
    (BASE + "quantization: {overrides: [{method: kl}]}\n", "needs 'tensors' or 'ops'"),
    (BASE + "quantization: {overrides: [{ops: SOFTMAX, method: median}]}\n", "'median' is not one of"),
    (BASE + "quantization: {overrides: [{ops: SOFTMAX, method: kl, percentile: 10}]}\n",
     "override percentile must be in (50, 100)"),
    ("name: x\nmodel: m.tflite\ncalibration: {n: 8}\nevaluation: {source: digits:test}\n",
     "calibration: missing 'source'"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: missing.npz}\nevaluation: {source: digits:test}\n",
     "calibration.source: no such file or folder 'missing.npz'"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: notes.txt}\nevaluation: {source: digits:test}\n",
     "calibration.source: notes.txt is neither a folder nor a .npy/.npz"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: calib.npz, n: 8}\nevaluation: {source: digits:test}\n",
     "calibration: n only apply to generating a set: add conditions"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: images, seed: 3}\nevaluation: {source: digits:test}\n",
     "calibration: seed only apply to generating a set"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: a_set, conditions: original}\n"
     "evaluation: {source: digits:test}\n", "a_set is a set from edgeq datagen and is used as is; conditions"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: calib.npz}\nevaluation: {source: calib.npz}\n",
     "evaluation: calib.npz has no labels, and unlabelled evaluation data is not supported yet"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: images}\nevaluation: {source: images}\n",
     "evaluation: images has no labels"),
    ("name: x\nmodel: m.tflite\ncalibration: {source: a_set}\nevaluation: {source: a_set}\n",
     "evaluation: a_set has no labels"),
])
def test_bad_conversion_keys_and_sources_are_one_line_errors(text: str, fragment: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Checked at load time, before the model is read (m.tflite does not exist)."""
    np.savez(tmp_path / "calib.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not data\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "a_set").mkdir()
    (tmp_path / "a_set" / "datagen.json").write_text('{"labels": false}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert cli.main(["build", str(recipe), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and f"{recipe}: " in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bundled_data_without_conditions_is_still_generated(tmp_path: Path) -> None:
    """The defaults of a generated set (original, 256 samples, severity 3, seed 0) are unchanged."""
    from edgeq.build.recipe import load_build_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE)
    loaded = load_build_recipe(recipe)
    assert loaded.calibration.generated and loaded.calibration.conditions == "original"
    assert (loaded.calibration.n, loaded.calibration.severity, loaded.calibration.seed) == (256, 3, 0)
    assert loaded.input_shape is None and loaded.quantization is None and loaded.quant_recipe == QuantRecipe()


@pytest.mark.parametrize("example", sorted((Path(__file__).parent.parent / "docs" / "examples").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_the_example_recipes_load(example: Path) -> None:
    from edgeq.build.recipe import load_build_recipe

    recipe = load_build_recipe(example)
    if recipe.quantization is not None:  # the Edge TPU example
        assert recipe.quant_recipe.io is IOType.UINT8 and recipe.quant_recipe.overrides
