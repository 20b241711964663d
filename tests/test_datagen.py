"""edgeq datagen: stratified, reproducible calibration sets from real images, written atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from datagen.calibset import load_set, regenerate
from datagen.generate import DatagenConfig, generate, parse_conditions, quotas
from edgeq.cli import main as cli

ALL = "original,low_light,high_contrast,noise,blur,jpeg,fog,overexposed"


@pytest.fixture(scope="module")
def digits_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sets") / "digits"
    code = cli.main(["datagen", "--source", "digits:train", "--conditions", ALL, "--n", "40", "--seed", "7",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(out)])
    assert code == 0
    return out


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_set_layout_and_manifest(digits_set: Path) -> None:
    assert {p.name for p in digits_set.iterdir()} == {"images-00000.npz", "manifest.jsonl", "datagen.json",
                                                       "preview.png", ".edgeq-output"}
    loaded = load_set(digits_set)
    assert loaded.images.shape == (40, 32, 32, 3) and loaded.images.dtype == np.uint8
    assert loaded.labels is not None and len(loaded.labels) == 40
    record = loaded.records[0]
    for key in ("id", "source_id", "source_sha256", "label", "condition", "severity", "seed", "applied"):
        assert key in record
    json.dumps([r["applied"] for r in loaded.records])  # JSON-safe
    assert loaded.document["counts"] == dict.fromkeys(ALL.split(","), 5)
    assert loaded.preprocessing is not None and loaded.preprocessing.mean == (127.5,)
    assert loaded.document["versions"]["albumentations"] == "2.0.8"
    assert (digits_set / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_condition_is_balanced_across_classes(digits_set: Path) -> None:
    loaded = load_set(digits_set)
    for condition in ALL.split(","):
        labels = [r["label"] for r in loaded.records if r["condition"] == condition]
        assert len(set(labels)) == len(labels) == 5  # 5 samples, 5 different digits


def test_regenerating_from_the_manifest_is_byte_exact(digits_set: Path) -> None:
    assert regenerate(digits_set).tobytes() == load_set(digits_set).images.tobytes()


def test_same_seed_same_bytes_and_workers_do_not_matter(digits_set: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert cli.main(["datagen", "--source", "digits:train", "--conditions", ALL, "--n", "40", "--seed", "7",
                     "--preprocess", "mean=127.5,std=127.5", "--workers", "2", "-o", str(again)]) == 0
    assert _hashes(again) == _hashes(digits_set)
    other_seed = tmp_path / "other"
    assert cli.main(["datagen", "--source", "digits:train", "--conditions", ALL, "--n", "40", "--seed", "8",
                     "-o", str(other_seed)]) == 0
    assert _hashes(other_seed)["images-00000.npz"] != _hashes(digits_set)["images-00000.npz"]


def test_a_sample_does_not_depend_on_the_rest_of_the_set(digits_set: Path, tmp_path: Path) -> None:
    """Generating only 'noise' gives the same noise samples as inside the eight-condition set."""
    alone = generate(DatagenConfig(source="digits:train", conditions=(("noise", 1.0),), n=5, seed=7), tmp_path / "n")
    full = load_set(digits_set)
    noise = [i for i, r in enumerate(full.records) if r["condition"] == "noise"]
    assert np.array_equal(load_set(alone.path).images, full.images[noise])


def test_weighted_quotas() -> None:
    assert quotas(10, parse_conditions("noise:2,original,blur")) == {"noise": 5, "original": 3, "blur": 2}
    assert sum(quotas(257, parse_conditions(ALL)).values()) == 257


def _write_mixed_folder(folder: Path) -> None:
    from PIL import Image

    from datagen.bundled import load_photos

    photos = list(load_photos(["skimage/astronaut", "skimage/coffee", "skimage/chelsea"]).values())
    (folder / "cats").mkdir(parents=True)
    (folder / "mugs").mkdir()
    Image.fromarray(photos[0]).save(folder / "cats" / "rgb.jpg")
    Image.fromarray(photos[2][..., 0]).save(folder / "cats" / "grey.png")
    rgba = np.dstack([photos[1], np.full(photos[1].shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(folder / "mugs" / "rgba.png")
    deep = (photos[1][..., 1].astype(np.uint16) * 257)
    Image.fromarray(deep).save(folder / "mugs" / "deep16.png")  # uint16 -> mode I;16
    (folder / "mugs" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")


def test_image_folder_conversions_and_rejects(tmp_path: Path) -> None:
    _write_mixed_folder(tmp_path / "src")
    result = generate(DatagenConfig(source=str(tmp_path / "src"), conditions=(("original", 1.0),), n=4,
                                    size=(48, 48)), tmp_path / "set")
    loaded = load_set(result.path)
    assert loaded.images.shape == (4, 48, 48, 3)
    assert [r["source_id"] for r in loaded.document["rejects"]] == ["mugs/broken.jpg"]
    assert loaded.document["rejects"][0]["reason"].startswith("cannot decode")
    notes = {r["source_id"]: r["conversion"] for r in loaded.records}
    assert "grey->RGB" in notes["cats/grey.png"]
    assert "alpha composited over black" in notes["mugs/rgba.png"]
    assert "16-bit->8-bit" in notes["mugs/deep16.png"]
    assert loaded.document["source"]["class_names"] == ["cats", "mugs"]
    assert sorted(r["label"] for r in loaded.records) == [0, 0, 1, 1]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--source", "{empty}"], "no images"),
    (["--source", "digits:train", "--conditions", "original,sunburn"], "sunburn"),
    (["--source", "digits:train", "--severity", "6"], "--severity must be one of"),
    (["--source", "photos", "--n", "400", "--size", "32x32"], "usable"),
    (["--source", "{mixed}", "--strict", "--size", "32x32", "--n", "5", "--conditions", "original"], "cannot decode"),
    (["--source", "photos", "--n", "8", "--conditions", "original"], "different sizes"),
])
def test_bad_input_exits_2_and_leaves_nothing(argv: list[str], fragment: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    _write_mixed_folder(tmp_path / "mixed")
    argv = [a.format(empty=tmp_path / "empty", mixed=tmp_path / "mixed") for a in argv]
    out_root = tmp_path / "out"
    out_root.mkdir()
    code = cli.main(["datagen", *argv, "-o", str(out_root / "set")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert list(out_root.iterdir()) == []  # no set, no staging folder


def test_existing_output_needs_force(digits_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["datagen", "--source", "digits:train", "--n", "8", "-o", str(digits_set)]) == 2
    assert "--force" in capsys.readouterr().err


def test_convert_reads_a_set_and_its_preprocessing(digits_set: Path, tiny_zoo: dict[str, Path], tmp_path: Path) -> None:
    import edgeq

    artifact = edgeq.convert(tiny_zoo["cnn"], tmp_path / "m.tflite", calib=digits_set)
    assert artifact.calibration_samples == 40
    assert artifact.preprocessing is not None and artifact.preprocessing.std == (127.5,)


def test_numpy_array_source_with_labels(tmp_path: Path) -> None:
    from datagen.bundled import load_lfw

    faces = load_lfw("test")
    np.savez(tmp_path / "faces.npz", images=faces.images[..., 0], labels=faces.labels)  # (N, H, W) grey
    result = generate(DatagenConfig(source=str(tmp_path / "faces.npz"), conditions=(("noise", 1.0), ("blur", 1.0)),
                                    n=10, channels=1, seed=3), tmp_path / "set")
    loaded = load_set(result.path)
    assert loaded.images.shape == (10, 25, 25, 1)
    assert loaded.labels is not None and sorted(set(loaded.labels.tolist())) == [0, 1]
    assert loaded.records[0]["source_id"].startswith("faces.npz/")
    assert regenerate(result.path).tobytes() == loaded.images.tobytes()


def test_ctrl_c_during_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datagen.preview

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(datagen.preview, "contact_sheet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(DatagenConfig(source="digits:test", conditions=(("original", 1.0),), n=4), tmp_path / "set")
    assert list(tmp_path.iterdir()) == []  # neither the set nor its staging folder
