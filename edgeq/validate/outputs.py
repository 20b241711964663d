"""Every model output judged against FP32: which task reads each output, the per-output measurements of one
method's INT8 model, and the fidelity limits on them (docs/tasks.md, "In validate").

- :func:`plan_outputs` resolves the declared tasks (``OutputTask`` mappings; an output by name, index or a
  unique name suffix) against the model's outputs. Undeclared outputs are ``generic``. With nothing declared,
  a model whose only output looks like class scores (``[1, C]``, C >= 2) is a ``classification`` output when
  the set has labels. The *ranked output* is the first declared one (else that classifier, else the first
  output): its task's primary metric, SQNR and error rank the methods (edgeq.validate.verdicts).
- :func:`measure_outputs` keeps, per output, the per-sample fidelity (SQNR, cosine, errors) and the task's
  per-sample metrics, so the whole set, a half or a condition is one ``subset`` away.
- :class:`FidelityGates` are the limits validate judges for the picked method on the held-out gate half.

The CLI forms: :func:`parse_task_text` reads ``OUTPUT=TASK[,key=value...]``, :func:`load_task_file` a YAML/JSON
list of task mappings.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from edgeq.configfile import bounded_repr
from edgeq.errors import InputError, UsageError
from edgeq.results.gates import Gate
from edgeq.results.validation import (
    ClassificationFigures,
    DetectionFigures,
    FidelityFigures,
    LandmarkFigures,
    OutputDeclaration,
    OutputFigures,
    OutputResult,
    SegmentationFigures,
)
from edgeq.validate.tasks import TASKS, FidelitySamples, Metrics, OutputTask, fidelity_samples
from edgeq.validate.verdicts import PRIMARY_METRICS, Fidelity, judge_limit

FIGURES: dict[str, type] = {"classification": ClassificationFigures, "detection": DetectionFigures,
                            "landmarks": LandmarkFigures, "segmentation": SegmentationFigures}
_OUTPUT_ROLES = ("scores", "classes")  # config fields that name another model output (detection)


# ---------------------------------------------------------------------------------------------------------
# Declarations: the CLI text form and the task file


def _typed(value: str, hint: Any) -> Any:
    """A CLI value as the config field ``hint`` takes it; a value that does not fit stays a string, so the
    config's own check refuses it naming the key."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        return _typed(value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        parts = value.replace("x", "/").split("/")
        try:
            return [float(p) for p in parts]
        except ValueError:
            return value
    if hint is bool:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(value.lower(),
                                                                                                     value)
    for kind in (int, float):
        if hint is kind:
            try:
                return kind(value)
            except ValueError:
                return value
    return value  # str, Literal, unknown keys


def parse_task_text(text: str, flag: str = "--task") -> dict[str, Any]:
    """``OUTPUT=TASK[,key=value...]`` (``regressors=detection,scores=classificators,form=ssd``) as the mapping
    :meth:`OutputTask.parse` takes. Values are typed by the task's config fields (numbers, true/false, none;
    a pair such as ``image_size`` as ``256/256`` or ``256x256``)."""
    head, *rest = (part.strip() for part in text.split(","))
    output, sep, task = head.partition("=")
    if not sep or not output.strip() or not task.strip():
        raise UsageError(f"{flag} {bounded_repr(text)}: start with OUTPUT=TASK (OUTPUT: a name or index; TASK: one "
                         f"of {', '.join(TASKS)})")
    task = task.strip()
    if task not in TASKS:
        raise UsageError(f"{flag} {bounded_repr(text)}: unknown task {bounded_repr(task)}; tasks: {', '.join(TASKS)}")
    hints = get_type_hints(TASKS[task].config)
    mapping: dict[str, Any] = {"output": output.strip(), "task": task}
    for part in filter(None, rest):
        key, sep, value = (p.strip() for p in part.partition("="))
        if not sep or not key:
            raise UsageError(f"{flag} {bounded_repr(text)}: {bounded_repr(part)} is not key=value")
        if key in mapping:
            raise UsageError(f"{flag} {bounded_repr(text)}: {key} given twice")
        mapping[key] = _typed(value, hints.get(key))
    return mapping


