"""The build recipe expresses the conversion (issue 15): ``input_shape``, the ``quantization`` mapping (a
convert recipe: io, per_tensor, allow_float_ops, percentile, sample guard, overrides), data used as is, the
output ``tasks`` and the fidelity gates, on labelled or unlabelled evaluation data.

Each key is checked at load time (one line, exit 2, naming the recipe file), applied to the conversion
(read back from the artifact's own bytes and sidecar) and recorded in report.json. The model is a tiny Keras
net exported with a dynamic image size and a SIN (an op without an int8 kernel), so ``input_shape`` and
``allow_float_ops`` both change whether the build can run at all. The tasks and fidelity gates run on a
second tiny Keras net with an output per task (classification, detection, landmarks, segmentation) and
unlabelled data: each gate passes just below its measured value and fails just above it.
"""

from __future__ import annotations

import json
import re
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


def test_every_conversion_key_is_applied_and_recorded(work: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.tflite import model as tfl
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    monkeypatch.setenv("EDGEQ_PROGRESS", "log")  # build's steps are progress lines (off in the other tests)
    assert _build(work, "applied") == 0
    out = work / "applied"
    steps = capsys.readouterr().err
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[ *[\d.]+ s\] calibration set: calib.npz used as is$", steps,
                     re.MULTILINE), steps
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
    if example.name == "edgetpu_uint8.yaml":
        assert recipe.quant_recipe.io is IOType.UINT8 and recipe.quant_recipe.overrides
    if example.name == "selfie_segmentation.yaml":  # unlabelled photos, the mask judged against FP32's
        assert Path(recipe.base_dir, recipe.model).resolve().is_file()
        assert [(t.output, t.task) for t in recipe.tasks] == [("activation_10", "segmentation")]
        assert recipe.gates.min_mask_iou is not None and recipe.gates.max_drop_pp is None
        assert recipe.quant_recipe.io is IOType.INT8


# ---------------------------------------------------------------- output tasks, fidelity gates, unlabelled data

SIDE = 16
TASKS = """
tasks:
  - {output: 3, task: detection, scores: "1", box_format: cxcywh, iou_threshold: 0.99}
  - {output: 4, task: segmentation, threshold: 0.5}
  - {output: 2, task: landmarks, dims: 2, coordinates: normalized, image_size: [16, 16]}
  - {output: 0, task: classification}
"""
TASK_RECIPE = """
name: multi
model: multi.tflite
preprocess: "mean=127.5,std=127.5"
calibration: {source: calib.npy}
evaluation: {source: eval.npz}
methods: [auto]
targets: [generic]
bench: {backends: [ref], runs: 3, min_seconds: 0}
"""
# limit -> gate name prefix, and whether a higher measured value is better
FIDELITY = {"min_output_sqnr_db": ("min_output_sqnr", True), "min_agreement": ("min_agreement", True),
            "max_landmark_error": ("max_landmark_error", False), "min_mask_iou": ("min_mask_iou", True),
            "min_detection_recall": ("min_detection_recall", True)}


