"""The offline real-data loaders: shapes, dtypes, label counts and deterministic, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from datagen import bundled
from edgeq.errors import InputError


@pytest.mark.parametrize("split", bundled.SPLITS)
def test_digits_are_uint8_rgb_32(split: str) -> None:
    data = bundled.load_digits(split)  # type: ignore[arg-type]
    assert data.images.dtype == np.uint8
    assert data.images.shape[1:] == (32, 32, 3)
    assert data.labels.dtype == np.int64
    assert len(data) == data.images.shape[0]
    assert set(np.unique(data.labels)) == set(range(10))
    assert data.images.max() > 200  # scaled from 0..16 to the full uint8 range


def test_digits_splits_partition_all_1797_images_stratified() -> None:
    parts = {s: bundled.stratified_split_indices(_digit_labels(), s) for s in bundled.SPLITS}
    together = np.concatenate(list(parts.values()))
    assert len(together) == 1797
    assert len(np.unique(together)) == 1797  # disjoint and complete
    sizes = {s: len(i) for s, i in parts.items()}
    assert sizes["train"] == pytest.approx(0.6 * 1797, abs=10)
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=10)
    test_counts = np.bincount(_digit_labels()[parts["test"]])
    assert test_counts.min() >= 34  # every class is represented in proportion


def _digit_labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def test_split_is_deterministic_and_seed_dependent() -> None:
    labels = _digit_labels()
    a = bundled.stratified_split_indices(labels, "test")
    assert np.array_equal(a, bundled.stratified_split_indices(labels, "test"))
    assert not np.array_equal(a, bundled.stratified_split_indices(labels, "test", seed=1))
    first = bundled.load_digits("val")
    second = bundled.load_digits("val")
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)


def test_digits_grey_and_native_size() -> None:
    data = bundled.load_digits("test", size=8, rgb=False)
    assert data.images.shape[1:] == (8, 8, 1)


def test_unknown_split_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown split"):
        bundled.stratified_split_indices(_digit_labels(), "holdout")  # type: ignore[arg-type]


def test_lfw_faces_and_non_faces() -> None:
    parts = [bundled.load_lfw(s) for s in bundled.SPLITS]
    assert sum(len(p) for p in parts) == 200
    for part in parts:
        assert part.images.shape[1:] == (25, 25, 1)
        assert part.images.dtype == np.uint8
        assert part.class_names == ("non-face", "face")
        counts = np.bincount(part.labels, minlength=2)
        assert counts[0] == counts[1]  # balanced: 100 faces and 100 non-faces split alike


def test_photo_pool_is_rgb_uint8_and_real() -> None:
    photos = bundled.load_photos()
    assert len(photos) == len(bundled.PHOTO_LOADERS) >= 20
    for name, image in photos.items():
        assert image.dtype == np.uint8, name
        assert image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 100, name
        assert image.std() > 5, name  # a photo, not a constant placeholder


def test_unknown_photo_is_named() -> None:
    with pytest.raises(InputError, match="nope"):
        bundled.load_photos(["skimage/astronaut", "nope"])
