"""Where a set may be written, and which existing folder ``--force`` may replace.

Rules (checked on paths resolved through symlinks, before any work):

- the output may not be a source or other input, lie inside one, or contain one;
- ``--force`` replaces only a folder that edgeq wrote: it carries the :data:`OUTPUT_MARKER` file
  (written into every new set) or, for sets from before the marker, a ``datagen.json`` of an edgeq
  calibration set — and in both cases nothing but a set's own files. An empty folder may be replaced
  too (nothing is lost). Never the filesystem root, the home folder, the current folder or an ancestor
  of either, a symbolic link, or a file;
- the old set is renamed aside, the new one renamed into place, and only then are the old set's own
  files removed, one by one: a file that is not a set file is never deleted.

(``edgeq.files`` is expected to grow a shared helper for this; until then datagen keeps its own.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from datagen.limits import quote
from edgeq.errors import InputError, UsageError

#: Written into every set folder edgeq creates: what makes a folder safe for ``--force`` to replace.
OUTPUT_MARKER = ".edgeq-output"
MARKER_DOCUMENT = {"tool": "edgeq", "verb": "datagen", "format": "edgeq-calibration-set"}
MARKER_TEXT = json.dumps(MARKER_DOCUMENT, sort_keys=True) + "\n"
SET_FILES = frozenset({OUTPUT_MARKER, "datagen.json", "manifest.jsonl", "preview.png"})
SHARD_RE = re.compile(r"^images-\d{5}\.npz$")
_SET_FORMAT = "edgeq-calibration-set"


def is_set_file(name: str) -> bool:
    return name in SET_FILES or bool(SHARD_RE.match(name))


def resolve(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` made absolute with every existing symlink followed."""
    try:
        return Path(os.path.abspath(path)).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop, a vanished cwd
        raise UsageError(f"cannot resolve the {what} path {quote(str(path))}: {exc}") from None


def check_overlap(output: Path, inputs: Sequence[tuple[str, Path]]) -> None:
    """Refuse an output that is, lies inside or contains one of the (resolved) ``inputs``."""
    for what, path in inputs:
        if output == path:
            raise UsageError(f"the output {output} is the {what} itself; choose another output folder")
        if output.is_relative_to(path):
            raise UsageError(f"the output {output} lies inside the {what} {path}; choose a folder outside it")
        if path.is_relative_to(output):
            raise UsageError(f"the {what} {path} lies inside the output {output}; choose another output folder")


def _protected(output: Path) -> str | None:
    """Why ``output`` (resolved) may never be replaced, or None."""
    if output == Path(output.anchor):
        return "it is the filesystem root"
    places = []
    with contextlib.suppress(OSError, RuntimeError, KeyError):
        places.append(("your home folder", Path.home().resolve()))
    with contextlib.suppress(OSError):
        places.append(("the current folder", Path.cwd().resolve()))
    for name, place in places:
        if output == place:
            return f"it is {name}"
        if place.is_relative_to(output):
            return f"it contains {name}"
    return None


def _marker_ok(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            document = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("tool") == "edgeq"


def _legacy_set(path: Path) -> bool:
    """A ``datagen.json`` of an edgeq calibration set (sets written before the marker existed)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64 << 20)
        document = json.loads(head)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("format") == _SET_FORMAT


def replace_problem(output: Path) -> str | None:
    """None when ``--force`` may replace ``output`` (it does not exist, or is an edgeq set), else why not."""
    if not os.path.lexists(output):
        return None
    if output.is_symlink():
        return "it is a symbolic link"
    if not output.is_dir():
        return "it is a file, not a calibration set folder"
    protected = _protected(output.resolve())
    if protected:
        return protected
    try:
        entries = list(os.scandir(output))
    except OSError as exc:
        return f"it cannot be listed ({exc.strerror or exc})"
    if not entries:
        return None
    foreign = sorted(e.name for e in entries if not (is_set_file(e.name) and e.is_file(follow_symlinks=False)))
    if foreign:
        shown = ", ".join(quote(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"it holds files edgeq did not write ({shown})"
    names = {e.name for e in entries}
    if OUTPUT_MARKER in names and _marker_ok(output / OUTPUT_MARKER):
        return None
    if "datagen.json" in names and _legacy_set(output / "datagen.json"):
        return None
    return f"it is not an edgeq calibration set (no {OUTPUT_MARKER} marker or datagen.json)"


def check_replaceable(output: Path) -> None:
    problem = replace_problem(output)
    if problem:
        raise UsageError(f"refusing to replace {output} with --force: {problem}")


@contextlib.contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``output``; on any failure it, and parents created for it, are removed."""
    created: list[Path] = []
    try:
        missing = []
        parent = output.parent
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        _remove_created(created)
        raise InputError(f"cannot write to {output.parent}: {exc.strerror or exc}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty


def install(staging: Path, output: Path, force: bool) -> bool:
    """Move the finished ``staging`` folder to ``output``. False when ``output`` appeared meanwhile (not forced).

    With ``force`` an existing edgeq set is renamed aside first (checked again here), the new set renamed
    into place, then the old set's own files are deleted one by one.
    """
    if not (force and os.path.lexists(output)):
        try:
            os.replace(staging, output)
            return True
        except OSError:
            if os.path.lexists(output):
                return False
            raise
    check_replaceable(output)
    aside = Path(tempfile.mkdtemp(prefix=f".{output.name}.replaced-", dir=output.parent))
    old = aside / "set"
    os.rename(output, old)
    try:
        os.replace(staging, output)
    except BaseException:
        os.rename(old, output)
        aside.rmdir()
        raise
    for entry in os.scandir(old):
        if is_set_file(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    with contextlib.suppress(OSError):
        old.rmdir()
        aside.rmdir()
    return True
