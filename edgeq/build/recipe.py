"""The build recipe (YAML): what to quantize, with which data and conversion settings, for which targets,
how to judge each model output, under which gates.

Unknown keys and bad values are one-line errors: a typo in a CI recipe must not silently drop a gate.
The conversion settings (``quantization``) are a convert recipe, read by the same code as
``edgeq convert --recipe`` (edgeq.quant_recipe.recipe_from_dict); the output ``tasks`` are the mappings of
``edgeq validate --tasks FILE`` (edgeq.validate.declarations), and the fidelity gates are validate's limits
(edgeq.validate.outputs.FidelityGates).
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.artifacts import Estimator
from edgeq.calib.estimators import METHODS
from edgeq.configfile import bounded_repr, load_config
from edgeq.errors import InputError, UsageError
from edgeq.harness.budget import LatencyBudget
from edgeq.quant_recipe import QuantRecipe, recipe_from_dict
from edgeq.spec.rules import PROFILES
from edgeq.validate.declarations import task_declarations

if TYPE_CHECKING:
    from edgeq.validate.outputs import FidelityGates
    from edgeq.validate.tasks import OutputTask

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SAMPLES = 100_000  # per generated set: far beyond any calibration need, far below a disk-filling mistake


@dataclass(frozen=True)
class DataSpec:
    """Calibration or evaluation data. With ``conditions`` (given, or for bundled data by default), datagen
    generates a set from ``source``; without, a set folder from ``edgeq datagen``, a ``.npy``/``.npz`` or an
    image folder is used as it is (load_build_recipe decides, and fills the generation defaults)."""

    source: str
    conditions: str | None = None  # None: ``source`` is used as is, no generation
    n: int | None = None
    severity: int | None = None
    seed: int | None = None

    @property
    def generated(self) -> bool:
        return self.conditions is not None


GENERATION_DEFAULTS = {"conditions": "original", "n": 256, "severity": 3, "seed": 0}


@dataclass(frozen=True)
class BenchSpec:
    backends: tuple[str, ...] = ("xnnpack",)
    threads: tuple[int, ...] = (1,)
    runs: int = 50
    min_seconds: float = 0.5


@dataclass(frozen=True)
class MaxRegression:
    """How much worse than the ``--baseline`` build the published model may be (None: that figure is not gated).

    Accuracy is the published method's top-1 on the whole evaluation set, fidelity each of its outputs' SQNR
    against FP32, size the INT8 file, latency each INT8 configuration's p50 (judged only when both builds were
    benchmarked on the same environment; edgeq.build.baseline)."""

    accuracy_pp: float | None = None  # top-1 may drop by at most this many points
    sqnr_db: float | None = None  # an output's SQNR may drop by at most this many dB
    size_pct: float | None = None  # the INT8 file may grow by at most this many percent
    latency_pct: float | None = None  # an INT8 p50 may grow by at most this many percent


@dataclass(frozen=True)
class Gates:
    max_drop_pp: float | None = None
    spec: tuple[str, ...] = ()  # targets whose check must pass
    max_p90_ms: dict[str, float] = field(default_factory=dict)  # backend -> budget (shorthand for `latency`)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> LatencyBudget fields
    coverage_threshold: float | None = None  # calibration must cover the evaluation set at this ratio
    # fidelity limits, judged by validate on the held-out half (edgeq.validate.outputs.FidelityGates)
    min_output_sqnr_db: dict[str, float] = field(default_factory=dict)  # output (name or index) -> dB
    min_agreement: float | None = None  # share 0..1, every classification output
    max_landmark_error: float | None = None  # normalized mean error, every landmarks output
    min_mask_iou: float | None = None  # mean IoU 0..1, every segmentation output
    min_detection_recall: float | None = None  # share 0..1, every detection output
    max_regression: MaxRegression | None = None  # against the --baseline build

    @property
    def fidelity(self) -> FidelityGates:
        """The fidelity limits as validate takes them (false when none is set)."""
        from edgeq.validate.outputs import FidelityGates

        return FidelityGates(min_output_sqnr_db=dict(self.min_output_sqnr_db), min_agreement=self.min_agreement,
                             max_landmark_error=self.max_landmark_error, min_mask_iou=self.min_mask_iou,
                             min_detection_recall=self.min_detection_recall)


# share limits lie in [0, 1]; the landmark error is at least 0; an SQNR limit is any finite number of dB
SHARE_LIMITS = ("min_agreement", "min_mask_iou", "min_detection_recall")


@dataclass(frozen=True)
class BuildRecipe:
    name: str
    model: str  # a path, or "zoo:NAME"
    calibration: DataSpec
    evaluation: DataSpec
    preprocess: str | None = None
    methods: tuple[Estimator, ...] = METHODS
    targets: tuple[str, ...] = ("generic", "xnnpack")
    bench: BenchSpec = field(default_factory=BenchSpec)
    gates: Gates = field(default_factory=Gates)
    input_shape: tuple[int, ...] | None = None  # static input shape without the batch, as --input-shape
    quantization: QuantRecipe | None = None  # a convert recipe (method aside); None: not given, the defaults
    tasks: tuple[OutputTask, ...] = ()  # one per declared output (validate --tasks); (): validate's default
    recover: tuple[str, ...] = ()  # the recovery ladder's rungs (validate --recover), climbed when a gate fails
    base_dir: str = "."  # relative paths in the recipe resolve against the recipe's folder
    path: str = "recipe"  # the recipe file, for messages

    @property
    def quant_recipe(self) -> QuantRecipe:
        """The settings every method converts with (validate sets each method in turn)."""
        return self.quantization or QuantRecipe()

    def latency_budgets(self) -> dict[str, LatencyBudget]:
        """backend -> budget; min_samples defaults to the bench's run count, so a short run cannot pass."""
        budgets = {backend: LatencyBudget(max_ms=float(ms), min_samples=self.bench.runs)
                   for backend, ms in (self.gates.max_p90_ms or {}).items()}
        for backend, spec in (self.gates.latency or {}).items():
            budgets[backend] = LatencyBudget.from_mapping({"min_samples": self.bench.runs, **spec},
                                                          f"gates.latency.{backend}")
        return budgets


