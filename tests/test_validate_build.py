"""edgeq validate and edgeq build: per-layer diagnosis, the max-drop gate, recipes, caching, the report.

The reports are read back into their types (edgeq.results) as the tests check them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import Estimator
from edgeq.cli import main as cli
from edgeq.intake.load import load_float_model
from edgeq.preprocess import apply_preprocessing
from edgeq.quant_recipe import Override, QuantRecipe
from edgeq.results.build import BuildReport
from edgeq.results.validation import MethodResult, ValidationReport, ValidationRun
from edgeq.validate.diagnostics import per_layer, worst


def _digits(n: int = 24):
    from datagen.bundled import load_digits
    from edgeq_models import ZOO

    return apply_preprocessing(ZOO["cnn"].preprocessing, load_digits("test").images[:n])


@pytest.fixture(scope="module")
def bad_layer_target(tiny_zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """(the CNN's float flatbuffer, the layer to break): a conv whose output no same-scale op (max pool) shares,
    so its range is its own; found on the healthy minmax model's per-layer rows."""
    float_bytes = load_float_model(tiny_zoo["cnn"]).flatbuffer
    healthy = _minmax_model(tiny_zoo["cnn"], tmp_path_factory.mktemp("healthy") / "healthy.tflite")
    rows = per_layer(float_bytes, healthy.read_bytes(), _digits())
    target = next(r.name for r, after in itertools.pairwise(rows) if r.op == "CONV_2D" and after.op != "MAX_POOL_2D")
    return float_bytes, target


def test_an_injected_bad_layer_is_ranked_worst(tiny_zoo: dict[str, Path], bad_layer_target: tuple[bytes, str],
                                               tmp_path: Path) -> None:
    """A deliberately tight range on one tensor (percentile 60) must come out as the worst layer."""
    from edgeq_models import ZOO

    pp = ZOO["cnn"].preprocessing
    float_bytes, target = bad_layer_target
    broken = tmp_path / "broken.tflite"
    rule = Override(method=Estimator.PERCENTILE, tensors=target, percentile=60.0)
    edgeq.convert(tiny_zoo["cnn"], broken, calib="digits:train", limit=32, preprocessing=pp,
                  recipe=QuantRecipe(method=Estimator.MINMAX, overrides=(rule,)))
    bad_rows = per_layer(float_bytes, broken.read_bytes(), _digits())
    assert worst(bad_rows, 1)[0].name == target
    bad = next(r for r in bad_rows if r.name == target)
    assert bad.clip_fraction > 0.05 and bad.rmse_over_scale > 1.0
    assert all(0.0 <= r.saturation <= 1.0 for r in bad_rows)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval") / "set"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "40",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(folder)]) == 0
    return folder


def _best(report: ValidationReport) -> MethodResult:
    return next(m for m in report.validation.methods if m.method == report.best_method)


def _validation_run(out: Path) -> ValidationRun:
    return ValidationRun.from_document(json.loads((out / "report.json").read_text()))


def _assert_advice_follows_from_the_layers(report: ValidationReport) -> None:
    """Each triage line is there exactly when its measurement says so, and quotes the measured figures."""
    rows, advice = report.layers.rows, report.advice
    assert advice, "a failed gate always comes with advice"
    clip = max(r.clip_fraction for r in rows if r.op not in ("SOFTMAX", "LOGISTIC"))
    gap = [a for a in advice if a.startswith("coverage gap")]
    assert len(gap) == (clip > 0.01)
    if gap:
        assert gap[0].startswith(f"coverage gap: {clip:.1%} of evaluation activations fall outside")
    saturated = [r for r in rows if r.saturation > 0.01]
    saturation = [a for a in advice if a.startswith("high saturation")]
    assert len(saturation) == bool(saturated)
    if saturation:
        worst = max(r.saturation for r in saturated)
        assert saturation[0].startswith(f"high saturation in {len(saturated)} layer(s) (worst {worst:.1%} in ")
    if saturation:
        most = max(saturated, key=lambda r: r.saturation)
        assert f"in {most.name}); " in saturation[0]  # names the layer the quoted figure belongs to
    local = [r.local_sqnr_db for r in rows if r.local_sqnr_db is not None]
    if local:
        median = float(np.median(local))
        bad = [r for r in rows if r.local_sqnr_db is not None and r.local_sqnr_db < median - 15]
        one = [a for a in advice if a.startswith("one bad layer")]
        assert len(one) == (len(bad) == 1)
        if one:
            assert one[0].startswith(f"one bad layer: {bad[0].name} (local SQNR {bad[0].local_sqnr_db:.1f} dB")
    if not gap and not saturation and not any(a.startswith("one bad layer") for a in advice):
        assert advice == [advice[0]] and advice[0].startswith("no single cause measured")


def _validate(model: Path, eval_set: Path, out: Path, max_drop: float | None) -> int:
    return cli.main(["validate", str(model), "--calib", "digits:train", "--eval", str(eval_set),
                     "--preprocess", "mean=127.5,std=127.5", "--methods", "minmax,auto",
                     *(["--max-drop", repr(max_drop)] if max_drop is not None else []), "-o", str(out)])


def test_validate_gate_sits_at_the_measured_drop(tiny_zoo: dict[str, Path], eval_set: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """No gate: the drop is measured. A limit at that drop passes (the limit is inclusive), 0.01 pp less fails."""
    assert _validate(tiny_zoo["cnn"], eval_set, tmp_path / "ungated", None) == 0
    ungated = _validation_run(tmp_path / "ungated")
    validation = ungated.report.validation
    assert [m.method for m in validation.methods] == ["minmax", "auto"]
    assert set(validation.baseline.per_condition) == {"original", "noise"}
    assert ungated.gates == () and ungated.passed is True and validation.advice == ()
    best = _best(ungated.report)
    gate = validation.gate  # the picked method measured on the held-out half: what max_drop judges
    assert gate.method == best.method and gate.max_drop_pp is None and gate.passed is None
    drop = gate.drop_pp

    assert _validate(tiny_zoo["cnn"], eval_set, tmp_path / "at", drop) == 0
    at = _validation_run(tmp_path / "at")
    assert [(g.name, g.passed) for g in at.gates] == [("max_drop", True)]
    assert at.passed is True and at.report.advice == ()  # no triage for a passing model
    assert at.report.gate.drop_pp == drop  # the same measurement: the gate does not change it
    capsys.readouterr()

    assert _validate(tiny_zoo["cnn"], eval_set, tmp_path / "below", drop - 0.01) == 1
    err = capsys.readouterr().err
    below = _validation_run(tmp_path / "below")
    assert [(g.name, g.passed) for g in below.gates] == [("max_drop", False)]
    assert below.passed is False and below.report.passed is False
    assert len(err.strip().splitlines()) == 1 and "gate max_drop failed" in err
    assert f"{best.method} drops {drop:+.2f} pp" in err and below.report.advice[0] in err
    assert below.report.gate.passed is False
    _assert_advice_follows_from_the_layers(below.report)
    assert below.report.layers.worst and below.report.histograms
    assert "max_drop" in (tmp_path / "below" / "report.html").read_text()


@pytest.fixture(scope="module")
def injected(tiny_zoo: dict[str, Path], eval_set: Path, bad_layer_target: tuple[bytes, str],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ValidationReport]:
    """validate (minmax) with one conv forced bad by a percentile-60 range, under a gate it cannot meet:
    (the bad layer's name, the report)."""
    from edgeq.harness.labelled import load_labelled
    from edgeq.validate.protocol import EvalData, validate
    from edgeq_models import ZOO

    pp = ZOO["cnn"].preprocessing
    images, labels, conditions, _ = load_labelled(str(eval_set))
    data = EvalData(name=str(eval_set), images=images, labels=labels, conditions=conditions, preprocessing=pp)
    _, target = bad_layer_target  # as in test_an_injected_bad_layer_is_ranked_worst
    rule = Override(method=Estimator.PERCENTILE, tensors=target, percentile=60.0)
    report = validate(tiny_zoo["cnn"], "digits:train", data, tmp_path_factory.mktemp("injected"), (Estimator.MINMAX,),
                      max_drop_pp=-100.0, recipe=QuantRecipe(method=Estimator.MINMAX, overrides=(rule,)),
                      calib_preprocessing=pp)
    assert not report.passed and report.advice and report.gate.passed is False
    return target, report


def _minmax_model(model: Path, path: Path) -> Path:
    from edgeq_models import ZOO

    edgeq.convert(model, path, calib="digits:train", limit=32, preprocessing=ZOO["cnn"].preprocessing,
                  recipe=QuantRecipe(method=Estimator.MINMAX))
    return path


def test_advice_for_an_injected_bad_layer_follows_from_its_measurements(injected: tuple[str, ValidationReport]) -> None:
    target, report = injected
    validation = report.validation
    (minmax,) = validation.methods
    assert minmax.drop_pp == pytest.approx(100 * (validation.baseline.top1 - minmax.top1), abs=1e-4)
    assert validation.passed is False and report.layers.method == "minmax"
    rows = {r.name: r for r in report.layers.rows}
    assert report.layers.worst[0] == target  # the diagnosis points at the cause
    assert rows[target].clip_fraction > 0.05
    _assert_advice_follows_from_the_layers(report)
    # the injected clipping is what the coverage and saturation lines quote
    assert rows[target].clip_fraction == max(r.clip_fraction for r in rows.values())
    assert any(a.startswith(f"coverage gap: {rows[target].clip_fraction:.1%}") for a in validation.advice)
    assert rows[target].saturation == max(r.saturation for r in rows.values())


def test_saturation_advice_names_the_most_saturated_layer(injected: tuple[str, ValidationReport]) -> None:
    target, report = injected
    line = next(a for a in report.advice if a.startswith("high saturation"))
    assert f"in {target}); " in line


def test_a_single_bad_layer_gets_the_one_bad_layer_triage_step(injected: tuple[str, ValidationReport]) -> None:
    target, report = injected
    assert any(a.startswith(f"one bad layer: {target} (") for a in report.advice)


RECIPE = """
name: tiny-cnn
model: {model}
preprocess: "mean=127.5,std=127.5"
calibration: {{source: digits:train, conditions: "original,noise", n: 32}}
evaluation: {{source: digits:test, conditions: "original,blur", n: 40, seed: 1}}
methods: [minmax, auto]
targets: [generic, xnnpack]
bench: {{backends: [xnnpack], threads: [1], runs: 20, min_seconds: 0.05}}
gates: {{max_drop_pp: {max_drop}, spec: [generic], max_p90_ms: {{xnnpack: {p90_ms}}}}}
"""


def _reused(out: str) -> set[str]:
    """The steps a build says it took from its cache."""
    line = next((line for line in out.splitlines() if line.startswith("reused cached steps: ")), "")
    return set(line.removeprefix("reused cached steps: ").split(", ")) - {""}


HUGE_BUDGET_MS = 60_000  # a minute per inference: passes on any machine
TINY_BUDGET_MS = 1e-6  # a nanosecond: fails on any machine


def test_build_gates_at_the_measured_drop_and_budget_and_reuses_cached_steps(
        tiny_zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "build"

    def build(max_drop: float | None, p90_ms: float = HUGE_BUDGET_MS) -> tuple[int, BuildReport]:
        # fixed-point numbers: YAML 1.1 reads 1e-06 as a string; drop_pp has 4 decimals, so 6 keep it exact
        limit = "null" if max_drop is None else f"{max_drop:.6f}"
        recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=limit, p90_ms=f"{p90_ms:.6f}"))
        code = cli.main(["build", str(recipe), "-o", str(out)])
        return code, BuildReport.from_document(json.loads((out / "report.json").read_text()))

    code, report = build(None)  # no drop gate yet: measure the drop
    assert code == 0
    first = capsys.readouterr().out
    assert "tiny-cnn_int8.tflite" in first and "report.html" in first
    assert (out / "tiny-cnn_int8.tflite").is_file() and (out / "tiny-cnn_int8.json").is_file()
    assert [(g.name, g.passed) for g in report.gates] == [("spec:generic", True), ("latency:xnnpack", True)]
    drop = report.validation_report.gate.drop_pp  # held-out half: what the max_drop gate judges

    code, report = build(drop)  # the limit is inclusive
    assert code == 0 and report.passed is True
    assert {g.name: g.passed for g in report.gates} == {"max_drop": True, "spec:generic": True,
                                                        "latency:xnnpack": True}
    assert {"calibration", "evaluation", "bench"} <= _reused(capsys.readouterr().out)  # measured sets, latency

    code, report = build(drop - 0.01)
    assert code == 1 and report.passed is False
    assert {g.name: g.passed for g in report.gates} == {"max_drop": False, "spec:generic": True,
                                                        "latency:xnnpack": True}
    err = capsys.readouterr().err
    assert "gate(s) failed: max_drop" in err and len(err.strip().splitlines()) == 1
    assert report.validation_report.advice  # triage for the failed drop gate
    _assert_advice_follows_from_the_layers(report.validation_report)

    code, report = build(drop, p90_ms=TINY_BUDGET_MS)  # only the budget changed: every step is reused
    assert code == 1 and report.passed is False
    assert {g.name: g.passed for g in report.gates} == {"max_drop": True, "spec:generic": True,
                                                        "latency:xnnpack": False}
    captured = capsys.readouterr()
    assert _reused(captured.out) == {"calibration", "evaluation", "validate", "bench"}
    assert "gate(s) failed: latency:xnnpack" in captured.err and len(captured.err.strip().splitlines()) == 1


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
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=100, p90_ms=HUGE_BUDGET_MS))
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

    from datagen.outputs import OUTPUT_MARKER
    from edgeq.spec.check import check_model

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_zoo["cnn"], max_drop=100, p90_ms=HUGE_BUDGET_MS))
    out = tmp_path / "shared"
    edgeq_bin = str(Path(sys.executable).with_name("edgeq"))
    runs = [subprocess.Popen([edgeq_bin, "build", str(recipe), "-o", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]  # type: ignore[union-attr]
    assert all(code == 0 for code, _ in results), results
    assert check_model((out / "tiny-cnn_int8.tflite").read_bytes()).passed
    assert BuildReport.from_document(json.loads((out / "report.json").read_text())).passed is True
    staged = [p for p in out.rglob(".*") if p.name.startswith(".") and p.name != OUTPUT_MARKER]
    assert not staged  # no staging leftovers (the marker every edgeq-written set carries is no leftover)
