"""``edgeq sensitivity`` end to end, in process, on the demo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.artifacts import SensitivityReport
from edgeq.cli import main as cli
from edgeq.cli.sensitivity import short_name

DEMO = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
PREPROCESS = "mean=127.5,std=127.5"


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 digit images as a uint8 .npy: a calibration set that loads in no time."""
    from edgeq.harness.evaldata import load_eval_set

    path = tmp_path_factory.mktemp("calib") / "digits16.npy"
    images = load_eval_set("digits:train", limit=16).images
    assert images is not None
    np.save(path, images)
    return path


def _argv(calib: Path, *extra: str) -> list[str]:
    return ["sensitivity", str(DEMO), "--calib", str(calib), "--eval", "digits:test", "--limit", "8",
            "--preprocess", PREPROCESS, *extra]


def test_writes_the_report_to_the_folder_and_the_json_file(calib: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out, json_file = tmp_path / "out", tmp_path / "s.json"
    assert cli.main(_argv(calib, "-o", str(out), "--json", str(json_file), "--top", "3")) == 0
    printed = capsys.readouterr().out
    text = (out / "sensitivity.json").read_text()
    assert json_file.read_text() == text
    document = json.loads(text)
    assert (document["model"], document["eval"], document["method"], document["samples"]) == (
        str(DEMO), "digits:test", "auto", 8)
    assert document["seconds"] >= document["analysis_seconds"] > 0
    report = SensitivityReport.from_dict(document["sensitivity"])
    assert report.to_dict() == document["sensitivity"]
    assert report.samples == 8 and report.ranges == "auto"
    assert report.real_int8_db is not None and 20 < report.real_int8_db <= 100
    assert [r.rank for r in report.tensors] == list(range(1, len(report.tensors) + 1))
    assert {r.tensor_kind for r in report.tensors} == {"activation", "weight"}
    assert len(report.tensors) + len(report.shares_scale) == document["activations"] + document["weights"] - 1
    # the table: 3 ranked rows, then the fidelities and the time
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert [line.split()[0] for line in lines[header + 2: header + 5]] == ["1", "2", "3"]
    assert f"... {len(report.tensors) - 3} more tensors in the JSON" in printed
    assert "real INT8 model:" in printed and "all quantized" in printed and " s in all" in printed
    assert f"written: {out / 'sensitivity.json'}" in printed


def test_json_to_stdout_carries_nothing_else(calib: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_argv(calib, "--method", "minmax", "--json", "-")) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["method"] == "minmax"
    assert SensitivityReport.from_dict(document["sensitivity"]).ranges == "minmax"
    assert "preprocessing:" in captured.err


@pytest.mark.parametrize(("change", "fragment"), [
    ({0: "missing.tflite"}, "missing.tflite"),
    ({"--eval": "nowhere.npz"}, "no such evaluation data"),
    ({"--method": "search"}, "invalid choice"),
    ({"--limit": "0"}, "argument --limit"),
])
def test_bad_input_is_one_line_and_exit_2(calib: Path, tmp_path: Path, change: dict, fragment: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(calib, "-o", str(tmp_path / "out"))
    for where, value in change.items():
        if isinstance(where, int):
            argv[argv.index(str(DEMO))] = str(tmp_path / value)
        elif where in argv:
            argv[argv.index(where) + 1] = value
        else:
            argv += [where, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeq: error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_never_writes_into_its_inputs(calib: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_argv(calib, "-o", str(calib.parent))) == 2
    assert "never writes over its inputs" in capsys.readouterr().err
    assert cli.main(_argv(calib, "--json", str(calib))) == 2
    assert "never writes over its inputs" in capsys.readouterr().err
    assert np.load(calib).shape[0] == 16


def test_short_names_keep_the_layer_end() -> None:
    name = "model_1/model_1/block_12_expand_relu_1/Relu6;model_1/model_1/block_12_expand_bn_1/FusedBatchNormV3"
    assert short_name(name) == "model_1/model_1/block_12_expand_relu_1/Relu6"
    long = "a" * 30 + "/" + "b" * 30 + "/block_7/conv/Relu"
    assert short_name(long, 40) == short_name(long, 30) == "…/block_7/conv/Relu"  # whole components only
    assert short_name(long, 80) == long
    assert short_name("x" * 100, 20) == "…" + "x" * 19