# The type each recipe field must have in YAML: checked before anything runs, so `methods: 5` or
# `threads: [0]` is a one-line error at load time, not a crash after datagen and validate.
_INT, _NUMBER, _TEXT = "an integer", "a number", "a string"


def _kind_ok(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, int)
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


FIELD_KINDS: dict[type, dict[str, tuple[str, bool]]] = {  # field -> (element kind, is a list)
    DataSpec: {"source": (_TEXT, False), "conditions": (_TEXT, False), "n": (_INT, False),
               "severity": (_INT, False), "seed": (_INT, False)},
    BenchSpec: {"backends": (_TEXT, True), "threads": (_INT, True), "runs": (_INT, False),
                "min_seconds": (_NUMBER, False)},
    MaxRegression: {key: (_NUMBER, False) for key in ("accuracy_pp", "sqnr_db", "size_pct", "latency_pct")},
    Gates: {"max_drop_pp": (_NUMBER, False), "spec": (_TEXT, True), "coverage_threshold": (_NUMBER, False),
            **{key: (_NUMBER, False) for key in (*SHARE_LIMITS, "max_landmark_error")}},
}


def _section(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(value) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = [f.name for f in fields(cls) if f.name not in value and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise InputError(f"{where}: missing '{missing[0]}'")
    kinds = FIELD_KINDS.get(cls, {})
    converted = {}
    for f in fields(cls):
        if f.name not in value:
            continue
        v = value[f.name]
        if f.name in kinds:
            kind, is_list = kinds[f.name]
            if v is None and kind == _NUMBER and not is_list:
                continue
            items = v if is_list else [v]
            if is_list and (not isinstance(v, list) or not v):
                raise InputError(f"{where}.{f.name} must be a non-empty list of {kind[kind.index(' ') + 1:]}s, "
                                 f"got {bounded_repr(v)}")
            if not all(_kind_ok(item, kind) for item in items):
                raise InputError(f"{where}.{f.name} must be {'a list of ' if is_list else ''}{kind}"
                                 f"{'s' if is_list else ''}, got {bounded_repr(v)}")
        if isinstance(v, list):
            v = tuple(v)
        converted[f.name] = v
    return cls(**converted)


def _check_number(value: Any, where: str, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            positive and value <= 0):
        raise InputError(f"{where} must be a {'positive' if positive else 'finite'} number, got {bounded_repr(value)}")


def _check_range(value: int | float, low: float, high: float, where: str) -> None:
    if not low <= value <= high:
        raise InputError(f"{where} must be between {low:g} and {high:g}, got {value}")


def _check_name(name: Any, where: str) -> str:
    """A recipe's name becomes file names under -o: a plain stem, never a path."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
        raise InputError(f"{where}: name must be a plain file stem (letters, digits, '.', '_', '-'; at most 64), "
                         f"got {bounded_repr(name)}")
    return name


def _ladder(value: Any, where: str) -> tuple[str, ...]:
    """The recover list, checked by the ladder's own parser (a typo fails at load, not after datagen)."""
    from edgeq.errors import UsageError
    from edgeq.validate.ladder import parse_ladder

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where} must be a list of rungs such as [search, equalize, bias_correction, int16:3], "
                         f"got {bounded_repr(value)}")
    try:
        return tuple(r.name for r in parse_ladder(value))
    except UsageError as exc:
        raise InputError(f"{where}: {exc}") from None


