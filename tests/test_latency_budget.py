"""Latency budgets: a stated percentile over enough samples, a verdict that names the distribution.

Judged on recorded real ``edgeq bench --json`` results (tests/data/latency, device_tests/data), never on
this machine's clock: the busy recording was measured while two processes kept both cores busy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.artifacts import BenchResult
from edgeq.errors import InputError
from edgeq.harness.budget import LatencyBudget, judge, stability, stall_fraction
from edgeq.harness.latency import summarize

ROOT = Path(__file__).resolve().parent.parent
BUSY = ROOT / "tests" / "data" / "latency" / "recorded_bench_cnn_digits_int8_busy.json"
QUIET = ROOT / "device_tests" / "data" / "recorded_bench_cnn_digits_int8_quiet.json"
MODEL = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
# The busy recording: p50 about 0.93 ms on the reference kernels, p90 about 4.9 ms from scheduler stalls.
STALL_BUDGET_MS = 2.0


def recorded(path: Path, backend: str) -> BenchResult:
    results = [BenchResult.from_dict(r) for r in json.loads(path.read_text())["results"]]
    return next(r for r in results if r.backend == backend)


def linear_percentile(values: list[float], q: float) -> float:
    """The textbook definition (linear interpolation between closest ranks), written out by hand."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


# ------------------------------------------------------------------ recorded real measurements

def test_stalls_on_a_busy_machine_fail_p90_and_the_verdict_names_the_distribution() -> None:
    stats = recorded(BUSY, "ref").latency
    verdict = judge(stats, LatencyBudget(max_ms=STALL_BUDGET_MS, percentile=90, min_samples=200))
    assert not verdict.passed
    assert verdict.p50_ms < STALL_BUDGET_MS < verdict.p90_ms  # the median meets the budget; the stalls do not
    for fragment in ("p90 ", f"> budget {STALL_BUDGET_MS:g} ms", "the median meets it", "n=200", "p50 ", "p99 ", "max ",
                     "of runs over 2× the median", "20 slices of 10 runs", "spread"):
        assert fragment in verdict.reason, fragment
    assert "\n" not in verdict.reason
    assert verdict.stall_fraction > 0.10


def test_the_stated_percentile_decides() -> None:
    stats = recorded(BUSY, "ref").latency
    assert judge(stats, LatencyBudget(max_ms=STALL_BUDGET_MS, percentile=50, min_samples=200)).passed
    assert not judge(stats, LatencyBudget(max_ms=STALL_BUDGET_MS, percentile=90, min_samples=200)).passed


@pytest.mark.parametrize("backend", ["ref", "cpu", "xnnpack"])
def test_quiet_recording_meets_the_ci_budget(backend: str) -> None:
    verdict = judge(recorded(QUIET, backend).latency, LatencyBudget(max_ms=5.0, min_samples=200, max_spread=1.0))
    assert verdict.passed, verdict.reason
    assert verdict.reason.startswith("p90 ") and "<= budget 5 ms" in verdict.reason


def test_too_few_samples_fail_even_when_fast() -> None:
    fast = summarize([0.01] * 30, slice_runs=10)
    verdict = judge(fast, LatencyBudget(max_ms=5.0, min_samples=50))
    assert not verdict.passed and "only 30 samples, the budget needs at least 50" in verdict.reason


def test_a_drifting_run_is_refused_as_unstable() -> None:
    drifting = [1.0] * 50 + [1.8] * 50  # e.g. a core throttled half-way
    verdict = judge(summarize(drifting, slice_runs=10), LatencyBudget(max_ms=5.0, min_samples=100, max_spread=0.5))
    assert not verdict.passed and "unstable run: slice-median spread 57% > allowed 50%" in verdict.reason
    assert judge(summarize(drifting, slice_runs=10), LatencyBudget(max_ms=5.0, min_samples=100)).passed


