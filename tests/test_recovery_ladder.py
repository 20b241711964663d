"""The recovery ladder on a hard case: the demo's trained CNN with three activation channels scaled 40-80x and the
next layer's weights divided back (float function unchanged, per-tensor int8 ranges collapse). validate must
miss its gate with the plain methods and the ladder must recover it; refusals and the no-recovery verdict."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.artifacts import Estimator, Preprocessing
from edgeq.build.recipe import load_build_recipe
from edgeq.errors import InputError, UsageError
from edgeq.harness.evaldata import load_eval_set
from edgeq.intake.load import load_float_model
from edgeq.recover.equalize import equalizable, scale_channels
from edgeq.report.page import write_report
from edgeq.validate.ladder import parse_ladder
from edgeq.validate.protocol import validate

DEMO = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
PP = Preprocessing(mean=(127.5,), std=(127.5,))
FACTORS = {8: 80.0, 4: 60.0, 15: 40.0}


@pytest.fixture(scope="module")
def hard_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("ladder")
    model = DEMO.read_bytes()
    first = next(name for name in equalizable(model) if "b1_relu" in name)
    hard = root / "outliers.tflite"
    hard.write_bytes(scale_channels(model, first, FACTORS))
    calib = root / "calib.npy"
    np.save(calib, load_eval_set("digits:train", limit=96).model_inputs(PP))
    data = load_eval_set("digits:test", limit=200).with_preprocessing(PP)
    return hard, calib, data


def test_ladder_recovers_the_outlier_model_and_refuses_int16_for_the_edge_tpu(hard_case, tmp_path) -> None:
    model, calib, data = hard_case
    report = validate(load_float_model(model), calib, data, tmp_path, (Estimator.MINMAX,), max_drop_pp=1.0,
                      recover=parse_ladder(["int16:1", "equalize"]), targets=("edgetpu",))
    recovery = report.recovery
    assert recovery is not None
    assert not report.passed and recovery.start.gate_passed is False  # the plain method misses the gate
    int16, equalize = recovery.rungs
    assert int16.status == "refused" and "edgetpu" in int16.note
    assert equalize.status == "met the gate" and recovery.met_by == "equalize" and recovery.passed
    assert equalize.gate is not None and equalize.gate.drop_pp <= 1.0
    assert equalize.gate.detail.startswith("rung equalize drops") and equalize.gate.method is Estimator.MINMAX
    assert equalize.selection_sqnr_db > (recovery.start.selection_sqnr_db or -np.inf) + 10
    sidecar = json.loads((tmp_path / str(recovery.model)).with_suffix(".json").read_text())
    assert [t["name"] for t in sidecar["transforms"]] == ["equalize"]
    # the Model section describes the recovered file, the one validate recommends
    assert report.model.sha256 == hashlib.sha256((tmp_path / str(recovery.model)).read_bytes()).hexdigest()
    assert sidecar["int16_tensors"] == []
    document = report.to_document()
    assert type(report).from_document(json.loads(json.dumps(document))).recovery == recovery
    _, html = write_report(report, tmp_path / "page")
    page = html.read_text()
    assert 'id="recovery"' in page and "met the gate" in page and "refused" in page


def test_when_no_rung_meets_the_gate_the_verdict_names_the_tensors(hard_case, tmp_path) -> None:
    model, calib, data = hard_case
    report = validate(load_float_model(model), calib, data, tmp_path, (Estimator.MINMAX,), max_drop_pp=-50.0,
                      recover=parse_ladder(["search"]))
    recovery = report.recovery
    assert recovery is not None and not recovery.passed and recovery.met_by is None
    assert recovery.remaining and "consider QAT" in recovery.verdict
    assert "serving_default_image:0" not in recovery.remaining  # layers, not the model input
    assert all(name.split(";")[0] in recovery.verdict for name in recovery.remaining)
    assert recovery.rungs[0].status in ("kept", "reverted")


@pytest.mark.parametrize("ladder", [["bogus"], ["search", "search"], ["int16:0"], ["int16"], ["int16:x"]])
def test_bad_ladders_are_refused(ladder: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_ladder(ladder)


def test_a_build_recipe_checks_its_ladder_at_load(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    body = ("name: r\nmodel: m.tflite\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n")
    recipe.write_text(body + "recover: [search, equalize, bias_correction, int16:3]\n")
    assert load_build_recipe(recipe).recover == ("search", "equalize", "bias_correction", "int16:3")
    recipe.write_text(body + "recover: [search, qat]\n")
    with pytest.raises(InputError, match="unknown recovery rung 'qat'"):
        load_build_recipe(recipe)


def test_a_build_with_a_ladder_publishes_the_model_that_met_the_gate(hard_case, tmp_path) -> None:
    from edgeq.build.pipeline import run_build

    model, _, data = hard_case
    folder = tmp_path / "recipe"
    folder.mkdir()
    (folder / "m.tflite").write_bytes(model.read_bytes())
    np.save(folder / "calib.npy", load_eval_set("digits:train", limit=96).images)
    np.savez(folder / "eval.npz", images=data.images, labels=data.labels)
    (folder / "r.yaml").write_text(
        "name: hard\nmodel: m.tflite\npreprocess: 'mean=127.5,std=127.5'\n"
        "calibration: {source: calib.npy}\nevaluation: {source: eval.npz}\n"
        "methods: [minmax]\ntargets: [generic]\nbench: {backends: [cpu], threads: [1], runs: 3, min_seconds: 0}\n"
        "gates: {max_drop_pp: 1.0}\nrecover: [equalize]\n")
    outcome = run_build(load_build_recipe(folder / "r.yaml"), tmp_path / "out", lambda _: None)
    recovery = outcome.report.validation_report.recovery
    assert recovery is not None and recovery.met_by == "equalize"
    assert outcome.report.passed  # the gates are judged on the published (recovered) model
    max_drop = next(g for g in outcome.report.gates if g.name == "max_drop")
    assert max_drop.passed and "rung equalize" in max_drop.detail
    published = json.loads(outcome.artifact.with_suffix(".json").read_text())
    assert [t["name"] for t in published["transforms"]] == ["equalize"]
    # the report describes the file published, not the picked method's model
    model = outcome.report.validation_report.model
    assert model.sha256 == published["sha256"] == hashlib.sha256(outcome.artifact.read_bytes()).hexdigest()



def test_recover_without_a_gate_is_a_usage_error(hard_case, tmp_path, capsys) -> None:
    from edgeq.cli import main as cli

    model, calib, _ = hard_case
    out = tmp_path / "v"
    argv = ["validate", str(model), "--calib", str(calib), "--eval", "digits:test", "--preprocess",
            "mean=127.5,std=127.5", "--recover", "equalize", "-o", str(out)]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no gate is set" in error
    assert not out.exists()


def test_a_build_recipe_refuses_search_with_overrides_at_load(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: m.tflite\ncalibration: {source: digits:train}\n"
                      "evaluation: {source: digits:test}\nmethods: [auto, search]\n"
                      "quantization: {overrides: [{method: minmax, ops: SOFTMAX}]}\n")
    with pytest.raises(InputError, match="search, which chooses per-tensor estimators itself"):
        load_build_recipe(recipe)
