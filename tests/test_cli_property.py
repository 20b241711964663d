"""Random command lines over real files (hypothesis): whatever a careless user or an attacker types, edgeq
answers with a documented exit code and at most one line of error, writes only where it was told to, and
leaves every input byte-identical.

The grammar mixes each verb's real options with hostile values (nan, negatives, huge numbers, paths that
are folders, missing, inputs given as outputs). In-process, so TensorFlow is imported once; examples are
few and every value keeps a run short (bench runs once, eval reads a few samples).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_data_safety import snapshot  # every entry of a tree: hashes, link targets, kinds
from tflite_builders import sparse_float16_conv_model

from edgeq.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"
CNN = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real inputs of every kind a verb reads, plus things that only look like them (copied per example)."""
    root = tmp_path_factory.mktemp("template")
    shutil.copyfile(TINY, root / "tiny.tflite")
    shutil.copyfile(CNN, root / "cnn.tflite")
    rng = np.random.default_rng(0)
    (root / "float.tflite").write_bytes(sparse_float16_conv_model()[0])  # input (1, 12, 12, 3)
    np.save(root / "images.npy", rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8))
    np.save(root / "floats.npy", rng.normal(size=(6, 8, 8, 1)).astype(np.float32))
    np.savez(root / "pair.npz", a=np.zeros((2, 8, 8, 1), np.uint8), b=np.ones((2, 8, 8, 1), np.uint8))
    (root / "notes.txt").write_text("not a model")
    (root / "pp.json").write_text('{"mean": 127.5, "std": 127.5}')
    (root / "recipe.yaml").write_text("name: x\nmodel: cnn.tflite\ncalibration: {source: digits:train}\n"
                                      "evaluation: {source: digits:test}\n")
    (root / "folder").mkdir()
    (root / "link.tflite").symlink_to(root / "tiny.tflite")
    return root


PATHS = ["tiny.tflite", "cnn.tflite", "float.tflite", "images.npy", "floats.npy", "pair.npz", "notes.txt", "pp.json",
         "recipe.yaml", "folder", "link.tflite", "missing.tflite", ".", "..", "/", "digits:test", "zoo:cnn"]
OUTPUTS = ["out/a.tflite", "out/b.json", "out/dir", "tiny.tflite", "pp.json", "folder", ".", "notes.txt/x.json",
           "link.tflite", "-"]
NUMBERS = ["0", "1", "2", "-1", "nan", "inf", "1e12", "3.5", "x", ""]
PREPROCESS = ["mean=127.5,std=127.5", "none", "pp.json", "std=0", "stdev=1", "size=60000x60000", "mean=nan"]

VERBS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    # verb: (fixed arguments that keep a run short, option -> value pool)
    "check": ([], {"--target": ["generic", "edgetpu", "tflm", "jetson"], "--io": ["integer", "float32", "x"],
                   "--float": PATHS, "--ignore": ["io.type", ""]}),
    "bench": (["--runs", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--max-seconds", "5"],
              {"--backend": ["cpu", "ref", "xnnpack", "gpu", "edgetpu", "android:x"], "--threads": ["1", "0", "2,x"],
               "--cpus": ["0", "999", "-1"], "--json": OUTPUTS, "--preprocess": PREPROCESS}),
    "eval": (["--limit", "4", "--backend", "cpu"],
             {"--data": ["digits:test", "images.npy", "folder", "missing.npz", "lfw:nope"], "--json": OUTPUTS,
              "--preprocess": PREPROCESS, "--output": ["0", "7", "logits"], "--threads": NUMBERS}),
    "convert": (["--limit", "4"], {"--calib": ["images.npy", "floats.npy", "pair.npz", "digits:train", "folder"],
                                   "-o": OUTPUTS, "--method": ["minmax", "kl", "median", "search"],
                                   "--percentile": NUMBERS,
                                   "--preprocess": PREPROCESS, "--recipe": ["recipe.yaml", "pp.json", "missing"]}),
    "calibrate": (["--limit", "4"], {"--calib": ["images.npy", "floats.npy", "pair.npz"], "-o": OUTPUTS,
                                     "--preprocess": PREPROCESS}),
    "coverage": ([], {"--calib": ["images.npy", "floats.npy"], "--production": ["images.npy", "pair.npz"],
                      "--threshold": NUMBERS, "-o": OUTPUTS, "--preprocess": PREPROCESS}),
    "sensitivity": (["--limit", "2", "--top", "3"],
                    {"--calib": ["images.npy", "floats.npy", "pair.npz", "folder"],
                     "--eval": ["images.npy", "missing.npz"],
                     "-o": OUTPUTS, "--json": OUTPUTS, "--method": ["minmax", "auto", "search"],
                     "--preprocess": PREPROCESS}),
    "build": ([], {"-o": OUTPUTS}),
    "zoo": (["list"], {"--json": ["", "x"]}),
}


