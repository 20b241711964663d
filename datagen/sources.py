"""Image sources for calibration sets: folders, numpy arrays and the bundled real data, by name.

Every item has a stable id, a sha256 of its original bytes, and a label/stratum when the source has
one. Decoding converts every image to uint8 with the requested channel count and records how.

Untrusted files are read within budgets (:mod:`datagen.limits`): an image's pixel count is checked
from its header before it is decoded, and a ``.npy``/``.npz`` header before its array is allocated.
Whatever a decoder raises on a damaged or hostile image makes that image a *reject* (a
:class:`DecodeError` with a short reason), never a crash.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datagen.arrays import PIXEL_KINDS, load_npy, load_npz
from datagen.limits import MAX_SOURCE_PIXELS, clip
from edgeq.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
BUNDLED = ("digits:train", "digits:val", "digits:test", "lfw", "lfw:train", "lfw:val", "lfw:test", "photos")
_HASH_CHUNK = 1 << 20


class DecodeError(ValueError):
    """One source image cannot be used; the message is the (short, path-free) reason recorded as a reject."""


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
    path: Path | None = None  # the file or folder read, None for bundled data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scale16_to_8(array: np.ndarray) -> np.ndarray:
    """16-bit pixels to 8-bit by their high byte, ``v >> 8`` (= floor(v / 256)).

    This is what Pillow itself does when it decodes 16-bit RGB/RGBA PNGs, so grey and colour 16-bit
    images, and uint16 arrays, all come out the same way.
    """
    return (np.asarray(array, dtype=np.uint16) >> 8).astype(np.uint8)


def to_uint8(array: np.ndarray) -> tuple[np.ndarray, str]:
    """Any decoded image as uint8 HxWxC (C = 1..4), or a :class:`DecodeError` saying why not.

    uint8 as is; uint16 by its high byte (:func:`scale16_to_8`); bool as 0/255; floats must lie in
    [0, 1] and are scaled by 255; other integer types must already hold 0..255.
    """
    notes = []
    if array.ndim == 2:
        array = array[..., None]
    if not array.dtype.isnative:  # a big-endian array from a .npy written elsewhere
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or 0 in array.shape:
        raise DecodeError(f"expected an HxW or HxWxC image (C = 1..4), got shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = scale16_to_8(array)
        notes.append("16-bit->8-bit (high byte)")
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
        notes.append("bool->0/255")
    elif array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DecodeError(f"{array.dtype} pixels span {low}..{high}; give uint8 (0..255) or uint16 (16-bit)")
        notes.append(f"{array.dtype}->uint8 (values 0..255)")
        array = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise DecodeError("image contains NaN or Inf")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise DecodeError(f"float pixels span {low:g}..{high:g}; floats must lie in [0, 1] (or give uint8)")
        array = np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
        notes.append("float[0,1]->uint8")
    else:
        raise DecodeError(f"unsupported pixel type {array.dtype}")
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
    raise DecodeError(f"cannot convert {c} channels to {channels}")


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PLAIN_MODES = ("1", "L", "LA", "RGB", "RGBA")


def _decode_file(path: Path) -> np.ndarray:
    """Decode one image file with Pillow, its pixel count checked from the header first."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow's own guard: its warning (above Image.MAX_IMAGE_PIXELS) rejects the image too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_SOURCE_PIXELS:
                    raise DecodeError(f"{width}x{height} is {width * height} pixels, more than the "
                                      f"{MAX_SOURCE_PIXELS}-pixel budget (decompression bomb guard)")
                img.load()
                if img.mode in _SIXTEEN_BIT_MODES:
                    array = np.asarray(img)
                    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
                        raise DecodeError(f"{img.mode} pixels outside the 16-bit range")
                    return array.astype(np.uint16)
                if img.mode in ("P", "PA"):
                    img = img.convert("RGBA")
                elif img.mode not in _PLAIN_MODES:  # CMYK, YCbCr, LAB, HSV, F, ...
                    img = img.convert("RGB")
                return np.asarray(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb: {clip(str(exc), 160)}") from None
    except UnidentifiedImageError:
        raise DecodeError("not a recognized image") from None
    except OSError as exc:
        raise DecodeError(clip(exc.strerror or str(exc).replace(str(path), path.name), 160)) from None
    except Exception as exc:  # whatever else a decoder raises on a damaged file (SyntaxError, EOFError, ...)
        message = str(exc).replace(str(path), path.name)
        raise DecodeError(clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 160)) from None


