"""validate judges every output of any model, with or without labels (issue 15, task-agnostic validation).

Small Keras models built here (a two-output detector: boxes + scores; a segmenter with a [H, W, 1] sigmoid mask;
a landmark regressor) are validated on unlabelled data through the API and the CLI: per-output fidelity, the
task figures, per-condition breakdowns on an unlabelled datagen set, the ranking by the declared task, and each
fidelity gate passing at the measured value and failing just beyond it. The real MediaPipe models
(tests/data/mediapipe) are validated with their task on the bundled photos.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.artifacts import Estimator, Preprocessing
from edgeq.cli import main as cli
from edgeq.errors import InputError, MissingDependencyError, UsageError
from edgeq.harness.evaldata import EvalSet, load_eval_set
from edgeq.report.page import render_html
from edgeq.results.validation import ValidationReport, ValidationRun
from edgeq.tflite import model as tfl
from edgeq.validate.outputs import FidelityGates, load_task_file, parse_task_text
from edgeq.validate.protocol import validate
from edgeq.validate.tasks import output_fidelity

ROOT = Path(__file__).resolve().parents[1]
PP = Preprocessing(mean=(127.5,), std=(127.5,))
PREPROCESS = "mean=127.5,std=127.5"
SIDE = 16
METHODS = (Estimator.AUTO, Estimator.PERCENTILE)


# ---------------------------------------------------------------- fixtures: models and unlabelled data


def _float_tflite(model: Any, path: Path) -> Path:
    """A Keras model as the float .tflite edgeq loads (converted once, so each validate loads it quickly)."""
    from edgeq.intake.load import load_float_model

    keras_path = path.with_suffix(".keras")
    model.save(keras_path)
    path.write_bytes(load_float_model(keras_path).flatbuffer)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("task-models")
    image = keras.Input((SIDE, SIDE, 3), batch_size=1)
    features = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image))
    boxes = keras.layers.Reshape((8, 4))(keras.layers.Dense(32, activation="sigmoid")(features))  # cx, cy, w, h
    scores = keras.layers.Dense(8, activation="sigmoid")(features)
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden)
    points = keras.layers.Dense(10, activation="sigmoid")(features)  # 5 (x, y) points, normalized
    classes = keras.layers.Dense(4, activation="softmax")(features)
    return {"detector": _float_tflite(keras.Model(image, [boxes, scores]), folder / "detector.tflite"),
            "segmenter": _float_tflite(keras.Model(image, mask), folder / "segmenter.tflite"),
            "landmarks": _float_tflite(keras.Model(image, points), folder / "landmarks.tflite"),
            "classifier": _float_tflite(keras.Model(image, classes), folder / "classifier.tflite")}


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth random colour images (blobs, not white noise), uint8 [n, SIDE, SIDE, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float64)
    return np.clip(np.kron(coarse, np.ones((1, 4, 4, 1))) + rng.normal(0, 12, (n, SIDE, SIDE, 3)), 0,
                   255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibration images (.npy), an unlabelled evaluation .npz, and an unlabelled datagen set with conditions."""
    folder = tmp_path_factory.mktemp("task-data")
    np.save(folder / "calib.npy", _images(16, 1))
    np.savez(folder / "eval.npz", images=_images(24, 2))
    np.save(folder / "source.npy", _images(12, 3))
    assert cli.main(["datagen", "--source", str(folder / "source.npy"), "--conditions", "original,low_light",
                     "--n", "16", "--preprocess", PREPROCESS, "-o", str(folder / "set")]) == 0
    return {"calib": folder / "calib.npy", "eval": folder / "eval.npz", "set": folder / "set"}


def _output(model: Path, shape: tuple[int, ...]) -> int:
    """The index of the output of ``shape`` (Keras names outputs StatefulPartitionedCall_1:N, in no fixed order)."""
    from edgeq.tflite import model as tfl

    graph = tfl.parse(model.read_bytes()).subgraphs[0]
    return next(i for i, t in enumerate(graph.outputs) if tuple(int(d) for d in graph.tensors[t].shape) == shape)


def _detection(model: Path) -> dict[str, Any]:
    return {"output": str(_output(model, (1, 8, 4))), "task": "detection", "scores": str(_output(model, (1, 8))),
            "box_format": "cxcywh", "score_threshold": 0.5, "iou_threshold": 0.5}