def test_stability_unknown_is_not_a_pass_when_the_budget_asks_for_it() -> None:
    verdict = judge(summarize([1.0] * 15, slice_runs=10), LatencyBudget(max_ms=5.0, min_samples=10, max_spread=0.5))
    assert not verdict.passed and "stability unknown" in verdict.reason


# ------------------------------------------------------------------ against slow, obvious references

@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 1000.0, allow_nan=False), min_size=1, max_size=120),
       st.floats(1.0, 100.0), st.floats(0.001, 1000.0))
def test_verdict_matches_a_hand_computed_percentile(samples: list[float], q: float, max_ms: float) -> None:
    stats = summarize(samples)
    verdict = judge(stats, LatencyBudget(max_ms=max_ms, percentile=q, min_samples=1))
    rounded = [round(v, 4) for v in samples]  # the stats keep samples to 0.1 µs
    expected = linear_percentile(rounded, q)
    assert verdict.value_ms == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert verdict.passed == (expected <= max_ms) or abs(expected - max_ms) < 1e-9
    assert verdict.n == len(samples)
    assert verdict.stall_fraction == sum(v > 2 * linear_percentile(rounded, 50) for v in rounded) / len(rounded)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 100.0, allow_nan=False), min_size=0, max_size=95), st.integers(1, 12))
def test_stability_matches_slice_medians_by_hand(samples: list[float], size: int) -> None:
    result = stability(samples, size)
    whole = len(samples) // size
    if whole < 2:
        assert result is None
        return
    medians = [float(np.median(samples[i * size:(i + 1) * size])) for i in range(whole)]
    assert result is not None and result.slices == whole and result.slice_runs == size
    assert (result.min_ms, result.max_ms) == (min(medians), max(medians))
    center = sorted(medians)[len(medians) // 2] if len(medians) % 2 else sum(
        sorted(medians)[len(medians) // 2 - 1:len(medians) // 2 + 1]) / 2
    assert result.spread == pytest.approx((max(medians) - min(medians)) / center)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.001, 100.0, allow_nan=False), min_size=1, max_size=60),
       st.floats(0.01, 50.0), st.floats(0.01, 50.0))
def test_a_larger_budget_never_turns_a_pass_into_a_fail(samples: list[float], a: float, b: float) -> None:
    stats = summarize(samples)
    low, high = sorted((a, b))
    if judge(stats, LatencyBudget(max_ms=low, min_samples=1)).passed:
        assert judge(stats, LatencyBudget(max_ms=high, min_samples=1)).passed


def test_stall_fraction_by_hand() -> None:
    assert stall_fraction([1.0, 1.0, 1.0, 5.0]) == 0.25
    assert stall_fraction([]) == 0.0


# ------------------------------------------------------------------ budget files

@pytest.mark.parametrize(("document", "fragment"), [
    ({"max_ms": 5.0, "p": 90}, "unknown key(s) p"),
    ({"percentile": 90}, "missing 'max_ms'"),
    ({"max_ms": "fast"}, "max_ms must be a number"),
    ({"max_ms": float("nan")}, "max_ms must be a positive number"),
    ({"max_ms": -1}, "max_ms must be a positive number"),
    ({"max_ms": 5, "percentile": 0}, "percentile must be in (0, 100]"),
    ({"max_ms": 5, "min_samples": 2.5}, "min_samples must be an integer"),
    ({"max_ms": 5, "min_samples": True}, "min_samples must be an integer"),
    ({"max_ms": 5, "max_spread": -0.1}, "max_spread must be a non-negative number"),
])
def test_bad_budget_mappings_are_refused(document: dict[str, object], fragment: str) -> None:
    with pytest.raises(InputError, match=None) as error:
        LatencyBudget.from_mapping(document, "budget.yaml: latency")
    assert fragment in str(error.value) and str(error.value).startswith("budget.yaml: latency")


