"""Crash isolation: a runtime that dies on an untrusted model is reported as that model's error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeq.cli import main as cli
from edgeq.errors import ExitCode, InputError
from edgeq.tflite import probe as probe_module
from edgeq.tflite.probe import ModelCrashed, probe

TINY = Path(__file__).resolve().parent / "data" / "tiny_int8.tflite"
CRASHER = Path(__file__).resolve().parent / "data" / "crash" / "fuzz_seed0_case378_reshape_without_shape.tflite"


def test_a_valid_model_passes_the_probe() -> None:
    probe(TINY)
    probe(TINY.read_bytes(), kernels="xnnpack")


def test_a_model_the_runtime_refuses_is_an_input_error() -> None:
    data = bytearray(TINY.read_bytes())
    with pytest.raises(InputError, match="could not load"):
        probe(bytes(data[:8]) + b"\x00" * 64, what="broken")


@pytest.mark.parametrize(("code", "signal_name"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV"),
    ("import os; os.abort()", "SIGABRT"),
])
def test_a_runtime_crash_is_named_and_edgeq_survives(code: str, signal_name: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The child really dies by a signal (fault injected: no public model crashes LiteRT 2.3 reliably)."""
    monkeypatch.setattr(probe_module, "probe_command", lambda path, kernels: [sys.executable, "-c", code])
    with pytest.raises(ModelCrashed, match=signal_name):
        probe(TINY, what="tiny")
    assert cli.main(["bench", str(TINY), "--backend", "cpu", "--runs", "3", "--min-seconds", "0"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert f"crashed on {TINY} ({signal_name})" in err and len(err.strip().splitlines()) == 1


def test_a_hung_runtime_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module, "probe_command",
                        lambda path, kernels: [sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(ModelCrashed, match="hung"):
        probe(TINY, timeout_s=0.5)


def test_a_model_that_really_segfaults_the_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    """A fuzz-found model on which LiteRT 2.3 dies with SIGSEGV: every verb that runs models survives it."""
    with pytest.raises(ModelCrashed, match="SIGSEGV"):
        probe(CRASHER)
    for argv in (["bench", str(CRASHER), "--backend", "cpu"], ["eval", str(CRASHER), "--data", "digits:test"]):
        assert cli.main(argv) == ExitCode.BAD_INPUT
        err = capsys.readouterr().err
        assert "crashed" in err and "SIGSEGV" in err and len(err.strip().splitlines()) == 1


def test_fixed_seed_fuzz_sample_has_no_unhandled_exception() -> None:
    """A small sample of benchmarks/fuzz_models.py: reader, checker and (isolated) runtime."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from fuzz_models import fuzz

    result = fuzz([TINY], cases=300, seed=11)
    assert result["unhandled"] == []
    assert sum(result["outcomes"]["runtime"].values()) == 300