def load_build_recipe(path: str | Path) -> BuildRecipe:
    path = Path(path)
    document = load_config(path, "recipe")
    if not isinstance(document, dict):
        raise InputError(f"{path} must hold a mapping")
    top = {f.name for f in fields(BuildRecipe)} - {"base_dir", "path"}
    unknown = sorted(str(k) for k in set(document) - top)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(top))})")
    for key in ("name", "model", "calibration", "evaluation"):
        if key not in document:
            raise InputError(f"{path}: missing '{key}'")
    if not isinstance(document["model"], str) or not document["model"]:
        raise InputError(f"{path}: model must be a path or zoo:NAME, got {bounded_repr(document['model'])}")
    if document.get("preprocess") is not None and not isinstance(document["preprocess"], str):
        raise InputError(f"{path}: preprocess must be a string such as 'mean=127.5,std=127.5'")
    methods_given = document.get("methods", [e.value for e in BuildRecipe.methods])
    if not isinstance(methods_given, list) or not methods_given or not all(isinstance(m, str) for m in methods_given):
        raise InputError(f"{path}: methods must be a non-empty list of method names, got {bounded_repr(methods_given)}")
    try:
        methods = tuple(Estimator(m) for m in methods_given)
    except ValueError as exc:
        raise InputError(f"{path}: methods: {exc}") from None
    targets_given = document.get("targets", ["generic", "xnnpack"])
    if not isinstance(targets_given, list) or not all(isinstance(t, str) for t in targets_given):
        raise InputError(f"{path}: targets must be a list of target names, got {bounded_repr(targets_given)}")
    targets = tuple(targets_given)
    gates_given = document.get("gates", {})
    if not isinstance(gates_given, dict):
        raise InputError(f"{path}: gates must be a mapping")
    for key in ("max_p90_ms", "latency"):
        given = gates_given.get(key)
        if given is not None and not isinstance(given, dict):
            raise InputError(f"{path}: gates.{key} must map a backend to a budget, got {bounded_repr(given)}")
    budgets = ("max_p90_ms", "latency", "min_output_sqnr_db")
    gates = _section(Gates, {k: v for k, v in gates_given.items() if v is not None or k not in budgets},
                     f"{path}: gates")
    gates = replace(gates, min_output_sqnr_db=_output_limits(gates.min_output_sqnr_db,
                                                             f"{path}: gates.min_output_sqnr_db"),
                    max_regression=_max_regression(gates.max_regression, f"{path}: gates.max_regression"))
    for target in (*targets, *gates.spec):
        if target not in PROFILES:
            raise InputError(f"{path}: unknown target {target!r} (choose from {', '.join(PROFILES)})")
    if gates.max_drop_pp is not None:
        _check_number(gates.max_drop_pp, f"{path}: gates.max_drop_pp", positive=False)
    if gates.coverage_threshold is not None:
        _check_number(gates.coverage_threshold, f"{path}: gates.coverage_threshold")
    for key in SHARE_LIMITS:
        if getattr(gates, key) is not None:
            _check_range(getattr(gates, key), 0, 1, f"{path}: gates.{key}")
    if gates.max_landmark_error is not None and gates.max_landmark_error < 0:
        raise InputError(f"{path}: gates.max_landmark_error must be at least 0, got {gates.max_landmark_error}")
    for backend, budget in (gates.max_p90_ms or {}).items():
        _check_number(budget, f"{path}: gates.max_p90_ms.{backend}")
    for backend, spec in (gates.latency or {}).items():
        if not isinstance(spec, dict):
            raise InputError(f"{path}: gates.latency.{backend} must be a mapping (max_ms, percentile, ...)")
        LatencyBudget.from_mapping(spec, f"{path}: gates.latency.{backend}")
    both = sorted(set(gates.max_p90_ms or {}) & set(gates.latency or {}))
    if both:
        raise InputError(f"{path}: gates.max_p90_ms and gates.latency both set a budget for {', '.join(both)}")
    base_dir = path.parent.resolve()
    recipe = BuildRecipe(
        name=_check_name(document["name"], str(path)), model=document["model"],
        calibration=_data_spec(document["calibration"], f"{path}: calibration", base_dir),
        evaluation=_data_spec(document["evaluation"], f"{path}: evaluation", base_dir),
        preprocess=document.get("preprocess"), methods=methods, targets=targets,
        bench=_section(BenchSpec, document.get("bench", {}), f"{path}: bench"), gates=gates,
        input_shape=_input_shape(document["input_shape"], f"{path}: input_shape") if "input_shape" in document
        else None,
        quantization=_quantization(document["quantization"], f"{path}: quantization") if "quantization" in document
        else None,
        tasks=task_declarations(document["tasks"], base_dir, f"{path}: tasks") if "tasks" in document else (),
        recover=_ladder(document.get("recover", []), f"{path}: recover"),
        base_dir=str(base_dir), path=str(path))
    _check_values(recipe, path)
    accuracy_regression = gates.max_regression is not None and gates.max_regression.accuracy_pp is not None
    if accuracy_regression and not has_labels(recipe.evaluation, base_dir):
        raise InputError(f"{path}: gates.max_regression.accuracy_pp compares top-1, which needs labels, and the "
                         f"evaluation data from {recipe.evaluation.source} has none; use sqnr_db instead")
    if gates.max_drop_pp is not None and not has_labels(recipe.evaluation, base_dir):
        raise InputError(f"{path}: gates.max_drop_pp gates the top-1 drop, which needs labels, and the evaluation "
                         f"data from {recipe.evaluation.source} has none; gate fidelity instead "
                         f"({', '.join(('min_output_sqnr_db', *SHARE_LIMITS, 'max_landmark_error'))})")
    return recipe


