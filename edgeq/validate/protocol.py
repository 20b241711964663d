"""The validation protocol: FP32 against every calibration method's INT8 model on the same samples, output
by output (fidelity and the task's figures, per condition: edgeq.validate.outputs), with top-1 (Wilson
intervals, the drop with a paired interval) when the set has labels and the model a classification output;
per layer; the most faithful method picked on a selection half of the evaluation set; the max-drop gate and
the fidelity limits measured on the held-out gate half; and triage advice drawn from what was measured (the
rules: edgeq.validate.verdicts). The result is an edgeq.results.validation.ValidationReport."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Estimator, Preprocessing, QuantizedArtifact
from edgeq.calib.estimators import METHODS, estimate
from edgeq.calib.outliers import samples_document
from edgeq.calib.parallel import collect_sharded
from edgeq.converter.api import Calibration, ModelSource, _calibration_data, convert
from edgeq.errors import InputError, UsageError
from edgeq.execute import Executor
from edgeq.execute.local import LocalExecutor
from edgeq.harness.accuracy import evaluate
from edgeq.harness.backends import open_session, parse_backend
from edgeq.harness.evaldata import EvalSet
from edgeq.harness.parallel import predict_outputs_on
from edgeq.intake.float_model import FloatModel
from edgeq.intake.load import load_float_model
from edgeq.progress import step
from edgeq.quant_recipe import QuantRecipe
from edgeq.results.validation import (
    Baseline,
    CalibrationSamples,
    ConditionAccuracy,
    Histogram,
    LayerDiagnostics,
    LayerReport,
    MethodOutputs,
    MethodResult,
    ModelSummary,
    OutputsReport,
    SelectionRecord,
    ValidationReport,
    ValidationSummary,
)
from edgeq.validate.diagnostics import per_layer, worst
from edgeq.validate.ladder import Context, Rung, State, Verdict, run_ladder, sensitivity_of
from edgeq.validate.outputs import (
    FidelityGates,
    OutputInfo,
    OutputMeasurement,
    OutputPlan,
    check_gates,
    check_plan,
    judge_gates,
    measure_outputs,
    output_results,
    plan_outputs,
    ranked_fidelity,
)
from edgeq.validate.stats import CONFIDENCE, wilson_interval
from edgeq.validate.tasks import OutputTask
from edgeq.validate.verdicts import (
    SPLIT_SEED,
    Fidelity,
    fidelity_order,
    finite_or_none,
    judge_drop,
    measure_drop,
    measure_fidelity,
    rank_by_fidelity,
    split_halves,
)

LAYER_SAMPLES = 32
HISTOGRAM_BINS = 60


EvalData = EvalSet  # what validate measures on: images (with the preprocessing to apply) or model inputs


def model_path(out_dir: Path, method: Estimator) -> Path:
    """Where ``validate`` writes the INT8 model of ``method`` (its sidecar beside it, as .json)."""
    return out_dir / f"int8_{method.value}.tflite"


def _outputs(model: bytes, x: np.ndarray, plan: OutputPlan, executor: Executor) -> dict[str, np.ndarray]:
    """An INT8 model's outputs under the float model's output names (the converter keeps their order)."""
    values = list(predict_outputs_on(executor, model, parse_backend("cpu"), 1, x).values())
    shapes = [v.shape[1:] for v in values]
    expected = [tuple(o.shape[1:]) if o.shape and o.shape[0] == 1 else tuple(o.shape) for o in plan.outputs]
    if len(values) != len(plan.outputs) or any(tuple(s) != e for s, e in zip(shapes, expected, strict=False)):
        raise InputError(f"the INT8 model's outputs {[list(s) for s in shapes]} do not line up with the float "
                         f"model's {[list(e) for e in expected]}")
    return {o.name: v for o, v in zip(plan.outputs, values, strict=True)}


def _advice(failed: bool, layers: list[LayerDiagnostics], eval_clip: float) -> list[str]:
    """Triage from the measurements, in the order a practitioner would try things, when a gate failed."""
    if not failed:
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


def _plan(float_model: FloatModel, x: np.ndarray, data: EvalSet, tasks: Sequence[Mapping[str, Any] | OutputTask],
          executor: Executor) -> tuple[OutputPlan, dict[str, np.ndarray]]:
    """FP32's outputs on every sample, and the task of every output (checked on FP32's own outputs)."""
    cpu = parse_backend("cpu")
    session = open_session(float_model.flatbuffer, cpu)
    fp32 = predict_outputs_on(executor, float_model.flatbuffer, cpu, 1, x, session)
    infos = [OutputInfo(name, tuple(int(d) for d in o.shape)) for name, o in zip(fp32, session.outputs, strict=True)]
    plan = plan_outputs(infos, tasks, labelled=data.labels is not None)
    check_plan(plan, fp32, data.labels)
    return plan, fp32


def _flat(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A classification output as (N, classes) scores."""
    values = outputs[name]
    return values.reshape(len(values), -1)


