"""The recovery ladder side by side with TensorFlow's quantizer and edgeq's single methods (issue 16).

Usage: python benchmarks/recovery.py [--models NAMES] [--ladder search,equalize,bias_correction,int16:3]
                                     [--write docs/recovery.md]

Models: the outlier-channel models of benchmarks/outlier_models.py (``build_outlier_models``: the zoo cnn and
mobilenet_v2 with 3-4 activation channels scaled 30-100x, float function unchanged), the cached zoo ``cnn`` and
``mobilenet_v2`` (easy controls), the zoo ``vit`` when it is in the zoo cache (it is never trained here), and
the three vendored MediaPipe models (tests/data/mediapipe). Data: for the digits models the first 256 of a
seeded shuffle of the train split calibrate and the 360-image test split is held out (benchmarks/accuracy.py);
for the MediaPipe models the 21 bundled photos, 14 calibrate and 7 are held out (benchmarks/real_models.py
``load_data``). Every quantizer gets the same calibration samples.

Rows per model, each a real INT8 model measured on the held-out samples against the float model (LiteRT
builtin CPU kernels):
- TF: TensorFlow's full-integer quantizer with a representative dataset of the calibration samples, MLIR
  quantizer (TF's default), int8 I/O: ``TFLiteConverter.from_keras_model`` for a Keras model, and for a .tflite
  the calibrator + MLIR quantizer stage TFLiteConverter runs (benchmarks/real_models.py ``--tf-child``, in a
  child process; on the file as given, else on edgeq's intake output with unused entries dropped).
- every single edgeq estimator (minmax, percentile, mse, kl) and ``auto``, as ``edgeq validate`` converts them
  (one calibration pass).
- the ladder: ``edgeq.validate.protocol.validate(..., recover=parse_ladder(LADDER), targets=("generic",))``
  with a gate that cannot be met (output SQNR >= 200 dB on the first output, on top of ``max_drop_pp=1`` for
  the labelled sets), so every rung runs. ``start`` is the method validate picked on the selection half; each
  rung builds on the state the previous rungs left (a rung that was not better on the selection half is
  reverted and the next one builds on the state before it), exactly as ``edgeq validate --recover`` does.
  The ``search`` rung, run first on the untouched float model, is ``convert(..., recipe=QuantRecipe(method=
  Estimator.SEARCH))``: it is the "edgeq search" row. The int16 rung comes last, so every row before it is
  the strict full-int8 ladder (what ``--targets edgetpu`` runs, which refuses int16).

Measured: top-1 on the test split and its drop vs FP32 in pp (digits models); output SQNR dB per output and
the task metric from edgeq.validate.tasks (detection recall of FP32's detections by INT8, same-anchor matching
as no anchors are declared; mask IoU at 0.5) for the MediaPipe models; the mean output SQNR (the search's own
objective, edgeq.recover.simulate.fidelity); INT8 size; latency p50 with one thread on XNNPACK and on LiteRT's
builtin CPU kernels (edgeq.harness.latency, every model of one table interleaved in rounds). Also: simulated vs
real fidelity (edgeq.recover.simulate on auto's ranges vs the real auto INT8 model, same held-out samples) and
the search's own held-out record (simulated and real dB per contender on held-out calibration samples).
Prints Markdown; ``--write FILE`` replaces the part of FILE between the generated-section markers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from markdown import write_generated  # noqa: E402
from mediapipe_accuracy import output_names, run_outputs  # noqa: E402
from real_models import SPECS as REAL_SPECS  # noqa: E402
from real_models import drop_unused, load_data, machine, run_child  # noqa: E402

BEGIN, END = "<!-- recovery.py: begin generated -->", "<!-- recovery.py: end generated -->"
LADDER = ("search", "equalize", "bias_correction", "int16:3")
SINGLE = ("minmax", "percentile", "mse", "kl")
IMPOSSIBLE_SQNR_DB = 200.0
MAX_DROP_PP = 1.0
OUTLIER_MODELS = ("cnn_b1_outliers", "cnn_b2_outliers", "mobilenet_v2_ir1_outliers")
ZOO_MODELS = ("cnn", "mobilenet_v2", "vit")
MEDIAPIPE_MODELS = ("face_detection_short_range", "face_detection_full_range_sparse", "selfie_segmentation")
MODELS = (*OUTLIER_MODELS, *ZOO_MODELS, *MEDIAPIPE_MODELS)
#: The MediaPipe models' output tasks (as README.md declares them for edgeq validate; no anchors file).
TASKS: dict[str, list[dict[str, Any]]] = {
    "face_detection_short_range": [{"output": "regressors", "task": "detection", "scores": "classificators",
                                    "form": "ssd", "sigmoid_score": True, "score_clipping_thresh": 100.0}],
    "face_detection_full_range_sparse": [{"output": "Identity", "task": "detection", "scores": "Identity_1",
                                          "form": "ssd", "sigmoid_score": True, "score_clipping_thresh": 100.0}],
    "selfie_segmentation": [{"output": "activation_10", "task": "segmentation", "threshold": 0.5}],
}
LATENCY_BACKENDS = ("xnnpack", "cpu")
VIT_REASON = "not in the zoo cache (`edgeq zoo build vit` trains it; this benchmark never trains)"


@dataclass
class Row:
    label: str
    status: str  # what the row is / the ladder's verdict on it
    model: bytes | None
    top1: float | None = None
    sqnr: list[float] = field(default_factory=list)
    mean_sqnr: float | None = None
    task: str = ""
    int16: int = 0
    p50: dict[str, float] = field(default_factory=dict)
    gate_drop: str = ""  # the ladder's held-out gate half: drop pp, pass/fail at MAX_DROP_PP


@dataclass
class ModelResult:
    name: str
    kind: str  # "digits" or "mediapipe"
    outputs: list[str]
    n_held: int
    fp32_top1: float | None
    rows: list[Row]
    picked: str
    singles: dict[str, float]  # single estimator -> mean output SQNR on the held-out set
    single_top1: dict[str, float]
    search_record: dict[str, Any] | None
    sim_vs_real: tuple[float, float] | None  # (simulated, real) mean SQNR of auto's ranges on the held-out set
    seconds: float
    verdict: str
    note: str = ""


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass
class Data:
    source: Path
    float_model: Any
    calib_images: np.ndarray
    preprocessing: Any
    calib: np.ndarray  # float model input, for TF
    held: np.ndarray
    labels: np.ndarray | None
    tf_kind: str  # "keras" or "tflite"


def digits_data(name: str, source: Path, parent: str, tf_kind: str) -> Data:
    from edgeq.intake.load import load_float_model
    from edgeq.preprocess import apply_preprocessing
    from edgeq_models import ZOO
    from edgeq_models.zoo import load_splits

    train, _, test = load_splits(ZOO[parent].dataset)
    order = np.random.default_rng(0).permutation(len(train))[:256]
    pp = ZOO[parent].preprocessing
    return Data(source=source, float_model=load_float_model(source), calib_images=train.images[order],
                preprocessing=pp, calib=apply_preprocessing(pp, train.images[order]),
                held=apply_preprocessing(pp, test.images), labels=np.asarray(test.labels), tf_kind=tf_kind)


def mediapipe_data(name: str, folder: Path) -> Data:
    from edgeq.intake.load import load_float_model

    d = load_data(REAL_SPECS[name], folder)
    return Data(source=d.source, float_model=load_float_model(d.source), calib_images=d.calib_images,
                preprocessing=d.preprocessing, calib=d.calib, held=d.held, labels=None, tf_kind="tflite")


# ---------------------------------------------------------------------------------------------------------
# TensorFlow (real_models.py's child, MLIR quantizer only)


def tf_int8(data: Data, folder: Path, name: str) -> tuple[bytes | None, str]:
    calib = folder / f"{name}_calib_float.npy"
    np.save(calib, data.calib)
    me = [sys.executable, str(ROOT / "benchmarks" / "real_models.py"), "--tf-child"]
    out = folder / f"{name}_tf.tflite"
    if data.tf_kind == "keras":
        attempt = run_child([*me, "keras", str(data.source), str(calib), str(out), "mlir"], out)
        return attempt.model, "TFLiteConverter.from_keras_model" if attempt.ok else attempt.detail
    inputs: dict[str, Callable[[], bytes]] = {
        "the file": data.source.read_bytes,
        "edgeq's intake output, unused entries dropped": lambda: drop_unused(data.float_model.flatbuffer)}
    if name in MEDIAPIPE_MODELS:  # the file as shipped fails (docs/real_models.md); skip the known failure
        inputs.pop("the file")
    failures = []
    for given, content in inputs.items():
        model = folder / f"{name}_tf_input.tflite"
        try:
            model.write_bytes(content())
        except ValueError as exc:
            failures.append(f"{given}: {exc}")
            continue
        attempt = run_child([*me, "tflite", str(model), str(calib), str(out), "mlir"], out)
        if attempt.ok:
            return attempt.model, f"calibrator + MLIR quantizer on {given}"
        failures.append(f"{given}: {attempt.detail}")
    return None, "; ".join(failures)


# ---------------------------------------------------------------------------------------------------------
# measuring


def int16_count(model: bytes) -> int:
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(model)
    code = tfl.tensor_type("INT16")
    graph = parsed.subgraphs[0]
    return sum(1 for t in graph.tensors if int(t.type) == code and t.buffer is not None
               and not len(parsed.buffers[int(t.buffer)].data or []))


def measure(row: Row, data: Data, reference: list[np.ndarray], names: list[str], tasks: list[Any]) -> None:
    from edgeq.recover.simulate import fidelity
    from edgeq.validate.diagnostics import output_sqnr_db

    assert row.model is not None
    approx = run_outputs(row.model, data.held)
    row.sqnr = [output_sqnr_db(r, a) for r, a in zip(reference, approx, strict=True)]
    row.mean_sqnr = fidelity([r.reshape(-1) for r in reference], [a.reshape(-1) for a in approx])
    row.int16 = int16_count(row.model)
    if data.labels is not None:
        row.top1 = float((approx[0].reshape(len(data.held), -1).argmax(-1) == data.labels).mean())
    cells = []
    for task in tasks:
        metrics = task.measure(dict(zip(names, reference, strict=True)), dict(zip(names, approx, strict=True)))
        if task.task == "detection":
            cells.append(f"recall {metrics.recall:.3f} ({metrics.matched}/{metrics.fp32_detections})"
                         if metrics.recall is not None else "no FP32 detections")
        elif task.task == "segmentation":
            cells.append(f"IoU {metrics.class_iou[0]:.3f} pooled / {metrics.mean_iou:.3f} mean")
    row.task = "; ".join(cells)


def latency(rows: Sequence[Row]) -> None:
    """p50 per row and backend, one thread, every (row, backend) interleaved in rounds; identical bytes once."""
    from edgeq.errors import EdgeqError
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.harness.latency import LatencyConfig, open_timed, run_interleaved

    unique: dict[bytes, list[Row]] = {}
    for row in rows:
        if row.model is not None:
            unique.setdefault(row.model, []).append(row)
    measurements, owners = [], []
    for backend in LATENCY_BACKENDS:
        for k, (model, owned) in enumerate(unique.items()):
            try:
                m = open_timed(f"{k}:{backend}", lambda model=model, backend=backend: open_session(
                    model, parse_backend(backend), threads=1))
            except EdgeqError:
                continue
            measurements.append(m)
            owners.append((backend, owned))
    run_interleaved(measurements, LatencyConfig(warmup_runs=2, warmup_seconds=0.2, runs=40, min_seconds=0.4,
                                                slice_runs=5))
    for m, (backend, owned) in zip(measurements, owners, strict=True):
        for row in owned:
            row.p50[backend] = m.stats().p50_ms


def simulated_vs_real(data: Data, reference: list[np.ndarray], auto_model: bytes,
                      calib_file: Path) -> tuple[float, float]:
    """Mean output SQNR of auto's ranges on the simulated model and of the real auto INT8 model, held-out set."""
    from edgeq.artifacts import Estimator
    from edgeq.calib.ranges import choose_ranges
    from edgeq.converter.api import calibrate
    from edgeq.quant_recipe import QuantRecipe
    from edgeq.recover.simulate import Simulator, fidelity

    recipe = QuantRecipe(method=Estimator.AUTO)
    stats = calibrate(data.float_model, calib_file, preprocessing=data.preprocessing).stats
    table = choose_ranges(stats, recipe)
    ranges = {k: (r.min, r.max) for k, r in zip(sorted(stats.tensors), table.ranges, strict=True)}
    sim = Simulator(data.float_model.flatbuffer, per_tensor=recipe.per_tensor,
                    per_tensor_dense=recipe.per_tensor_dense)
    simulated = sim.run(sim.params(ranges), [[x[None]] for x in data.held])
    flat = [r.reshape(-1) for r in reference]
    real = run_outputs(auto_model, data.held)
    return (fidelity(flat, [s.reshape(-1) for s in simulated]), fidelity(flat, [a.reshape(-1) for a in real]))


