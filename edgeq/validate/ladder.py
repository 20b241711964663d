"""The recovery ladder: when the picked method misses the gate, try the automatable steps of the triage path
in the user's order and stop at the first that meets it.

Rungs (``RUNGS``): ``search`` (per-tensor ranges by measurement, edgeq.recover.search), ``equalize``
(channel equalization in the float graph, strength chosen by measurement, edgeq.recover.equalize),
``bias_correction`` (empirical, layer by layer, edgeq.recover.bias_correction) and ``int16:N`` (the N
activations whose int8 costs the most, by simulated sensitivity, kept at int16 through ai-edge-quantizer).

Each rung builds on the state the previous rungs left and produces a real INT8 model, which is judged like
validate's methods: its fidelity on the selection half decides whether the rung is *kept* (better than the
state before) or *reverted*, and the gates are judged on the held-out gate half. The target constrains the
ladder: a rung whose model the target cannot run is refused, with the reason. When no rung meets the gate,
the verdict names the tensors that remain the problem (highest simulated gain from higher precision).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeq.artifacts import Estimator, Preprocessing, SensitivityReport, TransformRecord
from edgeq.calib.collect import model_inputs
from edgeq.calib.data import load_calibration
from edgeq.calib.ranges import choose_ranges
from edgeq.converter.api import calibrate, convert
from edgeq.errors import EdgeqError, UsageError
from edgeq.harness.backends import open_session, parse_backend
from edgeq.harness.latency import classify, random_inputs
from edgeq.intake.float_model import FloatModel
from edgeq.progress import step
from edgeq.quant_recipe import QuantRecipe
from edgeq.recover.sensitivity import analyse
from edgeq.recover.simulate import Simulator
from edgeq.results.gates import Gate
from edgeq.results.validation import HeldOutGate, RecoveryReport, RungResult
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

#: Targets whose kernels run int16 activations (int16x8). The Edge TPU runs 8-bit only; TFLite Micro's
#: int16 coverage is not measured here, so the ladder does not promise it.
INT16_TARGETS = frozenset({"generic", "xnnpack"})
EQUALIZE_STRENGTHS: tuple[float | None, ...] = (None, 0.25, 0.5, 0.75)  # None: cross-layer (weights only)
CALIBRATION_SAMPLES = 64  # what equalize's channel ranges and bias correction measure on
SENSITIVITY_SAMPLES = 32
LATENCY_RUNS = 30
LATENCY_BACKENDS = ("xnnpack", "cpu")
REMAINING = 5


@dataclass(frozen=True)
class Verdict:
    """How one INT8 model fares: ``sort_key`` on the selection half (lower is better), the gates on the gate half."""

    sort_key: tuple[float, ...]
    sqnr_db: float | None
    agreement: float | None
    failed: bool
    gate: HeldOutGate | None
    gates: tuple[Gate, ...]


Judge = Callable[[Path, str], Verdict]


@dataclass(frozen=True)
class Rung:
    name: str  # as the user wrote it
    kind: str
    count: int = 0


@dataclass(frozen=True)
class State:
    float_model: FloatModel
    recipe: QuantRecipe
    transforms: tuple[TransformRecord, ...] = ()
    int16: tuple[str, ...] = ()
    # Bias correction is measured for the ranges the model is converted with, so it is applied last, when a
    # model is built, on whatever the other rungs left (a correction for other ranges can do harm).
    bias_corrected: bool = False


@dataclass(frozen=True)
class Context:
    calib: str | Path
    calib_preprocessing: Preprocessing | None
    eval_inputs: np.ndarray  # the selection half's model inputs (sensitivity runs on them)
    out_dir: Path
    targets: tuple[str, ...]
    judge: Judge


def parse_ladder(items: Sequence[str]) -> tuple[Rung, ...]:
    """``["search", "equalize", "bias_correction", "int16:3"]`` → rungs; UsageError on anything else."""
    rungs = []
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"int16:(\d+)", text)
        if match:
            count = int(match.group(1))
            if not 1 <= count <= 64:
                raise UsageError(f"recovery rung {text!r}: keep between 1 and 64 tensors at int16")
            rungs.append(Rung(text, "int16", count))
        elif text in RUNGS and text != "int16":
            rungs.append(Rung(text, text))
        else:
            raise UsageError(f"unknown recovery rung {text!r} (rungs: search, equalize, bias_correction, int16:N)")
    if len({r.kind for r in rungs}) != len(rungs):
        raise UsageError("each recovery rung may appear once in the ladder")
    return tuple(rungs)


def _calibration_samples(state: State, ctx: Context) -> list[list[np.ndarray]]:
    """``CALIBRATION_SAMPLES`` samples spread evenly over the calibration set (a datagen set is ordered by
    condition: its first samples would all be one condition)."""
    interpreter, _ = make_interpreter(state.float_model.flatbuffer, CpuKernels.CPU)
    data = load_calibration(ctx.calib, model_inputs(interpreter), ctx.calib_preprocessing,
                            model=state.float_model.flatbuffer)
    chosen = set(np.linspace(0, len(data) - 1, min(CALIBRATION_SAMPLES, len(data))).round().astype(int).tolist())
    return [batch for i, batch in data.samples(model_inputs(interpreter)) if i in chosen]


def _with_model(state: State, flatbuffer: bytes, record: TransformRecord) -> State:
    return replace(state, float_model=replace(state.float_model, flatbuffer=flatbuffer),
                   transforms=(*state.transforms, record))


def _ranges(state: State, ctx: Context) -> dict[TensorKey, tuple[float, float]]:
    """The activation ranges ``state``'s recipe gives on the whole calibration set (auto's for a search)."""
    stats = calibrate(state.float_model, ctx.calib, preprocessing=ctx.calib_preprocessing).stats
    recipe = state.recipe if Estimator(state.recipe.method) is not Estimator.SEARCH else replace(
        state.recipe, method=Estimator.AUTO)
    table = choose_ranges(stats, recipe)
    return {k: (r.min, r.max) for k, r in zip(sorted(stats.tensors), table.ranges, strict=True)}


def sensitivity_of(state: State, ctx: Context) -> SensitivityReport:
    ranges = _ranges(state, ctx)
    sim = Simulator(state.float_model.flatbuffer, per_tensor=state.recipe.per_tensor,
                    per_tensor_dense=state.recipe.per_tensor_dense)
    samples = [[x[None]] for x in ctx.eval_inputs[:SENSITIVITY_SAMPLES]]
    method = Estimator(state.recipe.method)
    return analyse(sim, ranges, samples, described_as=(Estimator.AUTO if method is Estimator.SEARCH else method).value)


# ---------------------------------------------------------------- the rungs: State -> (State, note)

Candidate = tuple[State, str]


def _search(state: State, ctx: Context, rung: Rung) -> list[Candidate]:
    return [(replace(state, recipe=replace(state.recipe, method=Estimator.SEARCH)), "per-tensor ranges by measurement")]


def _equalize(state: State, ctx: Context, rung: Rung) -> list[Candidate]:
    from edgeq.recover.equalize import channel_absmax, equalizable, equalize

    model = state.float_model.flatbuffer
    found = equalizable(model, scope="groups")
    if not found:
        return []
    absmax = channel_absmax(model, _calibration_samples(state, ctx), list(found))
    candidates, failed = [], []
    for strength in EQUALIZE_STRENGTHS:
        how = "cross-layer (weights)" if strength is None else f"SmoothQuant alpha={strength:g}"
        try:
            result = equalize(model, strength=strength, channel_absmax=absmax, scope="groups")
        except RuntimeError as exc:  # the float function changed: an edgeq bug; this candidate is never built
            failed.append(f"{how}: {exc} (an edgeq bug: please report it with the model)")
            continue
        if not result.groups:
            continue
        record = TransformRecord(name="equalize", changed=len(result.groups),
                                 settings={"strength": how, "scope": "groups"},
                                 max_output_change=result.output_change)
        candidates.append((_with_model(state, result.model, record), f"{how}, {len(result.groups)} layer groups"))
    if failed and not candidates:
        raise UsageError("; ".join(failed))
    return candidates


def _bias_correction(state: State, ctx: Context, rung: Rung) -> list[Candidate]:
    return [(replace(state, bias_corrected=True), "biases corrected for the ranges the model is built with")]


def _resolved(state: State, ctx: Context) -> QuantRecipe:
    """``state``'s recipe with a search resolved into the recipe it ships (a single estimator, or auto with
    per-tensor overrides): what a rung that builds on fixed ranges (bias correction, int16) needs."""
    from edgeq.converter.api import quantize_with
    from edgeq.recover.search import search

    recipe = state.recipe
    if Estimator(recipe.method) is not Estimator.SEARCH:
        return recipe
    model = state.float_model.flatbuffer
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    data = load_calibration(ctx.calib, model_inputs(interpreter), ctx.calib_preprocessing, model=model)
    return search(model, data, replace(recipe, method=Estimator.AUTO), quantize_with).recipe


def _corrected(state: State, ctx: Context) -> State:
    """``state`` with its biases corrected for the ranges it is converted with (a search is resolved first, so
    that the correction and the conversion use the same ranges)."""
    from edgeq.recover.bias_correction import correct_biases
    from edgeq.recover.equalize import check_same_function

    model, recipe = state.float_model, _resolved(state, ctx)
    ranges = _ranges(replace(state, recipe=recipe), ctx)
    result = correct_biases(model.flatbuffer, ranges, _calibration_samples(state, ctx),
                            per_tensor=recipe.per_tensor, per_tensor_dense=recipe.per_tensor_dense)
    settings = {"samples": str(result.samples), "ranges": f"{Estimator(recipe.method).value} (before correction)"}
    drift = check_same_function(model.flatbuffer, result.model, "bias correction", rtol=float("inf"))
    record = TransformRecord(name="bias_correction", changed=result.changed, settings=settings,
                             max_output_change=drift)  # by design: the float model now computes its int8 version
    return replace(_with_model(state, result.model, record), recipe=recipe, bias_corrected=False)


def _int16(state: State, ctx: Context, rung: Rung) -> list[Candidate]:
    from edgeq.converter.int16 import int16_candidates

    supported = {c.tensor for c in int16_candidates(state.float_model.flatbuffer) if c.supported}
    report = sensitivity_of(state, ctx)
    rows = [r for r in report.tensors if r.tensor_kind == "activation" and r.name in supported]
    rows.sort(key=lambda r: -r.recovers_db)
    chosen = tuple(r.name for r in rows[: rung.count])
    if not chosen:
        return []
    state = replace(state, recipe=_resolved(state, ctx))  # the int16 model is built on these int8 ranges
    note = f"int16: {', '.join(_short(name) for name in chosen)}"
    if "xnnpack" in ctx.targets:
        note += " (XNNPACK delegates no int16 op: they run on the builtin kernels, see the latency)"
    return [(replace(state, int16=chosen), note)]


RUNGS: dict[str, Callable[[State, Context, Rung], list[Candidate]]] = {
    "search": _search, "equalize": _equalize, "bias_correction": _bias_correction, "int16": _int16}


def _refusal(rung: Rung, targets: Sequence[str]) -> str | None:
    if rung.kind == "int16":
        blocked = sorted(set(targets) - INT16_TARGETS)
        if blocked:
            return f"target {', '.join(blocked)} runs full int8 only (no int16x8 kernels)"
    return None


def _latency(model: Path) -> tuple[dict[str, float], tuple[str, ...]]:
    """The median of a short run per backend, and the backends whose run was unstable (classify)."""
    found, unstable = {}, []
    for name in LATENCY_BACKENDS:
        try:
            session = open_session(model.read_bytes(), parse_backend(name))
        except EdgeqError:
            continue
        session.set_inputs(random_inputs(session, 0))
        session.invoke()
        times = []
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            session.invoke()
            times.append((time.perf_counter() - started) * 1e3)
        found[name] = round(statistics.median(times), 4)
        if classify(times).stable is False:
            unstable.append(name)
    return found, tuple(unstable)


def _result(rung: str, status: str, note: str, verdict: Verdict | None, model: Path | None) -> RungResult:
    latency, unstable = ({}, ()) if model is None else _latency(model)
    return RungResult(rung=rung, status=status, note=note,
                      selection_sqnr_db=None if verdict is None else verdict.sqnr_db,
                      selection_agreement=None if verdict is None else verdict.agreement,
                      gate_passed=None if verdict is None else not verdict.failed,
                      gate=None if verdict is None else verdict.gate, gates=() if verdict is None else verdict.gates,
                      int8_bytes=None if model is None else model.stat().st_size,
                      latency_ms=latency, latency_unstable=unstable, model=None if model is None else model.name)


def _build(state: State, ctx: Context, path: Path) -> Path:
    if state.bias_corrected:
        state = _corrected(state, ctx)
    convert(state.float_model, path, calib=ctx.calib, recipe=state.recipe, preprocessing=ctx.calib_preprocessing,
            int16=state.int16, transforms=state.transforms)
    return path


def _short(name: str) -> str:
    """A TFLite tensor name is often several ';'-joined op names: the first says which layer it is."""
    return name.split(";")[0] or name


def run_ladder(rungs: Sequence[Rung], start: State, start_model: Path, ctx: Context) -> RecoveryReport:
    """Climb ``rungs`` from ``start`` (the picked method's state, its model at ``start_model``)."""
    verdict = ctx.judge(start_model, "start")
    first = _result("start", "met the gate" if not verdict.failed else "missed the gate",
                    f"method {Estimator(start.recipe.method).value}", verdict, start_model)
    results: list[RungResult] = []
    state, best = start, verdict
    met_by = model = None
    looks = 1  # how many models were judged on the gate half (the start included)
    for k, rung in enumerate(rungs if verdict.failed else (), 1):
        step(f"recovery rung {k}/{len(rungs)}: {rung.name}")
        refused = _refusal(rung, ctx.targets)
        if refused is not None:
            results.append(_result(rung.name, "refused", refused, None, None))
            continue
        try:
            candidates = RUNGS[rung.kind](state, ctx, rung)
        except EdgeqError as exc:
            results.append(_result(rung.name, "refused", f"{type(exc).__name__}: {exc}", None, None))
            continue
        if not candidates:
            results.append(_result(rung.name, "refused", "nothing in this model for this rung to change", None, None))
            continue
        tried = []
        for c, (candidate, note) in enumerate(candidates):
            path = ctx.out_dir / f"recover_{k}_{rung.kind}{f'_{c}' if len(candidates) > 1 else ''}.tflite"
            try:
                _build(candidate, ctx, path)
                judged_here = ctx.judge(path, rung.name)
            except EdgeqError as exc:
                tried.append((None, candidate, f"{note}: {exc}", None))
                continue
            tried.append((judged_here, candidate, note, path))
        judged = [t for t in tried if t[0] is not None]
        if not judged:
            results.append(_result(rung.name, "refused", "; ".join(t[2] for t in tried), None, None))
            continue
        rung_verdict, candidate, note, path = min(judged, key=lambda t: t[0].sort_key)
        if len(candidates) > 1:
            note += f" (best of {len(judged)} by selection-half fidelity)"
        looks += 1
        if not rung_verdict.failed:
            results.append(_result(rung.name, "met the gate", note, rung_verdict, path))
            met_by, model = rung.name, path
            break
        better = rung_verdict.sort_key < best.sort_key
        results.append(_result(rung.name, "kept" if better else "reverted", note, rung_verdict, path))
        if better:
            state, best = candidate, rung_verdict
    remaining: tuple[str, ...] = ()
    unranked = ""
    if met_by is None and not first.gate_passed:
        try:
            report = sensitivity_of(state, ctx)
        except EdgeqError as exc:
            unranked = f" (the tensors could not be ranked: {exc})"
        else:
            # layers, not the model input (its int8 range is the input's: preprocessing decides it, not training)
            ranked = sorted((r for r in report.tensors if r.tensor_kind == "activation" and r.op != "INPUT"),
                            key=lambda r: -r.recovers_db)
            remaining = tuple(r.name for r in ranked[:REMAINING])
    if first.gate_passed:
        text = "the picked method already meets the gate; no rung ran"
    elif met_by is not None and model is not None:
        text = f"rung {met_by} met the gate: {model.name}"
        if looks > 2:  # the start and this rung are not the only models the gate half judged
            text += (f" (the held-out gate half judged {looks} models in turn: a pass after several looks is "
                     "weaker evidence than one; confirm on data the ladder did not see)")
    elif remaining:
        text = ("no rung met the gate; the tensors that remain the problem (most to gain from higher precision): "
                f"{', '.join(_short(name) for name in remaining)} — consider QAT for these layers")
    else:
        text = f"no rung met the gate{unranked} — consider QAT"
    return RecoveryReport(ladder=tuple(r.name for r in rungs), targets=tuple(ctx.targets), start=first,
                          rungs=tuple(results), met_by=met_by, passed=bool(first.gate_passed) or met_by is not None,
                          model=None if model is None else model.name, remaining=remaining, verdict=text,
                          gate_looks=looks)
