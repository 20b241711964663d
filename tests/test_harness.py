"""The device harness on this machine's backends: sessions, delegation, latency protocol, bench and eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.cli import main as cli
from edgeq.errors import UsageError
from edgeq.harness.backends import delegation_of, open_session, parse_backend
from edgeq.harness.latency import LatencyConfig, open_timed, run_interleaved, summarize
from edgeq.intake.load import load_float_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"


@pytest.fixture(scope="module")
def cnn_pair(tiny_zoo: dict[str, Path], tiny_zoo_int8: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    float_path = folder / "cnn_float32.tflite"
    float_path.write_bytes(load_float_model(tiny_zoo["cnn"]).flatbuffer)
    return tiny_zoo_int8["cnn"], float_path


@pytest.mark.parametrize(("text", "kind", "option"), [
    ("xnnpack", "xnnpack", None), ("edgetpu:usb:0", "edgetpu", "usb:0"), ("android:R58M123", "android", "R58M123"),
    ("ref", "ref", None)])
def test_parse_backend(text: str, kind: str, option: str | None) -> None:
    parsed = parse_backend(text)
    assert (parsed.kind, parsed.option, str(parsed)) == (kind, option, text)


@pytest.mark.parametrize("text", ["gpu", "android", "cpu:1"])
def test_bad_backend_names(text: str) -> None:
    with pytest.raises(UsageError):
        parse_backend(text)


def test_xnnpack_delegation_is_measured_not_assumed(cnn_pair: tuple[Path, Path]) -> None:
    int8, float32 = cnn_pair
    full = open_session(float32.read_bytes(), parse_backend("xnnpack"))
    assert full.delegation is not None and full.delegation.full
    partial = open_session(int8.read_bytes(), parse_backend("xnnpack"))
    d = partial.delegation
    assert d is not None and d.nodes_delegated == d.nodes_total - 1 and d.undelegated_ops == ("SOFTMAX",)
    assert open_session(int8.read_bytes(), parse_backend("cpu")).delegation is None


def test_delegation_walk_against_a_hand_made_graph() -> None:
    """Two DELEGATE partitions around an undelegated op: the walk must stop at each partition's inputs."""
    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 1], "outputs": [2]},
        {"index": 1, "op_name": "SOFTMAX", "inputs": [2], "outputs": [3]},
        {"index": 2, "op_name": "ADD", "inputs": [3, 4], "outputs": [5]},
        {"index": 3, "op_name": "DELEGATE", "inputs": [0, 1], "outputs": [2]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [3, 4], "outputs": [5]},
    ]

    class Fake:
        def _get_ops_details(self) -> list[dict[str, object]]:
            return ops

    d = delegation_of(Fake(), "XNNPACK")
    assert (d.nodes_total, d.nodes_delegated, d.partitions, d.undelegated_ops) == (3, 2, 2, ("SOFTMAX",))


def test_latency_protocol_counts_and_time(cnn_pair: tuple[Path, Path]) -> None:
    int8, float32 = cnn_pair
    config = LatencyConfig(warmup_runs=2, warmup_seconds=0.0, runs=30, min_seconds=0.05, slice_runs=7)
    ms = [open_timed(p.name, lambda p=p: open_session(p.read_bytes(), parse_backend("cpu"))) for p in (int8, float32)]
    run_interleaved(ms, config)
    for m in ms:
        assert m.init_ms > 0 and m.first_ms > 0
        # the protocol's contract: at least `runs` samples and at least `min_seconds` of measured time
        assert len(m.samples_ms) >= 30 and sum(m.samples_ms) >= 50.0
        assert len(m.samples_ms) % 7 == 0  # whole slices: the configurations really were interleaved
        assert all(v > 0 for v in m.samples_ms)
        stats = m.stats()
        assert stats.n == len(m.samples_ms)
        assert stats.samples_ms == tuple(round(v, 4) for v in m.samples_ms)  # every sample, in measurement order


# ---------------------------------------------------------------- summarize against a slow, obvious reference