def load_task_file(path: str | Path) -> list[dict[str, Any]]:
    """A YAML or JSON list of output task mappings (or ``{tasks: [...]}``). A relative ``anchors`` path is
    relative to the file's folder."""
    from edgeq.configfile import load_config

    path = Path(path)
    document = load_config(path, "task file")
    if isinstance(document, dict) and list(document) == ["tasks"]:
        document = document["tasks"]
    if not isinstance(document, list) or not document:
        raise InputError(f"task file {path} must hold a list of output tasks (mappings with output and task)")
    declared = []
    for i, item in enumerate(document):
        if not isinstance(item, dict):
            raise InputError(f"task file {path}: item {i} must be a mapping with output and task, got "
                             f"{bounded_repr(item)}")
        item = dict(item)
        anchors = item.get("anchors")
        if isinstance(anchors, str) and not Path(anchors).is_absolute():
            item["anchors"] = str(path.parent / anchors)
        declared.append(item)
    return declared


# ---------------------------------------------------------------------------------------------------------
# The plan: a task for every output


@dataclass(frozen=True)
class OutputInfo:
    name: str
    shape: tuple[int, ...]  # per invocation, as the model declares it (batch included)


def resolve_output(ref: Any, outputs: Sequence[OutputInfo], what: str) -> str:
    """The name of the output ``ref`` means: a name, an index, or a name's unique suffix (``Identity_1``)."""
    names = [o.name for o in outputs]
    listed = ", ".join(f"{i}: {o.name} {list(o.shape)}" for i, o in enumerate(outputs))
    text = str(ref).strip()
    if text in names:
        return text
    if text.isdigit():
        if int(text) < len(names):
            return names[int(text)]
        raise UsageError(f"{what}: output index {text} is out of range; the model's outputs are {listed}")
    matches = [n for n in names if n.split(":")[0].endswith(text)] if text else []
    if len(matches) == 1:
        return matches[0]
    raise UsageError(f"{what}: {bounded_repr(text)} matches {len(matches)} of the model's outputs ({listed}); "
                     "name one by its name or index")


def looks_like_class_scores(info: OutputInfo) -> bool:
    """[B, C] with at least two classes."""
    return len(info.shape) == 2 and info.shape[-1] >= 2


@dataclass(frozen=True)
class OutputPlan:
    """The task of every model output, in the model's order."""

    outputs: tuple[OutputInfo, ...]
    tasks: tuple[OutputTask, ...]  # one per output, names resolved
    declared: frozenset[str]  # outputs whose task was declared (the rest: the default)
    ranked: str  # the output that ranks the methods
    accuracy_output: str | None  # the classification output top-1 is measured on (needs labels)
    anchors: Mapping[str, np.ndarray] = field(default_factory=dict)  # detection output -> loaded anchors

    def task_of(self, output: str) -> OutputTask:
        return next(t for t in self.tasks if t.output == output)

    def of_task(self, task: str) -> list[OutputTask]:
        return [t for t in self.tasks if t.task == task]

    def declarations(self) -> tuple[OutputDeclaration, ...]:
        """As report.json records them: each output, its task and the config keys that differ from defaults."""
        rows = []
        for info, task in zip(self.outputs, self.tasks, strict=True):
            defaults = type(task.config)()
            config = {f.name: getattr(task.config, f.name) for f in dataclasses.fields(task.config)
                      if getattr(task.config, f.name) != getattr(defaults, f.name)}
            rows.append(OutputDeclaration(name=info.name, shape=info.shape, task=task.task,
                                          declared=info.name in self.declared, config=config))
        return tuple(rows)

    def ranking(self) -> tuple[str, bool]:
        """(the ranked output's task, whether the model has more than one output)."""
        return self.task_of(self.ranked).task, len(self.outputs) > 1


def _resolved(declaration: Mapping[str, Any] | OutputTask, outputs: Sequence[OutputInfo], where: str) -> OutputTask:
    """The declaration with every output it names resolved to a model output's name."""
    if isinstance(declaration, OutputTask):
        task = declaration
    else:
        mapping = dict(declaration)
        if isinstance(mapping.get("output"), int) and not isinstance(mapping["output"], bool):
            mapping["output"] = str(mapping["output"])
        task = OutputTask.parse(mapping, where)
    output = resolve_output(task.output, outputs, f"{where} {task.output!r}")
    config = task.config
    for role in _OUTPUT_ROLES:
        named = getattr(config, role, None)
        if isinstance(named, str):
            config = dataclasses.replace(config, **{role: resolve_output(named, outputs, f"{where} {output!r} {role}")})
    return OutputTask(output, task.task, config)


def _load_anchors(task: OutputTask) -> np.ndarray | None:
    path = getattr(task.config, "anchors", None)
    if path is None:
        return None
    from datagen.arrays import load_npy

    file = Path(path)
    if file.suffix.lower() != ".npy" or not file.is_file():
        raise InputError(f"output task {task.output!r}: anchors must be an existing .npy file of [A, 4] (cx, cy, w, "
                         f"h), got {path}")
    return np.asarray(load_npy(file), dtype=np.float64)