def resolve_source(source: str, base_dir: str | Path) -> Path | None:
    """The file or folder a data source names (relative to the recipe's folder, else to the working
    directory), or None for bundled data (digits:train, lfw, photos, ...)."""
    from datagen.sources import source_path

    if source_path(source) is None:
        return None
    local = Path(base_dir) / source
    return local if local.exists() else Path(source)


def plain_kind(path: Path | None) -> str | None:
    """What a source that can be used as is holds: a datagen set, arrays or images; None for anything else."""
    if path is None:
        return None
    if path.is_dir():
        from datagen.calibset import is_set

        return "set" if is_set(path) else "images"
    return "arrays" if path.is_file() and path.suffix.lower() in (".npy", ".npz") else None


def _data_spec(value: Any, where: str, base_dir: Path) -> DataSpec:
    """A source with ``conditions`` (or bundled data) is generated from, with the generation defaults filled;
    a datagen set, .npy/.npz or image folder without ``conditions`` is used as is."""
    from datagen.sources import ARRAY_SUFFIXES, BUNDLED

    spec = _section(DataSpec, value, where)
    path = resolve_source(spec.source, base_dir)
    kind = plain_kind(path)
    given = [key for key in GENERATION_DEFAULTS if key in value]
    if kind == "set" and given:
        raise InputError(f"{where}: {spec.source} is a set from edgeq datagen and is used as is; {', '.join(given)} "
                         "only apply to generating a set")
    if kind is not None and "conditions" not in value:
        if given:
            raise InputError(f"{where}: {', '.join(given)} only apply to generating a set: add conditions (e.g. "
                             f"original) to generate one from {spec.source}, or leave them out to use it as is")
        return spec
    if path is not None and not path.exists():
        raise InputError(f"{where}.source: no such file or folder {spec.source!r} (paths are relative to the "
                         f"recipe's folder; bundled data: {', '.join(BUNDLED)})")
    if path is not None and path.is_file() and path.suffix.lower() not in ARRAY_SUFFIXES:
        raise InputError(f"{where}.source: {spec.source} is neither a folder nor a .npy/.npz")
    return replace(spec, **{key: getattr(spec, key) if key in value else default
                            for key, default in GENERATION_DEFAULTS.items()})


