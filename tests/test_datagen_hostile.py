"""datagen on hostile input: never destroy a user's file, exit 2 (one line) for every bad input, bounded memory.

Every bad input of the matrix is run through the real CLI in process and must give exit 2, exactly one
line on stderr starting ``edgeq: error:``, no traceback, a byte-identical source tree and nothing
written outside the output path. Tampered sets are refused by ``load_set``/``regenerate`` with an
InputError. SIGTERM/SIGINT are sent to a real ``edgeq datagen --workers 2`` process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from datagen import outputs
from datagen.bundled import load_digits
from datagen.calibset import load_set, regenerate
from datagen.generate import DatagenConfig, generate
from datagen.sources import scale16_to_8, to_uint8
from edgeq.cli import main as cli
from edgeq.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[1]


# ---- helpers ------------------------------------------------------------------------------------


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every entry under ``root`` (without following links) -> a digest of its bytes or kind."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and (path == skip or skip in path.parents):
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _write_digits(folder: Path, count: int = 12) -> None:
    """Real handwritten digits as PNG files in two class folders."""
    from PIL import Image

    digits = load_digits("test", rgb=False)
    for i in range(count):
        sub = folder / ("odd" if digits.labels[i] % 2 else "even")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i][..., 0]).save(sub / f"{i:03d}.png")


def _bomb_png(path: Path, side: int = 30000) -> None:
    """A real decompression bomb: a side x side 1-bit PNG of zeros, about 110 KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _npy_with_header(path: Path, shape: tuple[int, ...], descr: str = "|u1", payload: int = 64) -> None:
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(b"\x00" * payload)


def _billion_laughs(path: Path) -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        name, previous = chr(97 + level), chr(96 + level)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n")


# ---- the bad-input matrix -----------------------------------------------------------------------

# Each case: (id, setup(tmp) -> argv after "datagen", expected fragment of the message).
Setup = Callable[[Path], list[str]]


def _force_into(name: str, make: Callable[[Path], None]) -> Setup:
    def setup(tmp: Path) -> list[str]:
        make(tmp / name)
        return ["--source", str(tmp / "src"), "--n", "4", "-o", str(tmp / name), "--force"]

    return setup


