"""The JSON document of a typed result: field order is key order, and reading it back is strict.

A result is a frozen, keyword-only dataclass whose fields are the document's keys in order. Field
metadata says what the plain field rule cannot:

- ``OMIT_NONE`` / ``OMIT_EMPTY``: the key is left out of the document for that value (a key some
  documents have and others lack, such as a layer's ``subgraph`` or a build's ``coverage``);
- ``FLATTEN``: a nested result whose keys stand at this level (a build report holds the validation
  report's keys beside its own).

Encoding writes non-finite floats as ``null``, as report.json always did (JSON has no Infinity); a float
field that can be non-finite is therefore typed ``float | None``. Decoding reuses
:func:`edgeq.artifacts._decode` (types, enums, missing fields), then refuses anything the types cannot
say (an unknown key, a value that would read back differently), so a document round-trips exactly or
is an :class:`~edgeq.errors.InputError` naming where.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from edgeq.artifacts import Artifact, _decode
from edgeq.errors import InputError

D = TypeVar("D", bound="Document")

# A number as the user gave it: a YAML limit of 1 stays 1 in report.json, 1.0 stays 1.0 (decoding tries
# int first, so neither is rewritten into the other).
Number = int | float
Interval = tuple[float, float]  # [lo, hi]

_OMIT = "edgeq.results.omit"
_FLATTEN = "edgeq.results.flatten"

# Field metadata, as in ``x: int | None = field(default=None, metadata=OMIT_NONE)``:
OMIT_NONE: Mapping[str, Any] = {_OMIT: lambda value: value is None}  # None: the key is left out
OMIT_EMPTY: Mapping[str, Any] = {_OMIT: lambda value: not value}  # 0, () or {}: the key is left out
FLATTEN: Mapping[str, Any] = {_FLATTEN: True}  # a nested result whose keys stand at this level, in its order


def encode(value: Any) -> Any:
    """JSON-ready data: results by field, artifacts by their own ``to_dict``, enums by value, non-finite
    floats as None (numpy scalars and arrays as plain numbers and lists)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, Artifact):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        document: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if _OMIT in f.metadata and f.metadata[_OMIT](item):
                continue
            if f.metadata.get(_FLATTEN):
                document.update(encode(item))
            else:
                document[f.name] = encode(item)
        return document
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def top_level(result: Any) -> dict[str, Any]:
    """The values a result's document holds at its top level, by key (flattened results expanded)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if f.metadata.get(_FLATTEN):
            values.update(top_level(value))
        else:
            values[f.name] = value
    return values


class Document:
    """Mixin for the typed results: ``to_document`` / ``from_document``."""

    def to_document(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_document(cls: type[D], data: Any) -> D:
        """The result ``data`` holds; InputError naming the place when it is not exactly one."""
        where = cls.__name__
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object, got {type(data).__name__}")
        kind = getattr(cls, "ENVELOPE_KIND", None)
        if kind is not None:  # a document edgeq wrote through edgeq.envelope: read without it, refuse a newer one
            from edgeq.envelope import unwrap

            try:
                data = unwrap(data, kind)
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
        decoded = _decode(cls, _nest(cls, data), where)
        given, kept = encode(data), decoded.to_document()
        if given != kept:
            raise InputError(f"{where}{_difference(given, kept)}")
        return typing.cast(D, decoded)


def _keys(cls: type) -> list[str]:
    """The top-level keys of ``cls``'s document."""
    hints = typing.get_type_hints(cls)
    return [key for f in dataclasses.fields(cls)
            for key in (_keys(hints[f.name]) if f.metadata.get(_FLATTEN) else [f.name])]


def _nest(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of each flattened field gathered under that field's name, as _decode reads it."""
    hints = typing.get_type_hints(cls)
    nested = dict(data)
    for f in dataclasses.fields(cls):
        if f.metadata.get(_FLATTEN):
            inner = hints[f.name]
            nested[f.name] = _nest(inner, {key: nested.pop(key) for key in _keys(inner) if key in nested})
    return nested


def _difference(given: Any, kept: Any, path: str = "") -> str:
    """Where the document and its reading differ first: ``.methods[0]: unexpected key 'x'``."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key in given:
            if key not in kept:
                return f"{path}: unexpected key {key!r}"
            if given[key] != kept[key]:
                return _difference(given[key], kept[key], f"{path}.{key}")
        missing = next(key for key in kept if key not in given)
        return f"{path}: missing key {missing!r}"
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        index = next(i for i, (a, b) in enumerate(zip(given, kept, strict=True)) if a != b)
        return _difference(given[index], kept[index], f"{path}[{index}]")
    return f"{path}: {_shown(given)} does not read back as itself (it reads as {_shown(kept)})"


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
