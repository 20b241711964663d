"""``edgeq device-test``: the installed suite run by pytest, its exit codes, and its JSON document.

Each run is a real ``edgeq device-test`` subprocess on the suite's own shipped CNN (a nested pytest in this
process would share its plugins and imported modules); latency is judged on the committed recordings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgeq.cli.main import build_parser
from edgeq.envelope import unwrap

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "device_tests" / "data"
MODEL = DATA / "cnn_digits_int8.tflite"
DIGITS = DATA / "digits_test.npz"
REFERENCE = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"
RECORDED = DATA / "recorded_bench_cnn_digits_int8_quiet.json"


def device_test(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """``edgeq device-test ARGS`` in a fresh interpreter (``code`` runs first)."""
    script = f"{code}\nimport sys\nfrom edgeq.cli.main import main\nsys.exit(main(['device-test', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)


def test_suite_and_pytest_options_pass_through_in_order() -> None:
    args = build_parser().parse_args(["device-test", "--model", "m.tflite", "--json", "out.json", "-k", "latency",
                                      "--", "--quiet", "-x"])
    assert args.json == "out.json" and not args.quiet
    assert args.suite_args == ["--model", "m.tflite", "-k", "latency", "--quiet", "-x"]
    assert build_parser().parse_args(["device-test", "--quiet"]).suite_args == []


def test_budget_met_document(tmp_path: Path) -> None:
    out = tmp_path / "device-test.json"
    result = device_test("--model", str(MODEL), "--eval-set", str(DIGITS), "--reference", str(REFERENCE),
                         "--budget", str(ROOT / "device_tests" / "budget.ci.yaml"), "--latency-from", str(RECORDED),
                         "--backend", "ref,xnnpack", "-q", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "budget: pass" in result.stdout
    document = json.loads(out.read_text())
    assert document["kind"] == "edgeq.device-test"
    schema = json.loads((ROOT / "docs" / "schemas" / "edgeq.device-test.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)  # the published schema (edgeq.documents)
    body = unwrap(document, "edgeq.device-test")
    assert body["pytest_exit"] == 0 and body["options"]["backend"] == "ref,xnnpack"
    assert body["counts"]["failed"] == body["counts"]["error"] == 0
    tests = {(t["test"], t["backend"]): t for t in body["tests"]}
    assert len(tests) == len(body["tests"]) == 12  # six tests on each of two backends
    accuracy = tests[("test_accuracy_budget", "xnnpack")]
    assert accuracy["outcome"] == "passed" and accuracy["properties"]["samples"] == 360
    assert 0.95 <= accuracy["properties"]["top1"] <= 1
    latency = tests[("test_latency_budget", "xnnpack")]["properties"]
    assert latency["latency_source"] == "recorded" and latency["latency_n"] >= 200
    assert tests[("test_full_delegation_budget", "ref")]["outcome"] == "skipped"
    assert tests[("test_full_delegation_budget", "ref")]["message"] == "ref has no delegate"
    assert body["budget"]["verdict"] == "pass"
    assert {c["check"] for c in body["budget"]["checks"]} == {"latency", "accuracy", "fidelity", "full_delegation"}


def test_budget_missed_is_exit_1_naming_the_check(tmp_path: Path) -> None:
    budget = tmp_path / "strict.yaml"
    budget.write_text("min_top1: 1.0\n")
    result = device_test("--budget", str(budget), "--backend", "xnnpack", "-k", "accuracy", "--json", "-")
    assert result.returncode == 1, result.stderr
    body = unwrap(json.loads(result.stdout), "edgeq.device-test")  # stdout holds the document only
    assert body["budget"]["verdict"] == "fail"
    (failed,) = [c for c in body["budget"]["checks"] if c["outcome"] == "failed"]
    assert failed["check"] == "accuracy" and failed["backend"] == "xnnpack"
    assert failed["message"].startswith("AssertionError: top-1 98.33% < budget 100.00%")


@pytest.mark.parametrize(("args", "says"), [
    (["--budget", "BAD"], "the device suite refused its options"),
    (["-k", "no_such_test"], "no test of the device suite was selected"),
])
def test_usage_mistakes_are_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    """Exit 2 is no result, so no document (docs/json.md): stdout stays empty with --json -, no file with a path."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_top1: 2\n")
    given = [str(bad) if a == "BAD" else a for a in args]
    result = device_test(*given, "--json", "-")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(f"edgeq: error: {says}")
    out = tmp_path / "out.json"
    assert device_test(*given, "--json", str(out)).returncode == 2
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["--backend", "xnnpack", "--latency-from", "REC", "-k", "test_latency", "--json", "REC", "-q"],
    ["--latency-from=REC", "--json", "REC"],
    ["--json", "REC", "--", "--reference", "REC"],  # after '--' too: pytest still reads it as the suite's option
    ["--model=REC", "--json=REC"],
    ["--budget", "REC", "--junit-xml", "REC"],  # pytest's own output replacing an input
    ["--eval-set", "REC", "--", "--junitxml=REC"],
    ["--junit-xml", "OUT", "--json", "OUT"],  # pytest's report and the document in one file
    ["--model", "REC", "--log-file", "REC", "--collect-only"],  # pytest's log over the model (found by review)
], ids=["latency-from", "latency-from=", "after --", "model=", "junit-xml", "junitxml=", "json is junit-xml",
        "log-file"])
def test_outputs_never_replace_the_suites_inputs(tmp_path: Path, args: list[str]) -> None:
    """The suite's file options and pytest's --junit-xml are read out of the arguments passed to pytest: an
    output over an input, or two outputs in one file, is exit 2 before pytest runs, and nothing is written."""
    recorded, out = tmp_path / "rec.json", tmp_path / "out.json"
    recorded.write_bytes(RECORDED.read_bytes())
    result = device_test(*[a.replace("REC", str(recorded)).replace("OUT", str(out)) for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("edgeq: error: output") and ("is the input" in line or "are the same file" in line)
    assert recorded.read_bytes() == RECORDED.read_bytes() and not out.exists()


def test_without_pytest_says_which_extra() -> None:
    result = device_test(code="import sys; sys.modules['pytest'] = None")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "edgeq: error: edgeq device-test needs the 'pytest' package; install it with: "
        "pip install 'edgeq[device-test]'")


def test_shipped_digits_are_digits_test() -> None:
    """The suite's shipped evaluation set is exactly what digits:test loads (device_tests/data/make_digits_test.py)."""
    from datagen.bundled import load_digits

    shipped = np.load(DIGITS)
    digits = load_digits("test")
    assert np.array_equal(shipped["images"], digits.images)
    assert np.array_equal(shipped["labels"], digits.labels)