def has_labels(spec: DataSpec, base_dir: str | Path) -> bool:
    """Whether evaluation data from ``spec`` has labels: the bundled digits and lfw do (the bundled photos do
    not); a set from edgeq datagen says so; an .npz has them in a 'labels' array; an image folder has them only
    as datagen's source with a subfolder per class (used as is, it has none); a .npy never has them."""
    path = resolve_source(spec.source, base_dir)
    if path is None:
        return spec.source.partition(":")[0] in ("digits", "lfw")
    if plain_kind(path) == "set":
        return set_is_labelled(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                return "labels.npy" in archive.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read {spec.source}: {exc}") from None
    if path.is_dir() and spec.generated:
        from datagen.sources import open_source

        return any(item.label is not None for item in open_source(str(path)).items)
    return False


def set_is_labelled(path: Path | None) -> bool:
    """Whether a set folder from edgeq datagen holds labels (its datagen.json says)."""
    from edgeq.configfile import load_config

    document = load_config(path / "datagen.json", "datagen set file") if path is not None else None
    return isinstance(document, dict) and document.get("labels") is True


def _output_limits(value: Any, where: str) -> dict[str, float]:
    """``{OUTPUT: DB}``: an output by name or index, each with a finite number of dB."""
    if value in ({}, None):
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str | int) and not isinstance(k, bool) for k in value):
        raise InputError(f"{where} must map an output (a name or index) to a minimum SQNR in dB, got "
                         f"{bounded_repr(value)}")
    for output, db in value.items():
        _check_number(db, f"{where}.{output}", positive=False)
    return {str(output): float(db) for output, db in value.items()}


def _max_regression(value: Any, where: str) -> MaxRegression | None:
    """``{accuracy_pp, sqnr_db, size_pct, latency_pct}``: each a number at least 0, at least one given."""
    if value is None:
        return None
    limits = _section(MaxRegression, value, where)
    given = {f.name: getattr(limits, f.name) for f in fields(MaxRegression) if getattr(limits, f.name) is not None}
    if not given:
        raise InputError(f"{where} sets no limit (give accuracy_pp, sqnr_db, size_pct or latency_pct)")
    for key, limit in given.items():
        _check_number(limit, f"{where}.{key}", positive=False)
        if limit < 0:
            raise InputError(f"{where}.{key} must be at least 0, got {limit}")
    return limits


def _input_shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_kind_ok(v, _INT) and v > 0 for v in value):
        raise InputError(f"{where} must be a list of positive integers without the batch, such as [224, 224, 3], "
                         f"got {bounded_repr(value)}")
    return tuple(value)


def _quantization(value: Any, where: str) -> QuantRecipe:
    """A convert recipe (``edgeq convert --recipe``'s schema), read by the same code; ``method`` is refused,
    since the build converts with every method in ``methods``."""
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping of convert recipe settings (io, per_tensor, overrides, ...), "
                         f"got {bounded_repr(value)}")
    if "method" in value:
        raise InputError(f"{where}.method: the build converts with every method in 'methods' and picks the most "
                         "faithful; list the methods there")
    try:
        return recipe_from_dict(value, where)
    except InputError as exc:
        message = str(exc)
        if message.startswith(where):
            raise
        raise InputError(f"{where}.{message.removeprefix('QuantRecipe.')}" if message.startswith("QuantRecipe.")
                         else f"{where}: {message}") from None


def _check_values(recipe: BuildRecipe, path: Path) -> None:
    """Ranges and names that would otherwise fail (or silently misbehave) only after minutes of work."""
    from edgeq.harness.backends import parse_backend

    for spec, where in ((recipe.calibration, "calibration"), (recipe.evaluation, "evaluation")):
        if spec.generated:
            _check_range(spec.n, 1, MAX_SAMPLES, f"{path}: {where}.n")
            _check_range(spec.severity, 1, 5, f"{path}: {where}.severity")
            _check_range(spec.seed, 0, 2**32 - 1, f"{path}: {where}.seed")
    if Estimator.SEARCH in recipe.methods and recipe.quantization is not None and recipe.quantization.overrides:
        raise InputError(f"{path}: methods include search, which chooses per-tensor estimators itself; it cannot "
                         "take quantization.overrides (drop one of them)")
    bench = recipe.bench
    _check_range(bench.runs, 1, 1_000_000, f"{path}: bench.runs")
    _check_range(bench.min_seconds, 0, 3600, f"{path}: bench.min_seconds")
    for threads in bench.threads:
        _check_range(threads, 1, 256, f"{path}: bench.threads")
    try:
        for backend in (*bench.backends, *(recipe.gates.max_p90_ms or {}), *(recipe.gates.latency or {})):
            parse_backend(backend)
    except UsageError as exc:
        raise InputError(f"{path}: {exc}") from None
    unmeasured = sorted(set(recipe.latency_budgets()) - set(bench.backends))
    if unmeasured:
        raise InputError(f"{path}: gates set a latency budget for {', '.join(unmeasured)}, which bench.backends "
                         f"does not measure")
