"""What ``edgeq validate`` and ``edgeq build`` both read before validating: the float model's input (to load the
evaluation data for it) and the output task declarations of a recipe (the mappings of ``validate --tasks FILE``),
checked strictly before any work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.configfile import bounded_repr
from edgeq.errors import InputError

if TYPE_CHECKING:
    from edgeq.validate.tasks import OutputTask


def model_input(flatbuffer: bytes) -> tuple[str, tuple[int, ...]]:
    """The float model's (first) input: name and shape without the batch."""
    from edgeq.tflite import model as tfl

    graph = tfl.parse(flatbuffer).subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    return tfl.tensor_name(tensor), tuple(int(d) for d in tensor.shape[1:])


def task_declarations(items: Any, base_dir: str | Path, where: str) -> tuple[OutputTask, ...]:
    """A non-empty list of output task mappings (``output``, ``task`` and the task's keys: docs/tasks.md) as
    ``OutputTask`` values, each checked by ``OutputTask.parse``. An output may be a name or an index; a relative
    ``anchors`` path resolves against ``base_dir`` and must name an existing file. Which model output each
    names is resolved against the model later (edgeq.validate.outputs.plan_outputs)."""
    from edgeq.validate.tasks import OutputTask

    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise InputError(f"{where} must be a non-empty list of output tasks (mappings with output and task), got "
                         f"{bounded_repr(items)}")
    declared = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, dict) and isinstance(item.get("output"), int) and not isinstance(item["output"], bool):
            item = {**item, "output": str(item["output"])}  # an index
        task = OutputTask.parse(item, here)
        anchors = getattr(task.config, "anchors", None)
        if anchors is not None:
            path = Path(anchors) if Path(anchors).is_absolute() else Path(base_dir) / anchors
            if not path.is_file():
                raise InputError(f"{here}.anchors: no such file {anchors!r} (relative to {base_dir})")
            task = OutputTask.parse({**item, "anchors": str(path)}, here)
        declared.append(task)
    return tuple(declared)
