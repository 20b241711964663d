"""JSON Schemas (draft 2020-12) of every document edgeq writes and of the build recipe, generated from the types.

The schemas are derived from what already defines each layout: the typed results of report.json
(edgeq.results), the artifacts (edgeq.artifacts), each verb's ``--json`` body (edgeq.documents), the
envelope (edgeq.envelope) and the build recipe's dataclasses (edgeq.build.recipe). A field added to one of
those appears in the schema on the next ``python -m edgeq.schemas``; a test compares docs/schemas/ with
what this module generates, so the published files cannot drift from the code.

Strictness differs on purpose. Documents edgeq writes are *open*: an object may hold keys its schema
does not list, because adding a field is not a schema version bump (edgeq.envelope) and a validator of
an older schema must keep accepting newer documents of the same version. The recipe is *closed*
(``additionalProperties: false``): edgeq refuses an unknown recipe key, so an editor should flag the
typo as you type.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: A non-finite float inside an artifact (a sidecar, a bench result) is written as text, JSON having no Infinity
#: or NaN; a plain value re-encoded by edgeq.results.document is null instead.
NON_FINITE = ["inf", "-inf", "nan", None]
RECIPE = "edgeq.recipe"  # the build recipe's schema file: docs/schemas/edgeq.recipe.schema.json
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def _doc(cls: type) -> str | None:
    """The first paragraph of a class's own docstring (a dataclass's generated signature is not one)."""
    text = cls.__doc__
    if not text or text.startswith(f"{cls.__name__}("):
        return None
    return " ".join(text.strip().split("\n\n")[0].split())


class _Builder:
    """Turns Python types into schemas, each named class once under ``$defs``.

    ``closed`` objects refuse unknown keys; an ``input`` schema (the recipe) lists what a person writes:
    fields with a default are optional and artifacts carry no ``kind``/``schema_version``.
    """

    def __init__(self, *, closed: bool = False, input: bool = False,
                 fields: Mapping[tuple[type, str], dict[str, Any]] | None = None,
                 names: Mapping[str, Any] | None = None) -> None:
        self.closed, self.input = closed, input
        self.localns = dict(names or {})  # names a module imports only for type checking
        self.defs: dict[str, dict[str, Any]] = {}
        self.names: dict[type, str] = {}
        self.fields = dict(fields or {})  # (class, field) -> the schema to use instead of the type's

    def of(self, tp: Any, *, plain: bool = False) -> dict[str, Any]:
        """The schema of ``tp``; ``plain``: inside an artifact, whose non-finite floats are written as text."""
        if tp is Any:
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (Union, types.UnionType):
            return _union([self.of(a, plain=plain) for a in args])
        if origin is Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin in (list, tuple):
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                return {"type": "array", "prefixItems": [self.of(a, plain=plain) for a in args],
                        "minItems": len(args), "maxItems": len(args)}
            return {"type": "array", "items": self.of(args[0] if args else Any, plain=plain)}
        if origin is dict:
            value = self.of(args[1], plain=plain) if args else {}
            return {"type": "object", **({"additionalProperties": value} if value else {})}
        if isinstance(tp, type):
            return self._class(tp, plain)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _class(self, tp: type, plain: bool) -> dict[str, Any]:
        if issubclass(tp, bool):
            return {"type": "boolean"}
        if issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            if plain and not self.input:
                return {"anyOf": [{"type": "number"}, {"enum": NON_FINITE}]}
            return {"type": "number"}
        if issubclass(tp, str | Path):
            return {"type": "string"}
        if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            return self._ref(tp)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _ref(self, cls: type) -> dict[str, Any]:
        if cls not in self.names:
            name = cls.__name__ if cls.__name__ not in self.defs else f"{cls.__module__}.{cls.__name__}"
            self.names[cls] = name
            self.defs[name] = {}  # reserved first: a type may refer to itself
            self.defs[name] = self.object(cls)
        return {"$ref": f"#/$defs/{self.names[cls]}"}

    def object(self, cls: type) -> dict[str, Any]:
        properties, required = self._members(cls)
        schema: dict[str, Any] = {"type": "object"}
        if (text := _doc(cls)) is not None:
            schema["description"] = text
        schema["properties"] = properties
        if required:
            schema["required"] = required
        if self.closed:
            schema["additionalProperties"] = False
        return schema

    def _members(self, cls: type) -> tuple[dict[str, Any], list[str]]:
        """The properties and required keys of a dataclass or TypedDict, flattened fields expanded."""
        from edgeq.artifacts import Artifact
        from edgeq.results.document import _FLATTEN, _OMIT, Document

        hints = typing.get_type_hints(cls, localns=self.localns)
        if typing.is_typeddict(cls):
            return ({key: self.of(hint) for key, hint in hints.items()},
                    [key for key in hints if key in cls.__required_keys__])  # type: ignore[attr-defined]
        properties: dict[str, Any] = {}
        required: list[str] = []
        document = issubclass(cls, Document)
        if issubclass(cls, Artifact) and not self.input:
            properties.update({"kind": {"const": cls.kind}, "schema_version": {"type": "integer"}})
            required += ["kind", "schema_version"]
        for f in dataclasses.fields(cls):
            if f.metadata.get(_FLATTEN):
                inner_properties, inner_required = self._members(hints[f.name])
                properties.update(inner_properties)
                required += inner_required
                continue
            override = self.fields.get((cls, f.name))
            if override is not None and not override:
                continue  # left out of this schema
            properties[f.name] = override or self.of(hints[f.name], plain=not document)
            if self.input:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            elif _OMIT not in f.metadata:
                required.append(f.name)
        return properties, required


def _union(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``anyOf`` the parts, or one ``type`` list when every part is a bare type."""
    if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
        return {"type": list(dict.fromkeys(p["type"] for p in parts))}
    flat: list[dict[str, Any]] = []
    for part in parts:
        flat.extend(part["anyOf"] if set(part) == {"anyOf"} else [part])
    return {"anyOf": flat}


