"""bench's stability verdicts, ratio marking and warnings; init, first inference and delegation on a real run;
LiteRT's CompiledModel backends; the report's latency section.

Stability is judged on synthetic samples only: a measured run's stability depends on the machine's load,
which no test may assume."""

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

from edgeq.build import latency as latency_data
from edgeq.cli import main as cli
from edgeq.harness.backends import availability, open_session, parse_backend
from edgeq.harness.compiled_model import _reason_lines
from edgeq.harness.latency import (
    DRIFT_LIMIT,
    MIN_SAMPLES,
    LatencyConfig,
    Measurement,
    classify,
    open_timed,
    random_inputs,
    ratio_of,
    run_interleaved,
)
from edgeq.report.content import Page
from edgeq.report.latency import ratio_sentence, render
from edgeq.results.build import LatencyRow, Precision
from edgeq.results.latency import LatencyRatio

ROOT = Path(__file__).resolve().parents[1]
INT8 = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
FP32 = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"

sizes = st.integers(MIN_SAMPLES, 400)
medians = st.floats(0.01, 500.0)


@given(n=sizes, value=medians)
def test_a_constant_series_is_stable(n: int, value: float) -> None:
    s = classify([value] * n)
    assert s.stable is True and s.reasons == ()
    assert s.tail == pytest.approx(1.0) and s.drift == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60)
@given(n=sizes, value=medians, jitter_seed=st.integers(0, 2**32 - 1), factor=st.floats(2.0, 50.0),
       share=st.floats(0.15, 0.4), where=st.floats(0.0, 1.0))
def test_a_slow_slice_makes_a_steady_series_unstable(n: int, value: float, jitter_seed: int, factor: float,
                                                     share: float, where: float) -> None:
    """Runs within 5 % of each other are stable; slowing any consecutive 15-40 % of them by 2x or more is not."""
    samples = value * (1 + np.random.default_rng(jitter_seed).uniform(-0.05, 0.05, n))
    assert classify(samples).stable is True
    length = math.ceil(share * n)
    start = round(where * (n - length))
    samples[start:start + length] *= factor
    verdict = classify(samples)
    assert verdict.stable is False and verdict.reasons


@given(n=sizes, value=medians, third=st.integers(0, 2))
def test_drift_between_thirds_alone_is_unstable(n: int, value: float, third: int) -> None:
    """A third of the run at 1.3x (a frequency step): p90/p50 may stay low, the thirds' medians do not."""
    samples = np.full(n, value)
    bounds = np.array_split(np.arange(n), 3)[third]
    samples[bounds] *= 1 + DRIFT_LIMIT + 0.05
    verdict = classify(samples)
    assert verdict.stable is False and any("thirds" in r for r in verdict.reasons)


def test_the_documented_limits_hold_at_their_edges() -> None:
    """docs/harness.md: 15 runs are needed to judge; unstable when p90/p50 is above 1.5 or the medians of the
    thirds differ by more than 25 %. The figures here are the documented ones, not the module's constants."""
    assert classify([]).stable is None
    assert classify([1.0] * 14).stable is None and classify([1.0] * 15).stable is True

    def tail_of(slow: float) -> list[float]:  # 15 runs in 100 at ``slow``, spread evenly: p90 = slow, p50 = 1
        return [slow if i % 20 in (2, 9, 16) else 1.0 for i in range(100)]

    assert sum(v != 1.0 for v in tail_of(2.0)) == 15
    assert classify(tail_of(1.4)).stable is True
    heavy = classify(tail_of(1.6))
    assert heavy.stable is False and heavy.tail == pytest.approx(1.6) and heavy.reasons == ("p90/p50 1.60 > 1.5",)

    def step(last_third: float) -> list[float]:  # the last third of 60 runs at ``last_third``
        return [1.0] * 40 + [last_third] * 20

    assert classify(step(1.2)).stable is True  # a 20 % step: within the limit
    stepped = classify(step(1.3))
    assert stepped.stable is False and stepped.drift == pytest.approx(0.3)
    assert len(stepped.reasons) == 1 and "differ by 30% > 25%" in stepped.reasons[0]


def _measurement(label: str, samples: list[float]) -> Measurement:
    return Measurement(label=label, session=None, init_ms=1.0, samples_ms=samples)  # type: ignore[arg-type]


