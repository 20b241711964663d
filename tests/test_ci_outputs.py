"""CI outputs of ``edgeq build``: the Markdown summary (and $GITHUB_STEP_SUMMARY), JUnit XML, --baseline deltas and
the max_regression gate, read back with real parsers (junitparser, markdown-it-py) against report.json.

One small build (the demo's float model, 32 calibration and 40 evaluation samples, one method) runs once; every
later build in this module changes only what no cached step depends on, so it reuses them all.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml
from markdown_it import MarkdownIt

from conftest import DEMO_FLOAT, tiny_build_recipe
from edgeq.cli import main as cli

DEMO = DEMO_FLOAT


def _recipe(folder: Path, extra: str = "", name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(tiny_build_recipe("max_drop_pp: 50, spec: [generic], max_p90_ms: {cpu: 60000}"
                                      + (f", {extra}" if extra else "")))
    return path


def _report(out: Path) -> dict[str, Any]:
    from edgeq.envelope import unwrap

    return unwrap(json.loads((out / "report.json").read_text()), "edgeq.report")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One build with --summary-md, --junit and $GITHUB_STEP_SUMMARY set."""
    folder = tmp_path_factory.mktemp("ci")
    step = folder / "step_summary.md"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GITHUB_STEP_SUMMARY", str(step))
        code = cli.main(["build", str(_recipe(folder)), "-o", str(folder / "out"), "--summary-md",
                         str(folder / "summary.md"), "--junit", str(folder / "junit.xml")])
    assert code == 0
    return {"folder": folder, "out": folder / "out", "step": step, "report": _report(folder / "out")}


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of a Markdown text as rows of cell texts (the header row first), via markdown-it-py."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    tables: list[list[list[str]]] = []
    in_cell = False
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            tables[-1].append([])
        elif token.type in ("th_open", "td_open", "th_close", "td_close"):
            in_cell = token.type.endswith("_open")
        elif token.type == "inline" and in_cell:
            tables[-1][-1].append(token.content)
    return tables


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    table = next(t for t in _tables(markdown) if t[0][0] == first_header)
    return [dict(zip(table[0], r, strict=True)) for r in table[1:]]


def test_junit_has_one_case_per_gate_and_failures_match_the_verdict(built: dict[str, Any]) -> None:
    suites = list(JUnitXml.fromfile(str(built["folder"] / "junit.xml")))
    cases = [case for suite in suites for case in suite]
    gates = built["report"]["gates"]
    assert [c.name for c in cases] == [g["name"] for g in gates] == ["max_drop", "spec:generic", "latency:cpu"]
    assert [c.is_passed for c in cases] == [g["passed"] for g in gates]
    drop = next(c for c in cases if c.name == "max_drop")
    assert f"{gates[0]['drop_pp']:.2f} pp" in drop.system_out


def test_summary_tables_hold_the_report_figures(built: dict[str, Any]) -> None:
    text = (built["folder"] / "summary.md").read_text()
    report = built["report"]
    assert text.startswith("## edgeq build: tiny: ✅ PASS")
    gates = _table(text, "gate")
    assert [(g["gate"], g["result"]) for g in gates] == [(g["name"], "✅ pass") for g in report["gates"]]
    assert gates[0]["value"] == f"{report['gates'][0]['drop_pp']:.2f} pp" and gates[0]["limit"] == "50.00 pp"
    size = _table(text, "FP32 bytes")[0]
    assert size["INT8 bytes"] == f"{report['model']['int8_bytes']:,}"
    method = next(r for r in _table(text, "model") if r["model"] == "INT8 minmax")
    assert method["top-1"] == f"{report['validation']['methods'][0]['top1'] * 100:.2f}%"
    latency = {r["configuration"]: r for r in _table(text, "configuration")}
    assert {row["label"]: f"{row['p50_ms']:.3f}" for row in report["latency"]} == {
        label: r["p50 ms"] for label, r in latency.items()}


