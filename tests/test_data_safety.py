"""Outputs never replace inputs; writes replace only regular files; config files are bounded;
environment errors are exit 2 in one line; a closed pipe ends quietly.

Every case snapshots the folder it runs in and checks that the inputs are byte-identical afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.cli import main as cli
from edgeq.cli.paths import ROLES, verb_key

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"
EDGEQ = str(Path(sys.executable).with_name("edgeq"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: file hashes, link targets, kinds."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "dir" if path.is_dir() else "other"
    return found


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copyfile(TINY, tmp_path / "m.tflite")
    (tmp_path / "recipe.yaml").write_text("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\n"
                                          "evaluation: {source: digits:test}\n")
    (tmp_path / "stats.npz").write_bytes(b"PK\x05\x06" + bytes(18))
    (tmp_path / "pp.json").write_text('{"mean": 127.5, "std": 127.5}')
    monkeypatch.chdir(tmp_path)
    return tmp_path


OVERLAPS = [
    (["convert", "m.tflite", "--calib", "digits:train", "-o", "m.tflite"], "is the input m.tflite"),
    (["convert", "m.tflite", "--calib", "digits:train", "-o", "./sub/../m.tflite"], "is the input"),
    (["convert", "m.tflite", "--calib", "digits:train", "-o", "out.tflite", "--recipe", "out.json"],
     "is the input out.json"),
    (["convert", "m.tflite", "--calib", "digits:train", "-o", "out.tflite", "--preprocess", "out.json"],
     "is the input out.json"),
    (["convert", "m.tflite", "--calib", "digits:train", "-o", "m.json"], "m.json and m.json are the same file"),
    (["bench", "m.tflite", "--backend", "cpu", "--json", "m.tflite"], "is the input m.tflite"),
    (["eval", "m.tflite", "--data", "digits:test", "--json", "m.tflite"], "is the input m.tflite"),
    (["calibrate", "m.tflite", "--calib", "stats.npz", "-o", "stats.npz"], "is the input stats.npz"),
    (["validate", "m.tflite", "--calib", "digits:train", "--eval", "digits:test", "-o", "."], "holds the input"),
    (["build", "recipe.yaml", "-o", "."], "holds the input recipe.yaml"),
    (["coverage", "m.tflite", "--calib", "digits:train", "--production", "digits:test", "-o", "."],
     "holds the input"),
    (["bench", "m.tflite", "--backend", "cpu", "--json", "."], "is a folder"),
]


@pytest.mark.parametrize(("argv", "fragment"), OVERLAPS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OVERLAPS])
def test_an_output_never_replaces_an_input(argv: list[str], fragment: str, work: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (work / "out.json").write_text('{"user": "data"}')
    before = snapshot(work)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and err.startswith("edgeq: error:")
    assert snapshot(work) == before


def test_a_symlinked_output_to_an_input_is_the_input(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "link.json").symlink_to(work / "m.tflite")
    before = snapshot(work)
    assert cli.main(["bench", "m.tflite", "--backend", "cpu", "--json", "link.json"]) == 2
    assert "is the input m.tflite" in capsys.readouterr().err
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_only_regular_files_are_replaced_and_refused_before_any_work(kind: str, work: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    target = work / "result.json"
    if kind == "symlink":
        (work / "elsewhere.json").write_text("keep me")
        target.symlink_to(work / "elsewhere.json")
    else:
        os.mkfifo(target)
    before = snapshot(work)
    assert cli.main(["bench", "m.tflite", "--backend", "cpu", "--runs", "3", "--min-seconds", "0",
                     "--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert "edgeq replaces only regular files" in captured.err and captured.out == ""  # nothing was measured
    assert snapshot(work) == before


def test_json_dash_means_stdout(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["bench", "m.tflite", "--backend", "cpu", "--runs", "3", "--min-seconds", "0",
                     "--warmup-seconds", "0", "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["results"][0]["latency"]["n"] >= 3
    assert not (work / "-").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_write_errors_are_the_environment_not_a_bug(code: int, work: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*_: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)  # the last step of every atomic write
    before = snapshot(work)
    assert cli.main(["bench", "m.tflite", "--backend", "cpu", "--runs", "3", "--min-seconds", "0",
                     "--warmup-seconds", "0", "--json", "b.json", "--quiet"]) == 2
    err = capsys.readouterr().err  # --quiet: no progress lines, only the error
    assert f"cannot write to b.json: {os.strerror(code)}" in err and err.count("\n") == 1
    assert snapshot(work) == before  # no temporary left behind


def test_an_os_error_anywhere_in_a_verb_is_exit_2(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import edgeq.cli.paths

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/some/file")

    monkeypatch.setattr(edgeq.cli.paths, "check_paths", full)  # runs inside main's error handling
    assert cli.main(["check", "m.tflite"]) == 2
    assert capsys.readouterr().err == "edgeq: error: No space left on device: /some/file\n"


def test_an_unexpected_os_error_is_still_a_bug(work: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import edgeq.cli.paths

    def odd(*_: object) -> None:
        raise OSError(errno.EPROTO, "Protocol error")

    monkeypatch.setattr(edgeq.cli.paths, "check_paths", odd)
    assert cli.main(["check", "m.tflite"]) == 4
    assert capsys.readouterr().err.startswith("edgeq: internal error: OSError")


def test_a_closed_pipe_ends_quietly(work: Path) -> None:
    run = subprocess.Popen([EDGEQ, "zoo", "list", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()  # the reader (`| head`) is gone before edgeq writes
    err = run.stderr.read()
    assert run.wait(timeout=120) == 141 and err == b""


# ------------------------------------------------------------------ config files

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


@pytest.mark.parametrize(("text", "fragment"), [
    (BOMB, "expands to more than 100,000 values"),
    (b"name: caf\xe9\n", "is not UTF-8"),
    ("name: x\n" + "[" * 5000 + "]" * 5000 + "\n", "cannot parse"),
    ("name: ../../elsewhere/x\nmodel: m.keras\ncalibration: {source: digits:train}\n"
     "evaluation: {source: digits:test}\n", "name must be a plain file stem"),
    ("name: /tmp/x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n",
     "name must be a plain file stem"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "methods: 5\n", "methods must be a non-empty list"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "targets: [[x]]\n", "targets must be a list of target names"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "gates: {max_p90_ms: [1]}\n", "gates.max_p90_ms must map a backend"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "bench: {runs: -1}\n", "bench.runs must be between 1"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "bench: {threads: [0]}\n", "bench.threads must be between 1"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "bench: {backends: [jetson]}\n", "unknown backend 'jetson'"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train, n: 1e12}\nevaluation: {source: digits:test}\n",
     "calibration.n must be an integer"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train, n: 10000000}\n"
     "evaluation: {source: digits:test}\n", "calibration.n must be between 1 and 100000"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "gates: {max_drop_pp: .nan}\n", "max_drop_pp must be a number"),
    ("name: x\nmodel: m.keras\ncalibration: {source: digits:train}\nevaluation: {source: digits:test}\n"
     "gates: {max_p90_ms: {cpu: 5}}\n", "bench.backends does not measure"),
])
def test_build_recipes_are_checked_whole_before_any_work(text: str | bytes, fragment: str, work: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    recipe = work / "bad.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert cli.main(["build", str(recipe), "-o", str(work / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and len(err) < 600, err[:300]
    assert not (work / "out").exists()


def test_an_oversized_config_file_is_refused_unread(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = work / "huge.yaml"
    with recipe.open("wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB of zeros
    assert cli.main(["build", str(recipe), "-o", str(work / "out")]) == 2
    assert "edgeq reads config files up to 1,048,576" in capsys.readouterr().err


def test_every_verb_declares_its_inputs_and_outputs() -> None:
    """A new verb must say which paths it reads and writes, or the overlap check would skip it."""
    parser = cli.build_parser()
    keys = set()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if a.dest == "zoo_action"]
            keys |= {f"{name} {child}" for child in nested[0].choices} if nested else {name}
    assert keys == set(ROLES)
    assert verb_key(parser.parse_args(["zoo", "build", "cnn", "-o", "x.keras"])) == "zoo build"


def test_warnings_reach_the_user_as_one_line(work: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    import edgeq.cli.paths

    def warn(*_: object) -> None:
        warnings.warn("preprocessing differs\nfrom the model's", UserWarning, stacklevel=1)

    monkeypatch.setattr(edgeq.cli.paths, "check_paths", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["check", "m.tflite"]) == 0
    err = capsys.readouterr().err
    assert err == "edgeq: warning: preprocessing differs from the model's\n"


@pytest.mark.parametrize("argv", [
    ["bench", "m.tflite", "--backend", "cpu", "--max-seconds", "-1"],
    ["bench", "m.tflite", "--backend", "cpu", "--max-seconds", "0"],
    ["bench", "m.tflite", "--backend", "cpu", "--min-seconds", "nan"],
    ["bench", "m.tflite", "--backend", "cpu", "--min-seconds", "inf"],
    ["bench", "m.tflite", "--backend", "cpu", "--runs", "0"],
    ["bench", "m.tflite", "--backend", "cpu", "--cpus", "999"],
    ["bench", "m.tflite", "--backend", "cpu", "--threads", "1,x"],
    ["eval", "m.tflite", "--data", "digits:test", "--threads", "0"],
    ["eval", "m.tflite", "--data", "digits:test", "--limit", "-3"],
    ["coverage", "m.tflite", "--calib", "digits:train", "--production", "digits:test", "--threshold", "nan"],
    ["validate", "m.tflite", "--calib", "digits:train", "--eval", "digits:test", "-o", "v", "--max-drop", "nan"],
    ["zoo", "build", "cnn", "-o", "x.keras", "--epochs", "0"],
], ids=lambda argv: " ".join(argv[:1] + argv[-2:]))
def test_numeric_options_are_checked_at_parse_time(argv: list[str], work: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(work)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("edgeq: error:") and captured.err.count("\n") == 1 and captured.out == ""
    assert argv[-2] in captured.err
    assert snapshot(work) == before


def test_sigterm_during_validate_leaves_no_output_folder(tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    """The default SIGTERM would kill edgeq mid-write; it unwinds like Ctrl-C and removes the -o it created."""
    import signal
    import time

    out = tmp_path / "validation"
    process = subprocess.Popen([EDGEQ, "validate", str(tiny_zoo["cnn"]), "--calib", "digits:train",
                                "--eval", "digits:test", "--preprocess", "mean=127.5,std=127.5", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # a safety net against a hang, not a speed requirement
    while process.poll() is None and time.monotonic() < deadline and not any(out.glob("*.tflite")):
        time.sleep(0.05)
    assert process.poll() is None, "validate finished before it could be terminated"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "edgeq: terminated" and "Traceback" not in err
    assert not out.exists()
