"""One convention for machine output (docs/json.md): ``--json [PATH]`` on every verb, one enveloped document, valid
against its published JSON Schema, and stdout holding nothing else.

Every verb runs once for real on small inputs (the demo's float CNN, 16 calibration digits, a 16-sample set),
parsed with ``json`` and checked with ``jsonschema`` against docs/schemas/, which must equal what
edgeq.schemas generates from the types now.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from edgeq import __version__
from edgeq.cli import main as cli
from edgeq.cli.output import json_text
from edgeq.envelope import SCHEMA_VERSIONS, envelope, unwrap
from edgeq.schemas import RECIPE, schema_text, schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"
FLOAT_MODEL = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"
PP = ["--preprocess", "mean=127.5,std=127.5"]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def check_document(document: dict[str, Any], kind: str) -> dict[str, Any]:
    """The envelope is edgeq's and the document is valid against the published schema of its kind."""
    assert document["kind"] == kind
    assert document["schema_version"] == SCHEMA_VERSIONS[kind]
    assert document["edgeq_version"] == __version__
    assert set(document["runtime"]) == {"python", "platform", "packages"}
    assert list(document)[:4] == ["kind", "schema_version", "edgeq_version", "runtime"]
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(kind).iter_errors(document)]
    assert not errors, errors[:5]
    return unwrap(document, kind)


# ------------------------------------------------------------------ the published schemas


def test_published_schemas_are_what_the_types_generate() -> None:
    """docs/schemas/ is regenerated with `python -m edgeq.schemas` whenever a document's type changes."""
    generated = schemas()
    assert {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} == set(generated)
    for name, schema in generated.items():
        assert (SCHEMAS / f"{name}.schema.json").read_text() == schema_text(schema), (
            f"docs/schemas/{name}.schema.json is stale: run python -m edgeq.schemas")


def test_every_kind_has_a_valid_schema() -> None:
    assert set(schemas()) == {*SCHEMA_VERSIONS, RECIPE}
    for name in schemas():
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_report_schema_accepts_committed_reports_and_added_fields() -> None:
    """report.json of validate and of build; a key the schema does not know is accepted (objects are open,
    so a forgotten regeneration never rejects a newer report), a missing required key is not."""
    validator = _validator("edgeq.report")
    for name in ("validate_report.json", "build_report.json"):
        document = json.loads((ROOT / "tests" / "data" / "report" / name).read_text())
        body = unwrap(document, "edgeq.report")
        assert not list(validator.iter_errors(envelope("edgeq.report", body))), name
        assert not list(validator.iter_errors(envelope("edgeq.report", {**body, "added_later": {"x": 1}})))
        broken = {k: v for k, v in body.items() if k != "validation"}
        assert list(validator.iter_errors(envelope("edgeq.report", broken)))


def test_recipe_schema_accepts_the_examples_and_flags_typos() -> None:
    validator = _validator(RECIPE)
    recipes = [*sorted((ROOT / "docs" / "examples").glob("*.yaml")), ROOT / "tests/data/demo/cnn_digits.yaml"]
    for path in recipes:
        recipe = yaml.safe_load(path.read_text())
        assert not list(validator.iter_errors(recipe)), path
    recipe = yaml.safe_load(recipes[0].read_text())
    for typo in ({"calibration": {**recipe["calibration"], "conditon": "noise"}},
                 {"gates": {**recipe.get("gates", {}), "max_drop": 1}}, {"methods": ["minmax", "median"]},
                 {"bench": {"threads": [0]}}, {"name": "../out"}):
        assert list(validator.iter_errors({**recipe, **typo})), typo


def test_non_finite_floats_are_null_and_strict_json() -> None:
    text = json_text("edgeq.eval", {"top1": float("nan"), "fidelity": {"y": {"all": {"sqnr_db": float("inf")}}}})
    document = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert document["top1"] is None and document["fidelity"]["y"]["all"]["sqnr_db"] is None


# ------------------------------------------------------------------ every verb, for real


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """calib.npy (16 training digits, uint8), the float CNN beside it, and a recipe for build."""
    from datagen.bundled import load_digits

    folder = tmp_path_factory.mktemp("json")
    np.save(folder / "calib.npy", load_digits("train").images[:16])
    shutil.copy(FLOAT_MODEL, folder / "float.tflite")
    (folder / "recipe.yaml").write_text(
        "name: tiny\nmodel: float.tflite\npreprocess: 'mean=127.5,std=127.5'\ncalibration: {source: calib.npy}\n"
        "evaluation: {source: eval_set}\nmethods: [minmax]\ntargets: [generic]\n"
        "bench: {backends: [cpu], runs: 3, min_seconds: 0}\ngates: {max_drop_pp: 100, spec: [generic]}\n")
    return folder


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, Any]:
    """``edgeq ARGV --json``: stdout must be the document, whole (no other line)."""
    capsys.readouterr()
    assert cli.main([*argv, "--json"]) == code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def run_json_file(argv: list[str], target: Path, capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, Any]:
    """``edgeq ARGV --json TARGET``: the document is written there, the human summary goes to stdout."""
    capsys.readouterr()
    assert cli.main([*argv, "--json", str(target)]) == code, capsys.readouterr().err
    return json.loads(target.read_text())


