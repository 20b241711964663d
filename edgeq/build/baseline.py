"""Compare a build with an older build's report.json (``--baseline``) and judge the recipe's ``max_regression``.

Both reports are read by the same code, from their JSON documents: the figures of the current build are taken
from its own report document, so a delta can only ever compare like with like, and an older report (written
before the envelope, version 0) is read as long as it has the figures. Latency is compared only when both
builds measured on the same :class:`~edgeq.results.baseline.BenchEnvironment`: across machines a latency
delta says more about the machine than the model, so it is shown, flagged, and never judged. Likewise accuracy
and fidelity are compared only when both reports' provenance records the same evaluation set (its sha256):
measured on different samples, or on a set one report does not identify, they are shown, flagged, never judged.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.envelope import unwrap
from edgeq.errors import InputError
from edgeq.results.baseline import WORSE, Aspect, BaselineComparison, BenchEnvironment, Delta
from edgeq.results.gates import Gate

MAX_REPORT_BYTES = 512 << 20  # report.json holds every latency sample; far below it is still a real report
REPORT_KIND = "edgeq.report"
EVAL_SET_ROLE = "evaluation set"  # the provenance input whose sha256 identifies the samples measured
EVAL_NOTE = "accuracy and fidelity not comparable (shown, not judged): "  # + why; a gate not judged quotes it


@dataclass(frozen=True)
class Baseline:
    """An older build's report, checked and without its envelope."""

    path: str
    document: dict[str, Any]
    schema_version: int
    edgeq_version: str | None


def current_environment() -> BenchEnvironment:
    """This machine, as a latency measured here would be compared."""
    from edgeq.harness.environment import cpu_model
    from edgeq.versions import package_versions

    return BenchEnvironment(cpu_model=cpu_model(), cpu_count=os.cpu_count() or 0,
                            machine=os.uname().machine if hasattr(os, "uname") else "unknown",
                            litert=package_versions(("ai-edge-litert",)).get("ai-edge-litert"))


def load_baseline(path: str) -> Baseline:
    """The build report at ``path``; InputError (exit 2) with one line when it is not one this edgeq reads."""
    from edgeq.configfile import parse_json

    where = f"--baseline {path}"
    try:
        size = os.stat(path).st_size
        if not Path(path).is_file():
            raise InputError(f"{where} is not a file (give a build's report.json)")
        if size > MAX_REPORT_BYTES:
            raise InputError(f"{where} is {size:,} bytes; a build's report.json is far smaller")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    document = parse_json(text, where)
    if not isinstance(document, dict):
        raise InputError(f"{where} is not a report (a JSON object)")
    version = document.get("schema_version", 0)
    try:
        body = unwrap(document, REPORT_KIND)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    missing = [key for key in ("validation", "model", "latency", "gates") if key not in body]
    if missing:
        raise InputError(f"{where} is not a build report (no {', '.join(missing)}); give the report.json "
                         "of an earlier 'edgeq build'")
    edgeq_version = document.get("edgeq_version")
    return Baseline(path=path, document=body, schema_version=version if isinstance(version, int) else 0,
                    edgeq_version=edgeq_version if isinstance(edgeq_version, str) else None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value) else None


