"""Calibration inputs read without trusting them: bounded .npy/.npz headers, input names as users write
them, image folders decoded exactly as datagen decodes them, strict preprocessing files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq.calib.data import ModelInput, input_aliases, load_calibration, parse_preprocessing
from edgeq.cli import main as cli
from edgeq.errors import InputError

PP = parse_preprocessing("mean=127.5,std=127.5")


def _npy_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """A tiny .npy whose header declares ``shape`` (float32) but holds 16 bytes of data."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(bytes(16))
    return path


def test_a_header_declaring_a_huge_array_is_refused_before_allocation(tmp_path: Path) -> None:
    bomb = _npy_declaring(tmp_path / "bomb.npy", (1 << 20, 512, 512, 3))  # 3 TiB declared
    with pytest.raises(InputError, match="budget"):
        load_calibration(str(bomb), [ModelInput("x", (512, 512, 3))], PP)


def test_the_convert_verb_refuses_it_in_one_line(tiny_zoo: Mapping[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bomb = _npy_declaring(tmp_path / "bomb.npy", (1 << 30, 32, 32, 3))
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--calib", str(bomb), "--preprocess", "mean=127.5,std=127.5",
                     "-o", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "budget" in err and err.count("\n") == 1
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("name", ["serving_default_in_a:0", "serving_default_in_a", "in_a"])
def test_npz_keys_by_any_of_an_inputs_names(name: str, tmp_path: Path) -> None:
    a = np.full((3, 4, 4, 1), 7, np.uint8)
    b = np.full((3, 4, 4, 1), 9, np.uint8)
    np.savez(tmp_path / "two.npz", **{name: a, "in_b": b})
    inputs = [ModelInput("serving_default_in_a:0", (4, 4, 1)), ModelInput("serving_default_in_b:0", (4, 4, 1))]
    data = load_calibration(str(tmp_path / "two.npz"), inputs, PP)
    assert [int(np.asarray(x).max()) for x in data.arrays] == [7, 9]


def test_an_npz_without_an_inputs_array_names_what_it_accepts(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", left=np.zeros((2, 4, 4, 1), np.uint8), right=np.zeros((2, 4, 4, 1), np.uint8))
    inputs = [ModelInput("serving_default_in_a:0", (4, 4, 1)), ModelInput("serving_default_in_b:0", (4, 4, 1))]
    with pytest.raises(InputError, match=r"no array for the model input 'serving_default_in_a:0' \(name it one of"):
        load_calibration(str(tmp_path / "two.npz"), inputs, PP)


def test_aliases() -> None:
    assert input_aliases("serving_default_image:0") == ("serving_default_image:0", "serving_default_image", "image")
    assert input_aliases("input_1") == ("input_1",)


def test_sixteen_bit_pngs_read_as_datagen_reads_them(tmp_path: Path) -> None:
    """Convert's image folder and datagen's source decoder agree on 16-bit images (high byte)."""
    from datagen.sources import open_source

    folder = tmp_path / "png16"
    folder.mkdir()
    values = np.linspace(0, 65535, 8 * 8, dtype=np.uint16).reshape(8, 8)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    image.save(folder / "ramp.png")
    data = load_calibration(str(folder), [ModelInput("x", (8, 8, 1))], PP)
    converted = np.asarray(data.arrays[0])[0, ..., 0]
    assert np.array_equal(converted, (values >> 8).astype(np.uint8))  # not clipped to 255
    source = open_source(str(folder))
    decoded, _ = source.decode(source.items[0])
    assert np.array_equal(decoded[..., 0], converted)


def test_a_decompression_bomb_in_an_image_folder_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "bomb"
    folder.mkdir()
    Image.new("L", (20000, 20000)).save(folder / "big.png", optimize=True)  # 400 Mpx, small on disk
    with pytest.raises(InputError, match=r"cannot decode image .*big\.png"):
        load_calibration(str(folder), [ModelInput("x", (8, 8, 1))], PP)


@pytest.mark.parametrize(("document", "fragment"), [
    ({"mean": 127.5, "stdev": 127.5}, "unknown preprocessing key 'stdev' (did you mean 'std'?)"),
    ({"mean": 127.5, "std": 0}, "std must be positive"),
    ({"size": [60000, 60000]}, "each side 1..8192"),
    ([1, 2], "must hold a JSON object"),
])
def test_preprocessing_files_are_strict(document: object, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "pp.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError) as error:
        parse_preprocessing(str(path))
    assert fragment in str(error.value)


def test_a_non_utf8_preprocessing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "pp.json"
    path.write_bytes(b'{"mean": "\xff"}')
    with pytest.raises(InputError, match="not UTF-8"):
        parse_preprocessing(str(path))