def _validate(model: Path, data: dict[str, Path], out: Path, tasks: list[dict[str, Any]], source: str = "eval",
              gates: FidelityGates | None = None, methods: tuple[Estimator, ...] = METHODS) -> ValidationReport:
    eval_set = load_eval_set(data[source]).with_preprocessing(PP)
    return validate(model, data["calib"], eval_set, out, methods, calib_preprocessing=PP, tasks=tasks, gates=gates)


@pytest.fixture(scope="module")
def detector_report(models: dict[str, Path], data: dict[str, Path],
                    tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    """The detector on unlabelled data, with every limit it can have set where it always passes."""
    model = models["detector"]
    gates = FidelityGates(min_output_sqnr_db={str(_output(model, (1, 8))): -1000.0}, min_detection_recall=0.0)
    return _validate(model, data, tmp_path_factory.mktemp("detector"), [_detection(model)], gates=gates)


# ---------------------------------------------------------------- the API


def test_every_output_of_a_detector_is_measured_without_labels(detector_report: ValidationReport) -> None:
    report = detector_report
    boxes = next(d.name for d in report.outputs.model_outputs if d.shape == (1, 8, 4))
    scores = next(d.name for d in report.outputs.model_outputs if d.shape == (1, 8))
    validation = report.validation
    assert validation.baseline is None and validation.gate is None and validation.max_drop_pp is None
    assert validation.split.stratified_by == () and validation.split.selection.n + validation.split.gate.n == 24
    outputs = report.outputs
    assert outputs is not None and outputs.ranked_by == boxes
    assert {(d.name, d.task, d.declared) for d in outputs.model_outputs} == {(boxes, "detection", True),
                                                                             (scores, "generic", False)}
    declared = next(d for d in outputs.model_outputs if d.name == boxes)
    assert declared.config == {"scores": scores, "box_format": "cxcywh"}  # the keys that differ from defaults
    assert [m.method for m in outputs.methods] == list(METHODS)
    for method in outputs.methods:
        by_output = {r.output: r for r in method.outputs}
        assert list(by_output) == [d.name for d in outputs.model_outputs]  # the model's order
        detection = by_output[boxes].figures.detection
        assert detection is not None and detection.n == 24 and detection.fp32_detections > 0
        assert 0.0 <= detection.recall <= 1.0 and detection.matched <= detection.fp32_detections
        assert by_output[scores].figures.task_figures is None  # generic: fidelity only
        for result in by_output.values():
            fidelity = result.figures.fidelity
            assert fidelity.n == 24 and fidelity.sqnr_db is not None and fidelity.sqnr_db > 10
            assert 0.9 < fidelity.cosine <= 1.0 and fidelity.max_abs_error >= fidelity.mean_abs_error > 0
            assert result.per_condition == {}  # an .npz without conditions
    # methods are ranked by the declared task's metric: recall on the selection half, then SQNR, then error
    rows = {m.method: m for m in validation.methods}
    for row in rows.values():
        assert row.top1 is None and row.drop_pp is None and row.agreement is None and row.per_condition == {}
        assert row.selection.metric == "recall" and row.selection.agreement is None
    assert validation.selection.by[0] == f"detection recall of {boxes!r} (higher first)"
    ranked = sorted(rows.values(), key=lambda r: (-r.selection.value, -(r.selection.output_sqnr_db or 1e9)))
    assert ranked[0].selection.rank == 1 and validation.best_method in [r.method for r in ranked
                                                                       if r.selection.rank == 1]
    # both limits judged on the held-out half for the picked method, as Gate rows naming n and the value
    assert [g.name for g in report.output_gates] == [f"min_output_sqnr:{scores}", f"min_detection_recall:{boxes}"]
    for gate in report.output_gates:
        assert gate.passed and gate.n == validation.split.gate.n and gate.value is not None
        assert f"on {gate.n} held-out samples" in gate.detail and validation.best_method in gate.detail
    assert validation.passed and validation.advice == ()
    assert ValidationReport.from_document(json.loads(json.dumps(report.to_document()))) == report


def test_the_figures_are_the_task_metrics_of_the_models_outputs(detector_report: ValidationReport,
                                                                models: dict[str, Path],
                                                                data: dict[str, Path], tmp_path: Path) -> None:
    """The recorded SQNR is output_fidelity of the two models' outputs, rerun here."""
    from edgeq.harness.accuracy import predict_outputs
    from edgeq.harness.backends import open_session, parse_backend

    x = load_eval_set(data["eval"]).model_inputs(PP)
    best = detector_report.best_method
    folder = tmp_path / "again"
    _validate(models["detector"], data, folder, [_detection(models["detector"])], methods=(best,))
    fp32, int8 = (list(predict_outputs(open_session(p.read_bytes(), parse_backend("cpu")), x).values())
                  for p in (models["detector"], folder / f"int8_{best}.tflite"))
    recorded = next(m for m in detector_report.outputs.methods if m.method == best)
    for result, f, q in zip(recorded.outputs, fp32, int8, strict=True):
        assert result.figures.fidelity.sqnr_db == pytest.approx(output_fidelity(f, q).sqnr_db, rel=1e-9)


def test_the_report_page_has_an_outputs_section(detector_report: ValidationReport) -> None:
    page = render_html(detector_report)
    section = page.split('<section id="outputs">', 1)[1].split("</section>", 1)[0]
    assert "<h2>Outputs</h2>" in section and "ranks methods" in section and "recall" in section
    assert "Fidelity limits" in section  # a bare report has no Gates section: the limits are listed here
    accuracy = page.split('<section id="validation">', 1)[1].split("</section>", 1)[0]
    assert "no top-1" in accuracy and "recall" in accuracy
    summary = page.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "<dt>Top-1</dt>" not in summary and "Max-drop" not in summary and "recall" in summary


def test_segmentation_per_condition_on_an_unlabelled_datagen_set(models: dict[str, Path], data: dict[str, Path],
                                                                tmp_path: Path) -> None:
    report = _validate(models["segmenter"], data, tmp_path / "v", [{"output": "0", "task": "segmentation"}],
                       source="set", gates=FidelityGates(min_mask_iou=0.0))
    split = report.validation.split
    assert split.stratified_by == ("condition",) and set(split.gate.per_condition) == {"original", "low_light"}
    assert report.validation.selection.by[0] == "segmentation mean_iou (higher first)"
    for method in report.outputs.methods:
        (result,) = method.outputs
        assert result.figures.segmentation is not None and 0.0 <= result.figures.segmentation.mean_iou <= 1.0
        assert set(result.per_condition) == {"original", "low_light"}
        counts = [c.fidelity.n for c in result.per_condition.values()]
        assert sum(counts) == result.figures.fidelity.n == 16
        assert all(c.segmentation.n == c.fidelity.n for c in result.per_condition.values())
    assert [g.name for g in report.output_gates] == [f"min_mask_iou:{report.outputs.ranked_by}"]
    page = render_html(report)
    assert "per condition</h3>" in page and "low_light" in page.split('<section id="outputs">', 1)[1]


def test_landmark_error_gate_passes_at_the_measured_value_and_fails_below(models: dict[str, Path],
                                                                          data: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    task = {"output": "0", "task": "landmarks", "dims": 2, "coordinates": "normalized", "image_size": [16, 16]}
    measured = _validate(models["landmarks"], data, tmp_path / "m", [task], methods=(Estimator.AUTO,),
                         gates=FidelityGates(max_landmark_error=1.0))
    (gate,) = measured.output_gates
    figures = measured.outputs.methods[0].outputs[0].figures.landmarks
    assert figures.points == 5 and figures.mean_error_px > 0 and gate.value is not None and gate.value > 0
    at = _validate(models["landmarks"], data, tmp_path / "at", [task], methods=(Estimator.AUTO,),
                   gates=FidelityGates(max_landmark_error=gate.value))
    assert at.passed and at.output_gates[0].value == gate.value
    below = _validate(models["landmarks"], data, tmp_path / "below", [task], methods=(Estimator.AUTO,),
                      gates=FidelityGates(max_landmark_error=gate.value * 0.999))
    assert not below.passed and not below.output_gates[0].passed and below.advice


def test_a_labelled_classifier_keeps_its_top1_path(models: dict[str, Path], data: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """A lone [1, C] output with labels is classification by default: top-1, agreement, the old ranking keys;
    the same model without labels is generic (its output could be an embedding: argmax means nothing)."""
    from edgeq.validate.verdicts import FIDELITY_ORDER

    images = load_eval_set(data["eval"]).images
    labels = np.random.default_rng(0).integers(0, 4, len(images))
    labelled = EvalSet(name="labelled", images=images, labels=labels, preprocessing=PP)
    report = validate(models["classifier"], data["calib"], labelled, tmp_path / "v", (Estimator.AUTO,),
                      calib_preprocessing=PP, gates=FidelityGates(min_agreement=0.0))
    validation = report.validation
    assert validation.baseline is not None and validation.gate is not None
    assert validation.selection.by == FIDELITY_ORDER and validation.split.stratified_by == ("label",)
    (row,) = validation.methods
    (declared,) = report.outputs.model_outputs
    assert declared.task == "classification" and not declared.declared
    figures = report.outputs.methods[0].outputs[0].classification
    assert figures.agreement == row.agreement and figures.int8_accuracy == row.top1
    assert figures.fp32_accuracy == validation.baseline.top1
    assert report.output_gates[0].name == f"min_agreement:{declared.name}" and report.output_gates[0].passed
    unlabelled = _validate(models["classifier"], data, tmp_path / "u", [], methods=(Estimator.AUTO,))
    assert unlabelled.outputs.model_outputs[0].task == "generic" and unlabelled.validation.baseline is None
    assert unlabelled.validation.methods[0].agreement is None


# ---------------------------------------------------------------- the CLI


def _cli(model: Path, data: dict[str, Path], out: Path, *extra: str) -> int:
    return cli.main(["validate", str(model), "--calib", str(data["calib"]), "--eval", str(data["eval"]),
                     "--preprocess", PREPROCESS, "--methods", "auto", "-o", str(out), *extra])


def test_cli_detector_gates_at_the_measured_values(models: dict[str, Path], data: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = models["detector"]
    boxes, scores = _output(model, (1, 8, 4)), _output(model, (1, 8))
    # an IoU threshold near the pairs' IoU (about 0.98 here), so that recall is a fraction to gate just above
    task = f"{boxes}=detection,scores={scores},box_format=cxcywh,score_threshold=0.5,iou_threshold=0.985"
    assert _cli(model, data, tmp_path / "m", "--task", task, "--min-output-sqnr", f"{scores}=0",
                "--min-detection-recall", "0") == 0
    out = capsys.readouterr().out
    assert "task figures" in out and "recall" in out and "gate min_detection_recall:" in out
    run = ValidationRun.from_document(json.loads((tmp_path / "m" / "report.json").read_text()))
    sqnr, recall = run.gates
    assert sqnr.name.startswith("min_output_sqnr:") and recall.name.startswith("min_detection_recall:")
    assert run.passed and sqnr.value is not None and recall.value is not None
    page = (tmp_path / "m" / "report.html").read_text()
    assert "<h2>Outputs</h2>" in page and "<h2>Gates</h2>" in page
    # at the measured values: pass (the limits are inclusive); just beyond either: exit 1 naming the gate
    at = ["--min-output-sqnr", f"{scores}={sqnr.value!r}", "--min-detection-recall", repr(recall.value)]
    assert _cli(model, data, tmp_path / "at", "--task", task, *at) == 0
    capsys.readouterr()
    over = ["--min-output-sqnr", f"{scores}={sqnr.value + 1e-6!r}", "--min-detection-recall", repr(recall.value)]
    assert _cli(model, data, tmp_path / "over", "--task", task, *over) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"gate {sqnr.name} failed" in err and "held-out samples" in err
    assert 0 < recall.value < 1
    assert _cli(model, data, tmp_path / "beyond", "--task", task, "--min-detection-recall",
                repr(recall.value + 1e-6)) == 1
    assert f"gate {recall.name} failed" in capsys.readouterr().err


def test_cli_segmenter_from_a_task_file(models: dict[str, Path], data: dict[str, Path], tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("- {output: 0, task: segmentation, threshold: 0.5}\n")
    assert _cli(models["segmenter"], data, tmp_path / "v", "--tasks", str(tasks), "--min-mask-iou", "0") == 0
    run = ValidationRun.from_document(json.loads((tmp_path / "v" / "report.json").read_text()))
    assert run.report.outputs.model_outputs[0].task == "segmentation" and run.gates[0].name.startswith("min_mask_iou")


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--max-drop", "1"], "--max-drop gates the top-1 drop, which needs labels"),
    (["--task", "9=generic"], "output index 9 is out of range"),
    (["--task", "0=detector"], "unknown task 'detector'"),
    (["--task", "0=segmentation,thresh=0.5"], "unknown key 'thresh'"),
    (["--task", "0=segmentation", "--task", "0=generic"], "declared twice"),
    (["--min-detection-recall", "0.5"], "needs an output declared as detection"),
    (["--min-output-sqnr", "nope"], "expected OUTPUT=DB"),
    (["--min-agreement", "2"], "must be at most 1"),
])
def test_cli_usage_errors_exit_2_naming_why(extra: list[str], fragment: str, models: dict[str, Path],
                                            data: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(models["segmenter"], data, tmp_path / "v", *extra) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "v").exists()


# ---------------------------------------------------------------- declarations


def test_task_text_is_typed_by_the_tasks_config() -> None:
    assert parse_task_text("regressors=detection,scores=classificators,form=ssd,x_scale=128,sigmoid_score=true,"
                           "score_clipping_thresh=none,box_coord_offset=2") == {
        "output": "regressors", "task": "detection", "scores": "classificators", "form": "ssd", "x_scale": 128.0,
        "sigmoid_score": True, "score_clipping_thresh": None, "box_coord_offset": 2}
    assert parse_task_text("3=landmarks,dims=3,coordinates=normalized,image_size=256x192") == {
        "output": "3", "task": "landmarks", "dims": 3, "coordinates": "normalized", "image_size": [256.0, 192.0]}
    assert parse_task_text("1=detection,scores=0") == {"output": "1", "task": "detection", "scores": "0"}
    for bad, fragment in (("detection", "start with OUTPUT=TASK"), ("x=segmentation,0.5", "is not key=value"),
                          ("x=generic,a=1,a=2", "given twice")):
        with pytest.raises(UsageError, match=fragment):
            parse_task_text(bad)


def test_a_task_file_reads_anchors_beside_it(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - {output: r, task: detection, scores: s, form: ssd, "
                                         "anchors: anchors.npy}\n")
    assert load_task_file(tmp_path / "tasks.yaml") == [{"output": "r", "task": "detection", "scores": "s",
                                                        "form": "ssd", "anchors": str(tmp_path / "anchors.npy")}]
    (tmp_path / "bad.yaml").write_text("output: r\n")
    with pytest.raises(InputError, match="must hold a list of output tasks"):
        load_task_file(tmp_path / "bad.yaml")


# ---------------------------------------------------------------- the evaluation-data loader


def test_eval_sets_from_npz_npy_folders_and_datagen_sets(data: dict[str, Path], tmp_path: Path) -> None:
    images = _images(6, 5)
    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(6), conditions=np.array(["a", "b"] * 3))
    loaded = load_eval_set(tmp_path / "labelled.npz", limit=4)
    assert np.array_equal(loaded.images, images[:4]) and loaded.labels.tolist() == [0, 1, 2, 3]
    assert loaded.conditions == ("a", "b", "a", "b") and loaded.inputs is None
    floats = (images.astype(np.float32) - 127.5) / 127.5
    np.save(tmp_path / "inputs.npy", floats)
    as_inputs = load_eval_set(tmp_path / "inputs.npy")
    assert as_inputs.images is None and np.array_equal(as_inputs.model_inputs(), floats) and not as_inputs.labelled
    np.savez(tmp_path / "named.npz", serving_default_image=floats)
    assert load_eval_set(tmp_path / "named.npz", input_name="serving_default_image:0").inputs is not None
    unlabelled = load_eval_set(data["set"])
    assert unlabelled.labels is None and set(unlabelled.conditions) == {"original", "low_light"}
    assert unlabelled.preprocessing == PP and unlabelled.model_inputs().dtype == np.float32
    folder = tmp_path / "photos"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(_images(1, 10 + i)[0]).resize((40, 30)).save(folder / f"{i}.png")
    from_folder = load_eval_set(folder, input_shape=(SIDE, SIDE, 3))
    assert from_folder.images.shape == (3, SIDE, SIDE, 3) and from_folder.labels is None
    with pytest.raises(UsageError, match="input shape must be known"):
        load_eval_set(folder)
    np.savez(tmp_path / "bad.npz", images=images, labels=np.arange(5))
    with pytest.raises(InputError, match="'labels' must be 6 integer class ids"):
        load_eval_set(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="keep the samples under 'images' or 'inputs'"):
        np.savez(tmp_path / "two.npz", a=images, b=images)
        load_eval_set(tmp_path / "two.npz")


def test_an_image_folder_without_pillow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeq\[full\]'") as error:
        load_eval_set(tmp_path, input_shape=(SIDE, SIDE, 3))
    assert error.value.exit_code == 2


def test_the_loader_needs_no_tensorflow(data: dict[str, Path]) -> None:
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from edgeq.harness.evaldata import load_eval_set\n"
            f"s = load_eval_set({str(data['set'])!r}); n = load_eval_set({str(data['eval'])!r})\n"
            "assert s.labels is None and len(s.conditions) == 16 and n.model_inputs(s.preprocessing).shape[0] == 24\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- the real MediaPipe models on the bundled photos

MEDIAPIPE = ROOT / "tests" / "data" / "mediapipe"


def _photos(tmp_path: Path, size: int, every: int = 1) -> dict[str, Path]:
    """Calibration on 14 bundled photos (benchmarks/mediapipe_accuracy.py's split), evaluation on every
    ``every``-th of all 21."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mediapipe_accuracy import photos, split

    _, images = photos((size, size))
    calib, _ = split(len(images))
    np.save(tmp_path / "calib.npy", images[calib])
    np.savez(tmp_path / "eval.npz", images=images[::every])
    return {"calib": tmp_path / "calib.npy", "eval": tmp_path / "eval.npz"}


def blazeface_anchors() -> np.ndarray:
    """BlazeFace short range's 896 SSD anchors as MediaPipe's SsdAnchorsCalculator makes them: strides 8, 16,
    16, 16 on 128x128, two anchors per cell on the 16x16 map and six on the 8x8 one, fixed size 1."""
    rows = []
    for size, per_cell in ((16, 2), (8, 6)):
        for y in range(size):
            for x in range(size):
                rows += [((x + 0.5) / size, (y + 0.5) / size, 1.0, 1.0)] * per_cell
    return np.asarray(rows)


def test_mediapipe_face_detector_validates_as_a_detector(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """BlazeFace short range on 11 of the bundled photos (every other one, the astronaut and Grace Hopper among
    them; 14 of the 21 calibrate), --methods auto,percentile: regressors decoded as SSD boxes with MediaPipe's
    anchors and scales, classificators as logits.

    Measured (TF 2.21, LiteRT 2.3): percentile picked (recall 1.0 for both on the selection half of 6 photos,
    then regressors SQNR 17.2 vs 16.3 dB). On the held-out half (5 photos): detection recall 1.0, regressors
    SQNR 17.8 dB, classificators SQNR 12.9 dB. On all 11: every one of FP32's 24 detections (score >= 0.5,
    before NMS) matched, mean IoU 0.91, but precision 0.69: INT8 raises scores near the threshold (score error
    0.09) and emits 35 detections. The gates sit below the measured values (recall 0.9, 15 dB, 9 dB); a wrong
    decoding or a broken conversion gives recall near 0 and SQNR near 0 dB."""
    data = _photos(tmp_path, 128, every=2)
    np.save(tmp_path / "anchors.npy", blazeface_anchors())
    task = ("regressors=detection,scores=classificators,form=ssd,anchors=" + str(tmp_path / "anchors.npy") +
            ",x_scale=128,y_scale=128,w_scale=128,h_scale=128,sigmoid_score=true,score_clipping_thresh=100,"
            "score_threshold=0.5,iou_threshold=0.5")
    code = cli.main(["validate", str(MEDIAPIPE / "face_detection_short_range.tflite"), "--calib", str(data["calib"]),
                     "--eval", str(data["eval"]), "--methods", "auto,percentile", "--task", task,
                     "--min-detection-recall", "0.9", "--min-output-sqnr", "regressors=15",
                     "--min-output-sqnr", "classificators=9", "-o", str(tmp_path / "v")])
    out = capsys.readouterr().out
    run = ValidationRun.from_document(json.loads((tmp_path / "v" / "report.json").read_text()))
    assert code == 0, [g.detail for g in run.gates]
    assert "from the model's metadata" in out  # fed as MediaPipe does: (x - 127.5) / 127.5
    assert [g.name for g in run.gates] == ["min_output_sqnr:regressors", "min_output_sqnr:classificators",
                                           "min_detection_recall:regressors"]
    for method in run.report.outputs.methods:
        detection = next(r for r in method.outputs if r.output == "regressors").detection
        assert detection.fp32_detections > 10 and detection.recall > 0.9 and detection.mean_iou > 0.8


def test_mediapipe_full_range_detector_validates_as_a_detector(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """BlazeFace full range (sparse float16 weights behind DENSIFY) on 11 of the bundled photos at 192x192, as
    above: 2304 anchors (one per cell of a 48x48 map, fixed size 1), scales 192.

    Measured (TF 2.21, LiteRT 2.3), percentile (picked over auto when both run: recall 1.0 for both on the
    selection half, then boxes SQNR 15.0 vs 14.7 dB). On the held-out half (5 photos): recall 1.0, boxes
    ('Identity') SQNR 15.0 dB, scores ('Identity_1') 10.5 dB. On all 11: FP32's 5 detections all matched with
    mean IoU 0.94, precision 0.42 (INT8 raises scores near the 0.5 threshold). Gates below the measured
    values: recall 0.9, 12 dB, 9 dB."""
    data = _photos(tmp_path, 192, every=2)
    grid = [((x + 0.5) / 48, (y + 0.5) / 48, 1.0, 1.0) for y in range(48) for x in range(48)]
    np.save(tmp_path / "anchors.npy", np.asarray(grid))
    task = ("Identity=detection,scores=Identity_1,form=ssd,anchors=" + str(tmp_path / "anchors.npy") +
            ",x_scale=192,y_scale=192,w_scale=192,h_scale=192,sigmoid_score=true,score_clipping_thresh=100,"
            "score_threshold=0.5,iou_threshold=0.5")
    code = cli.main(["validate", str(MEDIAPIPE / "face_detection_full_range_sparse.tflite"), "--calib",
                     str(data["calib"]), "--eval", str(data["eval"]), "--methods", "percentile", "--task", task,
                     "--min-detection-recall", "0.9", "--min-output-sqnr", "Identity=12", "--min-output-sqnr",
                     "Identity_1=9", "-o", str(tmp_path / "v")])
    capsys.readouterr()
    run = ValidationRun.from_document(json.loads((tmp_path / "v" / "report.json").read_text()))
    assert code == 0, [g.detail for g in run.gates]
    assert all(g.passed for g in run.gates) and len(run.gates) == 3
    picked = tfl.parse((tmp_path / "v" / f"int8_{run.report.best_method.value}.tflite").read_bytes())
    assert {tfl.tensor_type_name(t.type) for t in picked.subgraphs[0].tensors} <= {"INT8", "INT32"}  # full-integer
    for method in run.report.outputs.methods:
        detection = next(r for r in method.outputs if r.output == "Identity").detection
        assert detection.fp32_detections >= 5 and detection.recall == 1.0 and detection.mean_iou > 0.85


def test_mediapipe_selfie_segmenter_validates_as_a_segmenter(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """selfie_segmentation (custom op Convolution2DTransposeBias, decomposed) on 11 of the bundled photos (every
    other one; 14 calibrate), the mask thresholded at 0.5, --methods auto,percentile.

    Measured (TF 2.21, LiteRT 2.3): percentile picked (selection half mean IoU 0.54 vs auto's 0.52). On the
    held-out half (5 photos): mean mask IoU 0.78 with FP32's mask, SQNR 21.3 dB. On all 11: IoU 0.65 (auto
    0.64): photos without a person have near-empty masks, where a few INT8 pixels above 0.5 make the sample's
    IoU 0; and on two calibration photos (the cat among them) INT8 loses most of FP32's mask. The gates sit
    below the held-out values (IoU 0.7, 18 dB); a wrong decomposition gives an IoU near 0."""
    data = _photos(tmp_path, 256, every=2)
    code = cli.main(["validate", str(MEDIAPIPE / "selfie_segmentation.tflite"), "--calib", str(data["calib"]),
                     "--eval", str(data["eval"]), "--methods", "auto,percentile", "--task",
                     "activation_10=segmentation,threshold=0.5", "--min-mask-iou", "0.7", "--min-output-sqnr",
                     "0=18", "-o", str(tmp_path / "v")])
    out = capsys.readouterr().out
    run = ValidationRun.from_document(json.loads((tmp_path / "v" / "report.json").read_text()))
    assert code == 0, [g.detail for g in run.gates]
    assert "from the model's metadata" in out  # RGB in [0, 1]
    assert [g.name for g in run.gates] == ["min_output_sqnr:activation_10", "min_mask_iou:activation_10"]
    assert all(m.outputs[0].segmentation.mean_iou > 0.5 for m in run.report.outputs.methods)
