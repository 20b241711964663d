"""Damaged models the fuzzer found (tests/data/fuzz): the checker answers or refuses, never crashes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from edgeq.cli import main as cli
from edgeq.errors import InputError
from edgeq.spec.check import check_model
from edgeq.spec.rules import PROFILES
from edgeq.spec.size import size_breakdown

CASES = sorted((Path(__file__).parent / "data" / "fuzz").glob("*.tflite"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_target_answers_or_refuses(path: Path) -> None:
    data = path.read_bytes()
    for target in PROFILES:
        try:
            report = check_model(data, target=target)
        except InputError as error:
            assert str(error).startswith(("damaged", "the model", "not a TFLite")), str(error)
            continue
        assert report.target.value == target
    with contextlib.suppress(InputError):
        size_breakdown(data)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_check_verb_never_reports_a_bug(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(path), "--target", "edgetpu"]) in (0, 1, 2)
    assert "internal error" not in capsys.readouterr().err


def test_scales_without_zero_points_are_a_damaged_model() -> None:
    with pytest.raises(InputError, match="has 1 scales and 0 zero points"):
        check_model((Path(__file__).parent / "data" / "fuzz" / "seed0_case18480.tflite").read_bytes())


def test_a_tensor_name_that_is_not_utf8_is_a_damaged_model(capsys: pytest.CaptureFixture[str]) -> None:
    """LiteRT raises UnicodeDecodeError reading such names; edgeq says what is wrong with the file."""
    path = next((Path(__file__).parent / "data" / "fuzz").glob("*_name_not_utf8.tflite"))
    assert cli.main(["bench", str(path), "--backend", "cpu", "--runs", "2", "--min-seconds", "0"]) == 2
    assert "not UTF-8" in capsys.readouterr().err