def test_build_recipe_latency_gates(tmp_path: Path) -> None:
    from edgeq.build.pipeline import _latency_gate
    from edgeq.build.recipe import load_build_recipe
    from edgeq.results.build import LatencyRow, Precision

    base = ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
            "bench: {runs: 200, backends: [ref, cpu]}\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(base + "gates: {max_p90_ms: {ref: 2.0}, latency: {cpu: {max_ms: 1, percentile: 99}}}\n")
    budgets = load_build_recipe(recipe_file).latency_budgets()
    assert budgets["ref"] == LatencyBudget(max_ms=STALL_BUDGET_MS, percentile=90, min_samples=200)
    assert budgets["cpu"] == LatencyBudget(max_ms=1.0, percentile=99, min_samples=200)
    stats = recorded(BUSY, "ref").latency
    row = LatencyRow(label="int8 ref t1", backend="ref", threads=1, model=Precision.INT8, p50_ms=stats.p50_ms,
                     p90_ms=stats.p90_ms, mean_ms=stats.mean_ms, samples_ms=tuple(stats.samples_ms),
                     slice_runs=stats.slice_runs)
    gate = _latency_gate("ref", budgets["ref"], [row])
    assert not gate.passed and gate.detail.startswith("t1: p90 ") and "n=200" in gate.detail
    assert gate.verdicts[0].n == 200 and gate.verdicts[0].stability.slices == 20
    assert not _latency_gate("cpu", budgets["cpu"], []).passed
    recipe_file.write_text(base + "gates: {max_p90_ms: {ref: 5.0}, latency: {ref: {max_ms: 1}}}\n")
    with pytest.raises(InputError, match="both set a budget for ref"):
        load_build_recipe(recipe_file)
    recipe_file.write_text(base + "gates: {latency: {ref: {max_ms: 1, pct: 90}}}\n")
    with pytest.raises(InputError, match="unknown key"):
        load_build_recipe(recipe_file)


# ------------------------------------------------------------------ the device suite's budget path

def _device_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "device_tests"),
                           "--model", str(MODEL), "--backend", "ref", "-k", "latency", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_device_suite_fails_the_budget_on_a_recorded_busy_run(tmp_path: Path) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text(f"latency: {{max_ms: {STALL_BUDGET_MS}, percentile: 90}}\nruns: 200\n")
    busy = _device_suite("--budget", str(budget), "--latency-from", str(BUSY))
    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert f"> budget {STALL_BUDGET_MS:g} ms" in busy.stdout and "the median meets it" in busy.stdout
    quiet = _device_suite("--budget", str(budget), "--latency-from", str(QUIET))
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr


def test_device_suite_refuses_a_recording_of_another_model(tmp_path: Path) -> None:
    document = json.loads(QUIET.read_text())
    for result in document["results"]:
        result["model_sha256"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(document))
    budget = tmp_path / "budget.yaml"
    budget.write_text("latency: {max_ms: 5.0}\n")
    run = _device_suite("--budget", str(budget), "--latency-from", str(other))
    assert run.returncode == 1 and "the recorded ref result is for model 000000000000" in run.stdout


@pytest.mark.parametrize("text", ["latency: {max_ms: 5.0, pct: 90}\n", "max_p90_ms: 5\nlatency: {max_ms: 5}\n",
                                  "runs: 0\n", "min_top1: 2\n", "surprise: 1\n"])
def test_device_suite_refuses_a_bad_budget_file(text: str, tmp_path: Path) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text(text)
    run = _device_suite("--budget", str(budget), "--latency-from", str(QUIET))
    assert run.returncode == 4 and "--budget" in run.stderr and "Traceback" not in run.stderr  # usage error


def test_bench_table_shows_stalls_and_slice_spread(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.cli.bench import _print

    document = json.loads(BUSY.read_text())
    _print(document)
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert "stalls" in header and "p90/p50" in header and "drift" in header
    ref = next(line for line in lines if " ref " in line).split()
    stalled = stall_fraction(recorded(BUSY, "ref").latency.samples_ms)
    assert f"{stalled:.0%}" in ref and stalled > 0.10
