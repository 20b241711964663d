"""One envelope for every JSON document edgeq writes: what it is, which schema, and what made it.

A CI script reading ``edgeq <verb> --json`` or a build's ``report.json`` should not have to guess which
edgeq wrote it or whether its layout changed. Every document therefore starts with the same keys:

- ``kind``: the document's type (``edgeq.check``, ``edgeq.report``, ...); its JSON Schema is
  ``docs/schemas/<kind>.schema.json``;
- ``schema_version``: bumped when a field is renamed, removed or changes meaning (adding a field is not a
  bump); readers refuse a version they do not know instead of misreading it;
- ``edgeq_version`` and ``runtime``: edgeq, Python, the platform and the versions of the packages that
  decide the figures (from package metadata: nothing is imported here).

The envelope's keys sit beside the document's own keys rather than wrapping them, so existing readers of
a field keep working; a document that already uses one of these keys is a bug and raises.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from typing import Any

from edgeq import __version__
from edgeq.versions import package_versions

#: The packages whose versions decide what a document's figures mean.
RUNTIME_PACKAGES = ("ai-edge-litert", "tensorflow", "numpy", "ai-edge-quantizer", "tflite-micro")

#: The current schema version of each kind of document (see the module docstring for when to bump).
SCHEMA_VERSIONS: dict[str, int] = {
    "edgeq.bench": 1,
    "edgeq.build": 1,
    "edgeq.calibrate": 1,
    "edgeq.check": 1,
    "edgeq.convert": 1,
    "edgeq.coverage": 1,
    "edgeq.datagen": 1,
    "edgeq.device-test": 1,
    "edgeq.eval": 1,
    "edgeq.instrument": 1,
    "edgeq.report": 1,
    "edgeq.sensitivity": 1,
    "edgeq.validate": 1,
    "edgeq.zoo": 1,
}

ENVELOPE_KEYS = ("kind", "schema_version", "edgeq_version", "runtime")


def runtime_versions() -> dict[str, Any]:
    """Python, the machine and the runtime packages, as recorded in every document."""
    return {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": package_versions(RUNTIME_PACKAGES),
    }


def envelope(kind: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with the envelope's keys first. ``kind`` must be registered in :data:`SCHEMA_VERSIONS`."""
    if kind not in SCHEMA_VERSIONS:
        raise KeyError(f"unregistered document kind {kind!r}; add it to edgeq.envelope.SCHEMA_VERSIONS")
    clash = sorted(set(ENVELOPE_KEYS) & set(document))
    if clash:
        raise ValueError(f"a {kind} document already has the envelope's key(s) {', '.join(clash)}")
    return {
        "kind": kind,
        "schema_version": SCHEMA_VERSIONS[kind],
        "edgeq_version": __version__,
        "runtime": runtime_versions(),
        **document,
    }


def unwrap(document: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The document without its envelope, after checking it is a ``kind`` this edgeq can read.

    Documents written before the envelope existed (no ``kind``) are accepted as they are: they are version 0
    of the same layout. Raises ValueError with a one-line reason otherwise.
    """
    found = document.get("kind")
    if found is None:
        return dict(document)
    if found != kind:
        raise ValueError(f"expected a {kind} document, found {found}")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSIONS[kind]:
        raise ValueError(f"{kind} schema version {version!r} is newer than this edgeq reads "
                         f"({SCHEMA_VERSIONS[kind]}); upgrade edgeq")
    return {key: value for key, value in document.items() if key not in ENVELOPE_KEYS}