def _foreign(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("my thesis")


def _set_with_extra(folder: Path) -> None:
    generate(DatagenConfig(source="digits:test", conditions=(("original", 1.0),), n=2), folder)
    (folder / "keep.txt").write_text("mine")


def _not_a_set(folder: Path) -> None:
    folder.mkdir()
    (folder / "preview.png").write_bytes(b"mine, not edgeq's")


def _cwd_is_output(tmp: Path) -> list[str]:
    os.chdir(tmp / "work")
    return ["--source", "digits:test", "--n", "4", "-o", ".", "--force"]


def _parent_of_cwd(tmp: Path) -> list[str]:
    os.chdir(tmp / "work")
    return ["--source", "digits:test", "--n", "4", "-o", "..", "--force"]


def _home_is_output(tmp: Path) -> list[str]:
    return ["--source", "digits:test", "--n", "4", "-o", str(tmp / "home"), "--force"]


def _source_symlink(tmp: Path) -> list[str]:
    (tmp / "link").symlink_to(tmp / "src")
    return ["--source", str(tmp / "src"), "--n", "4", "-o", str(tmp / "link"), "--force"]


def _custom(text: bytes, suffix: str = ".yaml", condition: str = "rain") -> Setup:
    def setup(tmp: Path) -> list[str]:
        path = tmp / f"custom{suffix}"
        path.write_bytes(text)
        return ["--source", str(tmp / "src"), "--n", "4", "--custom-conditions", str(path), "--conditions",
                condition, "-o", str(tmp / "out" / "set")]

    return setup


def _laughs(tmp: Path) -> list[str]:
    _billion_laughs(tmp / "laughs.yaml")
    return ["--source", str(tmp / "src"), "--n", "4", "--custom-conditions", str(tmp / "laughs.yaml"),
            "--conditions", "i", "-o", str(tmp / "out" / "set")]


def _array_source(make: Callable[[Path], None], name: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        make(tmp / name)
        return ["--source", str(tmp / name), "--n", "4", "--conditions", "original", "-o", str(tmp / "out" / "set")]

    return setup


def _bomb(strict: bool) -> Setup:
    def setup(tmp: Path) -> list[str]:
        _bomb_png(tmp / "src" / "odd" / "bomb.png")
        flags = ["--strict", "--n", "13"] if strict else ["--n", "13"]  # 12 digits + the bomb: all are needed
        return ["--source", str(tmp / "src"), "--conditions", "original", *flags, "-o", str(tmp / "out" / "set")]

    return setup


def _plain(*argv: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        return [a.format(tmp=tmp) for a in argv] + ["-o", str(tmp / "out" / "set")]

    return setup


def _preprocess_file(data: bytes) -> Setup:
    def setup(tmp: Path) -> list[str]:
        (tmp / "prep.json").write_bytes(data)
        return ["--source", "digits:test", "--n", "4", "--preprocess", str(tmp / "prep.json"),
                "-o", str(tmp / "out" / "set")]

    return setup


def _npz_bad_labels(path: Path) -> None:
    np.savez(path, images=load_digits("test").images[:8], labels=np.zeros((3, 2), np.int64))


def _npz_float_labels(path: Path) -> None:
    np.savez(path, images=load_digits("test").images[:8], labels=np.zeros(8, np.float32))


def _npy_floats_0_255(path: Path) -> None:
    np.save(path, load_digits("test").images[:8].astype(np.float32))


def _npy_object(path: Path) -> None:
    np.save(path, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)


MATRIX: list[tuple[str, Setup, str]] = [
    # outputs that would destroy or nest with a source
    ("output-is-source", _plain("--source", "{tmp}/src", "--n", "4"), ""),  # placeholder, replaced below
    ("output-inside-source", lambda t: ["--source", str(t / "src"), "--n", "4", "-o", str(t / "src" / "set")],
     "inside"),
    ("source-inside-output", lambda t: ["--source", str(t / "src" / "odd"), "--n", "2", "--conditions", "original",
                                        "-o", str(t / "src"), "--force"], "input"),
    ("output-symlink-to-source", _source_symlink, "input"),
    ("force-current-folder", _cwd_is_output, "current folder"),
    ("force-parent-of-current-folder", _parent_of_cwd, "refusing to replace .."),
    ("force-home-folder", _home_is_output, "home folder"),
    ("force-foreign-folder", _force_into("mine", _foreign), "did not write ('notes.txt')"),
    ("force-set-with-foreign-file", _force_into("set", _set_with_extra), "did not write ('keep.txt')"),
    ("force-folder-that-is-no-set", _force_into("other", _not_a_set), "not an edgeq calibration set"),
    ("force-onto-a-file", _force_into("file.txt", lambda p: p.write_text("mine")), "not a folder"),
    # numpy sources
    ("npy-declares-1.75-TiB", _array_source(lambda p: _npy_with_header(p, (1_000_000, 784, 800, 3)), "big.npy"),
     "budget"),
    ("npy-truncated", _array_source(lambda p: _npy_with_header(p, (8, 32, 32, 3)), "short.npy"), "truncated"),
    ("npy-object-dtype", _array_source(_npy_object, "objects.npy"), "plain numbers"),
    ("npy-garbage", _array_source(lambda p: p.write_bytes(b"\x93NUMPY\x01\x00garbage"), "junk.npy"), "not a valid"),
    ("npz-not-a-zip", _array_source(lambda p: p.write_bytes(b"PK\x03\x04 not really"), "junk.npz"), "cannot read"),
    ("npz-labels-wrong-shape", _array_source(_npz_bad_labels, "bad.npz"), "'labels' must be shaped"),
    ("npz-float-labels", _array_source(_npz_float_labels, "bad.npz"), "'labels' must be integers"),
    ("npy-floats-outside-0-1", _array_source(_npy_floats_0_255, "floats.npy"), "[0, 1]"),
    # images
    ("decompression-bomb-strict", _bomb(strict=True), "decompression bomb"),
    ("decompression-bomb-not-enough-left", _bomb(strict=False), "decompression bomb"),
    # custom conditions
    ("custom-not-utf8", _custom(b"rain:\n  description: \"\xff\xfe\"\n"), "not UTF-8"),
    ("custom-billion-laughs", _laughs, "expands to more than"),
    ("custom-recursive-alias", _custom(b"rain: &r\n  transforms: [*r]\n"), "rain"),
    ("custom-too-large", _custom(b"# " + b"x" * (1 << 20) + b"\n"), "reads config files up to"),
    ("custom-json-deep", _custom(b"[" * 100_000 + b"]" * 100_000, ".json"), "nests too deeply"),
    ("custom-kernel-20001", _custom(b"rain:\n  transforms:\n    - MotionBlur: {blur_limit: [20001, 20001]}\n"),
     "at most 1000"),
    ("custom-zoom-999", _custom(b"rain:\n  transforms:\n    - ZoomBlur: {max_factor: [1, 999]}\n"), "at most 4"),
    ("custom-nan", _custom(b"rain:\n  transforms:\n    - GaussNoise: {std_range: [.nan, .inf]}\n"), "finite"),
    ("custom-reads-files", _custom(b"rain:\n  transforms:\n    - FDA: {reference_images: [/etc/passwd]}\n"),
     "reads other files"),
    ("custom-huge-name", _custom(b'{"' + b"r" * 5000 + b'": {"transforms": []}}', ".json", "r" * 5000), "..."),
    # sizes, counts, weights
    ("size-60000x60000", _plain("--source", "digits:test", "--n", "4", "--size", "60000x60000"), "1..8192"),
    ("size-0x0", _plain("--source", "digits:test", "--n", "4", "--size", "0x0"), "1..8192"),
    ("size-over-pixel-budget", _plain("--source", "digits:test", "--n", "4", "--size", "8000x8000"), "megapixels"),
    ("preprocess-size-0x0", _plain("--source", "digits:test", "--n", "4", "--preprocess", "size=0x0"), "1..8192"),
    ("preprocess-size-60000", _plain("--source", "digits:test", "--n", "4", "--preprocess", "size=60000x60000"),
     "1..8192"),
    ("preprocess-std-0", _plain("--source", "digits:test", "--n", "4", "--preprocess", "std=0"), "std"),
    ("preprocess-file-not-utf8", _preprocess_file(b'{"mean": [\xff]}'), "not UTF-8"),
    ("preprocess-file-deep", _preprocess_file(b"[" * 100_000 + b"]" * 100_000), "nests too deeply"),
    ("weight-inf", _plain("--source", "digits:test", "--n", "4", "--conditions", "noise:inf"), "weight"),
    ("weight-nan", _plain("--source", "digits:test", "--n", "4", "--conditions", "noise:nan"), "weight"),
    ("n-0", _plain("--source", "digits:test", "--n", "0"), "--n"),
    ("n-huge", _plain("--source", "digits:test", "--n", "100000000000"), "--n"),
    ("seed-negative", _plain("--source", "digits:test", "--n", "4", "--seed", "-1"), "seed"),
    ("workers-0", _plain("--source", "digits:test", "--n", "4", "--workers", "0"), "--workers"),
    ("workers-100000", _plain("--source", "digits:test", "--n", "4", "--workers", "100000"), "--workers"),
]
MATRIX[0] = ("output-is-source", lambda t: ["--source", str(t / "src"), "--n", "4", "-o", str(t / "src"), "--force"],
             "input")


@pytest.mark.parametrize(("setup", "fragment"), [pytest.param(s, f, id=i) for i, s, f in MATRIX])
def test_bad_input_matrix(setup: Setup, fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    _write_digits(tmp_path / "src")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "precious.txt").write_text("do not delete")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("# mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    before = _tree(tmp_path)
    capsys.readouterr()
    code = cli.main(["datagen", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error:"), err
    assert "Traceback" not in err and fragment in err, err
    assert len(lines[0]) < 600  # messages quote user data within bounds
    after = _tree(tmp_path)
    assert after == before  # the sources, the output (if it existed) and everything else untouched


def test_the_matrix_messages_for_overlaps_come_from_datagen_too(tmp_path: Path) -> None:
    """Library callers (edgeq build) get the same protection as the CLI, without its path table."""
    _write_digits(tmp_path / "src")
    config = DatagenConfig(source=str(tmp_path / "src"), conditions=(("original", 1.0),), n=4)
    (tmp_path / "rain.yaml").write_text("rain:\n  transforms:\n    - RandomRain: {}\n")
    before = _tree(tmp_path)
    with pytest.raises(UsageError, match="is the source itself"):
        generate(config, tmp_path / "src", force=True)
    with pytest.raises(UsageError, match="lies inside the source"):
        generate(config, tmp_path / "src" / "set")
    with pytest.raises(UsageError, match=r"source .* lies inside the output"):
        generate(DatagenConfig(source=str(tmp_path / "src" / "odd"), conditions=(("original", 1.0),), n=2),
                 tmp_path, force=True)
    with pytest.raises(UsageError, match=r"custom-conditions file .* lies inside the output"):
        generate(DatagenConfig(source="digits:test", conditions=(("rain", 1.0),), n=2,
                               custom_conditions=str(tmp_path / "rain.yaml")), tmp_path, force=True)
    assert _tree(tmp_path) == before


def test_force_protections_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "me").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "home" / "me")
    assert outputs.replace_problem(Path("/")) == "it is the filesystem root"
    assert outputs.replace_problem(tmp_path / "home") == "it is your home folder"
    assert outputs.replace_problem(tmp_path) == "it contains your home folder"
    assert outputs.replace_problem(Path(".")) == "it is the current folder"
    assert outputs.replace_problem(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert outputs.replace_problem(tmp_path / "empty") is None  # nothing to lose
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert outputs.replace_problem(tmp_path / "link") == "it is a symbolic link"


def test_force_replaces_an_edgeq_set_and_a_set_from_before_the_marker(tmp_path: Path) -> None:
    config = DatagenConfig(source="digits:test", conditions=(("original", 1.0),), n=3)
    first = generate(config, tmp_path / "set")
    assert (tmp_path / "set" / outputs.OUTPUT_MARKER).read_text() == outputs.MARKER_TEXT
    second = generate(DatagenConfig(source="digits:test", conditions=(("noise", 1.0),), n=3), tmp_path / "set",
                      force=True)
    assert second.fingerprint != first.fingerprint and load_set(tmp_path / "set").conditions == ["noise"] * 3
    (tmp_path / "set" / outputs.OUTPUT_MARKER).unlink()  # a set written before the marker existed
    generate(config, tmp_path / "set", force=True)
    assert load_set(tmp_path / "set").document["fingerprint"] == first.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no staging or replaced-set leftovers


def test_disk_full_while_writing_is_exit_2_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import datagen.generate

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datagen.generate, "save_npz", full)
    code = cli.main(["datagen", "--source", "digits:test", "--n", "4", "-o", str(tmp_path / "new" / "deeper" / "set")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert list(tmp_path.iterdir()) == []  # no set, no staging folder, no parent folders it created


def test_disk_full_when_replacing_keeps_the_old_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datagen.preview

    old = generate(DatagenConfig(source="digits:test", conditions=(("original", 1.0),), n=3), tmp_path / "set")

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datagen.preview, "contact_sheet", full)
    with pytest.raises(InputError, match="No space left"):
        generate(DatagenConfig(source="digits:test", conditions=(("noise", 1.0),), n=3), tmp_path / "set", force=True)
    assert load_set(tmp_path / "set").document["fingerprint"] == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


# ---- numpy sources and 16-bit images ------------------------------------------------------------


def test_npy_nhwc_uint8_source(tmp_path: Path) -> None:
    images = load_digits("test").images[:12]  # real digits, uint8 (12, 32, 32, 3)
    np.save(tmp_path / "frames.npy", images)
    code = cli.main(["datagen", "--source", str(tmp_path / "frames.npy"), "--conditions", "original,noise", "--n", "8",
                     "-o", str(tmp_path / "set")])
    assert code == 0
    loaded = load_set(tmp_path / "set")
    assert loaded.images.shape == (8, 32, 32, 3) and loaded.labels is None
    for record, image in zip(loaded.records, loaded.images, strict=True):
        index = int(record["source_id"].rsplit("/", 1)[1])
        assert record["source_id"].startswith("frames.npy/")
        if record["condition"] == "original":
            assert np.array_equal(image, images[index])
    assert regenerate(tmp_path / "set").tobytes() == loaded.images.tobytes()


def test_npz_source_with_labels(tmp_path: Path) -> None:
    digits = load_digits("test")
    np.savez_compressed(tmp_path / "frames.npz", images=digits.images[:40], labels=digits.labels[:40])
    result = generate(DatagenConfig(source=str(tmp_path / "frames.npz"), conditions=(("original", 1.0),), n=10),
                      tmp_path / "set")
    loaded = load_set(result.path)
    assert loaded.labels is not None
    for record, label in zip(loaded.records, loaded.labels, strict=True):
        assert label == digits.labels[int(record["source_id"].rsplit("/", 1)[1])]
    assert len(set(loaded.labels.tolist())) == 10  # balanced over the classes


def test_scale16_to_8_is_the_high_byte() -> None:
    values = np.array([0, 255, 256, 257, 32767, 32768, 65280, 65535], np.uint16)
    assert scale16_to_8(values).tolist() == [0, 0, 1, 1, 127, 128, 255, 255]
    assert to_uint8(values.reshape(2, 4))[0][..., 0].tolist() == [[0, 0, 1, 1], [127, 128, 255, 255]]
    big_endian = values.astype(">u2").reshape(2, 4)
    assert to_uint8(big_endian)[0].tolist() == to_uint8(values.reshape(2, 4))[0].tolist()


def test_16_bit_grey_png_rgb_png_and_uint16_array_agree(tmp_path: Path) -> None:
    """One rule for every 16-bit source: v >> 8 (what Pillow itself does for 16-bit RGB PNGs)."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, size=(3, 24, 24), dtype=np.uint16)
    deep[0, 0, :4] = [255, 256, 65280, 65535]
    (tmp_path / "grey").mkdir()
    (tmp_path / "rgb").mkdir()
    for i, plane in enumerate(deep):
        Image.fromarray(plane).save(tmp_path / "grey" / f"{i}.png")  # mode I;16
        cv2.imwrite(str(tmp_path / "rgb" / f"{i}.png"), np.dstack([plane] * 3))  # 48-bit RGB PNG
    np.save(tmp_path / "deep.npy", deep)
    sets = {}
    for name, source in (("grey", tmp_path / "grey"), ("rgb", tmp_path / "rgb"), ("npy", tmp_path / "deep.npy")):
        result = generate(DatagenConfig(source=str(source), conditions=(("original", 1.0),), n=3),
                          tmp_path / f"set-{name}")
        loaded = load_set(result.path)
        order = [int(Path(r["source_id"]).stem) if name != "npy" else int(r["source_id"].rsplit("/", 1)[1])
                 for r in loaded.records]
        sets[name] = loaded.images[np.argsort(order)]
    expected = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    for name, images in sets.items():
        assert np.array_equal(images, expected), name
    assert sets["grey"][0, 0, :4, 0].tolist() == [0, 1, 255, 255]


def test_pillow_bomb_warning_is_a_reject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's own limit (a host may lower it) is honoured: its warning rejects the image, no crash."""
    from PIL import Image

    _write_digits(tmp_path / "src", count=4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # 32x32 = 1024 pixels: a warning, not Pillow's error
    with pytest.raises(InputError, match=r"needs 1 images but .* 0 usable .*decompression bomb"):
        generate(DatagenConfig(source=str(tmp_path / "src"), conditions=(("original", 1.0),), n=1), tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_the_pixel_budget_is_checked_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when a host switches Pillow's own limit off, datagen's budget rejects the image before decoding."""
    from PIL import Image

    import datagen.sources

    _write_digits(tmp_path / "src", count=4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(datagen.sources, "MAX_SOURCE_PIXELS", 1000)  # 32x32 = 1024 pixels
    with pytest.raises(InputError, match=r"32x32 is 1024 pixels, more than the 1000-pixel budget"):
        generate(DatagenConfig(source=str(tmp_path / "src"), conditions=(("original", 1.0),), n=1), tmp_path / "set")


def test_a_bomb_among_good_images_is_listed_as_a_reject(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i, image in enumerate(load_digits("test", rgb=False).images[:2]):
        Image.fromarray(image[..., 0]).save(tmp_path / "flat" / f"{i}.png")
    _bomb_png(tmp_path / "flat" / "bomb.png")
    # eight conditions each need both good images, so every condition's sampling meets the bomb
    result = generate(DatagenConfig(source=str(tmp_path / "flat"), conditions=tuple(
        (c, 1.0) for c in ("original", "low_light", "high_contrast", "noise", "blur", "jpeg", "fog", "overexposed")),
        n=16), tmp_path / "set")
    assert [r["source_id"] for r in result.rejects] == ["bomb.png"]
    assert "decompression bomb" in result.rejects[0]["reason"]
    assert load_set(result.path).document["rejects"] == result.rejects


# ---- tampered sets ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "set"
    generate(DatagenConfig(source="digits:test", conditions=(("original", 1.0), ("noise", 1.0)), n=6, seed=1), out)
    return out


def _edit_document(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        document = json.loads((folder / "datagen.json").read_text())
        change(document)
        (folder / "datagen.json").write_text(json.dumps(document))

    return tamper


def _edit_record(change: Callable[[dict], None], line: int = 0) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        lines = (folder / "manifest.jsonl").read_text().splitlines()
        record = json.loads(lines[line])
        change(record)
        lines[line] = json.dumps(record, sort_keys=True)
        (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")

    return tamper


def _set(key: str, value: object) -> Callable[[dict], None]:
    def change(mapping: dict) -> None:
        mapping[key] = value

    return change


def _set_config(key: str, value: object) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        document["config"][key] = value

    return change


def _replace_shard(folder: Path) -> None:
    with np.load(folder / "images-00000.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 1
    np.savez(folder / "images-00000.npz", **arrays)


def _huge_shard(folder: Path) -> None:
    import zipfile

    _npy_with_header(folder / "images.npy", (1_000_000, 1000, 1000, 3))
    with zipfile.ZipFile(folder / "images-00000.npz", "w") as archive:
        archive.write(folder / "images.npy", "images.npy")
    (folder / "images.npy").unlink()


TAMPERS: list[tuple[str, Callable[[Path], None], str]] = [
    ("document-not-utf8", lambda f: f.joinpath("datagen.json").write_bytes(b'{"format": "\xff"}'), "not UTF-8"),
    ("document-not-json", lambda f: f.joinpath("datagen.json").write_text("{"), "not valid JSON"),
    ("document-deep-json", lambda f: f.joinpath("datagen.json").write_text("[" * 100_000 + "]" * 100_000),
     "not valid JSON"),
    ("document-a-list", lambda f: f.joinpath("datagen.json").write_text("[]"), "JSON object"),
    ("manifest-not-utf8", lambda f: f.joinpath("manifest.jsonl").write_bytes(b"\xff\xfe\n"), "not UTF-8"),
    ("manifest-line-not-json", lambda f: f.joinpath("manifest.jsonl").write_text("{\n" * 6), "not valid JSON"),
    ("config-n-negative", _edit_document(_set_config("n", -6)), "--n"),
    ("config-n-string", _edit_document(_set_config("n", "6")), "--n"),
    ("config-size-huge", _edit_document(_set_config("size", [60000, 60000])), "1..8192"),
    ("config-weight-string", _edit_document(_set_config("conditions", [["original", "inf"], ["noise", 1]])),
     "weight"),
    ("config-channels", _edit_document(_set_config("channels", 7)), "channels"),
    ("config-severity", _edit_document(_set_config("severity", 0)), "severity"),
    ("config-seed", _edit_document(_set_config("seed", -5)), "seed"),
    ("config-source-not-str", _edit_document(_set_config("source", 5)), "source"),
    ("config-extra-key", _edit_document(_set_config("evil", 1)), "'config' must be an object"),
    ("preprocessing-size-0", _edit_document(_set("preprocessing", {"kind": "preprocessing", "schema_version": 1,
                                                                   "size": [0, 0]})), "1..8192"),
    ("shape-wrong", _edit_document(_set("shape", [32, 32, 4])), "'shape'"),
    ("fingerprint-not-hex", _edit_document(_set("fingerprint", "x" * 64)), "fingerprint"),
    ("counts-wrong", _edit_document(_set("counts", {"original": 6})), "counts"),
    ("record-missing-key", _edit_record(lambda r: r.pop("seed")), "keys"),
    ("record-extra-key", _edit_record(_set("evil", 1)), "keys"),
    ("record-severity-string", _edit_record(_set("severity", "3")), "severity"),
    ("record-seed-negative", _edit_record(_set("seed", -1)), "seed"),
    ("record-seed-huge", _edit_record(_set("seed", 2**70)), "seed"),
    ("record-condition-unknown", _edit_record(_set("condition", "sunburn")), "condition"),
    ("record-shard-path-traversal", _edit_record(_set("shard", "../../../etc/passwd")), "shard"),
    ("record-index-out-of-range", _edit_record(_set("index", 99999)), "index"),
    ("record-sha256-not-hex", _edit_record(_set("source_sha256", "zz")), "source_sha256"),
    ("record-label-string", _edit_record(_set("label", "7")), "label"),
    ("record-seed-changed", _edit_record(_set("seed", 12345)), "fingerprint mismatch"),
    ("images-changed", _replace_shard, "fingerprint mismatch"),
    ("shard-declares-a-terabyte", _huge_shard, "budget"),
    ("shard-missing", lambda f: f.joinpath("images-00000.npz").unlink(), "cannot read"),
]


@pytest.mark.parametrize(("tamper", "fragment"), [pytest.param(t, f, id=i) for i, t, f in TAMPERS])
def test_tampered_set_is_an_input_error(tamper: Callable[[Path], None], fragment: str, clean_set: Path,
                                        tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(clean_set, folder)
    tamper(folder)
    for read in (load_set, regenerate):
        with pytest.raises(InputError) as caught:
            read(folder)
        message = str(caught.value)
        assert fragment in message and "\n" not in message and len(message) < 600, message


def _refingerprint(folder: Path) -> None:
    """What a careful forger does: recompute the fingerprint after editing the manifest."""
    digest = hashlib.sha256()
    with np.load(folder / "images-00000.npz") as archive:
        digest.update(archive["images"].tobytes())
    digest.update((folder / "manifest.jsonl").read_bytes())
    _edit_document(_set("fingerprint", digest.hexdigest()))(folder)


def test_regenerate_checks_the_sources_behind_a_consistent_forgery(clean_set: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(clean_set, folder)
    _edit_record(_set("source_sha256", "0" * 64))(folder)
    _refingerprint(folder)
    load_set(folder)  # consistent with itself...
    with pytest.raises(InputError, match="missing or changed since generation"):
        regenerate(folder)  # ...but not with its source
    shutil.rmtree(folder)
    shutil.copytree(clean_set, folder)
    _edit_document(_set_config("custom_conditions", str(tmp_path / "absent.yaml")))(folder)
    with pytest.raises(InputError, match="no such custom-conditions file"):
        regenerate(folder)


def test_eval_on_a_tampered_set_exits_2(clean_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "set"
    shutil.copytree(clean_set, folder)
    _edit_record(_set("shard", "../../x.npz"))(folder)
    code = cli.main(["eval", str(REPO / "tests" / "data" / "tiny_int8.tflite"), "--data", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "bad shard" in err and err.count("\n") == 1, err


# ---- signals: a real process with worker processes ----------------------------------------------


def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, state) from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[19], fields[0])
    return table


def _descendants(pid: int) -> list[tuple[int, str]]:
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append((child, table[child][1]))
            todo.append(child)
    return found


def _initialized_workers(processes: list[tuple[int, str]]) -> int:
    """How many of ``processes`` are pool workers that ran their initializer (SIGINT ignored)."""
    count = 0
    for pid, _ in processes:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            ignored = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("SigIgn:"))
        except (OSError, StopIteration):
            continue
        if b"spawn_main" in command and int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)):
            count += 1
    return count


def _still_running(processes: list[tuple[int, str]]) -> list[int]:
    table = _process_table()
    return [pid for pid, start in processes if pid in table and table[pid][1] == start and table[pid][2] != "Z"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find child processes")
@pytest.mark.parametrize("how", ["sigterm-to-the-process", "sigint-to-the-process-group",
                                 "sigterm-while-rendering", "sigint-while-rendering"])
def test_a_signal_stops_the_workers_and_leaves_nothing(how: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeq.cli.main", "datagen", "--source", "digits:train", "--n", "4000",
         "--conditions", "noise,blur,fog,jpeg", "--size", "112x112", "--workers", "2", "-o", str(out / "set")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env, start_new_session=True)
    try:
        workers: list[tuple[int, str]] = []
        deadline = time.monotonic() + 600  # a safety net against a hang, not a speed requirement
        while time.monotonic() < deadline and process.poll() is None:
            staging = [p for p in out.iterdir() if p.name.startswith(".set.")]
            workers = _descendants(process.pid)
            ready = "rendering" not in how or _initialized_workers(workers) >= 2
            if staging and len(workers) >= 2 and ready:
                break
            time.sleep(0.05)
        assert process.poll() is None, "datagen finished before it could be interrupted: " + process.stderr.read()
        workers = _descendants(process.pid)
        if how.startswith("sigterm"):
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == (128 + signal.SIGTERM if how.startswith("sigterm") else 130), err
    assert "Traceback" not in err and err.strip().startswith("edgeq:") and err.strip().count("\n") == 0, err
    left = workers
    for _ in range(100):  # orphans get reaped by init; give them a moment to disappear
        left = _still_running(workers)
        if not left:
            break
        time.sleep(0.1)
    assert left == [], f"child processes still running: {left}"
    assert list(out.iterdir()) == []  # no staging folder, no output
