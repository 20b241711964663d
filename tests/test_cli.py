"""The CLI contract: documented exit codes, one-line errors, tracebacks only with --debug."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq import __version__
from edgeq.cli import main as cli
from edgeq.errors import BackendUnavailable, ExitCode, GateFailed, InputError


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    edgeq = Path(sys.executable).with_name("edgeq")
    return subprocess.run([str(edgeq), *args], capture_output=True, text=True, timeout=120)


def test_version_prints_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edgeq {__version__}"


def test_help_lists_exit_codes_and_only_real_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "exit codes: 0 success, 1" in " ".join(result.stdout.split())
    registered = set(cli.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    # a verb appears only when its issue lands
    assert registered == {"bench", "build", "calibrate", "check", "convert", "coverage", "datagen", "device-test",
                          "eval", "instrument", "sensitivity", "validate", "zoo"}


@pytest.mark.parametrize("argv", [["no-such-verb"], ["zoo", "bogus"], ["zoo", "build"], ["--no-such-flag"]])
def test_usage_mistakes_exit_2_with_one_line(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("edgeq: error: ")


def test_no_verb_shows_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == ExitCode.BAD_INPUT
    assert "usage: edgeq" in capsys.readouterr().err


def test_unknown_zoo_model_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["zoo", "build", "nope", "-o", "x.keras"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip() == (
        "edgeq: error: unknown zoo model 'nope'; choose one of cnn, resnet, mobilenet_v2, vit, face_cnn"
    )


def test_zoo_build_refuses_non_keras_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["zoo", "build", "cnn", "-o", str(tmp_path / "m.h5")]) == ExitCode.BAD_INPUT
    assert "must end in .keras" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _with_handler(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """Make `edgeq zoo list` raise ``exc``, to observe how main() maps it."""

    def boom(_: argparse.Namespace) -> int:
        raise exc

    import edgeq.cli.zoo as zoo_verb

    monkeypatch.setattr(zoo_verb, "run_list", boom)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (GateFailed("accuracy drop 2.1 pp > 1.0 pp"), ExitCode.GATE_FAILED),
        (InputError("no such file: x.tflite"), ExitCode.BAD_INPUT),
        (BackendUnavailable("libedgetpu.so.1 not found"), ExitCode.BACKEND_UNAVAILABLE),
        (RuntimeError("unexpected"), ExitCode.INTERNAL),
    ],
)
def test_errors_map_to_documented_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             exc: Exception, code: ExitCode) -> None:
    _with_handler(monkeypatch, exc)
    assert cli.main(["zoo", "list"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(exc) in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _with_handler(monkeypatch, InputError("broken input"))
    assert cli.main(["--debug", "zoo", "list"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1] == "edgeq: error: broken input"


def test_zoo_list_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import json

    assert cli.main(["zoo", "list", "--json", "--cache-dir", str(tmp_path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "edgeq.zoo" and document["action"] == "list"
    rows = document["models"]
    assert [r["name"] for r in rows] == ["cnn", "resnet", "mobilenet_v2", "vit", "face_cnn"]
    assert not any(r["cached"] for r in rows)