def measure_model(name: str, ladder: Sequence[str], folder: Path, log: Callable[[str], None]) -> ModelResult:
    from edgeq.artifacts import Estimator
    from edgeq.calib.estimators import METHODS
    from edgeq.harness.evaldata import EvalSet
    from edgeq.validate.ladder import parse_ladder
    from edgeq.validate.outputs import FidelityGates
    from edgeq.validate.protocol import model_path, validate
    from edgeq.validate.tasks import OutputTask

    started = time.perf_counter()
    work = folder / name
    work.mkdir()
    if name in OUTLIER_MODELS:
        from outlier_models import CASES, build_outlier_models

        case = next(c for c in CASES if c.name == name)
        source = next(p for p in build_outlier_models(folder / "outliers") if p.stem == name)
        data, kind = digits_data(name, source, case.model, "tflite"), "digits"
    elif name in ZOO_MODELS:
        from edgeq_models import build

        data, kind = digits_data(name, build(name).path, name, "keras"), "digits"
    else:
        data, kind = mediapipe_data(name, work), "mediapipe"
    names = output_names(data.float_model.flatbuffer)
    reference = run_outputs(data.float_model.flatbuffer, data.held)
    tasks = [OutputTask.parse(t) for t in TASKS.get(name, [])]
    calib_file = work / "calib.npy"
    np.save(calib_file, data.calib_images)
    fp32_top1 = None
    if data.labels is not None:
        fp32_top1 = float((reference[0].reshape(len(data.held), -1).argmax(-1) == data.labels).mean())
        eval_set = EvalSet(name="digits:test", inputs=data.held, labels=data.labels)
    else:
        eval_set = EvalSet(name="bundled photos, 7 held out", inputs=data.held)

    log(f"{name}: TF")
    tf_model, tf_how = tf_int8(data, work, name)
    log(f"{name}: validate + ladder")
    out_dir = work / "validate"
    report = validate(data.float_model, calib_file, eval_set, out_dir, methods=METHODS,
                      max_drop_pp=MAX_DROP_PP if data.labels is not None else None,
                      calib_preprocessing=data.preprocessing, tasks=TASKS.get(name, []),
                      gates=FidelityGates(min_output_sqnr_db={names[0]: IMPOSSIBLE_SQNR_DB}),
                      recover=parse_ladder(ladder), targets=("generic",))
    recovery = report.recovery
    assert recovery is not None
    picked = report.validation.best_method.value

    rows = [Row("FP32", "float", data.float_model.flatbuffer)]
    rows.append(Row("TF converter", tf_how, tf_model))
    singles = {}
    for method in METHODS:
        rows.append(Row(f"edgeq {method.value}", "single estimator" if method is not Estimator.AUTO
                        else "outlier-ratio rule", model_path(out_dir, method).read_bytes()))
    for row in rows:
        if row.model is not None:
            measure(row, data, reference, names, tasks)
    for row in rows[2:]:
        singles[row.label.split()[1]] = row.mean_sqnr
    single_top1 = {row.label.split()[1]: row.top1 for row in rows[2:] if row.top1 is not None}

    def gate_drop(result: Any) -> str:
        if result.gate is None:
            return ""
        return f"{result.gate.drop_pp:+.1f} ({'pass' if result.gate.passed else 'fail'})"

    start = Row(f"ladder start ({picked})", "picked on the selection half",
                model_path(out_dir, report.validation.best_method).read_bytes(), gate_drop=gate_drop(recovery.start))
    rows.append(start)
    search_record = None
    for result in recovery.rungs:
        model = (out_dir / result.model).read_bytes() if result.model else None
        row = Row(f"ladder +{result.rung}", f"{result.status}: {result.note}", model, gate_drop=gate_drop(result))
        rows.append(row)
        if result.rung == "search" and result.model:
            sidecar = json.loads((out_dir / result.model).with_suffix(".json").read_text())
            search_record = sidecar.get("search")
    for row in rows[-1 - len(recovery.rungs):]:
        if row.model is not None:
            measure(row, data, reference, names, tasks)
    log(f"{name}: latency")
    latency(rows)
    sim_real = simulated_vs_real(data, reference, model_path(out_dir, Estimator.AUTO).read_bytes(), calib_file)
    seconds = time.perf_counter() - started
    log(f"{name}: done in {seconds:.0f} s")
    return ModelResult(name=name, kind=kind, outputs=names, n_held=len(data.held), fp32_top1=fp32_top1, rows=rows,
                       picked=picked, singles=singles, single_top1=single_top1, search_record=search_record,
                       sim_vs_real=sim_real, seconds=seconds, verdict=recovery.verdict)


