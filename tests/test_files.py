"""Atomic writes: the target appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeq.errors import InputError
from edgeq.files import atomic_path, write_bytes_atomic


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.tflite"
    write_bytes_atomic(target, b"first")
    write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["model.tflite"]


def test_failure_leaves_neither_target_nor_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.tflite"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_version(tmp_path: Path) -> None:
    target = write_bytes_atomic(tmp_path / "m.bin", b"good")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert len(list(tmp_path.iterdir())) == 1


def test_unwritable_parent_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to"):
        write_bytes_atomic(blocker / "out.bin", b"data")


def test_artifacts_get_the_usual_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        target = write_bytes_atomic(tmp_path / "m.tflite", b"x")
    finally:
        os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644
