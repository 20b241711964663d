"""Budgets that keep datagen's memory bounded on hostile input, and bounded messages about it.

Every number here is documented in docs/datagen.md. A value beyond a budget is the user's input to
fix (an edgeq ``InputError``/``UsageError``, exit 2), never an allocation that ends in MemoryError.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

from edgeq.errors import InputError

#: Largest side of a generated image (``--size`` and the set's preprocessing ``size``), in pixels.
MAX_SIDE = 8192
#: Largest generated image, in pixels (height × width): 4096² = 16.8 megapixels.
MAX_OUTPUT_PIXELS = 4096 * 4096
#: Largest source image decoded, in pixels, checked from the file header before decoding. The same
#: number as Pillow's default decompression-bomb warning limit (89.5 megapixels).
MAX_SOURCE_PIXELS = 89_478_485
#: Largest array read from a ``.npy``/``.npz`` source (checked from its header before allocation).
MAX_ARRAY_BYTES = 4 << 30
#: Largest set: samples × height × width × channels of uint8 (and, while planning, the decoded sources).
MAX_SET_BYTES = 4 << 30
#: Most samples in one set (``--n``).
MAX_SAMPLES = 200_000
#: Most worker processes.
MAX_WORKERS = 64
# Custom-conditions and preprocessing files are read with edgeq.configfile's bounds (1 MiB, UTF-8,
# YAML alias expansion measured before construction).
#: Largest ``datagen.json`` and ``manifest.jsonl`` of a set that is read back.
MAX_DOCUMENT_BYTES = 64 << 20
MAX_MANIFEST_BYTES = 1 << 30
#: Longest message fragment quoting user data.
MAX_QUOTE = 80

_REPR = reprlib.Repr()
_REPR.maxstring = MAX_QUOTE
_REPR.maxother = MAX_QUOTE
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxlevel = 3
_REPR.maxlong = 40


def quote(value: Any) -> str:
    """A repr of ``value`` bounded in length, depth and width (safe on huge or self-referencing data)."""
    text = _REPR.repr(value)
    return text if len(text) <= 2 * MAX_QUOTE else text[: 2 * MAX_QUOTE] + "..."


def clip(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def read_capped(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else is an InputError."""
    path = Path(path)
    try:
        if not path.is_file():
            raise InputError(f"cannot read {what} {path}: "
                             f"{'no such file' if not path.exists() else 'not a regular file'}")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {human_bytes(limit)}; refusing to read it")
    return data


def decode_utf8(data: bytes, path: str | Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") \
            from None


def check_size(size: Any, what: str, error: type[Exception] = InputError) -> tuple[int, int]:
    """``size`` as (height, width) within 1..MAX_SIDE per side and MAX_OUTPUT_PIXELS in total."""
    if (not isinstance(size, list | tuple) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in size)):
        raise error(f"{what} must be two integers (height, width), got {quote(size)}")
    height, width = int(size[0]), int(size[1])
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise error(f"{what} {height}x{width}: each side must be 1..{MAX_SIDE} pixels")
    if height * width > MAX_OUTPUT_PIXELS:
        raise error(f"{what} {height}x{width} is {height * width} pixels, more than {MAX_OUTPUT_PIXELS} "
                    f"({MAX_OUTPUT_PIXELS // 1_000_000} megapixels)")
    return height, width
