"""--baseline compares like with like: accuracy and fidelity only on the same evaluation set (its sha256 in the
reports' provenance), and latency only when measured on the same environment, which the bench cache keys on.

One small build (the demo's float model, 32 calibration and 40 evaluation samples, one method) runs once; the
later builds change only what no cached step but the bench depends on.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_build_recipe
from edgeq.cli import main as cli

STRICT = "max_regression: {accuracy_pp: 1, sqnr_db: 0.5, size_pct: 5}"


def _recipe(folder: Path, extra: str = "") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(tiny_build_recipe("max_drop_pp: 50, spec: [generic]" + (f", {extra}" if extra else "")))
    return path


def _raw(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def _report(out: Path) -> dict[str, Any]:
    from edgeq.envelope import unwrap

    return unwrap(_raw(out), "edgeq.report")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("comparability")
    assert cli.main(["build", str(_recipe(folder)), "-o", str(folder / "out")]) == 0
    return {"folder": folder, "out": folder / "out", "raw": _raw(folder / "out")}


def _build(built: dict[str, Any], *extra_args: str, gates: str = STRICT) -> int:
    return cli.main(["build", str(_recipe(built["folder"], gates)), "-o", str(built["out"]), *extra_args])


def _eval_input(document: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in document["provenance"]["inputs"] if i["role"] == "evaluation set")


def _baseline(built: dict[str, Any], name: str, edit: Any) -> Path:
    """A copy of the module build's report.json, 2 points better in top-1 (a regression of 2 pp today), with
    ``edit`` applied."""
    document = copy.deepcopy(built["raw"])
    document["validation"]["methods"][0]["top1"] += 0.02
    edit(document)
    path = built["folder"] / name
    path.write_text(json.dumps(document))
    return path


def _gates(out: Path) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in _report(out)["gates"]}


def test_the_same_evaluation_set_is_judged(built: dict[str, Any]) -> None:
    """The control: the report's own evaluation set, so the 2-point drop fails accuracy_pp."""
    old = _baseline(built, "same.json", lambda document: None)
    assert _build(built, "--baseline", str(old)) == 1
    gates = _gates(built["out"])
    accuracy = gates["max_regression:accuracy_pp"]
    assert accuracy.get("judged", True) is True and accuracy["passed"] is False
    assert accuracy["value"] == pytest.approx(2.0)
    assert gates["max_regression:sqnr_db"].get("judged", True) is True
    comparison = _report(built["out"])["baseline_comparison"]
    assert all(d["comparable"] for d in comparison["deltas"])
    assert not any("evaluation set" in note for note in comparison.get("notes", ()))


def test_another_evaluation_set_of_the_same_size_is_not_judged(built: dict[str, Any], tmp_path: Path) -> None:
    def other_set(document: dict[str, Any]) -> None:
        _eval_input(document)["sha256"] = "0" * 64  # another set; validation.baseline.n is still 40

    old = _baseline(built, "other_set.json", other_set)
    assert json.loads(old.read_text())["validation"]["baseline"]["n"] == _report(built["out"])["validation"][
        "baseline"]["n"]
    summary = tmp_path / "summary.md"
    assert _build(built, "--baseline", str(old), "--summary-md", str(summary)) == 0  # the drop is not judged
    gates = _gates(built["out"])
    for name in ("max_regression:accuracy_pp", "max_regression:sqnr_db"):
        assert gates[name]["judged"] is False and gates[name]["passed"] is True
        assert "another evaluation set" in gates[name]["detail"] and "000000000000" in gates[name]["detail"]
    size = gates["max_regression:size_pct"]
    assert size.get("judged", True) is True and size["passed"] is True  # size does not depend on the set
    comparison = _report(built["out"])["baseline_comparison"]
    by_aspect = {(d["aspect"], d["comparable"]) for d in comparison["deltas"]}
    assert ("accuracy", False) in by_aspect and ("fidelity", False) in by_aspect
    assert ("accuracy", True) not in by_aspect and ("fidelity", True) not in by_aspect
    assert ("size", True) in by_aspect
    assert any("another evaluation set" in note for note in comparison["notes"])
    text = summary.read_text()
    accuracy_row = next(line for line in text.splitlines() if line.startswith("| accuracy |"))
    assert "(not comparable)" in accuracy_row and "-2.00 pp" in accuracy_row


@pytest.mark.parametrize("edit", ["no provenance", "no evaluation set", "null sha256"])
def test_a_baseline_without_its_evaluation_set_fingerprint_is_not_judged(built: dict[str, Any], edit: str) -> None:
    def strip(document: dict[str, Any]) -> None:
        if edit == "no provenance":
            del document["provenance"]
        elif edit == "no evaluation set":
            document["provenance"]["inputs"].remove(_eval_input(document))
        else:
            _eval_input(document)["sha256"] = None

    old = _baseline(built, f"{edit.replace(' ', '_')}.json", strip)
    assert _build(built, "--baseline", str(old)) == 0
    gates = _gates(built["out"])
    accuracy = gates["max_regression:accuracy_pp"]
    assert accuracy["judged"] is False and "does not record its evaluation set's sha256" in accuracy["detail"]
    deltas = _report(built["out"])["baseline_comparison"]["deltas"]
    assert [d["comparable"] for d in deltas if d["aspect"] == "accuracy"] == [False]


def test_a_changed_environment_measures_again_and_a_reused_entry_keeps_its_own(
        built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """After a runtime upgrade the cached latency is not reused; going back reuses the first entry, labelled
    with the environment it was measured on."""
    from edgeq.build import pipeline
    from edgeq.build.recipe import load_build_recipe

    recipe = load_build_recipe(_recipe(built["folder"]))
    first = pipeline.run_build(recipe, built["out"], log=lambda line: None)
    assert "bench" in first.reused  # the module build's entry, on this environment
    original = first.report.bench_environment
    assert original is not None

    real = pipeline.current_environment
    upgraded = dataclasses.replace(real(), litert="999.0.test")
    monkeypatch.setattr(pipeline, "current_environment", lambda: upgraded)
    second = pipeline.run_build(recipe, built["out"], log=lambda line: None)
    assert "bench" not in second.reused and "validate" in second.reused
    assert second.report.bench_environment == upgraded
    entries = sorted((built["out"] / "cache").glob("bench-*.json"))
    assert len(entries) == 2
    assert {json.loads(p.read_text())["environment"]["litert"] for p in entries} == {original.litert, "999.0.test"}

    # back on the first environment: its own entry, its own latency and the environment stored with it
    monkeypatch.setattr(pipeline, "current_environment", real)
    third = pipeline.run_build(recipe, built["out"], log=lambda line: None)
    assert "bench" in third.reused
    assert third.report.bench_environment == original
    assert third.report.latency == first.report.latency
    assert _report(built["out"])["bench_environment"]["litert"] == original.litert
