"""Quantization recipes: the default estimator and per-tensor / per-op overrides, from YAML or JSON.

A rule that matches no activation tensor is an error, never a silent no-op: a typo in a recipe
must not ship a model calibrated differently from what its author believes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeq.artifacts import SCHEMA_VERSION, Artifact, Estimator, IOType
from edgeq.errors import InputError


@dataclass(frozen=True)
class Override(Artifact):
    """Use ``method`` for tensors whose name matches ``tensors`` and/or whose producing op is ``ops``."""

    kind: ClassVar[str] = "override"
    method: Estimator
    tensors: str | None = None  # fnmatch pattern on the tensor name
    ops: str | None = None  # op type that computes the tensor (SOFTMAX, ADD, INPUT, ...)
    percentile: float | None = None

    def matches(self, name: str, producer: str) -> bool:
        return (self.tensors is None or fnmatch.fnmatchcase(name, self.tensors)) and (
            self.ops is None or producer.upper() == self.ops.upper())

    def describe(self) -> str:
        parts = [f"tensors={self.tensors!r}" if self.tensors else "", f"ops={self.ops!r}" if self.ops else ""]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class QuantRecipe(Artifact):
    kind: ClassVar[str] = "quant_recipe"
    method: Estimator = Estimator.AUTO
    percentile: float = 99.99
    auto_thresholds: tuple[float, float] = (3.0, 10.0)
    io: IOType = IOType.INT8
    per_tensor: bool = False  # per-tensor weights everywhere
    per_tensor_dense: bool = False  # per-tensor weights for FULLY_CONNECTED only
    allow_float_ops: bool = False
    overrides: tuple[Override, ...] = ()
    # One calibration sample may not set a range alone (edgeq.calib.estimators.SampleGuard); False keeps raw ranges.
    sample_guard: bool = True
    sample_guard_factor: float = 10.0  # trim a sample whose max|x| is at least this many times every other's
    sample_guard_follow: float = 3.0  # ... and such a sample wherever it stretches a range this many times

    def __post_init__(self) -> None:
        if not 50.0 < self.percentile < 100.0:
            raise InputError(f"percentile must be in (50, 100), got {self.percentile}")
        low, high = self.auto_thresholds
        if not 1.0 <= low <= high:
            raise InputError(f"auto thresholds must satisfy 1 <= low <= high, got {self.auto_thresholds}")
        if not 1.0 < self.sample_guard_follow <= self.sample_guard_factor < float("inf"):
            raise InputError("sample guard factors must satisfy 1 < sample_guard_follow <= sample_guard_factor, got "
                             f"{self.sample_guard_follow} and {self.sample_guard_factor}")
        for rule in self.overrides:
            if rule.tensors is None and rule.ops is None:
                raise InputError("a recipe override needs 'tensors' or 'ops' to say what it applies to")
            if Estimator(rule.method) is Estimator.SEARCH:
                raise InputError("a recipe override picks one estimator for its tensors; 'search' is a method for the "
                                 "whole model")
            if rule.percentile is not None and not 50.0 < rule.percentile < 100.0:
                raise InputError(f"override percentile must be in (50, 100), got {rule.percentile}")

    def with_updates(self, **changes: Any) -> QuantRecipe:
        """A copy with the given fields replaced (None values are ignored: flag not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _strict(document: dict[str, Any], cls: type[Artifact], where: str) -> dict[str, Any]:
    allowed = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return {"kind": cls.kind, "schema_version": SCHEMA_VERSION, **document}


def recipe_from_dict(document: Any, where: str = "recipe") -> QuantRecipe:
    if not isinstance(document, dict):
        raise InputError(f"{where} must be a mapping of settings")
    body = dict(document)
    rules = body.pop("overrides", [])
    if not isinstance(rules, list):
        raise InputError(f"{where}: 'overrides' must be a list")
    overrides = [Override.from_dict(_strict(r if isinstance(r, dict) else {"?": r}, Override,
                                            f"{where} override #{i + 1}")) for i, r in enumerate(rules)]
    recipe = QuantRecipe.from_dict(_strict(body, QuantRecipe, where))
    return dataclasses.replace(recipe, overrides=tuple(overrides))


def load_recipe(path: str | Path) -> QuantRecipe:
    """Read a recipe from ``.yaml``/``.yml`` or ``.json``."""
    from edgeq.configfile import parse_json, parse_yaml, read_config_text

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such recipe file: {path}")
    text = read_config_text(path, "recipe")
    where = f"recipe {path}"
    document = parse_yaml(text, where) if path.suffix.lower() in (".yaml", ".yml") else parse_json(text, where)
    return recipe_from_dict(document or {}, str(path))
