"""The bad-input matrix across verbs: one line on stderr, the documented exit code, no partial output.

docs/hardening.md keeps the same matrix as a table; verb-specific cases live next to each verb's tests
(test_convert_bad_input.py, test_check.py, test_datagen.py, test_validate_build.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    files = {
        "missing": folder / "missing.tflite",
        "text": folder / "notes.txt",
        "truncated": folder / "truncated.tflite",
        "random": folder / "random.tflite",
        "blocker": folder / "blocker",
        "nan": folder / "nan.npy",
        "empty": folder / "empty.npy",
        "empty_dir": folder / "empty_dir",
    }
    files["text"].write_text("not a model")
    files["truncated"].write_bytes(TINY.read_bytes()[: len(TINY.read_bytes()) // 2])
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    files["blocker"].write_text("a file where a folder is expected")
    nan = np.zeros((4, 8, 8, 1), np.float32)
    nan[2, 0, 0, 0] = np.nan
    np.save(files["nan"], nan)
    np.save(files["empty"], np.zeros((0, 8, 8, 1), np.float32))
    files["empty_dir"].mkdir()
    return files


CASES = [
    # (verb argv with {placeholders}, expected exit, message fragment)
    (["check", "{missing}"], 2, "no such model file"),
    (["check", "{text}"], 2, "not a TFLite flatbuffer"),
    (["check", "{truncated}"], 2, "damaged TFLite flatbuffer"),
    (["check", "{random}"], 2, "not a TFLite flatbuffer"),
    (["bench", "{missing}", "--backend", "cpu"], 2, "no such model file"),
    (["bench", "{truncated}", "--backend", "cpu"], 2, "damaged TFLite flatbuffer"),
    (["bench", "{tiny}", "--backend", "cpu", "--threads", "0"], 2, "--threads"),
    (["bench", "{tiny}", "--backend", "gpu"], 2, "unknown backend"),
    (["bench", "{tiny}", "--backend", "cpu", "--json", "{blocker}/out/bench.json", "--runs", "3",
      "--min-seconds", "0"], 2, "cannot write to"),
    (["eval", "{truncated}", "--data", "digits:test"], 2, "damaged TFLite flatbuffer"),
    (["eval", "{tiny}", "--data", "{empty_dir}"], 2, "no images"),
    (["eval", "{tiny}", "--data", "digits:holdout"], 2, "unknown split"),
    (["convert", "{truncated}", "--calib", "{nan}", "-o", "{out}/m.tflite"], 2, "damaged TFLite flatbuffer"),
    (["convert", "{text}", "--calib", "{nan}", "-o", "{out}/m.tflite"], 2, "is not a model edgeq reads"),
    (["calibrate", "{missing}", "--calib", "{nan}", "-o", "{out}/s.npz"], 2, "no such model"),
    (["coverage", "{truncated}", "--calib", "{nan}", "--production", "{nan}"], 2, "damaged TFLite flatbuffer"),
    (["datagen", "--source", "{empty_dir}", "-o", "{out}/set"], 2, "no images"),
    (["datagen", "--source", "{text}", "-o", "{out}/set"], 2, "unsupported source"),
    (["datagen", "--source", "digits:test", "--n", "8", "-o", "{blocker}/set"], 2, "cannot"),
    (["validate", "{truncated}", "--calib", "{nan}", "--eval", "digits:test", "-o", "{out}/v"], 2, "damaged"),
    (["build", "{missing}", "-o", "{out}/b"], 2, "no such recipe"),
    (["build", "{text}", "-o", "{out}/b"], 2, "must hold a mapping"),
    (["zoo", "build", "nope", "-o", "{out}/m.keras"], 2, "unknown zoo model"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), CASES,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input(argv: list[str], code: int, fragment: str, inputs: dict[str, Path], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    values = {**{k: str(v) for k, v in inputs.items()}, "tiny": str(TINY), "out": str(out)}
    result = cli.main([a.format(**values) for a in argv])
    err = capsys.readouterr().err
    assert result == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("edgeq: error: "), err
    assert fragment in err
    assert list(out.iterdir()) == []  # nothing half-written
