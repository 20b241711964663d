"""Bad input to calibrate/convert: one line on stderr, exit 2, and no output file left behind."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main as cli


@pytest.fixture(scope="module")
def cnn_path(tiny_zoo: Mapping[str, Path]) -> Path:
    return tiny_zoo["cnn"]


@pytest.fixture(scope="module")
def cases(cnn_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], str]]:
    """The bad inputs, written once for the module: they are only read (each test writes into its own folder),
    and writing them converts the CNN and builds the custom-op model (about 2 s per test when per test)."""
    return _cases(tmp_path_factory.mktemp("bad-inputs"), cnn_path)


def _cases(tmp: Path, cnn: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv after 'convert MODEL', expected message fragment)."""
    good = tmp / "good.npy"
    np.save(good, np.zeros((4, 32, 32, 3), np.float32))
    np.save(tmp / "wrong_shape.npy", np.zeros((4, 28, 28, 3), np.float32))
    np.save(tmp / "strings.npy", np.array([["a", "b"]]))
    nan = np.zeros((5, 32, 32, 3), np.float32)
    nan[3, 1, 2, 0] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "empty.npy", np.zeros((0, 32, 32, 3), np.float32))
    np.save(tmp / "vec.npy", np.zeros((4, 8), np.float32))
    (tmp / "not_a_model.tflite").write_bytes(b"hello, not a flatbuffer")
    (tmp / "notes.txt").write_text("hello")
    float_tflite = tmp / "float.tflite"
    from edgeq.intake.load import load_float_model

    float_tflite.write_bytes(load_float_model(cnn).flatbuffer)
    (tmp / "truncated.tflite").write_bytes(float_tflite.read_bytes()[:4000])
    (tmp / "images").mkdir()
    (tmp / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    return {
        "missing model": ([str(tmp / "nope.keras"), "--calib", str(good)], "no such model"),
        "not a model (txt)": ([str(tmp / "notes.txt"), "--calib", str(good)], "is not a model edgeq reads"),
        "not a flatbuffer": ([str(tmp / "not_a_model.tflite"), "--calib", str(good)], "not a TFLite flatbuffer"),
        "truncated tflite": ([str(tmp / "truncated.tflite"), "--calib", str(good)], "damaged TFLite"),
        "missing data": ([str(cnn), "--calib", str(tmp / "none.npy")], "no such calibration data"),
        "wrong shape": ([str(cnn), "--calib", str(tmp / "wrong_shape.npy")], "expects (32, 32, 3)"),
        "wrong dtype": ([str(cnn), "--calib", str(tmp / "strings.npy")], "must be numeric"),
        "NaN names the sample": ([str(cnn), "--calib", str(tmp / "nan.npy")], "sample 3"),
        "empty set": ([str(cnn), "--calib", str(tmp / "empty.npy")], "is empty"),
        "undecodable image": ([str(cnn), "--calib", str(tmp / "images")], "cannot decode image"),
        "bad preprocess": ([str(cnn), "--calib", str(good), "--preprocess", "gamma=2"], "unknown preprocessing key"),
        "missing stats": ([str(cnn), "--stats", str(tmp / "none.npz")], "no such stats file"),
        "stats not npz": ([str(cnn), "--stats", str(tmp / "notes.txt")], "not an edgeq stats file"),
        "bad recipe key": ([str(cnn), "--calib", str(good), "--recipe", str(_recipe(tmp, "methd: mse\n"))],
                           "unknown key(s) methd"),
        "custom op is named": ([str(_custom_op_model(tmp / "custom.tflite")), "--calib", str(tmp / "vec.npy")],
                               "uses custom op(s) EdgeqMystery that LiteRT has no kernel for"),
        "bad recipe method": ([str(cnn), "--calib", str(good), "--recipe", str(_recipe(tmp, "method: median\n"))],
                              "not one of minmax"),
    }


def _custom_op_model(path: Path) -> Path:
    """A float .tflite whose SIN op is replaced by a custom op no runtime knows."""
    import keras

    from edgeq.intake.load import keras_to_float_tflite
    from edgeq.tflite import model as tfl

    inputs = keras.Input((8,), batch_size=1)
    outputs = keras.layers.Dense(4)(keras.layers.Lambda(keras.ops.sin)(keras.layers.Dense(8)(inputs)))
    parsed = tfl.parse(keras_to_float_tflite(keras.Model(inputs, outputs)))
    code = tfl.schema().OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.builtin_code("CUSTOM")
    code.customCode, code.version = "EdgeqMystery", 1
    parsed.operatorCodes.append(code)
    sin = next(op for op in parsed.subgraphs[0].operators if tfl.op_type(parsed, op) == "SIN")
    sin.opcodeIndex, sin.builtinOptionsType, sin.builtinOptions = len(parsed.operatorCodes) - 1, 0, None
    path.write_bytes(tfl.serialize(parsed))
    return path


def _recipe(tmp: Path, text: str) -> Path:
    path = tmp / f"recipe{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


CASE_NAMES = ["missing model", "not a model (txt)", "not a flatbuffer", "truncated tflite", "missing data",
              "wrong shape", "wrong dtype", "NaN names the sample", "empty set", "undecodable image",
              "bad preprocess", "missing stats", "stats not npz", "bad recipe key", "bad recipe method",
              "custom op is named"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_exits_2_with_one_line_and_no_output(case: str, cases: dict[str, tuple[list[str], str]],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, fragment = cases[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = cli.main(["convert", *argv, "-o", str(out_dir / "m.tflite")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert list(out_dir.iterdir()) == []


def test_calibrate_bad_input_leaves_no_stats(cnn_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((2, 8, 8, 3), np.float32))
    out = tmp_path / "stats.npz"
    assert cli.main(["calibrate", str(cnn_path), "--calib", str(tmp_path / "wrong.npy"), "-o", str(out)]) == 2
    assert not out.exists()
    assert cli.main(["calibrate", str(cnn_path), "--calib", "digits:train", "-o", str(tmp_path / "s.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err


def test_output_must_be_tflite(cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["convert", str(cnn_path), "--calib", "digits:train", "-o", str(tmp_path / "m.bin")]) == 2
    assert "must end in .tflite" in capsys.readouterr().err