def plan_outputs(outputs: Sequence[OutputInfo], declarations: Sequence[Mapping[str, Any] | OutputTask] = (), *,
                 labelled: bool = False, where: str = "output task") -> OutputPlan:
    """Each output's task: the declared ones (names resolved), the default for the rest (module docstring)."""
    declared = [_resolved(d, outputs, where) for d in declarations]
    seen: set[str] = set()
    for task in declared:
        if task.output in seen:
            raise UsageError(f"{where}: output {task.output!r} is declared twice")
        seen.add(task.output)
    by_name = {t.output: t for t in declared}
    if not declared and labelled and len(outputs) == 1 and looks_like_class_scores(outputs[0]):
        by_name[outputs[0].name] = OutputTask.parse({"output": outputs[0].name, "task": "classification"})
    tasks = tuple(by_name.get(o.name) or OutputTask.parse({"output": o.name, "task": "generic"}) for o in outputs)
    ranked = declared[0].output if declared else next((t.output for t in tasks if t.task == "classification"),
                                                      outputs[0].name)
    order = [*declared, *(t for t in tasks if t.output not in seen)]
    classifiers = [t.output for t in order if t.task == "classification"]
    anchors = {t.output: a for t in declared if (a := _load_anchors(t)) is not None}
    return OutputPlan(outputs=tuple(outputs), tasks=tasks, declared=frozenset(seen), ranked=ranked,
                      accuracy_output=classifiers[0] if labelled and classifiers else None, anchors=anchors)


# ---------------------------------------------------------------------------------------------------------
# Measuring one method


@dataclass(frozen=True)
class OutputMeasurement:
    """One INT8 model's outputs against FP32's, per sample: fidelity of every output, the metrics of every
    output whose task is not generic."""

    fidelity: Mapping[str, FidelitySamples]
    metrics: Mapping[str, Metrics]


def measure_outputs(plan: OutputPlan, fp32: Mapping[str, np.ndarray], int8: Mapping[str, np.ndarray],
                    labels: np.ndarray | None = None) -> OutputMeasurement:
    """Per output: ``fidelity_samples``, and the task's metrics (labels only reach classification)."""
    fidelity = {o.name: fidelity_samples(fp32[o.name], int8[o.name]) for o in plan.outputs}
    metrics = {t.output: t.measure(fp32, int8, labels=labels if t.task == "classification" else None,
                                   anchors=plan.anchors.get(t.output))
               for t in plan.tasks if t.task != "generic"}
    return OutputMeasurement(fidelity=fidelity, metrics=metrics)


def check_plan(plan: OutputPlan, fp32: Mapping[str, np.ndarray], labels: np.ndarray | None) -> None:
    """Every task measured once, FP32 against itself on the first samples: a shape the task cannot read or
    labels outside the classes fail here, before any method is converted."""
    head = {name: values[:2] for name, values in fp32.items()}
    measure_outputs(plan, head, head, None if labels is None else labels[:2])


def _figures(fidelity: FidelitySamples, metrics: Metrics | None, task: str, indices: Any = None) -> OutputFigures:
    figures = FidelityFigures(**fidelity.summary(indices).to_dict())
    if metrics is None:
        return OutputFigures(fidelity=figures)
    measured = metrics if indices is None else metrics.subset(indices)
    values = measured.to_dict()
    if task == "segmentation":
        values["class_iou"] = tuple(values["class_iou"])
    return OutputFigures(fidelity=figures, **{task: FIGURES[task](**values)})


def output_results(plan: OutputPlan, measured: OutputMeasurement,
                   conditions: Sequence[str] | None) -> tuple[OutputResult, ...]:
    """The typed per-output results of one method: whole set, and per condition when the set has them."""
    groups = np.asarray(conditions) if conditions else None
    results = []
    for task in plan.tasks:
        name = task.output
        fidelity, metrics = measured.fidelity[name], measured.metrics.get(name)
        per_condition = {} if groups is None else {
            c: _figures(fidelity, metrics, task.task, groups == c) for c in dict.fromkeys(conditions or ())}
        whole = _figures(fidelity, metrics, task.task)
        results.append(OutputResult(output=name, fidelity=whole.fidelity, classification=whole.classification,
                                    detection=whole.detection, landmarks=whole.landmarks,
                                    segmentation=whole.segmentation, per_condition=per_condition))
    return tuple(results)


