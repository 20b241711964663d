"""edgeq coverage: calibration vs production activation ranges per layer, with a CI exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main as cli


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("coverage")
    out = {}
    for name, conditions in (("clean", "original"), ("stratified", "original,noise,overexposed,high_contrast"),
                             ("production", "noise,overexposed")):
        out[name] = root / name
        assert cli.main(["datagen", "--source", "digits:test", "--conditions", conditions, "--n", "24",
                         "--severity", "5", "--preprocess", "mean=127.5,std=127.5", "-o", str(out[name])]) == 0
    return out


def test_same_data_covers_itself(tiny_zoo: dict[str, Path], sets: dict[str, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["coverage", str(tiny_zoo["cnn"]), "--calib", str(sets["production"]),
                     "--production", str(sets["production"]), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["flagged"] == 0
    assert all(layer["ratio"] == pytest.approx(1.0) for layer in document["layers"] if layer["ratio"] is not None)


def test_gaps_are_flagged_consistently_and_gate(tiny_zoo: dict[str, Path], sets: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["coverage", str(tiny_zoo["cnn"]), "--calib", str(sets["stratified"]),
                     "--production", str(sets["production"]), "--threshold", "1.5", "-o", str(tmp_path)])
    capsys.readouterr()
    document = json.loads((tmp_path / "coverage.json").read_text())
    assert (tmp_path / "coverage.png").read_bytes()[:4] == b"\x89PNG"
    assert code == (1 if document["flagged"] else 0)
    per_condition = document["per_condition_max"]
    assert set(per_condition) == {"original", "noise", "overexposed", "high_contrast"}
    for i, layer in enumerate(document["layers"]):
        assert layer["flagged"] == (layer["ratio"] < 1.5)
        assert layer["calib_max"] == pytest.approx(max(v[i] for v in per_condition.values()))
        if layer["flagged"]:
            expected = [c for c, v in per_condition.items() if v[i] >= layer["production_max"]]
            assert layer["closing_conditions"] == expected


def test_production_beyond_calibration_is_a_gap(tiny_zoo: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Float inputs twice as large as anything calibrated: the input layer must be flagged, exit 1."""
    x = np.random.default_rng(0).uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "prod.npy", 2 * x)
    code = cli.main(["coverage", str(tiny_zoo["cnn"]), "--calib", str(tmp_path / "calib.npy"),
                     "--production", str(tmp_path / "prod.npy"), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    first = document["layers"][0]
    assert first["producer"] == "INPUT" and first["flagged"] and first["ratio"] == pytest.approx(0.5, rel=1e-6)


def test_candidates_name_the_conditions_that_close_each_gap(tiny_zoo: dict[str, Path], sets: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A clean calibration set cannot name a closing condition at threshold 1 (its max is its one condition's);
    a candidate set can: the conditions whose own max|x| reaches production's, as the candidate set's own
    per-condition maxima (measured as a calibration set, another code path) say."""
    common = [str(tiny_zoo["cnn"]), "--production", str(sets["production"]), "--json"]
    code = cli.main(["coverage", *common, "--calib", str(sets["clean"]), "--candidates", str(sets["stratified"])])
    document = json.loads(capsys.readouterr().out)
    assert cli.main(["coverage", *common, "--calib", str(sets["stratified"])]) in (0, 1)
    as_calibration = json.loads(capsys.readouterr().out)["per_condition_max"]
    assert code == 1 and document["candidate_max"] == as_calibration
    flagged = [(i, layer) for i, layer in enumerate(document["layers"]) if layer["flagged"]]
    assert flagged and any(layer["closing_conditions"] for _, layer in flagged)
    for i, layer in enumerate(document["layers"]):
        expected = [c for c, v in as_calibration.items() if v[i] >= layer["production_max"]] if layer["flagged"] else []
        assert layer["closing_conditions"] == expected


def test_candidates_without_conditions_are_refused(tiny_zoo: dict[str, Path], sets: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "plain.npy", np.zeros((4, 32, 32, 3), np.float32))
    code = cli.main(["coverage", str(tiny_zoo["cnn"]), "--calib", str(sets["clean"]), "--production",
                     str(sets["production"]), "--candidates", str(tmp_path / "plain.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "several conditions" in err and len(err.strip().splitlines()) == 1