def _get(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Figures:
    """What a report measured, keyed so that two reports line up."""

    method: str | None  # the published method
    recovered: str | None  # the recovery rung whose model was published, if one was
    eval_n: int | None
    top1: dict[str, float]  # method -> top-1 share
    sqnr_db: dict[tuple[str, str], float]  # (method, output) -> SQNR against FP32
    int8_bytes: float | None
    p50_ms: dict[tuple[str, int, str], float]  # (backend, threads, int8|fp32) -> p50
    environment: BenchEnvironment | None
    eval_sha256: str | None = None  # the evaluation set's fingerprint in the provenance; None: not recorded


def figures(document: dict[str, Any]) -> Figures:
    """The comparable figures of a build report document (missing ones are left out, never guessed)."""
    validation = _get(document, "validation") or {}
    top1 = {str(m.get("method")): v for m in _list(validation.get("methods")) if (v := _number(m.get("top1")))
            is not None}
    sqnr = {(str(m.get("method")), str(o.get("output"))): v for m in _list(_get(document, "outputs", "methods"))
            for o in _list(m.get("outputs")) if (v := _number(_get(o, "fidelity", "sqnr_db"))) is not None}
    eval_n = _get(validation, "baseline", "n")
    if not isinstance(eval_n, int):
        eval_n = next((n for m in _list(_get(document, "outputs", "methods")) for o in _list(m.get("outputs"))
                       if isinstance(n := _get(o, "fidelity", "n"), int)), None)
    latency = {(str(r.get("backend")), int(r["threads"]), str(r.get("model"))): v for r in _list(
        document.get("latency")) if isinstance(r.get("threads"), int) and (v := _number(r.get("p50_ms"))) is not None}
    recovery = _get(document, "recovery")
    environment = document.get("bench_environment")
    try:
        env = BenchEnvironment.from_document(environment) if isinstance(environment, dict) else None
    except InputError:
        env = None
    method = validation.get("best_method")
    eval_sha = next((i.get("sha256") for i in _list(_get(document, "provenance", "inputs"))
                     if i.get("role") == EVAL_SET_ROLE), None)
    return Figures(method=method if isinstance(method, str) else None,
                   recovered=met if isinstance(met := _get(recovery, "met_by"), str) else None,
                   eval_n=eval_n, top1=top1, sqnr_db=sqnr, int8_bytes=_number(_get(document, "model", "int8_bytes")),
                   p50_ms=latency, environment=env,
                   eval_sha256=eval_sha if isinstance(eval_sha, str) and eval_sha else None)


def _percent(old: float, new: float) -> float:
    return (new - old) / old * 100 if old else math.inf if new else 0.0


def _other_eval_set(old: Figures, new: Figures) -> str | None:
    """Why the two reports' accuracy and fidelity were not measured on one evaluation set, or None: they were."""
    sizes = (f" ({old.eval_n} samples, this build {new.eval_n})"
             if old.eval_n is not None and new.eval_n is not None and old.eval_n != new.eval_n else "")
    if old.eval_sha256 is None:
        return f"the baseline's provenance does not record its evaluation set's sha256{sizes}"
    if new.eval_sha256 is None:
        return f"this build does not record its evaluation set's sha256{sizes}"
    if old.eval_sha256 != new.eval_sha256:
        return (f"the baseline measured another evaluation set (sha256 {old.eval_sha256[:12]}, this build "
                f"{new.eval_sha256[:12]}){sizes}")
    return None


def compare(current: dict[str, Any], baseline: Baseline) -> BaselineComparison:
    """Every figure both reports have, as a delta; notes say what could not be compared and why."""
    new, old = figures(current), figures(baseline.document)
    notes = []
    other_set = _other_eval_set(old, new)
    same_set = other_set is None
    deltas = [Delta(aspect=Aspect.ACCURACY, subject=method, baseline=old.top1[method], current=value,
                    change=(value - old.top1[method]) * 100, unit="pp", published=method == new.method,
                    comparable=same_set)
              for method, value in new.top1.items() if method in old.top1]
    deltas += [Delta(aspect=Aspect.FIDELITY, subject=f"{method} / {output}", baseline=old.sqnr_db[key],
                     current=value, change=value - old.sqnr_db[key], unit="dB", published=method == new.method,
                     comparable=same_set)
               for key, value in new.sqnr_db.items() if key in old.sqnr_db for method, output in [key]]
    if new.int8_bytes is not None and old.int8_bytes is not None:
        deltas.append(Delta(aspect=Aspect.SIZE, subject="int8 file", baseline=old.int8_bytes,
                            current=new.int8_bytes, change=_percent(old.int8_bytes, new.int8_bytes), unit="%",
                            published=True))
    comparable = new.environment is not None and new.environment == old.environment
    deltas += [Delta(aspect=Aspect.LATENCY, subject=f"{backend} t{threads} {model}", baseline=old.p50_ms[key],
                     current=value, change=_percent(old.p50_ms[key], value), unit="%", published=model == "int8",
                     comparable=comparable)
               for key, value in new.p50_ms.items() if key in old.p50_ms for backend, threads, model in [key]]
    if old.environment is None:
        notes.append("the baseline did not record its bench environment: latency deltas are shown, not judged")
    elif not comparable:
        notes.append(f"latency not comparable: the baseline was measured on {old.environment.describe()}, this "
                     f"build on {new.environment.describe() if new.environment else 'an unknown machine'}")
    if other_set is not None:
        notes.append(EVAL_NOTE + other_set)
    if old.method is not None and old.method != new.method:
        notes.append(f"the baseline published {old.method}, this build {new.method}")
    for which, figs in (("the baseline", old), ("this build", new)):
        if figs.recovered is not None:
            notes.append(f"{which} published the recovery rung {figs.recovered}, whose whole-set accuracy and "
                         "fidelity are not measured: those deltas are its picked method's")
    return BaselineComparison(path=baseline.path, schema_version=baseline.schema_version,
                              edgeq_version=baseline.edgeq_version, method=old.method or "unknown",
                              eval_n=old.eval_n, environment=old.environment, latency_comparable=comparable,
                              deltas=tuple(deltas), notes=tuple(notes))


def _published(comparison: BaselineComparison, aspect: Aspect) -> list[Delta]:
    return [d for d in comparison.deltas if d.aspect is aspect and d.published]


def regression_gates(limits: Any, comparison: BaselineComparison | None, recovered: bool) -> tuple[Gate, ...]:
    """One gate per limit of ``max_regression`` (edgeq.build.recipe.MaxRegression); a limit that cannot be
    judged (no baseline, the figure missing, latency across environments) is a gate with ``judged`` false:
    it does not fail the build, and the summary and JUnit show it as skipped. ``recovered``: either build
    published a recovery rung (its whole-set accuracy and fidelity are not measured)."""
    gates = []
    for key, aspect in (("accuracy_pp", Aspect.ACCURACY), ("sqnr_db", Aspect.FIDELITY), ("size_pct", Aspect.SIZE),
                        ("latency_pct", Aspect.LATENCY)):
        worse = WORSE[aspect]
        limit = getattr(limits, key)
        if limit is None:
            continue
        name = f"max_regression:{key}"
        unit = {"accuracy_pp": "pp", "sqnr_db": "dB"}.get(key, "%")
        deltas = _published(comparison, aspect) if comparison is not None else []
        reason = None
        if comparison is None:
            reason = "no --baseline given"
        elif aspect in (Aspect.ACCURACY, Aspect.FIDELITY) and recovered:
            reason = "a recovery rung was published, whose whole-set figures are not measured"
        elif not deltas:
            reason = f"the baseline and this build do not both have the published model's {aspect.value}"
        elif aspect is Aspect.LATENCY and not comparison.latency_comparable:
            reason = "the baseline's latency was measured on another environment"
        elif not all(d.comparable for d in deltas):
            reason = next((n.removeprefix(EVAL_NOTE) for n in comparison.notes if n.startswith(EVAL_NOTE)),
                          "the baseline's figures were measured on another evaluation set")
        if reason is not None:
            gates.append(Gate(name=name, passed=True, judged=False, detail=f"not judged: {reason}", limit=limit))
            continue
        # the regression is the change in the "worse" direction: a drop in accuracy or dB, growth in size or time
        worst = max(deltas, key=lambda d: worse * d.change)
        regression = worse * worst.change
        passed = regression <= limit
        scale, suffix = (100.0, "%") if aspect is Aspect.ACCURACY else (1.0, "")  # top-1 is a share
        figures_text = f"{worst.baseline * scale:.6g}{suffix} -> {worst.current * scale:.6g}{suffix}"
        gates.append(Gate(
            name=name, passed=passed, value=round(regression, 4) + 0.0, limit=limit,  # + 0.0: no -0.0
            detail=f"{worst.subject}: {figures_text} ({worst.change + 0.0:+.2f} {unit}); regression "
                   f"{max(regression, 0.0) + 0.0:.2f} {unit} {'<=' if passed else '>'} limit {limit} {unit}"))
    return tuple(gates)