def ranked_fidelity(plan: OutputPlan, method: str, measured: OutputMeasurement, indices: Any = None) -> Fidelity:
    """The ranking record of a ranked output whose task is not classification (classification keeps
    edgeq.validate.verdicts.measure_fidelity on the scores)."""
    name = plan.ranked
    task = plan.task_of(name).task
    fid = measured.fidelity[name].summary(indices)
    metric, value = None, None
    if task in PRIMARY_METRICS:
        metric = PRIMARY_METRICS[task][0]
        value = getattr(measured.metrics[name].subset(indices) if indices is not None else measured.metrics[name],
                        metric)
    return Fidelity(method=method, n=fid.n, agreement=None,
                    output_sqnr_db=fid.sqnr_db if fid.sqnr_db is not None else float("nan"),
                    output_mae=fid.mean_abs_error if fid.mean_abs_error is not None else float("nan"),
                    metric=metric, value=value)


# ---------------------------------------------------------------------------------------------------------
# Fidelity limits


@dataclass(frozen=True)
class FidelityGates:
    """Limits validate judges for the picked method on the held-out gate half; each is optional.

    ``min_output_sqnr_db``: output (name or index) -> minimum SQNR in dB. The others apply to every output of
    their task: ``min_agreement`` (share 0..1, classification), ``min_detection_recall`` (detection),
    ``min_mask_iou`` (mean IoU, segmentation), ``max_landmark_error`` (mean error normalized by the landmarks'
    box, landmarks)."""

    min_output_sqnr_db: Mapping[str, float] = field(default_factory=dict)
    min_agreement: float | None = None
    max_landmark_error: float | None = None
    min_mask_iou: float | None = None
    min_detection_recall: float | None = None

    def __bool__(self) -> bool:
        return bool(self.min_output_sqnr_db) or any(
            getattr(self, f.name) is not None for f in dataclasses.fields(self) if f.name != "min_output_sqnr_db")


#: limit field -> (gate name, task, metric, higher is better, the figure in words)
TASK_LIMITS: dict[str, tuple[str, str, str, bool, str]] = {
    "min_agreement": ("min_agreement", "classification", "agreement", True, "agreement with FP32"),
    "min_detection_recall": ("min_detection_recall", "detection", "recall", True, "detection recall"),
    "min_mask_iou": ("min_mask_iou", "segmentation", "mean_iou", True, "mask IoU"),
    "max_landmark_error": ("max_landmark_error", "landmarks", "mean_error_norm", False,
                           "normalized landmark error"),
}


def check_gates(gates: FidelityGates, plan: OutputPlan) -> None:
    """Each limit names outputs the plan has (UsageError before any work otherwise)."""
    for ref in gates.min_output_sqnr_db:
        resolve_output(ref, plan.outputs, "min_output_sqnr_db (--min-output-sqnr)")
    for key, (_, task, _, _, _) in TASK_LIMITS.items():
        if getattr(gates, key) is not None and not plan.of_task(task):
            raise UsageError(f"{key} (--{key.replace('_', '-')}) needs an output declared as {task} "
                             f"(--task OUTPUT={task}); the model's outputs are judged as "
                             f"{', '.join(f'{t.output}: {t.task}' for t in plan.tasks)}")


def judge_gates(gates: FidelityGates, plan: OutputPlan, method: str, measured: OutputMeasurement,
                indices: np.ndarray) -> tuple[Gate, ...]:
    """Every limit in ``gates`` judged on the samples ``indices`` (the held-out gate half)."""
    rows = []
    for ref, limit in gates.min_output_sqnr_db.items():
        name = resolve_output(ref, plan.outputs, "min_output_sqnr_db")
        fid = measured.fidelity[name].summary(indices)
        rows.append(judge_limit(f"min_output_sqnr:{name}", f"output SQNR of {name!r}", method, fid.n, fid.sqnr_db,
                                float(limit), higher_is_better=True, unit=" dB", exact=fid.exact).to_gate())
    for key, (gate, task, metric, higher, words) in TASK_LIMITS.items():
        limit = getattr(gates, key)
        if limit is None:
            continue
        for declared in plan.of_task(task):
            name = declared.output
            values = measured.metrics[name].subset(indices)
            rows.append(judge_limit(f"{gate}:{name}", f"{words} of {name!r}", method, values.n,
                                    getattr(values, metric), float(limit), higher_is_better=higher).to_gate())
    return tuple(rows)