# ---------------------------------------------------------------------------------------------------------
# report


def _ms(row: Row, backend: str, tf: Row) -> str:
    if backend not in row.p50:
        return "-"
    value = row.p50[backend]
    if backend in tf.p50 and tf.p50[backend] > 0 and row.label != "TF converter":
        return f"{value:.3f} ({value / tf.p50[backend]:.2f}×)"
    return f"{value:.3f}"


def short_names(text: str) -> str:
    """Tensor names as their first fused name's last two path parts (``a/b/c;d/e`` -> ``b/c``)."""
    return re.sub(r"[^\s,]+/[^\s,]+", lambda m: "/".join(m.group(0).split(";")[0].split("/")[-2:]), text)


def _cell(text: str) -> str:
    return short_names(text).replace("|", "\\|").replace("\n", " ")


def render_model(r: ModelResult) -> list[str]:
    tf = next(row for row in r.rows if row.label == "TF converter")
    lines = [f"### {r.name}", ""]
    if r.kind == "digits":
        lines.append(f"Held out: digits test split, {r.n_held} images; FP32 top-1 {r.fp32_top1:.2%}. "
                     f"validate picked `{r.picked}` on the selection half. Run time {r.seconds:.0f} s.")
        head = ["model", "what", "top-1", "drop pp", "gate-half drop pp (≤ 1?)", "SQNR dB", "int16 tensors",
                "KiB", "p50 ms XNNPACK (× TF)", "p50 ms CPU (× TF)"]
    else:
        lines.append(f"Held out: {r.n_held} bundled photos. validate picked `{r.picked}` on the selection half "
                     f"(4 photos). Run time {r.seconds:.0f} s.")
        head = ["model", "what", *[f"SQNR `{n}` dB" for n in r.outputs], "mean SQNR dB", "task (vs FP32)",
                "int16 tensors", "KiB", "p50 ms XNNPACK (× TF)", "p50 ms CPU (× TF)"]
    lines += ["", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in r.rows:
        if row.model is None:
            cells = [row.label, _cell(row.status)] + ["-"] * (len(head) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        is_fp32 = row.label == "FP32"
        common = [str(row.int16) if not is_fp32 else "-", f"{len(row.model) / 1024:.1f}",
                  _ms(row, "xnnpack", tf), _ms(row, "cpu", tf)]
        if r.kind == "digits":
            assert row.top1 is not None and r.fp32_top1 is not None
            drop = "" if is_fp32 else f"{(r.fp32_top1 - row.top1) * 100:+.1f}"
            cells = [row.label, _cell(row.status), f"{row.top1:.2%}", drop, row.gate_drop or "",
                     "" if is_fp32 else f"{row.mean_sqnr:.1f}", *common]
        else:
            cells = [row.label, _cell(row.status),
                     *(["", ] * len(r.outputs) if is_fp32 else [f"{s:.1f}" for s in row.sqnr]),
                     "" if is_fp32 else f"{row.mean_sqnr:.1f}", "" if is_fp32 else row.task, *common]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Ladder verdict: {short_names(r.verdict)}", ""]
    return lines


def strict_final(r: ModelResult) -> Row:
    """The strict full-int8 ladder's result: the last state before any int16 rung (start or last kept rung)."""
    best = next(row for row in r.rows if row.label.startswith("ladder start"))
    for row in r.rows:
        rung = row.label.startswith("ladder +") and not row.label.startswith("ladder +int16")
        if rung and row.status.startswith(("kept", "met")):
            best = row
    return best


def summary(results: list[ModelResult]) -> list[str]:
    lines = ["## Summary", "",
             "Top-1 drop in pp vs FP32 on the 360 test images (digits models); mean output SQNR dB over the 7 held-out "
             "photos (MediaPipe). *Strict int8 ladder*: the state after the full-int8 rungs (search, equalize, "
             "bias_correction; the start or the last kept rung), what `--targets edgetpu` ends with. *Best single*: "
             "the single estimator (minmax, percentile, mse, kl, auto) with the highest held-out mean SQNR.", "",
             "| model | TF converter | edgeq auto | best single | edgeq search | strict int8 ladder | + int16:3 | "
             "search ≥ best single (held-out SQNR) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        by = {row.label: row for row in r.rows}
        tf, auto = by["TF converter"], by["edgeq auto"]
        best_name = max(r.singles, key=lambda k: r.singles[k])
        best = by[f"edgeq {best_name}"]
        search = by.get("ladder +search")
        strict = strict_final(r)
        int16 = next((row for row in r.rows if row.label.startswith("ladder +int16")), None)

        def fig(row: Row | None, r: ModelResult = r) -> str:
            if row is None or row.model is None:
                return "-"
            if r.kind == "digits":
                assert row.top1 is not None and r.fp32_top1 is not None
                return f"{(r.fp32_top1 - row.top1) * 100:+.1f} pp / {row.mean_sqnr:.1f} dB"
            return f"{row.mean_sqnr:.1f} dB"

        strict_cell = f"{fig(strict)} ({strict.label.removeprefix('ladder ')})"
        if search is None or search.model is None or search.mean_sqnr is None:
            verdict = "search did not run"
        else:
            margin = search.mean_sqnr - r.singles[best_name]
            verdict = (f"{'yes' if margin >= 0 else '**no**'}: {search.mean_sqnr:.2f} vs {best_name} "
                       f"{r.singles[best_name]:.2f} ({margin:+.2f} dB)")
            if r.kind == "digits" and search.top1 is not None:
                top = max(r.single_top1.values())
                verdict += f"; top-1 {search.top1:.2%} vs best single {top:.2%}"
        lines.append(f"| {r.name} | {fig(tf)} | {fig(auto)} | {fig(best)} ({best_name}) | {fig(search)} | "
                     f"{strict_cell} | {fig(int16)} | {verdict} |")
    lines.append("")
    return lines


def search_records(results: list[ModelResult]) -> list[str]:
    lines = ["## The search's own held-out record and simulated vs real", "",
             "`search` judges on a quarter of the calibration samples it held out of the statistics; the sidecar "
             "records, per contender, the simulated fidelity (edgeq.recover.simulate) and the real INT8 model's, "
             "both mean output SQNR dB on those samples; the real figure picks the winner. The last column is "
             "auto's ranges simulated vs the real auto INT8 model on this benchmark's held-out set.", "",
             "| model | held-out calib samples | tensors changed | contender: simulated → real dB | chosen | "
             "auto simulated vs real (held-out set) |", "|---|---:|---:|---|---|---|"]
    for r in results:
        rec = r.search_record
        sim = "-" if r.sim_vs_real is None else (f"{r.sim_vs_real[0]:.1f} vs {r.sim_vs_real[1]:.1f} dB "
                                                  f"({r.sim_vs_real[0] - r.sim_vs_real[1]:+.1f})")
        if rec is None:
            lines.append(f"| {r.name} | - | - | - | - | {sim} |")
            continue
        scores = ", ".join(f"{s['method']}: {s['simulated_db']:.1f} → {s['real_db']:.1f}" for s in rec["scores"])
        lines.append(f"| {r.name} | {rec['held_out_samples']} | {len(rec['choices'])} | {scores} | "
                     f"{rec['chosen']} | {sim} |")
    lines.append("")
    return lines


def render(results: list[ModelResult], skipped: list[str], command: str, seconds: float) -> str:
    from edgeq.versions import package_versions

    versions = package_versions(("edgeq", "tensorflow", "ai-edge-litert", "ai-edge-quantizer", "numpy"))
    lines = [
        f"Generated {datetime.date.today().isoformat()} by `{command}` in {seconds:.0f} s "
        f"({seconds / 60:.1f} min).", "",
        f"- Machine: {machine()}; Python {platform.python_version()}; shared, so latencies carry noise (the "
        "models of one table are timed interleaved, so their ratios hold better than the absolute figures).",
        f"- {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        f"- Ladder: `{', '.join(LADDER_USED)}`, targets generic, gate unmeetable (output SQNR ≥ "
        f"{IMPOSSIBLE_SQNR_DB:g} dB) so every rung runs; the gate-half column is the `--max-drop 1` verdict on "
        "the held-out gate half (180 images) that a real `--max-drop 1` run would stop at.",
        "- Latency: p50 of one-thread invocations (edgeq.harness.latency, interleaved, ≥ 40 runs and ≥ 0.4 s "
        "each), random inputs; × TF = ratio to the TF converter's model on the same backend.", "",
    ]
    for text in skipped:
        lines += [f"- Not run: {text}"]
    if skipped:
        lines.append("")
    lines += summary(results)
    lines += search_records(results)
    lines += ["## Per model", "",
              "Rows `ladder +RUNG` are cumulative: each rung builds on the state the rungs before it left "
              "(`kept`: better on the selection half than the state before; `reverted`: not better, the next rung "
              "builds on the state before it; the row still shows the model the rung built). int16 tensors: "
              "activations the model keeps at int16 (int16x8 kernels); 0 is full int8.", ""]
    for r in results:
        lines += render_model(r)
    return "\n".join(lines)


LADDER_USED: tuple[str, ...] = LADDER


def main(argv: list[str]) -> int:
    global LADDER_USED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ladder", default=",".join(LADDER))
    parser.add_argument("--write", type=Path, help="replace the generated part of this Markdown file")
    args = parser.parse_args(argv)
    LADDER_USED = tuple(args.ladder.split(","))
    from edgeq.tfimport import import_tensorflow

    import_tensorflow()
    started = time.perf_counter()
    results, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "vit":
                reason = vit_unavailable()
                if reason:
                    skipped.append(f"vit: {reason}")
                    print(f"vit: skipped ({reason})", file=sys.stderr)
                    continue
            try:
                results.append(measure_model(name, LADDER_USED, Path(tmp),
                                             lambda text: print(text, file=sys.stderr, flush=True)))
            except Exception as exc:  # one model's failure is reported, the others still run
                traceback.print_exc()
                skipped.append(f"{name}: failed with {type(exc).__name__}: {short_names(str(exc))[:300]}")
    command = "python benchmarks/recovery.py " + shlex.join(argv)
    generated = render(results, skipped, command.strip(), time.perf_counter() - started)
    print(generated)
    if args.write:
        write_generated(args.write, generated, BEGIN, END, "Recovery")
    return 0


def vit_unavailable() -> str | None:
    """Why the zoo vit is not measured, or None when its model is in the zoo cache (never trained here)."""
    from edgeq_models.zoo import ZOO, cache_dir, recipe_key

    entry = ZOO["vit"]
    if (cache_dir(None) / "zoo" / f"vit-{recipe_key(entry, entry.recipe)}").exists():
        return None
    return VIT_REASON


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
