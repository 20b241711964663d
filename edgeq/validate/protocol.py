"""The validation protocol: FP32 baseline, every calibration method side by side (top-1 with Wilson
intervals, the drop with a paired interval), per condition and per layer, the most faithful method picked on
a selection half of the evaluation set, a max-drop gate measured on the held-out gate half, and triage
advice drawn from what was measured (the rules: edgeq.validate.verdicts). The result is an
edgeq.results.validation.ValidationReport."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Estimator, Preprocessing
from edgeq.calib.estimators import METHODS, estimate
from edgeq.calib.outliers import samples_document
from edgeq.converter.api import ModelSource, calibrate, convert
from edgeq.harness.accuracy import evaluate, predict
from edgeq.harness.backends import open_session, parse_backend
from edgeq.preprocess import apply_preprocessing
from edgeq.quant_recipe import QuantRecipe
from edgeq.results.validation import (
    Baseline,
    CalibrationSamples,
    ConditionAccuracy,
    Histogram,
    LayerDiagnostics,
    LayerReport,
    MethodResult,
    ModelSummary,
    SelectionRecord,
    ValidationReport,
    ValidationSummary,
)
from edgeq.validate.diagnostics import per_layer, worst
from edgeq.validate.stats import CONFIDENCE, wilson_interval
from edgeq.validate.verdicts import (
    FIDELITY_ORDER,
    SPLIT_SEED,
    finite_or_none,
    judge_drop,
    measure_drop,
    measure_fidelity,
    rank_by_fidelity,
    split_halves,
)

LAYER_SAMPLES = 32
HISTOGRAM_BINS = 60


@dataclass(frozen=True)
class EvalData:
    name: str
    images: np.ndarray  # uint8
    labels: np.ndarray
    conditions: list[str] | None
    preprocessing: Preprocessing


def model_path(out_dir: Path, method: Estimator) -> Path:
    """Where ``validate`` writes the INT8 model of ``method`` (its sidecar beside it, as .json)."""
    return out_dir / f"int8_{method.value}.tflite"


def _scores(model: bytes, x: np.ndarray) -> np.ndarray:
    return predict(open_session(model, parse_backend("cpu")), x)


def _advice(drop_pp: float, max_drop: float, layers: list[LayerDiagnostics], eval_clip: float) -> list[str]:
    """Triage from the measurements, in the order a practitioner would try things."""
    if drop_pp <= max_drop:
        return []
    advice = []
    if eval_clip > 0.01:
        advice.append(f"coverage gap: {eval_clip:.1%} of evaluation activations fall outside the calibrated ranges "
                      "in some layer; add calibration conditions that match production (edgeq datagen, edgeq coverage)")
    saturated = [r for r in layers if r.saturation > 0.01]
    if saturated:
        most = max(saturated, key=lambda r: r.saturation)
        advice.append(f"high saturation in {len(saturated)} layer(s) (worst {most.saturation:.1%} in {most.name}); "
                      "try another estimator (mse or percentile) or a recipe override")
    # Local SQNR (the layer's own range and rounding), not the accumulated one: after one bad layer every
    # downstream layer's accumulated SQNR drops too, so only the local figure singles the culprit out.
    finite = [r.local_sqnr_db for r in layers if r.local_sqnr_db is not None]
    if finite:
        median = float(np.median(finite))
        bad = [r for r in layers if r.local_sqnr_db is not None and r.local_sqnr_db < median - 15]
        if len(bad) == 1:
            advice.append(f"one bad layer: {bad[0].name} (local SQNR {bad[0].local_sqnr_db:.1f} dB vs median "
                          f"{median:.1f} dB); try per-tensor vs per-axis weights there, a recipe override, or keep "
                          "that layer in float")
    if not advice:
        advice.append("no single cause measured (coverage, saturation and per-layer SQNR look normal): "
                      "consider quantization-aware training")
    return advice


def _histograms(stats: Any, names: list[str], recipe: QuantRecipe) -> tuple[Histogram, ...]:
    """The worst layers' histograms with every estimator's range as convert chooses it (sample guard included,
    so the page never shows a range the converted model did not use)."""
    from edgeq.calib.ranges import sample_guard

    guard = sample_guard(recipe, stats) if recipe.sample_guard else None
    index_of = {name: index for index, name in stats.names.items()}
    out = []
    for name in names:
        if name not in index_of:
            continue
        key = index_of[name]
        tensor = stats.tensors[key]
        lo, hi = tensor.min, tensor.max
        if not hi > lo:
            continue
        edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
        centers = tensor.bin_centers()
        counts, _ = np.histogram(np.clip(centers, lo, hi), bins=edges, weights=tensor.hist)
        extremes = stats.extremes.get(key)
        ranges = {m.value: _range(estimate(tensor, m, percentile=recipe.percentile,
                                           auto_thresholds=recipe.auto_thresholds, extremes=extremes, guard=guard))
                  for m in METHODS}
        out.append(Histogram(name=name, bin_edges=tuple(float(e) for e in edges),
                             counts=tuple(int(c) for c in counts), ranges=ranges))
    return tuple(out)


def _range(choice: Any) -> tuple[float, float]:
    return float(choice.lo), float(choice.hi)


def validate(model: ModelSource, calib: str | Path, data: EvalData, out_dir: Path,
             methods: tuple[Estimator, ...] = METHODS, max_drop_pp: float | None = None,
             recipe: QuantRecipe | None = None, calib_preprocessing: Preprocessing | None = None,
             split_seed: int = SPLIT_SEED) -> ValidationReport:
    """Convert with every method from one calibration pass and measure each against FP32 on the whole set;
    pick the most faithful method on the selection half and gate its drop on the held-out gate half
    (edgeq.validate.verdicts describes the three rules). The INT8 models stay in ``out_dir``
    (:func:`model_path`)."""
    recipe = recipe or QuantRecipe()
    labels = np.asarray(data.labels)
    split = split_halves(labels, data.conditions, split_seed)  # before any work: a set too small fails fast
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = calibrate(model, calib, preprocessing=calib_preprocessing)
    float_model = calibration.float_model  # loaded once: every method converts from it
    stats_file = calibration.stats.save(out_dir / "stats.npz")
    float_bytes = calibration.float_model.flatbuffer
    x = apply_preprocessing(data.preprocessing, data.images)
    fp32 = _scores(float_bytes, x)
    fp32_correct = fp32.argmax(-1) == labels
    baseline = evaluate(fp32, labels, data.conditions)
    measured, artifacts, selection, int8_correct = [], {}, [], {}
    for method in methods:
        path = model_path(out_dir, method)
        artifacts[method] = convert(float_model, path, stats=stats_file, recipe=recipe.with_updates(method=method))
        scores = _scores(path.read_bytes(), x)
        result = evaluate(scores, labels, data.conditions, reference=fp32)
        int8_correct[method.value] = scores.argmax(-1) == labels
        drop = measure_drop(fp32_correct, int8_correct[method.value])
        selection.append(measure_fidelity(method.value, fp32[split.selection], scores[split.selection]))
        measured.append((method, result, drop, measure_fidelity(method.value, fp32, scores), selection[-1]))
    groups = rank_by_fidelity(selection)
    rank = {record.method: place for place, group in enumerate(groups, 1) for record in group}
    results = tuple(MethodResult(
        method=method, top1=result.top1, top1_ci=drop.int8_ci, top5=result.top5, drop_pp=drop.drop_pp,
        drop_ci_pp=drop.drop_ci_pp, vs_fp32=drop.vs_fp32, agreement=result.agreement,
        output_sqnr_db=finite_or_none(whole.output_sqnr_db), bit_exact=whole.bit_exact, output_mae=whole.output_mae,
        per_condition=_per_condition(result.per_condition), size_ratio=artifacts[method].size_ratio,
        selection=half.to_score(rank[method.value])) for method, result, drop, whole, half in measured)
    best_method = Estimator(groups[0][0].method)
    gate = judge_drop(best_method.value, measure_drop(fp32_correct[split.gate],
                                                      int8_correct[best_method.value][split.gate]), max_drop_pp)
    best_path = model_path(out_dir, best_method)
    layers = per_layer(float_bytes, best_path.read_bytes(), x[:LAYER_SAMPLES])
    worst_layers = worst(layers, 3)
    eval_clip = max((r.clip_fraction for r in layers if r.op not in ("SOFTMAX", "LOGISTIC")), default=0.0)
    advice = _advice(gate.measurement.drop_pp, max_drop_pp if max_drop_pp is not None else math.inf, layers,
                     eval_clip)
    best = artifacts[best_method]
    summary = ValidationSummary(
        eval_set=data.name, calibration=str(calib), confidence=CONFIDENCE,
        baseline=Baseline(top1=baseline.top1, top1_ci=wilson_interval(int(fp32_correct.sum()), len(labels)),
                          top5=baseline.top5, n=baseline.n, per_condition=_per_condition(baseline.per_condition)),
        methods=results, best_method=best_method, split=split.to_record(data.conditions),
        selection=SelectionRecord(n=len(split.selection), by=FIDELITY_ORDER,
                                  ranking=tuple(tuple(Estimator(r.method) for r in group) for group in groups),
                                  tied_with_best=tuple(Estimator(r.method) for r in groups[0][1:])),
        gate=gate.to_result(), max_drop_pp=max_drop_pp, passed=gate.passed is not False, advice=tuple(advice))
    return ValidationReport(
        validation=summary,
        layers=LayerReport(method=best_method, samples=int(min(len(x), LAYER_SAMPLES)), rows=tuple(layers),
                           worst=tuple(r.name for r in worst_layers)),
        histograms=_histograms(calibration.stats, [r.name for r in worst_layers], recipe),
        model=ModelSummary(source=float_model.source, float_bytes=best.float_bytes, int8_bytes=best.int8_bytes,
                           size_ratio=best.size_ratio, sha256=best.sha256),
        calibration_samples=CalibrationSamples.from_document(samples_document(best)))


def _per_condition(entries: dict[str, dict[str, Any]]) -> dict[str, ConditionAccuracy]:
    return {condition: ConditionAccuracy(**entry) for condition, entry in entries.items()}