MODELS = {"check": ["tiny.tflite", "cnn.tflite"], "bench": ["tiny.tflite", "cnn.tflite"],
          "eval": ["cnn.tflite"], "convert": ["float.tflite"], "calibrate": ["float.tflite"],
          "coverage": ["float.tflite"], "sensitivity": ["float.tflite"]}


GOOD = {  # values that let a run do real work, drawn about half the time
    ("convert", "-o"): ["out/a.tflite"], ("calibrate", "-o"): ["out/stats.npz"], ("coverage", "-o"): ["out/dir"],
    ("convert", "--calib"): ["images.npy"], ("calibrate", "--calib"): ["images.npy"],
    ("coverage", "--calib"): ["images.npy"], ("coverage", "--production"): ["images.npy"],
    ("convert", "--preprocess"): ["mean=127.5,std=127.5"], ("calibrate", "--preprocess"): ["mean=127.5,std=127.5"],
    ("coverage", "--preprocess"): ["mean=127.5,std=127.5"], ("eval", "--preprocess"): ["mean=127.5,std=127.5"],
    ("eval", "--data"): ["digits:test"], ("bench", "--json"): ["out/b.json", "-"],
    ("sensitivity", "--calib"): ["images.npy"], ("sensitivity", "--eval"): ["images.npy"],
    ("sensitivity", "--preprocess"): ["mean=127.5,std=127.5"], ("sensitivity", "-o"): ["out/sens"],
}
REQUIRED = {"eval": ("--data", "--preprocess"), "convert": ("--calib", "-o", "--preprocess"),
            "calibrate": ("--calib", "-o", "--preprocess"), "coverage": ("--calib", "--production", "--preprocess"),
            "sensitivity": ("--calib", "--eval", "--preprocess"), "build": ("-o",)}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    verb = draw(st.sampled_from(sorted(VERBS)))
    fixed, options = VERBS[verb]
    argv = [verb]
    if verb == "build":
        argv.append(draw(st.sampled_from(["recipe.yaml", "notes.txt", "missing.yaml", "pp.json"])))
    elif verb != "zoo":  # mostly a model the verb can work on, so runs get past the first checks
        argv.append(draw(st.sampled_from(MODELS[verb]) | st.sampled_from(PATHS)))
    argv += fixed
    required = [o for o in REQUIRED.get(verb, ()) if draw(st.integers(0, 9)) > 0]  # usually given
    others = sorted(set(options) - set(required))
    optional = draw(st.lists(st.sampled_from(others), unique=True, max_size=3)) if others else []
    for option in [*required, *optional]:
        pool = st.sampled_from(options[option])
        good = GOOD.get((verb, option))
        value = draw(st.sampled_from(good) | pool if good else pool)
        argv += [option] if value == "" and option == "--json" and verb == "zoo" else [option, value]
    return argv


OUTPUT_FLAGS = ("-o", "--json")


def allowed_outputs(argv: list[str]) -> list[str]:
    """The paths a run may create or change: its -o/--json values (and a model's sidecar), normalized."""
    allowed = []
    for flag, value in itertools.pairwise(argv):
        if flag in OUTPUT_FLAGS and not (flag == "--json" and value == "-"):  # --json -: standard output
            allowed.append(os.path.normpath(value))
            if Path(value).name:
                allowed.append(os.path.normpath(Path(value).with_suffix(".json")))
    return allowed


def named_inputs(argv: list[str]) -> set[str]:
    """Every argument that is not an output value: whatever of these exists is an input and must not change."""
    outputs = {i + 1 for i, flag in enumerate(argv) if flag in OUTPUT_FLAGS}
    return {os.path.normpath(v) for i, v in enumerate(argv) if i not in outputs}


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_random_command_lines(argv: list[str], template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    arena = tmp_path / f"arena-{os.urandom(4).hex()}"
    shutil.copytree(template, arena, symlinks=True)
    (arena / "link.tflite").unlink()
    (arena / "link.tflite").symlink_to(arena / "tiny.tflite")
    monkeypatch.chdir(arena)
    before = snapshot(arena)
    code = cli.main(argv)
    event(f"{argv[0]} exit {code}")
    captured = capsys.readouterr()
    assert code in (0, 1, 2, 3), (argv, code, captured.err[-500:])
    errors = [line for line in captured.err.splitlines() if line.startswith("edgeq: error")]
    assert len(errors) <= 1 and "Traceback" not in captured.err, (argv, captured.err[-500:])
    if code == 2:
        assert errors, (argv, captured.err[-500:])
    after = snapshot(arena)
    inputs, allowed = named_inputs(argv), allowed_outputs(argv)
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key) or (before.get(key) == "dir" and after.get(key) == "dir"):
            continue
        assert key not in inputs or before.get(key) is None, (argv, f"input {key} was changed or removed")
        parent_of_output = after.get(key) == "dir" and any(a.startswith(key + "/") for a in allowed)
        assert parent_of_output or any(key == a or key.startswith(a + "/") for a in allowed), (argv, f"wrote {key}")
    shutil.rmtree(arena)