def test_ratios_from_unstable_samples_are_marked() -> None:
    steady = _measurement("fp32 cpu t2", [0.115] * 60)
    disturbed = _measurement("int8 cpu t2", [64.0] * 35 + [0.1] * 25)  # the 64 ms median of a 0.1 ms model
    marked = ratio_of("cpu t2: int8 / fp32", disturbed, steady)
    assert marked.unstable and marked.unstable_configs == ("int8 cpu t2",)
    assert marked.text() == f"{64.0 / 0.115:.3f} (unstable)"
    assert marked.to_dict()["unstable"] is True
    clean = ratio_of("cpu t2: fp32 / fp32", steady, steady)
    assert not clean.unstable and clean.text() == "1.000"
    few = ratio_of("cpu t1: int8 / fp32", _measurement("int8 cpu t1", [0.1] * 5), steady)  # the demo's 5 runs
    assert not few.unstable and few.unjudged and few.text() == f"{0.1 / 0.115:.3f} (too few runs to judge stability)"
    assert not ratio_of("x", disturbed, _measurement("few", [0.1] * 5)).unjudged  # unstable says more


def test_bench_prints_each_warning_once_and_records_what_it_measured(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run: the INT8 model on XNNPACK (which leaves SOFTMAX undelegated) at two thread counts."""
    out = tmp_path / "bench.json"
    args = ["bench", str(INT8), "--backend", "xnnpack", "--threads", "1,2", "--runs", "20", "--min-seconds", "0",
            "--warmup-seconds", "0", "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    # the delegation warning used to be printed once per thread count
    assert text.count("not fully delegated: cnn_digits_int8.tflite on xnnpack") == 1
    document = json.loads(out.read_text())
    assert len(document["warnings"]) == len(set(document["warnings"]))
    assert sum("SOFTMAX" in w for w in document["warnings"]) == 1
    for result in document["results"]:
        assert result["init_ms"] > 0 and result["first_inference_ms"] > 0
        assert result["delegation"]["nodes_delegated"] == 8 and result["delegation"]["nodes_total"] == 9
        verdict = result["stability"]
        assert isinstance(verdict["stable"], bool)  # 20 runs are enough to judge; whether stable depends on load
        assert verdict["stable"] is (verdict["reasons"] == [])
        tail_said = any(r.startswith("p90/p50") for r in verdict["reasons"])  # a reason names a figure over its limit
        drift_said = any(r.startswith("medians of thirds") for r in verdict["reasons"])
        assert len(verdict["reasons"]) == tail_said + drift_said
        # (the figures are rounded to 4 places: >= / <= keep a figure a hair from its limit consistent)
        assert (verdict["tail_p90_p50"] >= verdict["tail_limit"]) if tail_said else \
            (verdict["tail_p90_p50"] <= verdict["tail_limit"])
        assert (verdict["drift_thirds"] >= verdict["drift_limit"]) if drift_said else \
            (verdict["drift_thirds"] <= verdict["drift_limit"])
    env = document["environment"]
    assert env["loadavg"] and env["cpu_count"] and env["ai-edge-litert_version"] not in ("", "absent")
    assert document["peak_rss_mib"] > 0 and "whole process" in document["peak_rss_source"]
    unstable = [r for r in document["results"] if r["stability"]["stable"] is False]
    assert sum(w.startswith("unstable:") for w in document["warnings"]) == len(unstable)


@pytest.mark.parametrize("name", ["litert-gpu", "litert-npu"])
def test_compiled_model_accelerators_say_why_they_cannot_run(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = availability(parse_backend(name))  # the real library call: a one-op model compiled for it
    if status.available:
        pytest.skip(f"this machine has LiteRT's {name} accelerator")
    accelerator = name.removeprefix("litert-").upper()
    assert status.reason.startswith(f"LiteRT {accelerator} accelerator: ")
    assert "compiled_model.cc" not in status.reason  # a source location is not a reason
    assert cli.main(["bench", str(INT8), "--backend", name]) == 3
    err = capsys.readouterr().err
    assert f"backend {name} unavailable: LiteRT {accelerator} accelerator" in err
    assert "edgeq: error: no requested backend can run here" in err and "Traceback" not in err


def test_the_native_log_becomes_a_short_reason() -> None:
    log = ["INFO: [environment.cc:36] Creating LiteRT environment with options",
           "WARNING: [npu_registry.cc:34] NPU accelerator could not be loaded and registered: "
           "kLiteRtStatusErrorNotFound.",
           "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory",
           "ERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: No adapters found",
           "WARNING: Logging before InitGoogle() is written to STDERR",
           "WARNING: [compiler_plugin.cc:312] Failed to load plugin at: /x/y/libLiteRtCompilerPlugin_A.so with error: "
           "ERROR: [litert/compiler/plugin/compiler_plugin.cc:259]"]
    assert _reason_lines(log, "GPU") == [
        "Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory",
        "Failed to initialize WebGPU environment: INTERNAL: No adapters found"]
    assert _reason_lines(log, "NPU") == ["NPU accelerator could not be loaded and registered: "
                                         "kLiteRtStatusErrorNotFound", "Failed to load plugin at: "
                                         "libLiteRtCompilerPlugin_A.so"]


def test_litert_cpu_runs_the_model_as_the_interpreter_does() -> None:
    status = availability(parse_backend("litert-cpu"))
    if not status.available:
        pytest.skip(status.reason)
    data = INT8.read_bytes()
    compiled = open_session(data, parse_backend("litert-cpu"))
    interpreter = open_session(data, parse_backend("xnnpack"))
    assert compiled.inputs == interpreter.inputs and compiled.outputs == interpreter.outputs
    for session in (compiled, interpreter):
        session.set_inputs(random_inputs(session, 3))
        session.invoke()
    np.testing.assert_array_equal(compiled.get_outputs()[0], interpreter.get_outputs()[0])
    compiled.close()


_EXIT_SCRIPT = """
import atexit, sys
atexit.register(lambda: print("an earlier exit handler's line", file=sys.stderr))
from edgeq.harness.backends import open_session, parse_backend
from edgeq.harness.latency import random_inputs
session = open_session(open(sys.argv[1], "rb").read(), parse_backend("litert-cpu"))
session.set_inputs(random_inputs(session, 0))
session.invoke()
print("before close", file=sys.stderr, flush=True)
if sys.argv[2] == "close":
    session.close()
    session.close()
print("last line", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "left-open"])
def test_a_litert_session_leaves_the_process_s_stderr_alone_at_exit(closed: bool) -> None:
    """Opening a litert-* session must not silence fd 2 at exit: an exit handler registered before it still
    reaches stderr. Closing the session tears its environment down then, with the log captured: nothing
    between "before close" and "last line". What follows is only the runtime's process-wide environment's
    DestroyAccelerator log, which nothing in ai_edge_litert releases (docs/harness.md)."""
    status = availability(parse_backend("litert-cpu"))
    if not status.available:
        pytest.skip(status.reason)
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, str(INT8), "close" if closed else "open"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    start = lines.index("before close")
    assert lines[start + 1:start + 3] == ["last line", "an earlier exit handler's line"]
    assert all("DestroyAccelerator" in line for line in lines[start + 3:])