def envelope_schema(kind: str) -> dict[str, Any]:
    """The keys edgeq.envelope puts first in every document of ``kind``."""
    from edgeq.envelope import SCHEMA_VERSIONS

    return {
        "type": "object",
        "properties": {
            "kind": {"const": kind},
            "schema_version": {"const": SCHEMA_VERSIONS[kind]},
            "edgeq_version": {"type": "string"},
            "runtime": {
                "type": "object",
                "properties": {"python": {"type": "string"}, "platform": {"type": "string"},
                               "packages": {"type": "object", "additionalProperties": {"type": "string"}}},
                "required": ["python", "platform", "packages"],
            },
        },
        "required": ["kind", "schema_version", "edgeq_version", "runtime"],
    }


def _body(kind: str) -> Any:
    from edgeq.documents import DOCUMENTS
    from edgeq.results.build import BuildReport
    from edgeq.results.validation import ValidationRun

    return BuildReport | ValidationRun if kind == "edgeq.report" else DOCUMENTS[kind]


def _titles() -> dict[str, str]:
    return {"edgeq.report": "report.json of edgeq validate and edgeq build",
            RECIPE: "edgeq build recipe (YAML)"}


def document_schema(kind: str) -> dict[str, Any]:
    """The schema of a ``kind`` document: the envelope and the body's own keys (open objects)."""
    builder = _Builder()
    body = builder.of(_body(kind))
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "title": _titles().get(kind, f"edgeq {kind.removeprefix('edgeq.')} --json"),
        "description": f"A {kind} document (docs/json.md). Objects may hold keys not listed here: adding a key is "
                       "not a schema_version bump.",
        "allOf": [envelope_schema(kind), body],
    }
    if builder.defs:
        schema["$defs"] = dict(sorted(builder.defs.items()))
    return schema


