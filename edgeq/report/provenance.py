"""Fill report.json's ``provenance``: edgeq's version, the command's settings and the sha256 of every input.

A set folder is fingerprinted by its ``manifest.jsonl`` (one line per sample, as datagen wrote it), a file by
its bytes, any other folder (an image folder, a SavedModel) by every file in it, by relative path and content.
A source that is not a path (``digits:train``, ``zoo:cnn``) has no file to hash: its sha256 is null rather
than a figure edgeq did not measure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq import __version__
from edgeq.envelope import SCHEMA_VERSIONS
from edgeq.results.provenance import InputFingerprint, Provenance

REPORT_KIND = "edgeq.report"
SET_FILES = ("manifest.jsonl", "datagen.json")  # what identifies a set folder, in order of preference


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _tree_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\0" + _sha256_file(file)[0].encode())
    return digest.hexdigest()


def fingerprint(role: str, source: str | Path, path: str | Path | None = None) -> InputFingerprint:
    """The fingerprint of one input: ``source`` as the user named it, ``path`` where it really is (default:
    ``source`` itself, when that is a path)."""
    where = Path(path if path is not None else source)
    if where.is_file():
        sha, size = _sha256_file(where)
        return InputFingerprint(role=role, source=str(source), path=str(where), sha256=sha, bytes=size)
    if where.is_dir():
        for name in SET_FILES:
            if (where / name).is_file():
                sha, size = _sha256_file(where / name)
                return InputFingerprint(role=role, source=str(source), path=str(where / name), sha256=sha, bytes=size)
        return InputFingerprint(role=role, source=str(source), path=str(where), sha256=_tree_sha256(where))
    return InputFingerprint(role=role, source=str(source), sha256=None)


def _plain(value: Any) -> Any:
    """Settings as JSON holds them: paths and other objects as text, functions (argparse handlers) left out."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def provenance(command: str, settings: Mapping[str, Any], inputs: list[InputFingerprint]) -> Provenance:
    return Provenance(edgeq_version=__version__, schema_version=SCHEMA_VERSIONS[REPORT_KIND], command=command,
                      settings=_plain(dict(settings)), inputs=tuple(inputs))