decode_image = _decode_file  # public: edgeq's own image-folder reader decodes exactly as datagen does


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_source(folder: Path) -> Source:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    relative = [f.relative_to(folder) for f in files]
    labelled = all(len(r.parts) >= 2 for r in relative)
    class_names = tuple(sorted({r.parts[0] for r in relative})) if labelled else ()
    unreadable: dict[str, str] = {}
    items = []
    for file, rel in zip(files, relative, strict=True):
        item_id = rel.as_posix()
        try:
            sha256 = _file_sha256(file)
        except OSError as exc:  # unreadable (permissions, a vanished file): a reject like an undecodable one
            sha256 = ""
            unreadable[item_id] = f"cannot read: {exc.strerror or type(exc).__name__}"
        items.append(SourceItem(id=item_id, label=class_names.index(rel.parts[0]) if labelled else None,
                                stratum=rel.parts[0] if labelled else None, sha256=sha256))

    def decode(item: SourceItem) -> tuple[np.ndarray, str]:
        if item.id in unreadable:
            raise DecodeError(unreadable[item.id])
        return to_uint8(_decode_file(folder / item.id))

    return Source(spec=str(folder), items=tuple(items), class_names=class_names, decode=decode, path=folder)


def _array_source(path: Path) -> Source:
    if path.suffix.lower() == ".npy":
        images, labels = load_npy(path), None
    else:
        arrays = load_npz(path)
        if not arrays:
            raise InputError(f"{path} holds no arrays")
        key = "images" if "images" in arrays else sorted(arrays)[0]
        images, labels = arrays[key], arrays.get("labels")
    if images.ndim not in (3, 4) or images.shape[0] == 0 or 0 in images.shape:
        raise InputError(f"{path}: expected images shaped (N, H, W[, C]), got {images.shape}")
    if images.ndim == 4 and not 1 <= images.shape[3] <= 4:
        raise InputError(f"{path}: expected 1..4 channels in (N, H, W, C), got shape {images.shape}")
    if images.dtype.kind not in PIXEL_KINDS:
        raise InputError(f"{path}: pixels must be numbers, got {images.dtype}")
    if images.shape[1] * images.shape[2] > MAX_SOURCE_PIXELS:
        raise InputError(f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels exceed the "
                         f"{MAX_SOURCE_PIXELS}-pixel budget")
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise InputError(f"{path}: 'labels' must be shaped ({images.shape[0]},), got {labels.shape}")
        if labels.dtype.kind not in "biu":
            raise InputError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    return _in_memory_source(str(path), path.name, images, labels, (), path=path)


def _in_memory_source(spec: str, prefix: str, images: np.ndarray, labels: np.ndarray | None,
                      class_names: tuple[str, ...], path: Path | None = None) -> Source:
    items = tuple(
        SourceItem(id=f"{prefix}/{i:05d}", label=None if labels is None else int(labels[i]),
                   stratum=None if labels is None else str(int(labels[i])),
                   sha256=_sha256(np.ascontiguousarray(images[i]).tobytes()))
        for i in range(images.shape[0]))
    index = {item.id: i for i, item in enumerate(items)}

    def decode(item: SourceItem) -> tuple[np.ndarray, str]:
        return to_uint8(np.asarray(images[index[item.id]]))

    names = class_names or (tuple(str(c) for c in sorted(set(labels.tolist()))) if labels is not None else ())
    return Source(spec=spec, items=items, class_names=names, decode=decode, path=path)


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


def source_path(spec: str) -> Path | None:
    """The file or folder ``spec`` names, or None for bundled data."""
    if not isinstance(spec, str) or not spec:
        raise InputError(f"a source must be a path or one of {', '.join(BUNDLED)}, got {spec!r}")
    return None if spec in BUNDLED else Path(spec)


def open_source(spec: str) -> Source:
    """Enumerate ``spec``: a bundled name, an image folder, or a .npy/.npz of images (+ 'labels')."""
    path = source_path(spec)
    if path is None:
        return _bundled_source(spec)
    if path.is_dir():
        return _folder_source(path)
    if path.is_file() and path.suffix.lower() in ARRAY_SUFFIXES:
        return _array_source(path)
    if not path.exists():
        raise InputError(f"no such source: {spec} (a folder, .npy/.npz, or one of {', '.join(BUNDLED)})")
    raise InputError(f"unsupported source {spec}: give an image folder, a .npy/.npz, or one of {', '.join(BUNDLED)}")