def validate(model: ModelSource, calib: str | Path, data: EvalSet, out_dir: Path,
             methods: tuple[Estimator, ...] = METHODS, max_drop_pp: float | None = None,
             recipe: QuantRecipe | None = None, calib_preprocessing: Preprocessing | None = None,
             split_seed: int = SPLIT_SEED, *, tasks: Sequence[Mapping[str, Any] | OutputTask] = (),
             gates: FidelityGates | None = None, recover: Sequence[Rung] = (),
             targets: Sequence[str] = ("generic",), sensitivity: bool = False,
             executor: Executor | None = None) -> ValidationReport:
    """Convert with every method from one calibration pass and measure each against FP32 on the whole set,
    every output (``tasks``: the declared output tasks, edgeq.validate.outputs); pick the most faithful method
    on the selection half and judge its max drop (labels and a classification output needed) and the
    fidelity ``gates`` on the held-out gate half (edgeq.validate.verdicts describes the rules). The INT8
    models stay in ``out_dir`` (:func:`model_path`). When a gate fails, ``recover`` climbs the recovery ladder
    (edgeq.validate.ladder) for ``targets``; ``sensitivity`` adds the picked method's per-tensor sensitivity.
    ``executor`` runs the calibration pass and every evaluation pass in shards (docs/executors.md): the report is
    the same on any executor."""
    recipe = recipe or QuantRecipe()
    executor = executor or LocalExecutor()
    gates = gates or FidelityGates()
    labels = data.labels
    if max_drop_pp is not None and labels is None:
        raise UsageError(f"max drop (--max-drop) gates the top-1 drop, which needs labels, and {data.name} has none; "
                         "gate fidelity instead (--min-output-sqnr, --min-agreement, --min-detection-recall, "
                         "--min-mask-iou, --max-landmark-error)")
    # before any work: a set too small fails fast
    split = split_halves(labels, data.conditions, split_seed, n=len(data))
    float_model = model if isinstance(model, FloatModel) else load_float_model(model)
    float_bytes = float_model.flatbuffer
    x = data.model_inputs()
    plan, fp32_outputs = _plan(float_model, x, data, tasks, executor)
    check_gates(gates, plan)
    accuracy = plan.accuracy_output  # top-1 is measured on it (labels and a classification output)
    if max_drop_pp is not None and accuracy is None:
        raise UsageError("max drop (--max-drop) gates the top-1 drop of a classification output; the model's outputs "
                         f"are judged as {', '.join(f'{t.output}: {t.task}' for t in plan.tasks)} (declare one with "
                         "--task OUTPUT=classification)")
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_data = _calibration_data(float_model, calib, calib_preprocessing, None)
    calibration = Calibration(float_model, calib_data, collect_sharded(float_bytes, calib_data, executor))
    stats_file = calibration.stats.save(out_dir / "stats.npz")
    ranked_task, several = plan.ranking()
    conditions = data.conditions
    if accuracy is not None:
        assert labels is not None
        fp32 = _flat(fp32_outputs, accuracy)
        fp32_correct = fp32.argmax(-1) == labels
        baseline = evaluate(fp32, labels, conditions)
    measured, artifacts, selection, int8_correct, by_method = [], {}, [], {}, {}
    for n, method in enumerate(methods, 1):
        step(f"method {n}/{len(methods)}: {method.value}")
        path = model_path(out_dir, method)
        searched = Estimator(method) is Estimator.SEARCH  # measures on calibration samples, not statistics
        artifacts[method] = convert(float_model, path, calib=calib if searched else None,
                                    stats=None if searched else stats_file, recipe=recipe.with_updates(method=method),
                                    preprocessing=calib_preprocessing if searched else None)
        int8_outputs = _outputs(path.read_bytes(), x, plan, executor)
        by_method[method] = measure_outputs(plan, fp32_outputs, int8_outputs, labels)
        if ranked_task == "classification":
            reference, scores = _flat(fp32_outputs, plan.ranked), _flat(int8_outputs, plan.ranked)
            whole = measure_fidelity(method.value, reference, scores)
            half = measure_fidelity(method.value, reference[split.selection], scores[split.selection])
        else:
            whole = ranked_fidelity(plan, method.value, by_method[method])
            half = ranked_fidelity(plan, method.value, by_method[method], split.selection)
        selection.append(half)
        result = drop = None
        if accuracy is not None:
            scores = _flat(int8_outputs, accuracy)
            result = evaluate(scores, labels, conditions, reference=fp32)
            int8_correct[method.value] = scores.argmax(-1) == labels
            drop = measure_drop(fp32_correct, int8_correct[method.value])
        measured.append((method, result, drop, whole, half))
    groups = rank_by_fidelity(selection)
    rank = {record.method: place for place, group in enumerate(groups, 1) for record in group}
    results = tuple(_method_result(method, result, drop, whole, half.to_score(rank[method.value]),
                                   artifacts[method].size_ratio) for method, result, drop, whole, half in measured)
    best_method = Estimator(groups[0][0].method)
    gate = None
    if accuracy is not None:
        gate = judge_drop(best_method.value, measure_drop(fp32_correct[split.gate],
                                                          int8_correct[best_method.value][split.gate]), max_drop_pp)
    output_gates = judge_gates(gates, plan, best_method.value, by_method[best_method], split.gate)
    failed = (gate is not None and gate.passed is False) or not all(g.passed for g in output_gates)
    best_path = model_path(out_dir, best_method)
    step(f"per-layer diagnostics of {best_method.value}")
    layers = per_layer(float_bytes, best_path.read_bytes(), x[:LAYER_SAMPLES])
    worst_layers = worst(layers, 3)
    eval_clip = max((r.clip_fraction for r in layers if r.op not in ("SOFTMAX", "LOGISTIC")), default=0.0)
    advice = _advice(failed, layers, eval_clip)
    best = artifacts[best_method]

    def judge(path: Path, label: str) -> Verdict:
        """A recovery rung's model judged as the methods are: selection-half fidelity, gates on the gate half."""
        int8_outputs = _outputs(path.read_bytes(), x, plan, executor)
        measured = measure_outputs(plan, fp32_outputs, int8_outputs, labels)
        if ranked_task == "classification":
            reference, scores = _flat(fp32_outputs, plan.ranked), _flat(int8_outputs, plan.ranked)
            half = measure_fidelity(label, reference[split.selection], scores[split.selection])
        else:
            half = ranked_fidelity(plan, label, measured, split.selection)
        held_gate = None
        if accuracy is not None:
            correct = _flat(int8_outputs, accuracy).argmax(-1) == labels
            drop = measure_drop(fp32_correct[split.gate], correct[split.gate])
            # the record keeps the method the rung started from; its text names the rung that was measured
            named = judge_drop(best_method.value if label == "start" else f"rung {label}", drop, max_drop_pp)
            held_gate = replace(judge_drop(best_method.value, drop, max_drop_pp).to_result(), detail=named.detail)
        rows = judge_gates(gates, plan, label, measured, split.gate)
        missed = (held_gate is not None and held_gate.passed is False) or not all(g.passed for g in rows)
        return Verdict(sort_key=half.sort_key(), sqnr_db=finite_or_none(half.output_sqnr_db),
                       agreement=half.agreement, failed=missed,
                       gate=held_gate, gates=rows)

    recovery = None
    if recover and failed:
        context = Context(calib=calib, calib_preprocessing=calib_preprocessing, eval_inputs=x[split.selection],
                          out_dir=out_dir, targets=tuple(targets), judge=judge)
        start = State(float_model=float_model, recipe=recipe.with_updates(method=best_method))
        recovery = run_ladder(recover, start, best_path, context)
        advice = [*advice, recovery.verdict]
    # the Model section describes the file validate recommends: the rung's model when one met the gates
    recommended = best
    if recovery is not None and recovery.met_by is not None and recovery.model is not None:
        sidecar = (out_dir / recovery.model).with_suffix(".json")
        recommended = QuantizedArtifact.from_dict(json.loads(sidecar.read_text()))
    sensitivity_report = None
    if sensitivity:
        sensitivity_report = sensitivity_of(State(float_model=float_model, recipe=recipe.with_updates(
            method=Estimator.AUTO if best_method is Estimator.SEARCH else best_method)), Context(
            calib=calib, calib_preprocessing=calib_preprocessing, eval_inputs=x[split.selection], out_dir=out_dir,
            targets=tuple(targets), judge=judge))
    summary = ValidationSummary(
        eval_set=data.name, calibration=str(calib), confidence=CONFIDENCE,
        baseline=None if accuracy is None else Baseline(
            top1=baseline.top1, top1_ci=wilson_interval(int(fp32_correct.sum()), len(labels)), top5=baseline.top5,
            n=baseline.n, per_condition=_per_condition(baseline.per_condition)),
        methods=results, best_method=best_method, split=split.to_record(conditions, labelled=labels is not None),
        selection=SelectionRecord(n=len(split.selection),
                                  by=fidelity_order(ranked_task, plan.ranked if several else None),
                                  ranking=tuple(tuple(Estimator(r.method) for r in group) for group in groups),
                                  tied_with_best=tuple(Estimator(r.method) for r in groups[0][1:])),
        gate=None if gate is None else gate.to_result(), max_drop_pp=max_drop_pp, passed=not failed,
        advice=tuple(advice))
    return ValidationReport(
        validation=summary,
        outputs=_outputs_report(plan, by_method, conditions, output_gates),
        layers=LayerReport(method=best_method, samples=int(min(len(x), LAYER_SAMPLES)), rows=tuple(layers),
                           worst=tuple(r.name for r in worst_layers)),
        histograms=_histograms(calibration.stats, [r.name for r in worst_layers], recipe),
        model=ModelSummary(source=float_model.source, float_bytes=recommended.float_bytes,
                           int8_bytes=recommended.int8_bytes, size_ratio=recommended.size_ratio,
                           sha256=recommended.sha256),
        calibration_samples=CalibrationSamples.from_document(samples_document(best)),
        sensitivity=sensitivity_report, recovery=recovery)