def recipe_schema() -> dict[str, Any]:
    """The build recipe as a person writes it (edgeq.build.recipe.load_build_recipe reads it): closed objects,
    so an editor flags an unknown key as edgeq would."""
    from edgeq.artifacts import Estimator
    from edgeq.build.recipe import BenchSpec, BuildRecipe, DataSpec, Gates
    from edgeq.harness.budget import LatencyBudget
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.spec.rules import PROFILES
    from edgeq.validate.outputs import FidelityGates
    from edgeq.validate.tasks import TASKS, OutputTask

    builder = _Builder(closed=True, input=True, names={"OutputTask": OutputTask, "FidelityGates": FidelityGates})
    latency = builder.of(LatencyBudget)
    task = {"type": "object", "description": "an output task (docs/tasks.md): the output by name or index, the "
                                             "task, then the task's own keys",
            "properties": {"output": {"type": ["string", "integer"]}, "task": {"enum": list(TASKS)}},
            "required": ["output", "task"]}
    builder.fields.update({
        (BuildRecipe, "base_dir"): {}, (BuildRecipe, "path"): {},
        (BuildRecipe, "name"): {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        (BuildRecipe, "model"): {"type": "string", "minLength": 1, "description": "a path (relative to the recipe) "
                                                                                  "or zoo:NAME"},
        (BuildRecipe, "methods"): {"type": "array", "minItems": 1, "items": builder.of(Estimator)},
        (BuildRecipe, "targets"): {"type": "array", "items": {"enum": list(PROFILES)}},
        (BuildRecipe, "input_shape"): {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}},
        (BuildRecipe, "tasks"): {"type": "array", "minItems": 1, "items": task},
        (BuildRecipe, "recover"): {"type": "array", "items": {"type": "string"},
                                   "description": "rungs: search, equalize, bias_correction, int16:N"},
        (BuildRecipe, "quantization"): builder.of(QuantRecipe),
        (QuantRecipe, "method"): {},  # the build converts with every method in 'methods'
        (DataSpec, "n"): {"type": "integer", "minimum": 1}, (DataSpec, "severity"): {"enum": [1, 2, 3, 4, 5]},
        (BenchSpec, "backends"): {"type": "array", "minItems": 1, "items": {"type": "string"}},
        (BenchSpec, "threads"): {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1,
                                                                           "maximum": 256}},
        (Gates, "spec"): {"type": "array", "items": {"enum": list(PROFILES)}},
        (Gates, "latency"): {"type": "object", "additionalProperties": latency},
        (Gates, "max_p90_ms"): {"type": "object", "additionalProperties": {"type": "number", "exclusiveMinimum": 0}},
        (Gates, "min_output_sqnr_db"): {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
    })
    root = builder.object(BuildRecipe)
    return {"$schema": DIALECT, "title": _titles()[RECIPE],
            "description": "What to quantize, with which data and settings, for which targets, under which gates "
                           "(edgeq build RECIPE -o DIR; docs/examples/*.yaml).",
            **{k: v for k, v in root.items() if k != "description"}, "$defs": dict(sorted(builder.defs.items()))}


def schemas() -> dict[str, dict[str, Any]]:
    """Every published schema by file stem: one per document kind, and the recipe's."""
    from edgeq.envelope import SCHEMA_VERSIONS

    found = {kind: document_schema(kind) for kind in sorted(SCHEMA_VERSIONS)}
    found[RECIPE] = recipe_schema()
    return found


def schema_text(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path = DEFAULT_DIR) -> list[Path]:
    """(Re)write ``folder/<kind>.schema.json`` for every schema, removing ones no longer generated."""
    from edgeq.files import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    generated = schemas()
    for stale in folder.glob("*.schema.json"):
        if stale.name.removesuffix(".schema.json") not in generated:
            stale.unlink()
    return [write_text_atomic(folder / f"{name}.schema.json", schema_text(schema))
            for name, schema in generated.items()]


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeq.schemas [FOLDER]``: regenerate the published schemas (default docs/schemas)."""
    args = sys.argv[1:] if argv is None else argv
    for path in write_schemas(Path(args[0]) if args else DEFAULT_DIR):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