def _images(n: int, seed: int, side: int = SIDE) -> np.ndarray:
    """Smooth random colour images (blobs, not white noise), uint8 [n, side, side, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float64)
    return np.clip(np.kron(coarse, np.ones((1, side // 4, side // 4, 1))) + rng.normal(0, 12, (n, side, side, 3)),
                   0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multi.tflite: one tiny Keras net with an output per task, in this output order: class scores [1, 16],
    detection scores [1, 8], 5 normalized (x, y) points [1, 10], boxes [1, 8, 4] (cx, cy, w, h) and a mask
    [1, 16, 16, 1]; calib.npy (16 images), eval.npz (24 images, no labels), eval_labelled.npz (with labels),
    and pictures/ (12 PNGs of 20x24 and 24x20 pixels, no class folders)."""
    import keras
    from PIL import Image

    from edgeq.intake.load import load_float_model

    folder = tmp_path_factory.mktemp("tasks")
    keras.utils.set_random_seed(3)
    image = keras.Input((SIDE, SIDE, 3), batch_size=1)
    features = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image))
    boxes = keras.layers.Reshape((8, 4))(keras.layers.Dense(32, activation="sigmoid")(features))
    scores = keras.layers.Dense(8, activation="sigmoid")(features)
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    mask = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(hidden)
    points = keras.layers.Dense(10, activation="sigmoid")(features)
    classes = keras.layers.Dense(16, activation="softmax")(features)
    keras.Model(image, [boxes, scores, mask, points, classes]).save(folder / "multi.keras")
    (folder / "multi.tflite").write_bytes(load_float_model(folder / "multi.keras").flatbuffer)
    np.save(folder / "calib.npy", _images(16, 1))
    np.savez(folder / "eval.npz", images=_images(24, 2))
    np.savez(folder / "eval_labelled.npz", images=_images(24, 2), labels=np.arange(24) % 16)
    (folder / "pictures").mkdir()
    for i, photo in enumerate(_images(12, 4, side=24)):
        Image.fromarray(photo[:20] if i % 2 else photo[:, :20]).save(folder / "pictures" / f"{i:02d}.png")
    return folder


def _task_build(folder: Path, name: str, text: str) -> tuple[int, BuildReport | None]:
    recipe = folder / f"{name}.yaml"
    recipe.write_text(text)
    code = cli.main(["build", str(recipe), "-o", str(folder / "out")])
    report = folder / "out" / "report.json"
    return code, BuildReport.from_document(json.loads(report.read_text())) if code in (0, 1) else None


def _gates_text(limits: dict[str, float], output: str) -> str:
    """The gates section; numbers in fixed point (YAML 1.1 reads 1e-06 as a string)."""
    lines = [f"  min_output_sqnr_db: {{{output}: {limits['min_output_sqnr_db']:.9f}}}"]
    lines += [f"  {key}: {value:.9f}" for key, value in limits.items() if key != "min_output_sqnr_db"]
    return "gates:\n" + "\n".join(lines) + "\n"


def _reused(out: str) -> set[str]:
    line = next((line for line in out.splitlines() if line.startswith("reused cached steps: ")), "")
    return set(line.removeprefix("reused cached steps: ").split(", ")) - {""}