def _percentile_by_hand(samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method, Hyndman & Fan type 7)."""
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def _mean_and_std_by_hand(samples: list[float]) -> tuple[float, float]:
    """Population standard deviation, as benchmark_model reports it."""
    total = 0.0
    for v in samples:
        total += v
    mean = total / len(samples)
    squares = 0.0
    for v in samples:
        squares += (v - mean) ** 2
    return mean, (squares / len(samples)) ** 0.5


def _close(value: float) -> object:
    return pytest.approx(value, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("samples", "p50", "p90", "p99"), [
    ([5.0], 5.0, 5.0, 5.0),
    ([1.0, 2.0], 1.5, 1.9, 1.99),
    ([4.0, 1.0, 3.0, 2.0], 2.5, 3.7, 3.97),  # ranks 1.5, 2.7, 2.97 of 1, 2, 3, 4
    ([10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0, 0.0, 9.0),  # one slow outlier in 11 runs
    ([float(v) for v in range(1, 101)], 50.5, 90.1, 99.01),
])
def test_summarize_worked_examples(samples: list[float], p50: float, p90: float, p99: float) -> None:
    stats = summarize(samples)
    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms) == (_close(p50), _close(p90), _close(p99))
    assert (stats.min_ms, stats.max_ms, stats.n) == (min(samples), max(samples), len(samples))


_latencies = st.lists(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False),
                      min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(_latencies)
def test_summarize_matches_the_hand_reference(samples: list[float]) -> None:
    stats = summarize(samples)
    mean, std = _mean_and_std_by_hand(samples)
    assert stats.n == len(samples)
    assert (stats.min_ms, stats.max_ms) == (min(samples), max(samples))
    assert stats.p50_ms == _close(_percentile_by_hand(samples, 50))
    assert stats.p90_ms == _close(_percentile_by_hand(samples, 90))
    assert stats.p99_ms == _close(_percentile_by_hand(samples, 99))
    assert stats.mean_ms == _close(mean)
    assert stats.std_ms == pytest.approx(std, rel=1e-6, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(_latencies, st.randoms(use_true_random=False))
def test_summarize_properties(samples: list[float], random: Random) -> None:
    stats = summarize(samples)
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms * (1 + 1e-12) and stats.mean_ms <= stats.max_ms * (1 + 1e-12)
    assert stats.std_ms >= 0
    assert stats.samples_ms == tuple(round(v, 4) for v in samples)  # measurement order kept, not sorted
    shuffled = list(samples)
    random.shuffle(shuffled)
    again = summarize(shuffled)
    assert (again.n, again.min_ms, again.p50_ms, again.p90_ms, again.p99_ms, again.max_ms) == (
        stats.n, stats.min_ms, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms)
    assert (again.mean_ms, again.std_ms) == (_close(stats.mean_ms), _close(stats.std_ms))


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False), st.integers(min_value=1, max_value=200))
def test_summarize_of_a_constant_sample(value: float, n: int) -> None:
    stats = summarize([value] * n)
    assert stats.n == n
    assert stats.min_ms == stats.p50_ms == stats.p90_ms == stats.p99_ms == stats.max_ms == value
    assert stats.mean_ms == _close(value) and stats.std_ms == pytest.approx(0.0, abs=1e-9 * value)


def test_summarize_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        summarize([])


def test_bench_cli_json_ratios_and_gates(cnn_pair: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    int8, float32 = cnn_pair
    out = tmp_path / "bench.json"
    args = ["bench", str(int8), str(float32), "--backend", "xnnpack,cpu", "--threads", "1,2", "--runs", "20",
            "--min-seconds", "0.02", "--warmup-seconds", "0", "--json", str(out)]
    assert cli.main(args) == 0
    document = json.loads(out.read_text())
    assert len(document["results"]) == 8
    first = document["results"][0]
    assert first["kind"] == "bench_result" and len(first["latency"]["samples_ms"]) >= 20
    assert first["environment"]["threads"] in ("1", "2") and first["model_sha256"]
    whats = [r["what"] for r in document["ratios"]]
    assert any("xnnpack / cpu" in w for w in whats) and any("int8 / fp32" in w for w in whats)
    assert any("SOFTMAX" in w for w in document["warnings"])
    assert "table" not in capsys.readouterr().err
    assert cli.main([*args[:-2], "--require-full-delegation"]) == 1


def test_bench_unavailable_backend_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", str(TINY), "--backend", "edgetpu"]) == 3
    err = capsys.readouterr().err
    assert "libedgetpu" in err
    assert cli.main(["bench", str(TINY), "--backend", "edgetpu,cpu", "--runs", "5", "--min-seconds", "0"]) == 0


def test_eval_cli_per_condition_and_agreement(cnn_pair: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    int8, float32 = cnn_pair
    data = tmp_path / "set"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "20",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(data)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(int8), "--data", str(data), "--reference", str(float32), "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["n"] == 20 and set(document["per_condition"]) == {"original", "noise"}
    assert 0.0 <= document["top1"] <= document["top5"] <= 1.0
    assert document["agreement"] >= 0.8  # INT8 follows its own FP32 model
    assert cli.main(["eval", str(int8), "--data", str(data), "--output", "3"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_eval_matches_keras_accuracy_on_bundled_split(cnn_pair: tuple[Path, Path], tiny_zoo: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from datagen.bundled import load_digits
    from edgeq_models import ZOO, load_model
    from edgeq_models.train import keras_accuracy

    _, float32 = cnn_pair
    assert cli.main(["eval", str(float32), "--data", "digits:test", "--preprocess", "mean=127.5,std=127.5",
                     "--backend", "ref", "--json", "-"]) == 0
    top1 = json.loads(capsys.readouterr().out)["top1"]
    expected = keras_accuracy(load_model(tiny_zoo["cnn"]), load_digits("test"), ZOO["cnn"].preprocessing)
    assert top1 == pytest.approx(expected, abs=1 / 360 + 1e-9)


def test_harness_runs_without_tensorflow() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from edgeq.cli.main import main\n"
        f"assert main(['bench', {str(TINY)!r}, '--backend', 'cpu,xnnpack,ref', '--runs', '5', '--min-seconds', '0'])"
        " == 0\n"
        "import edgeq.harness.backends, edgeq.harness.latency, edgeq.harness.accuracy, edgeq.harness.android\n"
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