def test_a_build_row_records_init_first_inference_delegation_and_stability() -> None:
    data = INT8.read_bytes()
    m = open_timed("int8 xnnpack t1", lambda: open_session(data, parse_backend("xnnpack")))
    run_interleaved([m], LatencyConfig(warmup_runs=1, warmup_seconds=0, runs=20, min_seconds=0))
    row = latency_data.row(m, "xnnpack", 1, "int8")
    assert row.init_ms is not None and row.init_ms > 0 and row.first_inference_ms is not None
    assert row.first_inference_ms > 0
    assert row.delegation is not None and (row.delegation.nodes_delegated, row.delegation.nodes_total) == (8, 9)
    assert row.delegation.undelegated_ops == ("SOFTMAX",)
    assert row.stability is not None and isinstance(row.stability.stable, bool)  # 20 runs: judged
    assert LatencyRow.from_document(row.to_document()) == row
    # the row's verdict is the configuration's own samples judged in measurement order (known series here:
    # a measured run's stability depends on the machine's load)
    m.samples_ms = [1.0] * 20 + [1.3] * 10  # the last third 30 % slower: a frequency step
    stepped = latency_data.row(m, "xnnpack", 1, "int8").stability
    assert stepped is not None and stepped.stable is False and stepped.third_medians_ms == (1.0, 1.0, 1.3)
    m.samples_ms = [1.0, 1.0, 1.3] * 10  # the same runs interleaved: no third is slower
    mixed = latency_data.row(m, "xnnpack", 1, "int8").stability
    assert mixed is not None and mixed.stable is True and mixed.reasons == ()


