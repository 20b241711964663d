"""Real images that ship inside installed packages, so nothing is ever downloaded.

Labelled: scikit-learn's digits (10 classes, upsampled to RGB for the zoo) and scikit-image's
``lfw_subset`` (faces vs non-faces). Unlabelled: the sample photos of scikit-image, scikit-learn and
matplotlib, the source pool for calibration data. Images stay uint8 until model preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeq.errors import InputError
from edgeq.extras import require_extra

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
#: Fractions of each class that go to train / val / test (the rest of the class goes to test).
SPLIT_FRACTIONS = (0.6, 0.2)
SPLIT_SEED = 20261123


@dataclass(frozen=True)
class LabelledImages:
    """A labelled uint8 image set in NHWC layout."""

    name: str
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def stratified_split_indices(labels: np.ndarray, split: Split, seed: int = SPLIT_SEED) -> np.ndarray:
    """Indices of ``split`` in a per-class shuffled split; the same for the same labels and seed."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        n_train = round(len(members) * SPLIT_FRACTIONS[0])
        n_val = round(len(members) * SPLIT_FRACTIONS[1])
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, None)}
        lo, hi = bounds[split]
        chosen.append(members[lo:hi])
    return np.sort(np.concatenate(chosen))


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) uint8 images with PIL (deterministic, no TensorFlow)."""
    require_extra("PIL", "resizing the bundled images")
    from PIL import Image

    out = np.empty((images.shape[0], size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return out


def load_digits(split: Split, size: int = 32, rgb: bool = True) -> LabelledImages:
    """scikit-learn's 1797 handwritten digits, 0..16 grey levels scaled to uint8 and upsampled."""
    require_extra("sklearn", f"the bundled set digits:{split}")
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    labels = raw.target.astype(np.int64)
    idx = stratified_split_indices(labels, split)
    grey = np.clip(np.rint(raw.images[idx] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if size != grey.shape[1]:
        grey = _resize_uint8(grey, size)
    images = np.repeat(grey[..., None], 3 if rgb else 1, axis=-1)
    return LabelledImages(
        name=f"digits:{split}",
        images=np.ascontiguousarray(images),
        labels=labels[idx],
        class_names=tuple(str(d) for d in range(10)),
    )


def load_lfw(split: Split) -> LabelledImages:
    """scikit-image's ``lfw_subset``: 25×25 grey crops, label 1 for a face, 0 for a non-face."""
    require_extra("skimage", f"the bundled set lfw:{split}")
    from skimage.data import lfw_subset

    raw = lfw_subset()  # float64 in [0, 1]; first 100 faces, then 100 non-faces
    labels = np.concatenate([np.ones(100, np.int64), np.zeros(len(raw) - 100, np.int64)])
    idx = stratified_split_indices(labels, split)
    images = np.clip(np.rint(raw[idx] * 255.0), 0, 255).astype(np.uint8)[..., None]
    return LabelledImages(name=f"lfw:{split}", images=images, labels=labels[idx],
                          class_names=("non-face", "face"))


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn_photo(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


#: The unlabelled photo pool: name -> loader. Only images that ship inside the installed wheels.
PHOTO_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    **{f"skimage/{n}": _skimage_photo(n) for n in (
        "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
        "retina", "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel",
        "page", "text", "microaneurysms",
    )},
    "sklearn/china.jpg": _sklearn_photo("china.jpg"),
    "sklearn/flower.jpg": _sklearn_photo("flower.jpg"),
    "matplotlib/grace_hopper.jpg": _grace_hopper,
}


def load_photos(names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The unlabelled real photos as uint8 RGB arrays of their native sizes, by name."""
    wanted = list(PHOTO_LOADERS) if names is None else names
    unknown = [n for n in wanted if n not in PHOTO_LOADERS]
    if unknown:
        raise InputError(f"unknown bundled photo(s): {', '.join(unknown)}")
    return {n: np.ascontiguousarray(_as_rgb(PHOTO_LOADERS[n]())) for n in wanted}
