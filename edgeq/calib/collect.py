"""One streaming pass of the float model over the calibration set, accumulating per-tensor stats.

The collector only accumulates; estimators turn the statistics into ranges later. Memory is one
bounded histogram per activation tensor, whatever the number of samples.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Preprocessing
from edgeq.calib.data import CalibrationSet, ModelInput
from edgeq.calib.stats import TensorStats
from edgeq.errors import InputError
from edgeq.files import atomic_path
from edgeq.npzio import save_npz
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

STATS_FORMAT = "edgeq-activation-stats"
STATS_VERSION = 1


@dataclass
class ActivationStats:
    """Statistics of every float activation tensor of one float model over one calibration set."""

    model_fingerprint: str  # sha256 of the float flatbuffer the stats were collected on
    calibration_fingerprint: str
    samples: int
    names: dict[int, str]  # tensor index -> name
    producers: dict[int, str]  # tensor index -> op type that computes it ("INPUT" for model inputs)
    tensors: dict[int, TensorStats] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # how the calibration images were fed

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (metadata as JSON in ``meta``), atomically."""
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "model_fingerprint": self.model_fingerprint,
                "calibration_fingerprint": self.calibration_fingerprint, "samples": self.samples,
                "names": {str(k): v for k, v in self.names.items()},
                "producers": {str(k): v for k, v in self.producers.items()},
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
        for index, stats in self.tensors.items():
            arrays.update(stats.to_arrays(f"t{index}_"))
        with atomic_path(path, suffix=".npz") as tmp:
            save_npz(tmp, arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ActivationStats:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such stats file: {path}")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path} is not an edgeq stats file ({type(exc).__name__})") from None
        if meta.get("format") != STATS_FORMAT or meta.get("version") != STATS_VERSION:
            raise InputError(f"{path} is not an edgeq stats file of version {STATS_VERSION}")
        names = {int(k): v for k, v in meta["names"].items()}
        return cls(model_fingerprint=meta["model_fingerprint"],
                   calibration_fingerprint=meta["calibration_fingerprint"], samples=int(meta["samples"]),
                   names=names, producers={int(k): v for k, v in meta["producers"].items()},
                   tensors={i: TensorStats.from_arrays(arrays, f"t{i}_") for i in names},
                   preprocessing=_preprocessing(meta.get("preprocessing")))


def _preprocessing(document: dict[str, Any] | None) -> Preprocessing | None:
    return Preprocessing.from_dict(document) if document else None


def model_inputs(interpreter: Any) -> list[ModelInput]:
    return [ModelInput(name=d["name"], shape=tuple(int(s) for s in d["shape"][1:]))
            for d in interpreter.get_input_details()]


def _producers(model: Any) -> dict[int, str]:
    graph = model.subgraphs[0]
    producers = {int(i): "INPUT" for i in graph.inputs}
    for op in graph.operators:
        for out in op.outputs:
            producers[int(out)] = tfl.op_type(model, op)
    return producers


def collect(float_model: bytes, data: CalibrationSet,
            progress: Callable[[int, int], None] | None = None) -> ActivationStats:
    """Run ``float_model`` on every sample of ``data`` with all tensors kept; accumulate their stats."""
    parsed = tfl.parse(float_model)
    activations = tfl.float_activations(parsed)
    producers = _producers(parsed)
    interpreter, _ = make_interpreter(float_model, CpuKernels.CPU, threads=1, preserve_all_tensors=True)
    inputs = model_inputs(interpreter)
    input_indices = [d["index"] for d in interpreter.get_input_details()]
    stats = {a.index: TensorStats.empty() for a in activations}
    for i, batch in data.samples(inputs):
        for index, sample in zip(input_indices, batch, strict=True):
            interpreter.set_tensor(index, sample)
        interpreter.invoke()
        for tensor_index, tensor_stats in stats.items():
            try:
                tensor_stats.update(interpreter.get_tensor(tensor_index))
            except ValueError as exc:
                if "non-finite" in str(exc):
                    name = tfl.tensor_name(parsed.subgraphs[0].tensors[tensor_index])
                    raise InputError(f"calibration sample {i} of {data.source} drives tensor '{name}' "
                                     "to NaN or Inf") from None
                raise
        if progress is not None:
            progress(i + 1, len(data))
    return ActivationStats(
        model_fingerprint=tfl.sha256(float_model), calibration_fingerprint=data.fingerprint(),
        samples=len(data), names={a.index: a.name for a in activations},
        producers={a.index: producers.get(a.index, "?") for a in activations}, tensors=stats,
        preprocessing=data.preprocessing,
    )
