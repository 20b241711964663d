"""The build recipe (YAML): what to quantize, with which data, for which targets, under which gates.

Unknown keys and bad values are one-line errors: a typo in a CI recipe must not silently drop a gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeq.artifacts import Estimator
from edgeq.errors import InputError
from edgeq.harness.budget import LatencyBudget
from edgeq.spec.rules import PROFILES


@dataclass(frozen=True)
class DataSpec:
    source: str
    conditions: str = "original"
    n: int = 256
    severity: int = 3
    seed: int = 0


@dataclass(frozen=True)
class BenchSpec:
    backends: tuple[str, ...] = ("xnnpack",)
    threads: tuple[int, ...] = (1,)
    runs: int = 50
    min_seconds: float = 0.5


@dataclass(frozen=True)
class Gates:
    max_drop_pp: float | None = None
    spec: tuple[str, ...] = ()  # targets whose check must pass
    max_p90_ms: dict[str, float] = field(default_factory=dict)  # backend -> budget (shorthand for `latency`)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> LatencyBudget fields
    coverage_threshold: float | None = None  # calibration must cover the evaluation set at this ratio


@dataclass(frozen=True)
class BuildRecipe:
    name: str
    model: str  # a path, or "zoo:NAME"
    calibration: DataSpec
    evaluation: DataSpec
    preprocess: str | None = None
    methods: tuple[Estimator, ...] = (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL,
                                      Estimator.AUTO)
    targets: tuple[str, ...] = ("generic", "xnnpack")
    bench: BenchSpec = field(default_factory=BenchSpec)
    gates: Gates = field(default_factory=Gates)
    base_dir: str = "."  # relative paths in the recipe resolve against the recipe's folder

    def latency_budgets(self) -> dict[str, LatencyBudget]:
        """backend -> budget; min_samples defaults to the bench's run count, so a short run cannot pass."""
        budgets = {backend: LatencyBudget(max_ms=float(ms), min_samples=self.bench.runs)
                   for backend, ms in (self.gates.max_p90_ms or {}).items()}
        for backend, spec in (self.gates.latency or {}).items():
            budgets[backend] = LatencyBudget.from_mapping({"min_samples": self.bench.runs, **spec},
                                                          f"gates.latency.{backend}")
        return budgets


def _section(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    converted = {}
    for f in fields(cls):
        if f.name not in value:
            continue
        v = value[f.name]
        if isinstance(v, list):
            v = tuple(v)
        converted[f.name] = v
    try:
        return cls(**converted)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def _check_number(value: Any, where: str, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise InputError(f"{where} must be a positive number, got {value!r}")


def load_build_recipe(path: str | Path) -> BuildRecipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such recipe: {path}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} must hold a mapping")
    top = {f.name for f in fields(BuildRecipe)} - {"base_dir"}
    unknown = sorted(set(document) - top)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(top))})")
    for key in ("name", "model", "calibration", "evaluation"):
        if key not in document:
            raise InputError(f"{path}: missing '{key}'")
    try:
        methods = tuple(Estimator(m) for m in document.get("methods", [e.value for e in BuildRecipe.methods]))
    except ValueError as exc:
        raise InputError(f"{path}: methods: {exc}") from None
    targets = tuple(document.get("targets", ("generic", "xnnpack")))
    gates = _section(Gates, document.get("gates", {}), f"{path}: gates")
    for target in (*targets, *gates.spec):
        if target not in PROFILES:
            raise InputError(f"{path}: unknown target {target!r} (choose from {', '.join(PROFILES)})")
    if gates.max_drop_pp is not None:
        _check_number(gates.max_drop_pp, f"{path}: gates.max_drop_pp", positive=False)
    for backend, budget in (gates.max_p90_ms or {}).items():
        _check_number(budget, f"{path}: gates.max_p90_ms.{backend}")
    for backend, spec in (gates.latency or {}).items():
        if not isinstance(spec, dict):
            raise InputError(f"{path}: gates.latency.{backend} must be a mapping (max_ms, percentile, ...)")
        LatencyBudget.from_mapping(spec, f"{path}: gates.latency.{backend}")
    both = sorted(set(gates.max_p90_ms or {}) & set(gates.latency or {}))
    if both:
        raise InputError(f"{path}: gates.max_p90_ms and gates.latency both set a budget for {', '.join(both)}")
    recipe = BuildRecipe(
        name=str(document["name"]), model=str(document["model"]),
        calibration=_section(DataSpec, document["calibration"], f"{path}: calibration"),
        evaluation=_section(DataSpec, document["evaluation"], f"{path}: evaluation"),
        preprocess=document.get("preprocess"), methods=methods, targets=targets,
        bench=_section(BenchSpec, document.get("bench", {}), f"{path}: bench"), gates=gates,
        base_dir=str(path.parent.resolve()))
    for spec, where in ((recipe.calibration, "calibration"), (recipe.evaluation, "evaluation")):
        if not isinstance(spec.n, int) or spec.n < 1:
            raise InputError(f"{path}: {where}.n must be a positive integer")
    return recipe
