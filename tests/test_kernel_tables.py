"""rules.py's kernel tables against the committed measurement, and a live re-measurement of two ops.

The measurement (edgeq/spec/measured_kernels.json) is written by ``python tools/kernel_tables.py``: a one-op
int8 model per op, quantized by edgeq and run on LiteRT's builtin, reference and XNNPACK kernels and on TFLite
Micro. The table tests only read that file; the live test re-measures ADD and SQUARE through the same script so
that the file cannot silently drift from the installed runtimes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgeq.spec import rules

ROOT = Path(__file__).parents[1]
MEASURED = ROOT / "edgeq" / "spec" / "measured_kernels.json"
REGENERATE = "re-measure with 'python tools/kernel_tables.py' and correct edgeq/spec/rules.py to match"


def load_generator() -> ModuleType:
    """tools/kernel_tables.py as a module (tools/ is not a package)."""
    if "kernel_tables" in sys.modules:
        return sys.modules["kernel_tables"]
    spec = importlib.util.spec_from_file_location("kernel_tables", ROOT / "tools" / "kernel_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernel_tables"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    return json.loads(MEASURED.read_text())


def _runs(measured: dict[str, Any], runtime: str, delegated: bool = False) -> set[str]:
    """Ops whose int8 kernel ran on ``runtime`` and agreed with the float op (and, if asked, was delegated)."""
    return {op for op, record in measured["ops"].items()
            if record["runtimes"][runtime]["result"] == "runs"
            and (not delegated or record["runtimes"][runtime].get("delegated"))}


def _differences(table: frozenset[str] | set[str], measured_set: set[str], measured: dict[str, Any],
                 runtime: str) -> str:
    claimed = {op: measured["ops"][op]["runtimes"][runtime] for op in sorted(table - measured_set)}
    missing = sorted(measured_set - table)
    return f"listed but measured otherwise: {claimed}; measured to run but not listed: {missing}; {REGENERATE}"


def test_every_op_in_a_table_was_measured(measured: dict[str, Any]) -> None:
    tables = set(rules.SPEC) | set(rules.EXTRA_INT8_KERNELS)
    for profile in rules.PROFILES.values():
        tables |= set(profile.supported_ops or ())
    assert tables - set(measured["ops"]) == set(), REGENERATE
    assert set(load_generator().table_ops()) == tables


def test_every_record_is_complete(measured: dict[str, Any]) -> None:
    results = {"runs", "wrong", "refused", "crashed", "no-int8-model"}
    for op, record in measured["ops"].items():
        assert record["quantizer"] in ("int8", "float", "rewritten", "absent"), op
        assert set(record["runtimes"]) == {"cpu", "ref", "xnnpack", "tflm"}, op
        for runtime, result in record["runtimes"].items():
            assert result["result"] in results, (op, runtime)
            if result["result"] == "refused":
                assert result["message"], (op, runtime)
            if result["result"] in ("runs", "wrong"):
                assert isinstance(result["max_lsb"], int), (op, runtime)


def test_measured_on_the_installed_runtimes(measured: dict[str, Any]) -> None:
    for package in ("ai-edge-litert", "tflite-micro"):
        assert measured["versions"][package] == version(package), f"{package} changed: {REGENERATE}"


def test_generic_int8_kernels_are_what_litert_runs(measured: dict[str, Any]) -> None:
    runs = _runs(measured, "cpu")
    assert set(rules.SPEC) - runs == set(), _differences(set(rules.SPEC), runs, measured, "cpu")
    assert runs - set(rules.SPEC) == rules.EXTRA_INT8_KERNELS, \
        _differences(rules.EXTRA_INT8_KERNELS, runs - set(rules.SPEC), measured, "cpu")


def test_tflm_profile_is_what_tflm_runs(measured: dict[str, Any]) -> None:
    runs = _runs(measured, "tflm")
    assert runs == rules.TFLM_OPS, _differences(rules.TFLM_OPS, runs, measured, "tflm")


def test_xnnpack_profile_is_what_the_delegate_takes(measured: dict[str, Any]) -> None:
    taken = _runs(measured, "xnnpack", delegated=True)
    assert taken == rules.XNNPACK_INT8_OPS, _differences(rules.XNNPACK_INT8_OPS, taken, measured, "xnnpack")


def test_the_contradictions_of_issue_12_are_measured_and_corrected(measured: dict[str, Any]) -> None:
    """The runtimes refuse what the copied tables claimed: LiteRT int8 SQUARE and ZEROS_LIKE; TFLM int8 NEG,
    SQUARE, LOG, SQRT, EXP and FLOOR."""
    ops = measured["ops"]
    square = ops["SQUARE"]["runtimes"]["cpu"]
    assert square["result"] == "refused" and "Type INT8 is unsupported by op Square" in square["message"]
    assert ops["ZEROS_LIKE"]["runtimes"]["cpu"]["result"] == "refused"
    assert not {"SQUARE", "ZEROS_LIKE"} & (set(rules.SPEC) | rules.EXTRA_INT8_KERNELS)
    for op in ("NEG", "SQUARE", "LOG", "SQRT", "EXP", "FLOOR"):
        tflm = ops[op]["runtimes"]["tflm"]
        assert tflm["result"] == "refused" and tflm["error"] == "KernelRefusedError", op
        assert f"TFLite Micro's {op} kernel refuses" in tflm["message"] and "arena" not in tflm["message"], op
        assert op not in rules.TFLM_OPS


@pytest.mark.slow
def test_a_live_measurement_agrees_with_the_committed_one(measured: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """SQUARE (the quantizer leaves it float; every runtime refuses int8) and ADD (runs everywhere), measured now."""
    pytest.importorskip("tensorflow")
    generator = load_generator()
    live = generator.measure(["ADD", "SQUARE"], tmp_path)
    assert live["SQUARE"]["quantizer"] == "float" and live["SQUARE"]["measured"] == "unwrapped"
    assert "Type INT8 is unsupported by op Square" in live["SQUARE"]["runtimes"]["cpu"]["message"]
    assert {r["result"] for r in live["SQUARE"]["runtimes"].values()} == {"refused"}
    assert live["ADD"]["quantizer"] == "int8"
    assert {r["result"] for r in live["ADD"]["runtimes"].values()} == {"runs"}
    assert live["ADD"]["runtimes"]["xnnpack"]["delegated"] is True
    for op in ("ADD", "SQUARE"):
        assert live[op] == measured["ops"][op], f"{op} measures differently now: {REGENERATE}"