def test_fidelity_gates_pass_just_below_and_fail_just_above_the_measured_values(
        multi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every task and fidelity gate of the recipe reaches validate: measured once with limits that always pass,
    then set just beside each measured value (held-out half) on the passing and on the failing side. The
    validate cache key holds the tasks and the gates, so a changed limit is judged again (validate converts
    anew, to the same bytes: the bench is reused), and an unchanged recipe reuses validate too."""
    always = {"min_output_sqnr_db": -1000.0, "min_agreement": 0.0, "max_landmark_error": 1000.0,
              "min_mask_iou": 0.0, "min_detection_recall": 0.0}
    code, report = _task_build(multi, "measure", TASK_RECIPE + TASKS + _gates_text(always, "4"))
    out, err = capsys.readouterr()
    assert code == 0 and report is not None and report.passed, err
    outputs = report.validation_report.outputs
    assert outputs is not None
    names = [d.name for d in outputs.model_outputs]
    assert {d.name: d.task for d in outputs.model_outputs} == {
        names[0]: "classification", names[1]: "generic", names[2]: "landmarks", names[3]: "detection",
        names[4]: "segmentation"}
    assert report.validation_report.validation.baseline is None  # eval.npz has no labels: no top-1
    measured = {}
    for gate in report.gates:
        key = next(k for k, (prefix, _) in FIDELITY.items() if gate.name.startswith(prefix + ":"))
        measured[key] = gate.value
    assert sorted(measured) == sorted(FIDELITY)
    assert f"min_output_sqnr:{names[4]}" in {g.name for g in report.gates}
    assert "min_mask_iou:" in out and "segmentation" in out  # the gate rows and the per-output table, printed
    for key in ("min_agreement", "min_mask_iou", "min_detection_recall"):
        assert 0 < measured[key] < 1, f"{key} measured {measured[key]}: no limit above it fits in [0, 1]"

    def beside(sign: int) -> dict[str, float]:  # sign +1: on the passing side
        return {key: value - sign * 1e-6 * max(1.0, abs(value)) * (1 if FIDELITY[key][1] else -1)
                for key, value in measured.items()}

    code, report = _task_build(multi, "below", TASK_RECIPE + TASKS + _gates_text(beside(+1), names[4]))
    captured = capsys.readouterr()
    assert code == 0 and report is not None and report.passed, captured.err
    assert [g.passed for g in report.gates] == [True] * 5
    assert "validate" not in _reused(captured.out) and "bench" in _reused(captured.out)

    code, report = _task_build(multi, "above", TASK_RECIPE + TASKS + _gates_text(beside(-1), names[4]))
    captured = capsys.readouterr()
    assert code == 1 and report is not None and not report.passed
    assert [g.passed for g in report.gates] == [False] * 5
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and all(prefix in err for prefix, _ in FIDELITY.values())
    assert report.validation_report.advice  # triage for the failed gates

    code, _ = _task_build(multi, "above", TASK_RECIPE + TASKS + _gates_text(beside(-1), names[4]))
    assert code == 1 and "validate" in _reused(capsys.readouterr().out)  # unchanged: nothing judged again
    changed = TASKS.replace("threshold: 0.5", "threshold: 0.6")
    code, report = _task_build(multi, "threshold", TASK_RECIPE + changed + _gates_text(always, "4"))
    assert code == 0 and "validate" not in _reused(capsys.readouterr().out)  # a task's setting changed
    assert report is not None and report.validation_report.outputs is not None
    segmentation = next(d for d in report.validation_report.outputs.model_outputs if d.task == "segmentation")
    assert segmentation.config == {"threshold": 0.6}


def test_unlabelled_image_folders_calibrate_and_generate_an_evaluation_set(
        multi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An image folder without class folders, used as is for calibration and as datagen's source for the
    evaluation set (resized to the model input, with conditions); no tasks: every output is generic."""
    text = TASK_RECIPE.replace("{source: calib.npy}", "{source: pictures}").replace(
        "{source: eval.npz}", '{source: pictures, conditions: "original,low_light", n: 16, seed: 1}')
    code, report = _task_build(multi, "folders", text + "gates: {min_output_sqnr_db: {0: 0}}\n")
    assert code == 0 and report is not None, capsys.readouterr().err
    assert "/cache/evaluation-" in report.validation_report.validation.eval_set  # generated by the build
    from edgeq.harness.evaldata import load_eval_set

    evaluation = load_eval_set(report.validation_report.validation.eval_set)
    assert evaluation.images is not None and evaluation.images.shape == (16, SIDE, SIDE, 3)
    assert evaluation.labels is None and set(evaluation.conditions or ()) == {"original", "low_light"}
    outputs = report.validation_report.outputs
    assert outputs is not None and {d.task for d in outputs.model_outputs} == {"generic"}
    assert report.validation_report.validation.baseline is None
    assert {c for r in outputs.methods[0].outputs for c in r.per_condition} == {"original", "low_light"}
    assert report.calibration.source == str(multi / "pictures") and report.calibration.samples == 12
    assert [g.name for g in report.gates] == [f"min_output_sqnr:{outputs.model_outputs[0].name}"]


@pytest.mark.parametrize(("evaluation", "fragment"), [
    ("{source: eval.npz}", "from eval.npz has none"),
    ("{source: photos}", "from photos has none"),
    ("{source: photos, conditions: original, n: 8}", "from photos has none"),
    ("{source: calib.npy, conditions: original, n: 8}", "from calib.npy has none"),
    ("{source: pictures}", "from pictures has none"),
    ("{source: pictures, conditions: original, n: 8}", "from pictures has none"),
])
def test_max_drop_without_labels_is_refused_at_load_time(multi: Path, evaluation: str, fragment: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    text = TASK_RECIPE.replace("{source: eval.npz}", evaluation) + "gates: {max_drop_pp: 1.0}\n"
    code, _ = _task_build(multi, "max_drop", text)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "gates.max_drop_pp gates the top-1 drop, which needs labels" in err and fragment in err, err


def test_max_drop_with_labels_needs_a_classification_output_before_any_work(
        multi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels alone are not enough: with tasks declaring no classification output, the drop has nothing to
    measure, which is said before any data is generated."""
    from edgeq.build.recipe import load_build_recipe

    text = (TASK_RECIPE.replace("eval.npz", "eval_labelled.npz").replace("{source: calib.npy}",
                                                                          "{source: digits:train, n: 8}")
            + "tasks: [{output: 4, task: segmentation}]\ngates: {max_drop_pp: 1.0}\n")
    (multi / "labelled.yaml").write_text(text)
    assert load_build_recipe(multi / "labelled.yaml").gates.max_drop_pp == 1.0  # labelled: accepted at load time
    out = multi / "refused"
    assert cli.main(["build", str(multi / "labelled.yaml"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gates.max_drop_pp gates the top-1 drop of a classification output" in err
    assert len(err.strip().splitlines()) == 1 and not list((out / "cache").iterdir())  # nothing generated


@pytest.mark.parametrize(("text", "fragment"), [
    ("tasks: [{output: 9, task: segmentation}]\n", "tasks '9': output index 9 is out of range"),
    ("tasks: [{output: 4, task: segmentation}, {output: 4, task: generic}]\n", "is declared twice"),
    ("gates: {min_mask_iou: 0.5}\n", "gates.min_mask_iou (--min-mask-iou) needs an output declared as "
                                     "segmentation"),
    ("gates: {min_output_sqnr_db: {no_such_output: 3}}\n", "gates.min_output_sqnr_db"),
])
def test_outputs_the_model_lacks_are_refused_before_any_data_is_generated(
        multi: Path, text: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = multi / "unresolved.yaml"
    recipe.write_text(TASK_RECIPE.replace("{source: calib.npy}", "{source: digits:train, n: 8}") + text)
    out = multi / "unresolved"
    assert cli.main(["build", str(recipe), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith(f"edgeq: error: {recipe}: ") and len(err.strip().splitlines()) == 1
    assert not list((out / "cache").iterdir())


@pytest.mark.parametrize(("text", "fragment"), [
    ("tasks: {output: 0, task: generic}\n", "tasks must be a non-empty list of output tasks"),
    ("tasks: []\n", "tasks must be a non-empty list of output tasks"),
    ("tasks: [segmentation]\n", "tasks[0] must be a mapping with output and task"),
    ("tasks: [{task: segmentation}]\n", "tasks[0] needs output"),
    ("tasks: [{output: mask, task: segmenting}]\n", "tasks[0] 'mask': task must be one of"),
    ("tasks: [{output: mask, task: segmentation, treshold: 0.5}]\n", "unknown key 'treshold'"),
    ("tasks: [{output: mask, task: segmentation, threshold: high}]\n", "threshold"),
    ("tasks: [{output: box, task: detection}]\n", "detection needs scores"),
    ("tasks: [{output: box, task: detection, scores: s, form: ssd, anchors: none.npy}]\n",
     "tasks[0].anchors: no such file 'none.npy'"),
    ("gates: {min_mask_iou: 1.5}\n", "gates.min_mask_iou must be between 0 and 1, got 1.5"),
    ("gates: {min_agreement: -0.1}\n", "gates.min_agreement must be between 0 and 1"),
    ("gates: {min_detection_recall: high}\n", "gates.min_detection_recall must be a number, got 'high'"),
    ("gates: {max_landmark_error: -1}\n", "gates.max_landmark_error must be at least 0"),
    ("gates: {max_landmark_error: .inf}\n", "gates.max_landmark_error must be a number"),
    ("gates: {min_output_sqnr_db: 20}\n", "gates.min_output_sqnr_db must map an output"),
    ("gates: {min_output_sqnr_db: {mask: loud}}\n", "gates.min_output_sqnr_db.mask must be a finite number"),
    ("gates: {min_mask_iuo: 0.5}\n", "gates: unknown key(s) min_mask_iuo"),
])
def test_bad_tasks_and_fidelity_gates_are_one_line_errors(text: str, fragment: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Checked at load time, before the model is read (m.tflite does not exist)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE + text)
    assert cli.main(["build", str(recipe), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and f"{recipe}: " in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_tasks_and_gates_load_with_anchors_relative_to_the_recipe(tmp_path: Path) -> None:
    from edgeq.build.recipe import load_build_recipe

    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "anchors.npy", np.full((8, 4), 0.5))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE + "tasks:\n  - {output: 0, task: detection, scores: '1', form: ssd, anchors: "
                      "data/anchors.npy}\n  - {output: mask, task: segmentation}\ngates:\n  min_output_sqnr_db: "
                      "{0: 20, mask: 15.5}\n  min_detection_recall: 0.9\n  min_mask_iou: 1\n")
    loaded = load_build_recipe(recipe)
    detection, segmentation = loaded.tasks
    assert (detection.output, detection.task, segmentation.output) == ("0", "detection", "mask")
    assert detection.config.anchors == str(tmp_path / "data" / "anchors.npy")
    fidelity = loaded.gates.fidelity
    assert fidelity.min_output_sqnr_db == {"0": 20.0, "mask": 15.5}
    assert (fidelity.min_detection_recall, fidelity.min_mask_iou) == (0.9, 1)
    assert fidelity.min_agreement is None and fidelity.max_landmark_error is None


def test_a_preprocessing_disagreement_is_a_warning_that_quiet_keeps(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The model's own metadata says mean=std=127.5 and the recipe says otherwise: the build goes on with the
    recipe's (the user's word wins) but says so as an ``edgeq: warning:`` line, which --quiet must not drop."""
    from edgeq.calib.data import parse_preprocessing
    from edgeq.tflite.metadata import embed_preprocessing

    demo = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
    model = tmp_path / "with_metadata.tflite"
    float_bytes = demo.read_bytes()
    model.write_bytes(embed_preprocessing(float_bytes, float_bytes, parse_preprocessing("mean=127.5,std=127.5")))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: md\nmodel: {model.name}\npreprocess: \"mean=0,std=255\"\n"
                      "calibration: {source: digits:train, conditions: original, n: 16}\n"
                      "evaluation: {source: digits:test, conditions: original, n: 20, seed: 1}\n"
                      "methods: [minmax]\ntargets: [generic]\n"
                      "bench: {backends: [cpu], threads: [1], runs: 3, min_seconds: 0}\n"
                      "gates: {max_drop_pp: 100}\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["build", str(recipe), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("edgeq: warning:")] == [
        "edgeq: warning: the recipe's preprocess mean=0,std=255 differs from with_metadata.tflite's metadata "
        "(mean=127.5,std=127.5); using the recipe's preprocess"], err
    # and calibration used it too, as evaluation does: the published model's metadata records the preprocessing
    # calibration used (before, a generated calibration set let the model's metadata win for calibration only)
    from edgeq.tflite.metadata import model_preprocessing

    published = model_preprocessing((tmp_path / "out" / "md_int8.tflite").read_bytes())
    assert published is not None and (published.mean, published.std) == ((0.0,), (255.0,)), published
