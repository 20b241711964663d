"""Running a model over evaluation data on a backend: quantize inputs and dequantize outputs with the model's own
parameters, so the same code measures float, int8 and uint8 models on any backend; and top-1/top-5 of a
classifier's scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.errors import InputError, UsageError
from edgeq.harness.session import Session, TensorInfo
from edgeq.progress import task


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    if np.issubdtype(info.dtype, np.floating):
        return x.astype(info.dtype)
    if info.scale == 0:
        raise InputError(f"input '{info.name}' is {info.dtype} without quantization parameters")
    limits = np.iinfo(info.dtype)
    return np.clip(np.rint(x / info.scale) + info.zero_point, limits.min, limits.max).astype(info.dtype)


def dequantize(y: np.ndarray, info: TensorInfo) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating) or info.scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)


def output_index(session: Session, output: str | int | None) -> int:
    """The classification output: by index, by (suffix of) name, or the only/first one."""
    if output is None:
        return 0
    if isinstance(output, int) or str(output).isdigit():
        index = int(output)
        if not 0 <= index < len(session.outputs):
            raise UsageError(f"--output {index} is out of range: the model has {len(session.outputs)} outputs")
        return index
    matches = [i for i, o in enumerate(session.outputs) if o.name == output or o.name.split(":")[0].endswith(output)]
    if len(matches) != 1:
        names = ", ".join(o.name for o in session.outputs)
        raise UsageError(f"--output {output!r} matches {len(matches)} outputs; the model's outputs are {names}")
    return matches[0]


def _invocations(session: Session, x: np.ndarray,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[list[np.ndarray]]:
    """Each sample of the float model inputs ``x`` (N, ...) run alone: every output, dequantized (float32)."""
    if len(session.inputs) != 1:
        raise UsageError("accuracy evaluation supports single-input models")
    info = session.inputs[0]
    if tuple(x.shape[1:]) != tuple(info.shape[1:]):
        raise InputError(f"data samples are shaped {tuple(x.shape[1:])}, the model expects {tuple(info.shape[1:])}")
    with task("evaluating", len(x), callback=progress) as counted:
        for sample in x:
            session.set_inputs([quantize(sample[None], info)])
            session.invoke()
            yield [dequantize(y, o) for y, o in zip(session.get_outputs(), session.outputs, strict=True)]
            counted.advance()


def predict(session: Session, x: np.ndarray, output: int = 0,
            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Dequantized scores of ``output`` for float model inputs ``x`` (N, ...), one sample at a time, each
    flattened: (N, values)."""
    return np.stack([outputs[output].reshape(-1) for outputs in _invocations(session, x, progress)])


def predict_outputs(session: Session, x: np.ndarray,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Every output of the model for float model inputs ``x`` (N, ...), one sample at a time: output name ->
    the dequantized values [N, ...], in the model's output order. Each invocation's batch dimension is
    removed (a [1, 896, 16] output over N samples is [N, 896, 16]); an output without one is stacked as it is."""
    names = [o.name for o in session.outputs]
    if len(set(names)) != len(names):
        names = [f"{name}#{i}" for i, name in enumerate(names)]  # names must tell the outputs apart
    collected: list[list[np.ndarray]] = [[] for _ in names]
    for outputs in _invocations(session, x, progress):
        for values, y in zip(collected, outputs, strict=True):
            values.append(y[0] if y.ndim and y.shape[0] == 1 else y)
    return {name: np.stack(values) for name, values in zip(names, collected, strict=True)}


def pair_outputs(outputs: dict[str, np.ndarray],
                 reference: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, model output, reference output) for each output: by name when both models name their outputs
    alike (edgeq keeps the float model's names), else by position. A different count or shape is refused:
    comparing two models' outputs that do not correspond would print a wrong number."""
    if len(outputs) != len(reference):
        raise InputError(f"the model has {len(outputs)} output(s), the reference {len(reference)}: not the same model")
    if set(outputs) == set(reference):
        pairs = [(name, outputs[name], reference[name]) for name in outputs]
    else:
        pairs = [(name, y, ref) for (name, y), ref in zip(outputs.items(), reference.values(), strict=True)]
    for name, y, ref in pairs:
        if y.shape != ref.shape:
            raise InputError(f"output {name!r} is shaped {list(y.shape[1:])}, the reference's {list(ref.shape[1:])}: "
                             "not the same model")
    return pairs


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose highest score is the label."""
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[-1])
    best = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=-1)))


@dataclass(frozen=True)
class EvalResult:
    n: int
    top1: float
    top5: float
    agreement: float | None  # share of samples where the top-1 equals the reference model's
    per_condition: dict[str, dict[str, Any]] = field(default_factory=dict)


def evaluate(scores: np.ndarray, labels: np.ndarray, conditions: list[str] | None = None,
             reference: np.ndarray | None = None) -> EvalResult:
    agreement = None if reference is None else float(np.mean(scores.argmax(-1) == reference.argmax(-1)))
    per_condition: dict[str, dict[str, Any]] = {}
    if conditions:
        groups = np.asarray(conditions)
        for name in dict.fromkeys(conditions):
            mask = groups == name
            entry: dict[str, Any] = {"n": int(mask.sum()), "top1": top1(scores[mask], labels[mask]),
                                     "top5": topk(scores[mask], labels[mask], 5)}
            if reference is not None:
                entry["agreement"] = float(np.mean(scores[mask].argmax(-1) == reference[mask].argmax(-1)))
            per_condition[name] = entry
    return EvalResult(n=len(labels), top1=top1(scores, labels), top5=topk(scores, labels, 5), agreement=agreement,
                      per_condition=per_condition)


def run_batch1(interpreter: Any, inputs: np.ndarray, output_index: int = 0) -> np.ndarray:
    """Dequantized outputs of a bare LiteRT interpreter (kept for the demo and benchmarks)."""
    from edgeq.harness.litert_session import LiteRTSession

    return predict(LiteRTSession(interpreter, "litert", "", None), inputs, output_index)
