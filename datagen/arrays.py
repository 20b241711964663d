"""Reading ``.npy``/``.npz`` files without trusting them: the header is checked before anything is allocated.

A ``.npy`` header declares the array's shape and dtype; ``np.load`` allocates what it declares. Here the
declared size is checked against :data:`datagen.limits.MAX_ARRAY_BYTES` and against the bytes the file
(or zip member) really holds, so a 100-byte file declaring a terabyte is an input error, not a
MemoryError. ``.npy`` files are then memory-mapped (read lazily); ``.npz`` members are read whole.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from datagen.limits import MAX_ARRAY_BYTES, clip, human_bytes
from edgeq.errors import InputError

#: dtype kinds a pixel array may have: bool, signed/unsigned integers, floats.
PIXEL_KINDS = "biuf"


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_header(handle: IO[bytes], where: str) -> ArrayHeader:
    """The header of the ``.npy`` stream ``handle`` (positioned at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise InputError(f"{where}: unsupported .npy format version {version}")
        offset = handle.tell()
    except InputError:
        raise
    except Exception as exc:  # ValueError, EOFError, struct.error...: a damaged header, whatever numpy raises
        raise InputError(f"{where}: not a valid .npy header ({clip(str(exc) or type(exc).__name__, 160)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{where}: holds {dtype} data; pixel arrays must be plain numbers")
    return ArrayHeader(tuple(int(s) for s in shape), dtype, bool(fortran_order), offset)


def check_budget(header: ArrayHeader, available: int, where: str, limit: int = MAX_ARRAY_BYTES) -> None:
    """Refuse an array larger than ``limit`` or than the ``available`` bytes that follow its header."""
    if any(s < 0 for s in header.shape):
        raise InputError(f"{where}: negative dimension in shape {header.shape}")
    if header.nbytes > limit:
        raise InputError(f"{where}: declares a {header.dtype} array of shape {header.shape} "
                         f"({human_bytes(header.nbytes)}), more than the {human_bytes(limit)} budget")
    if header.nbytes > available:
        raise InputError(f"{where}: declares {human_bytes(header.nbytes)} of data but holds "
                         f"{human_bytes(max(available, 0))} (truncated or damaged)")


def load_npy(path: Path) -> np.ndarray:
    """A read-only memory map of the ``.npy`` at ``path``, after checking its header."""
    where = str(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = read_header(handle, where)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    check_budget(header, size - header.offset, where)
    if header.nbytes == 0:
        return np.zeros(header.shape, header.dtype)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {clip(str(exc), 160)}") from None


def load_npz(path: Path, limit: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (each header checked first, and their sum against ``limit``)."""
    arrays: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    continue
                key = info.filename[:-4]
                where = f"{path}:{key}"
                with archive.open(info) as member:
                    header = read_header(member, where)
                    check_budget(header, info.file_size - header.offset, where, limit - total)
                    total += header.nbytes
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError (encrypted)...
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {clip(str(exc), 160)}") from None
    return arrays
