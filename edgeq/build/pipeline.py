"""Run a build recipe: datagen -> validate (convert with every method) -> check -> bench -> report.

Every step's result is cached under OUT/cache/<step>-<key>, where the key hashes everything the step
depends on (its configuration and the fingerprints of its inputs), so re-running an unchanged recipe
reuses them and any change recomputes exactly what it affects. The result is an
edgeq.results.build.BuildReport, written as report.json and report.html.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.artifacts import QuantizedArtifact
from edgeq.build.baseline import Baseline, compare, current_environment, figures, regression_gates
from edgeq.build.recipe import BuildRecipe, DataSpec, has_labels, plain_kind, resolve_source
from edgeq.errors import InputError, UsageError
from edgeq.files import write_bytes_atomic, write_text_atomic
from edgeq.intake.float_model import FloatModel
from edgeq.intake.load import load_float_model
from edgeq.quant_recipe import QuantRecipe
from edgeq.results.baseline import BenchEnvironment
from edgeq.results.build import (
    ArtifactPaths,
    BuildReport,
    CalibrationSetSummary,
    CheckSummary,
    ConversionSettings,
    CoverageLayer,
    CoverageSection,
    LatencyRow,
    Precision,
)
from edgeq.results.gates import Gate, LatencyVerdict
from edgeq.results.latency import LatencySummary
from edgeq.results.provenance import Provenance
from edgeq.results.validation import StoredValidation, ValidationReport

Log = Callable[[str], None]
MAX_FINDINGS = 50  # per target in report.json: the check's own output has them all


@dataclass
class BuildOutcome:
    report: BuildReport
    artifact: Path
    report_html: Path
    reused: list[str] = field(default_factory=list)

    @property
    def gates(self) -> tuple[Gate, ...]:
        return self.report.gates

    @property
    def passed(self) -> bool:
        return self.report.passed


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(path: Path) -> str:
    """sha256 of a file; of a datagen set's datagen.json (which fingerprints its samples); of every file of any
    other folder (an image folder, a SavedModel with its variables) by relative path and content."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if (path / "datagen.json").is_file():
        return hashlib.sha256((path / "datagen.json").read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _resolve_model(recipe: BuildRecipe, log: Log) -> Path:
    if recipe.model.startswith("zoo:"):
        from edgeq_models import build

        built = build(recipe.model[4:])
        log(f"model: zoo {recipe.model[4:]} ({'reused' if built.reused else 'trained'}, test top-1 "
            f"{built.card.test_accuracy:.2%})")
        return built.path
    path = Path(recipe.model)
    return path if path.is_absolute() else Path(recipe.base_dir) / path


def _source(spec: DataSpec, recipe: BuildRecipe) -> str:
    path = resolve_source(spec.source, recipe.base_dir)
    return spec.source if path is None else str(path)


def _dataset(spec: DataSpec, recipe: BuildRecipe, cache: Path, label: str, model_shape: tuple[int, ...], log: Log,
             reused: list[str], preprocessing: Any) -> Path:
    """The set datagen generates from ``spec`` (cached), or the data it names when it is used as is.

    ``model_shape`` is the model input's (H, W, C): datagen makes C channels, and resizes images that come in
    sizes of their own (the bundled photos, an image folder) to H x W; arrays and the bundled digits and lfw
    keep their size."""
    from datagen.generate import DatagenConfig, generate, parse_conditions

    if not spec.generated:
        log(f"{label} set: {spec.source} used as is")
        return Path(_source(spec, recipe))
    assert spec.conditions is not None and spec.n is not None  # load_build_recipe fills a generated set's defaults
    path = resolve_source(spec.source, recipe.base_dir)
    own_sizes = spec.source == "photos" or (path is not None and path.is_dir())
    size = model_shape[:2] if own_sizes and len(model_shape) == 3 and min(model_shape[:2]) > 0 else None
    channels = model_shape[-1] if len(model_shape) == 3 and model_shape[-1] in (1, 3) else 3
    config = DatagenConfig(source=_source(spec, recipe), conditions=parse_conditions(spec.conditions), n=spec.n,
                           severity=spec.severity, seed=spec.seed, size=size, channels=channels,
                           preprocessing=preprocessing)
    folder = cache / f"{label}-{_key(dataclasses.asdict(config), _code_version())}"
    if folder.is_dir():
        reused.append(label)
        log(f"{label} set: reused {folder.name}")
        return folder
    generate(config, folder)
    log(f"{label} set: generated {spec.n} samples ({spec.conditions}) -> {folder.name}")
    return folder


@functools.cache
def _code_version() -> str:
    """What made a cached step: edgeq's and datagen's source and data files and the pinned toolchain.

    A version string alone would let a build reuse steps computed by older code of the same version
    (a development checkout, or a fix that did not bump it) and publish an artifact that code cannot make.
    """
    import datagen
    import edgeq
    from edgeq.versions import package_versions

    digest = hashlib.sha256(edgeq.__version__.encode())
    for package in (edgeq, datagen):
        root = Path(package.__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json", ".fbs") and p.is_file()):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    versions = package_versions(("tensorflow", "ai-edge-litert", "albumentations", "numpy"))
    digest.update(json.dumps(versions, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _preprocessing(recipe: BuildRecipe, float_model: FloatModel, log: Log) -> Any:
    """The recipe's ``preprocess``, else the float model's own metadata, else what a datagen set used as is
    records; none is refused before any work (the evaluation set is uint8 images, and guessing their
    normalization would be a silent wrong result)."""
    from datagen.calibset import load_set
    from edgeq.calib.data import parse_preprocessing
    from edgeq.preprocess import own_preprocessing, resolve

    plain_sets = [path for spec in (recipe.calibration, recipe.evaluation) if not spec.generated
                  and plain_kind(path := resolve_source(spec.source, recipe.base_dir)) == "set"]
    recorded = next((spec for path in plain_sets if (spec := load_set(path).preprocessing) is not None), None)
    resolved = resolve(parse_preprocessing(recipe.preprocess), model=own_preprocessing(float_model.flatbuffer),
                       data_set=recorded, model_name=recipe.model,
                       data_name="the recipe's calibration and evaluation sets", given_as="the recipe's preprocess")
    log(resolved.line())
    import warnings

    from edgeq.preprocess import PreprocessingWarning

    for warning in resolved.warnings:  # a warning, not a step line: --quiet keeps it (the CLI prints it once)
        warnings.warn(warning, PreprocessingWarning, stacklevel=2)
    return resolved.spec


def _check_overrides(float_model: FloatModel, recipe: BuildRecipe) -> None:
    """Refuse an override rule that would choose no range (it matches no activation tensor, or only tensors an
    earlier rule takes) before any data is generated or calibrated: choose_ranges refuses it too, but only
    after calibration."""
    from edgeq.tflite import model as tfl

    overrides = recipe.quant_recipe.overrides
    if not overrides:
        return
    parsed = tfl.parse(float_model.flatbuffer)
    producers = tfl.producers(parsed)
    used = {next((k for k, rule in enumerate(overrides) if rule.matches(a.name, producers.get(a.key, "?"))), None)
            for a in tfl.float_activations(parsed)}
    unused = [k for k in range(len(overrides)) if k not in used]
    if unused:
        rule = overrides[unused[0]]
        raise InputError(f"{recipe.path}: quantization.overrides #{unused[0] + 1} ({rule.describe()}) matches no "
                         f"activation tensor of {recipe.model}")


def _check_outputs(float_model: FloatModel, recipe: BuildRecipe) -> None:
    """Refuse output tasks and fidelity gates that name outputs the model lacks, a task limit no output of its
    task meets, and max_drop_pp without a classification output, before any data is generated (validate
    refuses them too, but only after datagen)."""
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.validate.outputs import OutputInfo, check_gates, plan_outputs

    gates = recipe.gates.fidelity
    if not (recipe.tasks or gates or recipe.gates.max_drop_pp is not None):
        return
    outputs = open_session(float_model.flatbuffer, parse_backend("cpu")).outputs
    infos = [OutputInfo(o.name, tuple(int(d) for d in o.shape)) for o in outputs]
    try:
        plan = plan_outputs(infos, recipe.tasks, labelled=has_labels(recipe.evaluation, recipe.base_dir),
                            where=f"{recipe.path}: tasks")
    except (InputError, UsageError) as exc:
        message = str(exc)
        raise InputError(message if message.startswith(recipe.path) else f"{recipe.path}: tasks: {message}") from None
    try:
        check_gates(gates, plan)
    except UsageError as exc:  # "min_mask_iou (--min-mask-iou) needs an output declared as segmentation ..."
        raise InputError(f"{recipe.path}: gates.{exc}") from None
    if recipe.gates.max_drop_pp is not None and plan.accuracy_output is None:
        raise InputError(f"{recipe.path}: gates.max_drop_pp gates the top-1 drop of a classification output; the "
                         f"model's outputs are judged as {', '.join(f'{t.output}: {t.task}' for t in plan.tasks)} "
                         "(declare one in tasks: - {output: OUTPUT, task: classification})")


def _task_key(recipe: BuildRecipe) -> list[Any]:
    """The declared tasks as the validate cache key sees them: each task's settings, and its anchors' bytes."""
    return [[t.output, t.task, dataclasses.asdict(t.config),
             _fingerprint(Path(anchors)) if (anchors := getattr(t.config, "anchors", None)) else None]
            for t in recipe.tasks]


@contextlib.contextmanager
def _warned_once() -> Iterator[None]:
    """Inside: the calibration loaders compare the build's resolved preprocessing with the model's metadata
    again; the build warned about that disagreement once already (:func:`_preprocessing`), so the repeats are
    dropped. Only PreprocessingWarning is: with the preprocessing given, it can say nothing else."""
    import warnings

    from edgeq.preprocess import PreprocessingWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreprocessingWarning)
        yield


def run_build(recipe: BuildRecipe, out: Path, log: Log, use_cache: bool = True,
              baseline: Baseline | None = None) -> BuildOutcome:
    from edgeq.artifacts import Preprocessing
    from edgeq.files import copy_atomic
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.report.graph_data import graph_report
    from edgeq.report.page import write_report
    from edgeq.validate.declarations import model_input
    from edgeq.validate.protocol import model_path, validate

    cache = out / "cache"
    if not use_cache and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    reused: list[str] = []
    model = _resolve_model(recipe, log)
    model_fp = _fingerprint(model)
    float_model = load_float_model(model, recipe.input_shape)  # once: loading a Keras model converts it
    _check_overrides(float_model, recipe)
    _check_outputs(float_model, recipe)
    input_name, input_shape = model_input(float_model.flatbuffer)
    preprocessing = _preprocessing(recipe, float_model, log)
    calib_dir = _dataset(recipe.calibration, recipe, cache, "calibration", input_shape, log, reused, preprocessing)
    eval_dir = _dataset(recipe.evaluation, recipe, cache, "evaluation", input_shape, log, reused, preprocessing)
    quant_recipe = recipe.quant_recipe
    # Calibration and evaluation both use the one preprocessing resolved above (generated sets were made with
    # it). Leaving a generated set's to be resolved again let the model's metadata win over the recipe's
    # preprocess for calibration only: an artifact calibrated on other inputs than it was evaluated on.
    calib_preprocessing = eval_preprocessing = preprocessing

    validate_key = _key(model_fp, recipe.input_shape, _fingerprint(calib_dir), _fingerprint(eval_dir),
                        [m.value for m in recipe.methods], recipe.gates.max_drop_pp, quant_recipe.to_dict(),
                        preprocessing.to_dict() if preprocessing else None, _code_version(), _task_key(recipe),
                        dataclasses.asdict(recipe.gates.fidelity), list(recipe.recover), list(recipe.targets))
    validate_dir = cache / f"validate-{validate_key}"
    outcome_file = validate_dir / "validation.json"
    if outcome_file.is_file():
        saved = StoredValidation.from_document(json.loads(outcome_file.read_text()))
        reused.append("validate")
        log(f"validate: reused {validate_dir.name}")
    else:
        eval_set = load_eval_set(eval_dir, input_shape=input_shape, input_name=input_name)
        data = eval_set.with_preprocessing(preprocessing if preprocessing is not None
                                           else eval_set.preprocessing or Preprocessing())
        from edgeq.validate.ladder import parse_ladder

        log(f"validate: {len(recipe.methods)} methods ...")
        with _warned_once():
            validated = validate(float_model, calib_dir, data, validate_dir, recipe.methods,
                                 recipe.gates.max_drop_pp, recipe=quant_recipe, calib_preprocessing=calib_preprocessing,
                                 tasks=recipe.tasks, gates=recipe.gates.fidelity, recover=parse_ladder(recipe.recover),
                                 targets=tuple(dict.fromkeys((*recipe.targets, *recipe.gates.spec))))
        recovered = validated.recovery is not None and validated.recovery.passed and validated.recovery.model
        best_name = validated.recovery.model if recovered and validated.recovery else model_path(
            validate_dir, validated.best_method).name
        saved = StoredValidation(report=validated, best_model=str(best_name))
        write_text_atomic(outcome_file, json.dumps(saved.to_document(), indent=2) + "\n")
        log(f"validate: {len(recipe.methods)} methods, picked {validated.best_method.value} by fidelity to FP32")
        if validated.recovery is not None:
            log(f"recover: {validated.recovery.verdict}")
    best_model = validate_dir / saved.best_model
    artifact = out / f"{recipe.name}_int8.tflite"
    copy_atomic(best_model, artifact)
    copy_atomic(best_model.with_suffix(".json"), artifact.with_suffix(".json"))
    float_copy = validate_dir / "float32.tflite"
    if not float_copy.is_file():
        write_bytes_atomic(float_copy, float_model.flatbuffer)

    log("check: the artifact on each target")
    check_sections = _checks(artifact, recipe)
    log("bench: latency of the artifact and the float model")
    latency, latency_summary, bench_reused, bench_environment = _bench(artifact, float_copy, recipe, cache)
    if bench_reused:
        reused.append("bench")
    with _warned_once():
        coverage_section = (_coverage(float_model, (calib_dir, calib_preprocessing), (eval_dir, eval_preprocessing),
                                      recipe.gates.coverage_threshold) if recipe.gates.coverage_threshold else None)
    gates = _gates(saved.report, check_sections, latency, coverage_section, recipe)
    published = QuantizedArtifact.from_dict(json.loads(artifact.with_suffix(".json").read_text()))
    # the Model section and the conversion settings describe the file published: after a recovery rung met the
    # gates that is the rung's model, not the picked method's
    named = dataclasses.replace(saved.report.model, name=recipe.name, sha256=published.sha256,
                                int8_bytes=published.int8_bytes, size_ratio=published.size_ratio)
    recovered = saved.report.recovery is not None and saved.report.recovery.met_by is not None
    settings = (QuantRecipe.from_dict(published.recipe) if recovered
                else quant_recipe.with_updates(method=saved.report.best_method))
    report = BuildReport(
        title=f"edgeq build: {recipe.name}", validation_report=dataclasses.replace(saved.report, model=named),
        check=check_sections, latency=latency, latency_summary=latency_summary, gates=gates,
        passed=all(g.passed for g in gates),
        calibration=_calibration_section(calib_dir, saved.report.calibration_samples.samples),
        conversion=None if recipe.input_shape is None and recipe.quantization is None and not recovered else
        ConversionSettings(input_shape=recipe.input_shape, quantization=settings),
        coverage=coverage_section,
        artifact=ArtifactPaths(path=str(artifact), sidecar=str(artifact.with_suffix(".json"))),
        graph=graph_report(artifact.read_bytes()), provenance=_provenance(recipe, model, calib_dir, eval_dir, artifact))
    report = _against_baseline(dataclasses.replace(report, bench_environment=bench_environment), baseline, recipe)
    log("report: writing report.json and report.html")
    _, html_path = write_report(report, out)
    return BuildOutcome(report=report, artifact=artifact, report_html=html_path, reused=reused)


def _against_baseline(report: BuildReport, baseline: Baseline | None, recipe: BuildRecipe) -> BuildReport:
    """The report with its deltas against ``baseline`` and the max_regression gates. The current figures are
    read from the report's own document, by the code that reads the baseline's."""
    limits = recipe.gates.max_regression
    if baseline is None and limits is None:
        return report
    current = report.to_document()
    comparison = compare(current, baseline) if baseline is not None else None
    added: tuple[Gate, ...] = ()
    if limits is not None:
        recovered = figures(current).recovered is not None or (
            baseline is not None and figures(baseline.document).recovered is not None)
        added = regression_gates(limits, comparison, recovered)
    gates = (*report.gates, *added)
    return dataclasses.replace(report, gates=gates, passed=all(g.passed for g in gates),
                               baseline_comparison=comparison)


def _provenance(recipe: BuildRecipe, model: Path, calib_dir: Path, eval_dir: Path, artifact: Path) -> Provenance:
    """The recipe as loaded and the sha256 of every input (the report's provenance)."""
    from edgeq.report.provenance import fingerprint, provenance

    inputs = [fingerprint("recipe", recipe.path), fingerprint("model", recipe.model, model),
              fingerprint("calibration set", recipe.calibration.source, calib_dir),
              fingerprint("evaluation set", recipe.evaluation.source, eval_dir), fingerprint("int8 model", artifact)]
    return provenance("build", dataclasses.asdict(recipe), inputs)


def _checks(artifact: Path, recipe: BuildRecipe) -> tuple[CheckSummary, ...]:
    from edgeq.artifacts import Severity, Target
    from edgeq.spec.check import check_model

    data = artifact.read_bytes()
    sections = []
    for target in dict.fromkeys((*recipe.targets, *recipe.gates.spec)):
        report = check_model(data, target=target)
        sections.append(CheckSummary(target=Target(target), passed=report.passed,
                                     errors=sum(f.severity is Severity.ERROR for f in report.findings),
                                     warnings=sum(f.severity is Severity.WARNING for f in report.findings),
                                     findings=report.findings[:MAX_FINDINGS]))
    return tuple(sections)


def _bench(artifact: Path, float_model: Path, recipe: BuildRecipe, cache: Path
           ) -> tuple[tuple[LatencyRow, ...], LatencySummary | None, bool, BenchEnvironment]:
    """Latency rows, the run's summary, whether they came from the cache, and the environment they were
    measured on: the whole environment (CPU, cores, machine, ai-edge-litert's version) is in the cache key, so
    a runtime upgrade measures again, and a reused entry reports the environment stored with it."""
    from edgeq.build import latency as latency_data
    from edgeq.harness import environment
    from edgeq.harness.backends import availability, open_session, parse_backend
    from edgeq.harness.latency import LatencyConfig, open_timed, run_interleaved

    measured_on = current_environment()
    key = _key(_fingerprint(artifact), _fingerprint(float_model), dataclasses.asdict(recipe.bench),
               measured_on.to_document(), "rows+summary+environment")  # what the cache entry holds
    stored = cache / f"bench-{key}.json"
    if stored.is_file():
        document = json.loads(stored.read_text())
        rows = tuple(LatencyRow.from_document(row) for row in document["rows"])
        summary = None if document["summary"] is None else LatencySummary.from_document(document["summary"])
        return rows, summary, True, BenchEnvironment.from_document(document["environment"])
    started_on = environment.capture()  # the load average before the measurement
    measurements = []
    for name in recipe.bench.backends:
        backend = parse_backend(name)
        if backend.kind == "android" or not availability(backend).available:
            continue
        for threads in recipe.bench.threads:
            for path, kind in ((artifact, "int8"), (float_model, "fp32")):
                opener = lambda p=path, b=backend, t=threads: open_session(p.read_bytes(), b, t)  # noqa: E731
                m = open_timed(f"{kind} {backend} t{threads}", opener)
                measurements.append((backend, threads, kind, m))
    run_interleaved([m for *_, m in measurements],
                    LatencyConfig(runs=recipe.bench.runs, min_seconds=recipe.bench.min_seconds))
    for *_, m in measurements:
        getattr(m.session, "close", lambda: None)()  # CompiledModel: released with its teardown log captured
    latency = tuple(latency_data.row(m, str(backend), threads, kind) for backend, threads, kind, m in measurements)
    summary = latency_data.summary(latency, started_on) if latency else None
    write_text_atomic(stored, json.dumps({"rows": [row.to_document() for row in latency],
                                          "summary": None if summary is None else summary.to_document(),
                                          "environment": measured_on.to_document()}) + "\n")
    return latency, summary, False, measured_on


def _coverage(float_model: FloatModel, calibration: tuple[Path, Any], evaluation: tuple[Path, Any],
              threshold: float) -> CoverageSection:
    """Coverage of the evaluation set by the calibration set, each (data, preprocessing or None: its own)."""
    from edgeq.calib.coverage import coverage
    from edgeq.converter.api import _calibration_data

    report = coverage(float_model, _calibration_data(float_model, *calibration, None),
                      _calibration_data(float_model, *evaluation, None), threshold)
    return CoverageSection(
        threshold=report.threshold, flagged=len(report.flagged),
        layers=tuple(CoverageLayer(name=layer.name, calib_max=layer.calib_max, production_max=layer.production_max,
                                   ratio=layer.ratio if layer.ratio != float("inf") else None, flagged=layer.flagged)
                     for layer in report.layers),
        per_condition_max={k: tuple(v) for k, v in report.per_condition_max.items()})


def _calibration_section(calib_dir: Path, samples: int) -> CalibrationSetSummary:
    """From a datagen set's datagen.json; for other data used as is, its path and the samples calibration ran."""
    import base64

    if not (calib_dir / "datagen.json").is_file():
        return CalibrationSetSummary(source=str(calib_dir), samples=samples, counts={}, preview_png=None)
    document = json.loads((calib_dir / "datagen.json").read_text())
    preview = calib_dir / "preview.png"
    return CalibrationSetSummary(
        source=document["source"]["spec"], samples=document["samples"], counts=document["counts"],
        preview_png=base64.b64encode(preview.read_bytes()).decode() if preview.is_file() else None)


def _gates(validated: ValidationReport, checks: tuple[CheckSummary, ...], latency: tuple[LatencyRow, ...],
           coverage: CoverageSection | None, recipe: BuildRecipe) -> tuple[Gate, ...]:
    """Every gate of the recipe; validate's are the picked method's, or the recovery rung's that met them (its
    model is the one published)."""
    gates = []
    held_out, fidelity = validated.gate, validated.output_gates
    recovery = validated.recovery
    if recovery is not None and recovery.passed and recovery.met_by is not None:
        rung = next(r for r in recovery.rungs if r.rung == recovery.met_by)
        held_out, fidelity = rung.gate, rung.gates
    if recipe.gates.max_drop_pp is not None:  # judged by validate on the held-out gate half (validation.gate)
        from edgeq.validate.verdicts import max_drop_gate

        gates.append(max_drop_gate(held_out))
    gates.extend(fidelity)  # validate's fidelity limits, judged on the held-out half too
    for section in checks:
        if section.target in recipe.gates.spec:
            gates.append(Gate(name=f"spec:{section.target}", passed=section.passed,
                              detail=f"{section.errors} errors, {section.warnings} warnings"))
    for backend, budget in recipe.latency_budgets().items():
        gates.append(_latency_gate(backend, budget, [r for r in latency if r.backend == backend
                                                     and r.model is Precision.INT8]))
    if coverage is not None:
        gates.append(Gate(name="coverage", passed=coverage.flagged == 0,
                          detail=f"{coverage.flagged} layer(s) below ratio {coverage.threshold}"))
    return tuple(gates)


def _latency_gate(backend: str, budget: Any, rows: list[LatencyRow]) -> Gate:
    """Every measured thread count must meet the budget; the detail names the worst one's distribution."""
    from edgeq.harness.budget import judge
    from edgeq.harness.latency import summarize

    name = f"latency:{backend}"
    if not rows:
        return Gate(name=name, passed=False, detail=f"{backend} was not measured")
    verdicts = [(row, judge(summarize(list(row.samples_ms), row.slice_runs), budget)) for row in rows]
    row, worst = max(verdicts, key=lambda pair: (not pair[1].passed, pair[1].value_ms))
    return Gate(name=name, passed=all(v.passed for _, v in verdicts), detail=f"t{row.threads}: {worst.reason}",
                verdicts=tuple(LatencyVerdict.from_document({"threads": r.threads, **v.to_dict()})
                               for r, v in verdicts))
