"""The validation protocol: FP32 baseline, every calibration method side by side, per condition and per
layer, the best method picked, a max-drop gate, and triage advice drawn from what was measured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Estimator, Preprocessing
from edgeq.calib.estimators import estimate
from edgeq.converter.api import ModelSource, calibrate, convert
from edgeq.converter.recipe import QuantRecipe
from edgeq.harness.accuracy import evaluate, predict
from edgeq.harness.backends import open_session, parse_backend
from edgeq.preprocess import apply_preprocessing
from edgeq.validate.diagnostics import LayerDiagnostics, output_sqnr_db, per_layer, worst

ALL_METHODS = (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL, Estimator.AUTO)
LAYER_SAMPLES = 32
HISTOGRAM_BINS = 60


@dataclass(frozen=True)
class EvalData:
    name: str
    images: np.ndarray  # uint8
    labels: np.ndarray
    conditions: list[str] | None
    preprocessing: Preprocessing


@dataclass
class ValidationOutcome:
    document: dict[str, Any]
    best_method: Estimator
    best_model: Path
    passed: bool
    advice: list[str] = field(default_factory=list)


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
        advice.append(f"high saturation in {len(saturated)} layer(s) (worst {max(r.saturation for r in saturated):.1%}"
                      f" in {saturated[0].name}); try another estimator (mse or percentile) or a recipe override")
    finite = [r.sqnr_db for r in layers if math.isfinite(r.sqnr_db)]
    if finite:
        median = float(np.median(finite))
        bad = [r for r in layers if math.isfinite(r.sqnr_db) and r.sqnr_db < median - 15]
        if len(bad) == 1:
            advice.append(f"one bad layer: {bad[0].name} ({bad[0].sqnr_db:.1f} dB vs median {median:.1f} dB); try "
                          "per-tensor vs per-axis weights there, a recipe override, or keep that layer in float")
    if not advice:
        advice.append("no single cause measured (coverage, saturation and per-layer SQNR look normal): "
                      "consider quantization-aware training")
    return advice


def _histograms(stats: Any, names: list[str], percentile: float) -> list[dict[str, Any]]:
    index_of = {name: index for index, name in stats.names.items()}
    out = []
    for name in names:
        if name not in index_of:
            continue
        tensor = stats.tensors[index_of[name]]
        lo, hi = tensor.min, tensor.max
        if not hi > lo:
            continue
        edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
        centers = tensor.bin_centers()
        counts, _ = np.histogram(np.clip(centers, lo, hi), bins=edges, weights=tensor.hist)
        ranges = {m.value: list(_range(estimate(tensor, m, percentile=percentile))) for m in ALL_METHODS}
        out.append({"name": name, "bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
                    "ranges": ranges})
    return out


def _range(choice: Any) -> tuple[float, float]:
    return float(choice.lo), float(choice.hi)


def validate(model: ModelSource, calib: str | Path, data: EvalData, out_dir: Path,
             methods: tuple[Estimator, ...] = ALL_METHODS, max_drop_pp: float | None = None,
             recipe: QuantRecipe | None = None, calib_preprocessing: Preprocessing | None = None) -> ValidationOutcome:
    """Convert with every method from one calibration pass, measure each against FP32, pick the best."""
    recipe = recipe or QuantRecipe()
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = calibrate(model, calib, preprocessing=calib_preprocessing)
    float_model = calibration.float_model  # loaded once: every method converts from it
    stats_file = calibration.stats.save(out_dir / "stats.npz")
    float_bytes = calibration.float_model.flatbuffer
    x = apply_preprocessing(data.preprocessing, data.images)
    fp32 = _scores(float_bytes, x)
    baseline = evaluate(fp32, data.labels, data.conditions)
    results, artifacts = [], {}
    for method in methods:
        path = out_dir / f"int8_{method.value}.tflite"
        artifacts[method] = convert(float_model, path, stats=stats_file, recipe=recipe.with_updates(method=method))
        scores = _scores(path.read_bytes(), x)
        result = evaluate(scores, data.labels, data.conditions, reference=fp32)
        results.append({
            "method": method.value, "top1": result.top1, "top5": result.top5,
            "drop_pp": round((baseline.top1 - result.top1) * 100, 4), "agreement": result.agreement,
            "output_sqnr_db": _json_float(output_sqnr_db(fp32, scores)),
            "per_condition": result.per_condition, "size_ratio": artifacts[method].size_ratio,
        })
    best = max(results, key=lambda r: (r["top1"], r["output_sqnr_db"] or 0.0, r["method"] == "auto"))
    best_method = Estimator(best["method"])
    best_path = out_dir / f"int8_{best_method.value}.tflite"
    layers = per_layer(float_bytes, best_path.read_bytes(), x[:LAYER_SAMPLES])
    worst_layers = worst(layers, 3)
    eval_clip = max((r.clip_fraction for r in layers if r.op not in ("SOFTMAX", "LOGISTIC")), default=0.0)
    passed = max_drop_pp is None or best["drop_pp"] <= max_drop_pp
    advice = _advice(best["drop_pp"], max_drop_pp if max_drop_pp is not None else math.inf, layers, eval_clip)
    document = {
        "validation": {
            "eval_set": data.name, "calibration": str(calib),
            "baseline": {"top1": baseline.top1, "top5": baseline.top5, "n": baseline.n,
                         "per_condition": baseline.per_condition},
            "methods": results, "best_method": best_method.value, "max_drop_pp": max_drop_pp,
            "passed": passed, "advice": advice,
        },
        "layers": {"method": best_method.value, "samples": int(min(len(x), LAYER_SAMPLES)),
                   "rows": [r.to_dict() for r in layers], "worst": [r.name for r in worst_layers]},
        "histograms": _histograms(calibration.stats, [r.name for r in worst_layers], recipe.percentile),
        "model": {"source": float_model.source, "float_bytes": artifacts[best_method].float_bytes,
                  "int8_bytes": artifacts[best_method].int8_bytes, "size_ratio": artifacts[best_method].size_ratio,
                  "sha256": artifacts[best_method].sha256},
    }
    return ValidationOutcome(document=document, best_method=best_method, best_model=best_path, passed=passed,
                             advice=advice)


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