def _method_result(method: Estimator, result: Any, drop: Any, whole: Fidelity, score: Any,
                   size_ratio: float) -> MethodResult:
    """One method's row: top-1 and its drop when measured (``result``, ``drop``), the ranked output's fidelity."""
    accuracy: dict[str, Any] = {}
    if result is not None:
        accuracy = dict(top1=result.top1, top1_ci=drop.int8_ci, top5=result.top5, drop_pp=drop.drop_pp,
                        drop_ci_pp=drop.drop_ci_pp, vs_fp32=drop.vs_fp32)
    return MethodResult(
        method=method, **accuracy, agreement=result.agreement if result is not None else whole.agreement,
        output_sqnr_db=finite_or_none(whole.output_sqnr_db), bit_exact=whole.bit_exact,
        output_mae=finite_or_none(whole.output_mae),
        per_condition=_per_condition(result.per_condition) if result is not None else {}, size_ratio=size_ratio,
        selection=score)


def _outputs_report(plan: OutputPlan, by_method: Mapping[Estimator, OutputMeasurement],
                    conditions: Sequence[str] | None, gates: tuple[Any, ...]) -> OutputsReport:
    return OutputsReport(model_outputs=plan.declarations(), ranked_by=plan.ranked,
                         methods=tuple(MethodOutputs(method=method, outputs=output_results(plan, measured, conditions))
                                       for method, measured in by_method.items()),
                         gates=gates)


def _per_condition(entries: dict[str, dict[str, Any]]) -> dict[str, ConditionAccuracy]:
    return {condition: ConditionAccuracy(**entry) for condition, entry in entries.items()}