@pytest.fixture(scope="module")
def made(work: Path) -> dict[str, Any]:
    """The set and the INT8 model the other verbs read, made by datagen and convert with ``--json FILE``."""
    datagen = ["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "16", *PP,
               "-o", str(work / "eval_set"), "--json", str(work / "datagen.json")]
    convert = ["convert", str(work / "float.tflite"), "--calib", str(work / "calib.npy"), *PP,
               "-o", str(work / "int8.tflite"), "--json", str(work / "convert.json")]
    assert cli.main(datagen) == 0 and cli.main(convert) == 0
    return {"eval_set": work / "eval_set", "int8": work / "int8.tflite",
            "datagen": json.loads((work / "datagen.json").read_text()),
            "convert": json.loads((work / "convert.json").read_text())}


def test_datagen(work: Path, made: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    body = check_document(made["datagen"], "edgeq.datagen")
    assert body["samples"] == 16 and body["counts"] == {"original": 8, "noise": 8}
    assert Path(body["files"]["datagen.json"]).is_file() and body["path"] == str(made["eval_set"])
    argv = ["datagen", "--source", "digits:test", "--conditions", "original", "--n", "2", "-o", str(work / "two")]
    assert check_document(run_json(argv, capsys), "edgeq.datagen")["samples"] == 2


def test_convert_and_calibrate(work: Path, made: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    body = check_document(made["convert"], "edgeq.convert")
    assert body["sidecar"]["kind"] == "quantized_artifact" and body["sidecar"]["calibration_samples"] == 16
    assert json.loads(Path(body["sidecar_path"]).read_text()) == body["sidecar"]  # the sidecar, as written
    argv = ["convert", str(work / "float.tflite"), "--calib", str(work / "calib.npy"), *PP, "--method", "minmax",
            "-o", str(work / "minmax.tflite")]
    assert check_document(run_json(argv, capsys), "edgeq.convert")["model"] == str(work / "minmax.tflite")
    calibrate = ["calibrate", str(work / "float.tflite"), "--calib", str(work / "calib.npy"), *PP,
                 "-o", str(work / "stats.npz")]
    body = check_document(run_json_file(calibrate, work / "calibrate.json", capsys), "edgeq.calibrate")
    assert body["samples"] == 16 and body["tensors"] > 0 and (work / "stats.npz").is_file()
    assert "activation tensors over 16 samples" in capsys.readouterr().out  # a file: the summary stays on stdout


def _verbs(work: Path, made: dict[str, Any]) -> dict[str, tuple[list[str], int]]:
    """Each verb's command line (without --json) and its exit status here."""
    model, calib, int8, eval_set = work / "float.tflite", work / "calib.npy", made["int8"], made["eval_set"]
    return {
        "check": (["check", str(int8)], 0),
        "bench": (["bench", str(int8), "--backend", "cpu", "--runs", "3", "--min-seconds", "0",
                   "--warmup-seconds", "0"], 0),
        "eval": (["eval", str(int8), "--data", str(eval_set), "--backend", "cpu", "--reference", str(model)], 0),
        "coverage": (["coverage", str(model), "--calib", str(calib), "--production", str(calib), *PP], 0),
        "sensitivity": (["sensitivity", str(model), "--calib", str(calib), "--eval", str(eval_set), *PP,
                         "--limit", "2"], 0),
        "zoo": (["zoo", "list", "--cache-dir", str(work / "zoo")], 0),
        "instrument": (["instrument", str(model), "-o", str(work / "instrumented.tflite"), "--force"], 0),
    }


#: What each verb's document must say about this run (beyond its schema).
MEASURED: dict[str, Callable[[dict[str, Any]], bool]] = {
    "check": lambda body: body["passed"] is True and body["report"]["kind"] == "spec_report",
    "bench": lambda body: body["results"][0]["latency"]["n"] >= 3 and body["results"][0]["backend"] == "cpu",
    "eval": lambda body: body["n"] == 16 and 0 <= body["top1"] <= 1 and body["interpreter"].startswith("ai_edge")
    and all("all" in entry for entry in body["fidelity"].values()),
    "coverage": lambda body: body["flagged"] == 0 and len(body["layers"]) > 0,
    "sensitivity": lambda body: body["samples"] == 2 and len(body["sensitivity"]["tensors"]) > 0,
    "zoo": lambda body: body["action"] == "list" and body["models"][0]["name"] == "cnn",
    "instrument": lambda body: body["sidecar"]["kind"] == "instrumented_model" and len(body["sidecar"]["outputs"]) > 0,
}


@pytest.mark.parametrize("verb", list(MEASURED))
def test_verb_to_stdout_and_to_a_file(verb: str, work: Path, made: dict[str, Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv, code = _verbs(work, made)[verb]
    kind = f"edgeq.{verb}"
    to_stdout = check_document(run_json(argv, capsys, code), kind)
    assert MEASURED[verb](to_stdout)
    to_file = check_document(run_json_file(argv, work / f"{verb}.json", capsys, code), kind)
    assert set(to_stdout) == set(to_file)


def test_validate_and_build_point_to_their_reports(work: Path, made: dict[str, Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """What a CI script reads: the verdict, each gate, the exit status and where report.json and the models are."""
    validate = ["validate", str(work / "float.tflite"), "--calib", str(work / "calib.npy"), "--eval",
                str(made["eval_set"]), *PP, "--methods", "minmax", "--max-drop", "-100", "-o", str(work / "val")]
    body = check_document(run_json(validate, capsys, code=1), "edgeq.validate")  # a drop above -100 pp fails
    assert body["passed"] is False and body["exit_status"] == 1 and body["best_method"] == "minmax"
    assert [g["name"] for g in body["gates"]] == ["max_drop"] and body["gates"][0]["passed"] is False
    report = json.loads(Path(body["report"]).read_text())
    assert not list(_validator("edgeq.report").iter_errors(
        report if "kind" in report else envelope("edgeq.report", report)))
    body = check_document(run_json_file(["build", str(work / "recipe.yaml"), "-o", str(work / "build")],
                                        work / "build.json", capsys), "edgeq.build")
    assert body["passed"] is True and body["exit_status"] == 0
    assert Path(body["artifact"]).is_file() and Path(body["report"]).name == "report.json"
    assert {g["name"] for g in body["gates"]} >= {"max_drop", "spec:generic"}
    assert all(g["passed"] for g in body["gates"])


def test_zoo_build(work: Path, tiny_zoo: Mapping[str, Path], monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """The card of a built model (the session's tiny CNN, with the card its build wrote, stands in for training)."""
    import edgeq_models.zoo

    card = edgeq_models.zoo.ZooCard.from_dict(json.loads((tiny_zoo["cnn"].parent / "card.json").read_text()))
    built = edgeq_models.zoo.BuiltModel(card=card, path=tiny_zoo["cnn"], reused=True)
    monkeypatch.setattr(edgeq_models.zoo, "build", lambda *_, **__: built)
    body = check_document(run_json(["zoo", "build", "cnn", "-o", str(work / "cnn.keras")], capsys), "edgeq.zoo")
    assert body["action"] == "build" and body["card"]["name"] == "cnn" and (work / "cnn.keras").is_file()


# ------------------------------------------------------------------ the rules around --json


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("argv", "says"), [
    (["check", "{int8}", "--json", "{int8}"], "is the input"),
    (["bench", "--json", "{int8}", "{float}"], "ends in .json"),  # the optional value took a positional
    (["eval", "{int8}", "--data", "digits:test", "--preprocess", "{pp}", "--json", "{pp}"], "is the input"),
    (["sensitivity", "{float}", "--calib", "{calib}", "--eval", "{calib}", "-o", "{out}", "--json", "{out}/s.json"],
     "inside the output folder"),
    (["convert", "{float}", "--calib", "{calib}", "-o", "{out}/m.tflite", "--json", "{out}/m.json"], "same file"),
])
def test_a_json_path_never_replaces_an_input(argv: list[str], says: str, work: Path, made: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (work / "pp.json").write_text('{"mean": 127.5, "std": 127.5}')
    names = {"int8": made["int8"], "float": work / "float.tflite", "calib": work / "calib.npy",
             "pp": work / "pp.json", "out": work / "refused"}
    before = _snapshot(work)
    assert cli.main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert _snapshot(work) == before


def test_no_document_without_a_result(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 (bad input) has no result: stdout stays empty, the one-line error is on stderr."""
    assert cli.main(["check", str(work / "missing.tflite"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("edgeq: error: ") and captured.err.count("\n") == 1


def test_quiet_keeps_results_and_drops_the_rest(made: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", str(made["int8"]), "--data", str(made["eval_set"]), "--backend", "cpu"]
    assert cli.main(argv) == 0
    loud = capsys.readouterr()
    assert cli.main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    informational = [line for line in loud.out.splitlines() if line.startswith("preprocessing: ")]
    assert informational and "top-1" in quiet.out
    assert quiet.out.splitlines() == [line for line in loud.out.splitlines() if line not in informational]
    assert quiet.err == ""  # no progress either
