"""edgeq validate and edgeq build: per-layer diagnosis, the max-drop gate, recipes, caching, the report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import edgeq
from edgeq.artifacts import Estimator
from edgeq.cli import main as cli
from edgeq.converter.load import load_float_model
from edgeq.converter.recipe import Override, QuantRecipe
from edgeq.preprocess import apply_preprocessing
from edgeq.validate.diagnostics import per_layer, worst


def _digits(n: int = 24):
    from datagen.bundled import load_digits
    from edgeq_models import ZOO

    return apply_preprocessing(ZOO["cnn"].preprocessing, load_digits("test").images[:n])


def test_an_injected_bad_layer_is_ranked_worst(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    """A deliberately tight range on one tensor (percentile 60) must come out as the worst layer."""
    from edgeq_models import ZOO

    pp = ZOO["cnn"].preprocessing
    healthy = tmp_path / "healthy.tflite"
    edgeq.convert(tiny_zoo["cnn"], healthy, calib="digits:train", limit=32, preprocessing=pp,
                  recipe=QuantRecipe(method=Estimator.MINMAX))
    float_bytes = load_float_model(tiny_zoo["cnn"]).flatbuffer
    rows = per_layer(float_bytes, healthy.read_bytes(), _digits())
    # a conv whose output no same-scale op (max pool) shares: its range is its own
    target = next(r.name for r, after in itertools.pairwise(rows) if r.op == "CONV_2D" and after.op != "MAX_POOL_2D")
    broken = tmp_path / "broken.tflite"
    rule = Override(method=Estimator.PERCENTILE, tensors=target, percentile=60.0)
    edgeq.convert(tiny_zoo["cnn"], broken, calib="digits:train", limit=32, preprocessing=pp,
                  recipe=QuantRecipe(method=Estimator.MINMAX, overrides=(rule,)))
    bad_rows = per_layer(float_bytes, broken.read_bytes(), _digits())
    assert worst(bad_rows, 1)[0].name == target
    bad = next(r for r in bad_rows if r.name == target)
    assert bad.clip_fraction > 0.05 and bad.rmse_over_scale > 1.0
    assert all(0.0 <= r.saturation <= 1.0 for r in bad_rows)


def test_validate_impossible_gate_exits_1_and_names_it(tiny_zoo: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    eval_set = tmp_path / "eval"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "40",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(eval_set)]) == 0
    out = tmp_path / "validation"
    code = cli.main(["validate", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--eval", str(eval_set),
                     "--preprocess", "mean=127.5,std=127.5", "--methods", "minmax,auto", "--max-drop", "-100",
                     "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "gate max_drop failed" in captured.err and len(captured.err.strip().splitlines()) == 1
    document = json.loads((out / "report.json").read_text())
    assert document["passed"] is False and document["gates"][0]["name"] == "max_drop"
    validation = document["validation"]
    assert [m["method"] for m in validation["methods"]] == ["minmax", "auto"]
    assert validation["advice"]  # triage is drawn from the measurements
    assert set(validation["baseline"]["per_condition"]) == {"original", "noise"}
    assert document["layers"]["worst"] and document["histograms"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "max_drop" in html


RECIPE = """
name: tiny-cnn
model: {model}
preprocess: "mean=127.5,std=127.5"
calibration: {{source: digits:train, conditions: "original,noise", n: 32}}
evaluation: {{source: digits:test, conditions: "original,blur", n: 40, seed: 1}}
methods: [minmax, auto]
targets: [generic, xnnpack]
bench: {{backends: [xnnpack], threads: [1], runs: 20, min_seconds: 0.05}}
gates: {{max_drop_pp: {max_drop}, spec: [generic], max_p90_ms: {{xnnpack: 1000}}}}
"""


def test_build_runs_gates_and_reuses_cached_steps(tiny_zoo: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=100))
    out = tmp_path / "build"
    assert cli.main(["build", str(recipe), "-o", str(out)]) == 0
    first = capsys.readouterr().out
    assert "tiny-cnn_int8.tflite" in first and "report.html" in first
    assert (out / "tiny-cnn_int8.tflite").is_file() and (out / "tiny-cnn_int8.json").is_file()
    document = json.loads((out / "report.json").read_text())
    assert {g["name"] for g in document["gates"]} == {"max_drop", "spec:generic", "latency:xnnpack"}
    assert all(g["passed"] for g in document["gates"])
    assert cli.main(["build", str(recipe), "-o", str(out)]) == 0
    assert "reused cached steps: calibration, evaluation, validate, bench" in capsys.readouterr().out
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=-100))
    assert cli.main(["build", str(recipe), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gate(s) failed: max_drop" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\nmethod: [kl]\n",
     "unknown key(s) method"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "targets: [jetson]\n", "unknown target 'jetson'"),
    ("name: x\nmodel: m.keras\nevaluation: {source: digits:test}\n", "missing 'calibration'"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train, size: 3}\nevaluation: {source: digits:test}\n",
     "calibration: unknown key(s) size"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "methods: [median]\n", "methods:"),
    ("[not, a, mapping]\n", "must hold a mapping"),
])
def test_recipe_errors_exit_2_with_one_line(text: str, fragment: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert cli.main(["build", str(recipe), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_two_builds_give_byte_identical_artifacts_and_sets(tiny_zoo: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=100))
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert cli.main(["build", str(recipe), "-o", str(out)]) == 0
    capsys.readouterr()
    assert (first / "tiny-cnn_int8.tflite").read_bytes() == (second / "tiny-cnn_int8.tflite").read_bytes()
    for folder in sorted((first / "cache").glob("calibration-*")) + sorted((first / "cache").glob("evaluation-*")):
        twin = second / "cache" / folder.name
        for file in sorted(folder.iterdir()):
            assert file.read_bytes() == (twin / file.name).read_bytes(), file.name

    def without_paths(path: Path) -> dict[str, object]:
        document = json.loads(path.read_text())
        return {k: v for k, v in document.items() if k not in ("path", "source")}

    assert without_paths(first / "tiny-cnn_int8.json") == without_paths(second / "tiny-cnn_int8.json")


def test_two_concurrent_builds_into_one_folder(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    """Both finish, and what they leave is one valid, complete artifact (every write is temp + rename)."""
    import subprocess
    import sys

    from edgeq.spec.check import check_model

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=100))
    out = tmp_path / "shared"
    edgeq_bin = str(Path(sys.executable).with_name("edgeq"))
    runs = [subprocess.Popen([edgeq_bin, "build", str(recipe), "-o", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]  # type: ignore[union-attr]
    assert all(code == 0 for code, _ in results), results
    assert check_model((out / "tiny-cnn_int8.tflite").read_bytes()).passed
    assert json.loads((out / "report.json").read_text())["passed"] is True
    assert not [p for p in out.rglob(".*") if p.name.startswith(".")]  # no staging leftovers
