"""Atomic file output: write to a temporary file beside the target, then rename over it.

A reader (or a CI job killed mid-write) never sees a half-written artifact. Only a regular file is
ever replaced: a symlink, a device node, a FIFO or a folder at the target is refused, so a write can
neither clobber what a link points at nor replace ``/dev/stdout``. Disk-full and permission errors
while writing are the user's environment, reported in one line (exit 2), not edgeq bugs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it onto ``target`` only on success."""
    target = Path(target)
    parent = target.parent
    refuse_non_regular(target)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
        refuse_non_regular(target)  # checked again: something may have appeared while we wrote
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise InputError(f"cannot write to {target}: {exc.strerror}") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR,
                          errno.ENOTDIR, errno.EFBIG, errno.EIO, errno.ENAMETOOLONG, errno.EXDEV})


def refuse_non_regular(target: Path) -> None:
    """Raise InputError unless ``target`` is absent or a regular file (not a symlink to one)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot write to {target}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kind = ("a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a device, FIFO or socket")
    raise InputError(f"cannot write to {target}: it is {kind}; edgeq replaces only regular files")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def copy_atomic(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)