def test_step_summary_is_appended_to_by_every_run(built: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """The fixture's run wrote it; a second run appends (once, though --summary-md names the same file). Its
    max_regression has no baseline to judge against: a skipped gate, not a failure, and a warning on stderr that
    --quiet keeps; stdout holds the --json document alone."""
    step = built["step"]
    first = step.read_text()
    assert first == (built["folder"] / "summary.md").read_text()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GITHUB_STEP_SUMMARY", str(step))
        assert _build(built, "--summary-md", str(step), "--quiet", "--json", "-",
                      gates="max_regression: {size_pct: 0}") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["passed"] is True
    assert "edgeq: warning: max_regression:size_pct not judged: no --baseline" in err
    assert "summary:" not in out + err  # an informational line: --quiet drops it
    text = step.read_text()
    assert text.startswith(first) and text.count("## edgeq build: tiny") == 2
    gate = next(g for g in _report(built["out"])["gates"] if g["name"] == "max_regression:size_pct")
    assert gate["judged"] is False and "no --baseline" in gate["detail"]
    assert "| max_regression:size_pct | ⏭️ not judged |" in text


def _baseline(built: dict[str, Any], name: str, edit: Any) -> Path:
    """A copy of the fixture's report.json with ``edit`` applied: the expected deltas are then known."""
    document = copy.deepcopy(json.loads((built["out"] / "report.json").read_text()))
    edit(document)
    path = built["folder"] / name
    path.write_text(json.dumps(document))
    return path


def _older(document: dict[str, Any]) -> None:
    """Top-1 2 points higher, a file 10% smaller (rounded), every latency half of today's."""
    document["validation"]["methods"][0]["top1"] += 0.02
    document["model"]["int8_bytes"] = round(document["model"]["int8_bytes"] / 1.1)
    for row in document["latency"]:
        row["p50_ms"] /= 2


def _build(built: dict[str, Any], *extra_args: str, gates: str = "", name: str = "recipe.yaml") -> int:
    return cli.main(["build", str(_recipe(built["folder"], gates, name)), "-o", str(built["out"]), *extra_args])


def test_baseline_deltas_and_max_regression_gates(built: dict[str, Any]) -> None:
    old = _baseline(built, "old.json", _older)
    before = json.loads(old.read_text())
    junit = built["folder"] / "regression.xml"
    strict = "max_regression: {accuracy_pp: 1, sqnr_db: 0.5, size_pct: 5, latency_pct: 10}"
    assert _build(built, "--baseline", str(old), "--junit", str(junit), gates=strict) == 1  # exit 1: gates failed
    report = _report(built["out"])
    comparison = report["baseline_comparison"]
    deltas = {(d["aspect"], d["subject"]): d for d in comparison["deltas"]}
    accuracy = deltas[("accuracy", "minmax")]
    assert accuracy["change"] == pytest.approx(-2.0) and accuracy["published"] is True
    size = deltas[("size", "int8 file")]
    int8 = report["model"]["int8_bytes"]
    assert size["change"] == pytest.approx((int8 - before["model"]["int8_bytes"]) / before["model"]["int8_bytes"] * 100)
    assert deltas[("latency", "cpu t1 int8")]["change"] == pytest.approx(100.0)
    assert comparison["latency_comparable"] is True and comparison["schema_version"] == before.get("schema_version", 0)
    gates = {g["name"]: g for g in report["gates"]}
    assert {k: g["passed"] for k, g in gates.items() if k.startswith("max_regression")} == {
        "max_regression:accuracy_pp": False, "max_regression:sqnr_db": True, "max_regression:size_pct": False,
        "max_regression:latency_pct": False}
    assert gates["max_regression:accuracy_pp"]["value"] == pytest.approx(2.0)
    cases = {c.name: c for suite in JUnitXml.fromfile(str(junit)) for c in suite}
    assert not cases["max_regression:size_pct"].is_passed and cases["max_regression:sqnr_db"].is_passed


def test_latency_from_another_environment_is_shown_not_judged(built: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The same older build measured on another CPU: limits above its regressions pass, latency is skipped."""
    def elsewhere(document: dict[str, Any]) -> None:
        _older(document)
        document["bench_environment"]["cpu_model"] = "another CPU"

    old = _baseline(built, "elsewhere.json", elsewhere)
    junit, summary = built["folder"] / "elsewhere.xml", built["folder"] / "elsewhere.md"
    assert _build(built, "--baseline", str(old), "--junit", str(junit), "--summary-md", str(summary),
                  gates="max_regression: {accuracy_pp: 2.5, size_pct: 15, latency_pct: 1}") == 0
    out, err = capsys.readouterr()
    assert "baseline: latency not comparable: the baseline was measured on" in out  # the note: information
    assert "\nedgeq: warning: max_regression:latency_pct not judged: " in f"\n{err}"  # the unjudged gate: a warning
    assert "edgeq: warning" not in out and "baseline:" not in err
    gates = {g["name"]: g for g in _report(built["out"])["gates"]}
    assert gates["max_regression:accuracy_pp"]["passed"] and gates["max_regression:size_pct"]["passed"]
    gate = gates["max_regression:latency_pct"]
    assert gate["judged"] is False and gate["passed"] is True
    case = next(c for suite in JUnitXml.fromfile(str(junit)) for c in suite if c.name == gate["name"])
    assert case.is_skipped
    text = summary.read_text()
    assert "another CPU" in text and "(not comparable)" in text


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("garbage.json", "{not json", "cannot parse"),
    ("list.json", "[1, 2]", "not a report"),
    ("bench.json", json.dumps({"kind": "edgeq.bench", "schema_version": 1}), "expected a edgeq.report document"),
    ("newer.json", json.dumps({"kind": "edgeq.report", "schema_version": 99}), "newer than this edgeq reads"),
    ("partial.json", json.dumps({"title": "x", "validation": {}}), "is not a build report"),
    ("absent.json", None, "no such file"),
])
def test_a_bad_baseline_exits_2_with_one_line(built: dict[str, Any], name: str, content: str | None, fragment: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = built["folder"] / "bad" / name
    path.parent.mkdir(exist_ok=True)
    if content is not None:
        path.write_text(content)
    assert _build(built, "--baseline", str(path)) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("flag", "name", "fragment"), [
    ("--baseline", "report.json", "never writes over its inputs"),  # the build would overwrite it
    ("--junit", "report.json", "is inside the output folder"),
    ("--summary-md", "tiny_int8.json", "is inside the output folder"),
])
def test_the_builds_own_files_are_refused(built: dict[str, Any], flag: str, name: str, fragment: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(built, flag, str(built["out"] / name)) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_an_unwritable_summary_is_one_line_of_input_error(tmp_path: Path) -> None:
    from edgeq.build.summary import write_summary
    from edgeq.errors import InputError

    with pytest.raises(InputError, match=r"cannot write the summary to .*step\.md"):
        write_summary("x\n", None, {"GITHUB_STEP_SUMMARY": str(tmp_path / "missing" / "step.md")})
    assert write_summary("x\n", str(tmp_path / "a.md"), {}) == [str(tmp_path / "a.md")]


@pytest.mark.parametrize(("verb", "where", "fragment"), [
    ("build", "--summary-md FILE/summary.md", "Not a directory"),  # found by the check of every output path
    ("build", "--junit FILE/deeper/junit.xml", "Not a directory"),
    ("build", "$GITHUB_STEP_SUMMARY MISSING/step.md", "MISSING does not exist"),
    ("build", "$GITHUB_STEP_SUMMARY FOLDER", "is a folder"),
    ("validate", "--junit FILE/deeper/junit.xml", "Not a directory"),
    ("build", "$GITHUB_STEP_SUMMARY FILE/step.md", "FILE is not a folder"),
    ("validate", "$GITHUB_STEP_SUMMARY MISSING/step.md", "MISSING does not exist"),
])
def test_an_unwritable_ci_output_is_exit_2_before_any_work(built: dict[str, Any], tmp_path: Path, verb: str,
                                                          where: str, fragment: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the run, not found after it: one line, no output folder, and no --json document."""
    places = {"FILE": tmp_path / "file", "MISSING": tmp_path / "missing", "FOLDER": tmp_path / "folder"}
    places["FILE"].write_text("x")
    places["FOLDER"].mkdir()
    option, value = where.split()
    for name, place in places.items():
        value, fragment = value.replace(name, str(place)), fragment.replace(name, str(place))
    out = tmp_path / "out"
    if verb == "build":
        command = ["build", str(_recipe(tmp_path)), "-o", str(out)]
    else:
        calib, data = (next((built["out"] / "cache").glob(f"{kind}-*")) for kind in ("calibration", "evaluation"))
        command = ["validate", str(DEMO), "--calib", str(calib), "--eval", str(data), "-o", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        if option.startswith("$"):
            patch.setenv(option[1:], value)
        else:
            patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
            command += [option, value]
        assert cli.main([*command, "--json", "-"]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("edgeq: error: ") and value in line and fragment in line
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to any folder")
def test_a_summary_in_a_read_only_folder_is_exit_2_before_any_work(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert cli.main(["build", str(_recipe(tmp_path)), "-o", str(tmp_path / "out"), "--summary-md",
                         str(locked / "new" / "summary.md")]) == 2
    finally:
        locked.chmod(0o755)
    assert f"the folder {locked} is not writable" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ci_outputs_are_written_before_the_document(built: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A summary that fails at the end after all (the disk filled during the build) is exit 2 with no document,
    as every exit 2 is (docs/json.md), though a gate also failed: the CI outputs come before --json's document."""
    import edgeq.build.summary
    from edgeq.errors import InputError

    def full(*args: Any, **kwargs: Any) -> list[str]:
        raise InputError("cannot write the summary to s.md: No space left on device")

    monkeypatch.setattr(edgeq.build.summary, "write_summary", full)
    document = built["folder"] / "late.json"
    assert _build(built, "--summary-md", str(built["folder"] / "late.md"), "--json", str(document),
                  gates="max_regression: {size_pct: 0}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "edgeq: error: cannot write the summary to s.md: No space left on device")
    assert not document.exists()


@pytest.mark.parametrize(("gates", "fragment"), [
    ("max_regression: {size_pct: -1}", "gates.max_regression.size_pct must be at least 0"),
    ("max_regression: {speed_pct: 1}", "gates.max_regression: unknown key(s) speed_pct"),
    ("max_regression: {}", "sets no limit"),
    ("max_regression: {accuracy_pp: lots}", "gates.max_regression.accuracy_pp must be a number"),
    ("max_regression: 5", "gates.max_regression must be a mapping"),
])
def test_bad_max_regression_exits_2_at_load(built: dict[str, Any], gates: str, fragment: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(built, gates=gates, name="bad.yaml") == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- the example workflow (docs/ci-workflow.yml)

ROOT = Path(__file__).parent.parent


def _expand(command: str, env: dict[str, str]) -> list[str]:
    """A `run` line as bash would split it, for ${VAR}, $VAR and ${VAR:+WORDS} (what the workflow uses)."""
    import re
    import shlex

    command = re.sub(r"\$\{(\w+):\+([^}]*)\}", lambda m: m.group(2) if env.get(m.group(1)) else "", command)
    command = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env[m.group(1) or m.group(2)], command)
    return shlex.split(command)


def test_the_example_workflow_installs_caches_and_runs_real_edgeq_flags(tmp_path: Path) -> None:
    import tomllib

    import yaml
    from packaging.specifiers import SpecifierSet

    from edgeq.build.recipe import load_build_recipe
    from edgeq.cli.paths import check_paths
    from edgeq_models.zoo import CACHE_ENV

    workflow = yaml.safe_load((ROOT / "docs" / "ci-workflow.yml").read_text())
    job = workflow["jobs"]["build"]
    steps = job["steps"]
    env = job["env"]
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    runs = [step["run"] for step in steps if "run" in step]

    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    assert all(f"{version}.0" in requires for version in job["strategy"]["matrix"]["python"])

    install = next(r for r in runs if "pip install" in r)
    assert "$EDGEQ_SPEC" in install and env["EDGEQ_SPEC"].startswith("edgeq[full] @ git+https://")
    assert "@" in env["EDGEQ_SPEC"].rpartition("/")[2]  # a fixed ref, not whatever the default branch holds
    caches = [step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/cache@")]
    assert "~/.cache/pip" in caches and "${{ env." + CACHE_ENV + " }}" in caches and CACHE_ENV in env

    commands = [_expand(line, {**env, "GITHUB_STEP_SUMMARY": str(tmp_path / "step.md"),
                               "BASELINE": "baseline/report.json"})
                for r in runs for line in [" ".join(r.split())] if line.startswith("edgeq ")]
    assert len(commands) == 1
    args = cli.build_parser().parse_args(commands[0][1:])  # edgeq's own parser: every flag is real
    check_paths(args)  # and the paths are ones edgeq accepts (no output inside the build's folder)
    assert args.verb == "build" and args.summary_md == str(tmp_path / "step.md") and args.baseline
    recipe = load_build_recipe(ROOT / args.recipe)
    assert recipe.gates.max_regression is not None

    upload = uses["actions/upload-artifact"]
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert args.junit in paths and f"{args.output}/*.json" in paths  # report.json and the sidecar
    # upload-artifact stores paths below their common folder, and the baseline step downloads into baseline/
    common = os.path.commonpath([str(Path(p).parent) for p in paths])
    report = Path("baseline") / Path(args.output, "report.json").relative_to(common)
    download = next(r for r in runs if "gh run download" in r)
    assert f"--dir {report.parts[0]}" in download and f"BASELINE={report}" in download
    assert upload["with"]["name"].replace("${{ matrix.python }}", "X") in download.replace(
        "${{ matrix.python }}", "X")


def test_validate_writes_the_same_summary_and_junit(built: dict[str, Any], tmp_path: Path) -> None:
    """validate's report has gates too: its summary and JUnit come from the same code (on the build's sets)."""
    calib, data = (next((built["out"] / "cache").glob(f"{kind}-*")) for kind in ("calibration", "evaluation"))
    summary, junit = tmp_path / "validate.md", tmp_path / "validate.xml"
    code = cli.main(["validate", str(DEMO), "--calib", str(calib), "--eval", str(data), "--methods", "minmax",
                     "--max-drop", "50", "--min-output-sqnr", "0=200", "-o", str(tmp_path / "out"),
                     "--summary-md", str(summary), "--junit", str(junit)])
    assert code == 1  # 200 dB: the fidelity limit fails
    gates = _report(tmp_path / "out")["gates"]
    cases = [c for suite in JUnitXml.fromfile(str(junit)) for c in suite]
    assert [(c.name, c.is_passed) for c in cases] == [(g["name"], g["passed"]) for g in gates]
    assert [g["passed"] for g in gates] == [True, False]
    text = summary.read_text()
    assert text.startswith("## edgeq validate: cnn_digits_float32.tflite: ❌ FAIL")
    rows = _table(text, "gate")
    assert rows[1]["result"] == "❌ FAIL" and rows[1]["limit"] == "200 dB"
    assert rows[1]["value"] == f"{gates[1]['value']:.4f} dB"
