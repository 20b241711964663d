"""report.json's ``provenance``: what made the report, from which inputs, so a figure can be traced back.

The envelope (edgeq.envelope) already says which edgeq wrote the file; the provenance repeats the version and
the schema inside the typed document because the page is rendered from the document alone, and adds the
command's settings (a build's recipe, validate's options) and a fingerprint of every input file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeq.results.document import OMIT_NONE, Document


@dataclass(frozen=True, kw_only=True)
class InputFingerprint(Document):
    """One input of the command and the sha256 of the file that holds it."""

    role: str  # model, recipe, calibration set, evaluation set, int8 model
    source: str  # as the user gave it (a path, zoo:cnn, digits:train)
    path: str | None = field(default=None, metadata=OMIT_NONE)  # the file hashed (a set folder: its manifest)
    sha256: str | None  # None: no file holds it (a bundled data set is generated in memory)
    bytes: int | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class Provenance(Document):
    edgeq_version: str
    schema_version: int  # of the edgeq.report document
    command: str  # validate or build
    settings: dict[str, Any]  # build: the recipe as written; validate: the command's options
    inputs: tuple[InputFingerprint, ...]
