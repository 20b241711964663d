"""Image sources for calibration sets: folders, numpy arrays and the bundled real data, by name.

Every item has a stable id, a sha256 of its original bytes, and a label/stratum when the source has
one. Decoding converts every image to uint8 with the requested channel count and records how.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BUNDLED = ("digits:train", "digits:val", "digits:test", "lfw", "lfw:train", "lfw:val", "lfw:test", "photos")


@dataclass(frozen=True)
class SourceItem:
    """One source image, not yet decoded."""

    id: str  # stable within the source: relative path, "digits:train/0123", "arrays.npz/17"
    label: int | None
    stratum: str | None  # what sampling balances over: the class name when known
    sha256: str


@dataclass(frozen=True)
class Source:
    """An enumerated source: its items and how to decode one of them."""

    spec: str  # what the user passed (a path or a bundled name)
    items: tuple[SourceItem, ...]
    class_names: tuple[str, ...]
    decode: Callable[[SourceItem], tuple[np.ndarray, str]]  # -> (uint8 HxWxC image, conversion note)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_uint8(array: np.ndarray) -> tuple[np.ndarray, str]:
    """Any decoded image as uint8 HxWxC (C = 1, 3 or 4); 16-bit keeps its high byte, floats in [0, 1] scale."""
    notes = []
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype == np.uint8:
        pass
    elif array.dtype in (np.uint16, np.int32, np.uint32) or array.dtype.kind in "iu":
        bits = 16 if array.max(initial=0) <= 65535 else 32
        array = (array.astype(np.uint64) >> (bits - 8)).clip(0, 255).astype(np.uint8)
        notes.append(f"{bits}-bit->8-bit (high byte)")
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
        notes.append("bool->0/255")
    elif array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains NaN or Inf")
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        notes.append("float[0,1]->uint8")
    else:
        raise ValueError(f"unsupported pixel type {array.dtype}")
    return array, "; ".join(notes)


def to_channels(image: np.ndarray, channels: int) -> tuple[np.ndarray, str]:
    """uint8 HxWx{1,2,3,4} -> HxWx``channels``; alpha is composited over black, grey is replicated."""
    notes = []
    c = image.shape[2]
    if c in (2, 4):  # grey+alpha or RGBA: composite over black
        alpha = image[..., -1:].astype(np.uint16)
        image = ((image[..., :-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        notes.append("alpha composited over black")
        c -= 1
    if c == channels:
        return image, "; ".join(notes)
    if channels == 3 and c == 1:
        notes.append("grey->RGB (replicated)")
        return np.repeat(image, 3, axis=2), "; ".join(notes)
    if channels == 1 and c == 3:
        notes.append("RGB->grey (ITU-R 601 luma)")
        luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None], "; ".join(notes)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _decode_file(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA")
        elif img.mode == "CMYK" or img.mode == "YCbCr":
            img = img.convert("RGB")
        elif img.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(img, dtype=np.uint16)
        return np.asarray(img)


def _folder_source(folder: Path) -> Source:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    relative = [f.relative_to(folder) for f in files]
    labelled = all(len(r.parts) >= 2 for r in relative)
    class_names = tuple(sorted({r.parts[0] for r in relative})) if labelled else ()
    items = tuple(
        SourceItem(id=r.as_posix(), label=class_names.index(r.parts[0]) if labelled else None,
                   stratum=r.parts[0] if labelled else None, sha256=_sha256(f.read_bytes()))
        for f, r in zip(files, relative, strict=True))

    def decode(item: SourceItem) -> tuple[np.ndarray, str]:
        return to_uint8(_decode_file(folder / item.id))

    return Source(spec=str(folder), items=items, class_names=class_names, decode=decode)


def _array_source(path: Path) -> Source:
    try:
        with np.load(path, allow_pickle=False) as loaded:
            if isinstance(loaded, np.ndarray):
                images, labels = loaded, None
            else:
                keys = list(loaded.files)
                key = "images" if "images" in keys else keys[0] if keys else None
                if key is None:
                    raise InputError(f"{path} holds no arrays")
                images = loaded[key]
                labels = loaded["labels"] if "labels" in keys else None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise InputError(f"{path}: expected images shaped (N, H, W[, C]), got {images.shape}")
    return _in_memory_source(str(path), path.name, images, labels, ())


def _in_memory_source(spec: str, prefix: str, images: np.ndarray, labels: np.ndarray | None,
                      class_names: tuple[str, ...]) -> Source:
    items = tuple(
        SourceItem(id=f"{prefix}/{i:05d}", label=None if labels is None else int(labels[i]),
                   stratum=None if labels is None else str(int(labels[i])),
                   sha256=_sha256(np.ascontiguousarray(images[i]).tobytes()))
        for i in range(images.shape[0]))
    index = {item.id: i for i, item in enumerate(items)}

    def decode(item: SourceItem) -> tuple[np.ndarray, str]:
        return to_uint8(np.asarray(images[index[item.id]]))

    names = class_names or (tuple(str(c) for c in sorted(set(labels.tolist()))) if labels is not None else ())
    return Source(spec=spec, items=items, class_names=names, decode=decode)


def _bundled_source(name: str) -> Source:
    from datagen import bundled

    if name == "photos":
        photos = bundled.load_photos()
        items = tuple(SourceItem(id=n, label=None, stratum=None, sha256=_sha256(img.tobytes()))
                      for n, img in photos.items())

        def decode(item: SourceItem) -> tuple[np.ndarray, str]:
            return photos[item.id], ""

        return Source(spec=name, items=items, class_names=(), decode=decode)
    if name == "lfw":
        parts = [bundled.load_lfw(s) for s in bundled.SPLITS]
        images = np.concatenate([p.images for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        return _in_memory_source(name, name, images, labels, parts[0].class_names)
    dataset, _, split = name.partition(":")
    data = (bundled.load_digits if dataset == "digits" else bundled.load_lfw)(split)  # type: ignore[arg-type]
    return _in_memory_source(name, name, data.images, data.labels, data.class_names)


def open_source(spec: str) -> Source:
    """Enumerate ``spec``: a bundled name, an image folder, or a .npy/.npz of images (+ 'labels')."""
    if spec in BUNDLED:
        return _bundled_source(spec)
    path = Path(spec)
    if path.is_dir():
        return _folder_source(path)
    if path.is_file() and path.suffix in (".npy", ".npz"):
        return _array_source(path)
    if not path.exists():
        raise InputError(f"no such source: {spec} (a folder, .npy/.npz, or one of {', '.join(BUNDLED)})")
    raise InputError(f"unsupported source {spec}: give an image folder, a .npy/.npz, or one of {', '.join(BUNDLED)}")