def _row(model: Precision, p50: float, samples: list[float], backend: str = "xnnpack") -> LatencyRow:
    return LatencyRow(label=f"{model} {backend} t1", backend=backend, threads=1, model=model, p50_ms=p50,
                      p90_ms=p50, mean_ms=p50, samples_ms=tuple(samples), slice_runs=10,
                      stability=latency_data.stability(samples))


def test_the_latency_section_says_when_int8_is_slower() -> None:
    rows = (_row(Precision.INT8, 0.3, [0.3] * 30), _row(Precision.FP32, 0.2, [0.2] * 30),
            _row(Precision.INT8, 0.1, [0.1] * 10 + [5.0] * 10 + [0.1] * 10, "cpu"),
            _row(Precision.FP32, 0.4, [0.4] * 30, "cpu"))
    summary = latency_data.summary(rows, {"cpu_model": "Test CPU", "loadavg": "0.10 0.20 0.30"}, peak_mib=12.5)
    xnnpack, cpu = summary.ratios
    assert (xnnpack.backend, xnnpack.ratio, xnnpack.unstable) == ("xnnpack", pytest.approx(1.5), False)
    assert (cpu.backend, cpu.ratio, cpu.unstable) == ("cpu", pytest.approx(0.25), True)
    html = render(Page(latency=rows, latency_summary=summary))
    assert ("INT8 is slower than FP32 on xnnpack with 1 thread: 1.50× the FP32 median (0.3 ms vs 0.2 ms)."
            in html)
    assert "INT8 is faster than FP32 on cpu with 1 thread" in html and "may not be the models&#x27;" in html
    assert "Test CPU" in html and "12.5 MiB" in html and "0.10 0.20 0.30" in html
    assert html.count("badge bad\">unstable") == 2  # the disturbed row and the ratio built on it
    assert render(Page(latency=rows)).count("INT8 is") == 0  # an old report without a summary: no ratios


def test_a_ratio_from_too_few_runs_says_so() -> None:
    rows = (_row(Precision.INT8, 0.1, [0.1] * 5, "cpu"), _row(Precision.FP32, 0.4, [0.4] * 30, "cpu"))
    (ratio,) = latency_data.ratios(rows)
    assert not ratio.unstable and ratio.unjudged
    assert ratio_sentence(ratio).endswith("Too few runs to judge whether the samples were stable (docs/harness.md).")
    judged = latency_data.ratios((*rows[1:], _row(Precision.INT8, 0.1, [0.1] * 30, "cpu")))
    assert "unjudged" not in judged[0].to_document()


def test_ratio_sentence_without_an_fp32_median() -> None:
    r = LatencyRatio(backend="cpu", threads=2, int8_p50_ms=1.0, fp32_p50_ms=0.0, ratio=None, unstable=False)
    assert ratio_sentence(r).endswith("no ratio.")


def test_a_recovery_rung_records_and_shows_an_unstable_latency() -> None:
    """validate --recover times each rung briefly: a run that classify calls unstable is marked, not trusted."""
    from edgeq.report.recovery import _row
    from edgeq.results.validation import RungResult
    from edgeq.validate.ladder import LATENCY_BACKENDS, _latency

    medians, unstable = _latency(INT8)  # a real short run on each backend
    assert set(medians) == set(LATENCY_BACKENDS) and set(unstable) <= set(LATENCY_BACKENDS)
    rung = RungResult(rung="start", status="kept", latency_ms={"xnnpack": 0.1, "cpu": 0.2}, latency_unstable=("cpu",))
    assert "xnnpack 0.1 ms, cpu 0.2 ms (unstable)" in _row(rung)
    assert RungResult.from_document(rung.to_document()) == rung
    assert "latency_unstable" not in RungResult(rung="start", status="kept").to_document()  # old documents read


def test_a_session_nobody_closes_still_tears_down_quietly() -> None:
    """`edgeq eval` never closes its litert-cpu session: its environment's teardown log is still captured (a
    finalizer), so stderr holds at most the two lines of LiteRT's process-wide environment, which nothing in
    ai_edge_litert releases (docs/harness.md), and nothing else. Before the finalizer it printed five."""
    model = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
    data = ROOT / "device_tests" / "data" / "digits_test.npz"
    result = subprocess.run([sys.executable, "-m", "edgeq.cli.main", "eval", str(model), "--data", str(data),
                             "--limit", "8", "--backend", "litert-cpu", "--quiet"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert all("DestroyAccelerator" in line for line in lines), lines
    assert len(lines) <= 2, lines
