"""One streaming pass of the float model over the calibration set, accumulating per-tensor stats.

The collector only accumulates; estimators turn the statistics into ranges later. Memory is one
bounded histogram per activation tensor, whatever the number of samples.

Every subgraph the main graph runs is measured, keyed by (subgraph, tensor). The interpreter keeps a
loop body's tensors of the last iteration only, so control flow is replayed here: after each sample,
every WHILE / IF of a measured graph is run again from its recorded inputs over standalone copies of its
subgraphs (cond, body, branch), each iteration measured, and the replay's result must equal what the
runtime computed. What cannot be replayed (CALL_ONCE, CALL, recursion) is refused, naming the subgraph.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
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
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

STATS_FORMAT = "edgeq-activation-stats"
STATS_VERSION = 2  # 2: tensors keyed by (subgraph, tensor); version 1 files hold subgraph 0 only
MAX_LOOP_ITERATIONS = 100_000
REPLAYED_OPS = ("WHILE", "IF")


@dataclass
class ActivationStats:
    """Statistics of every float activation tensor of one float model over one calibration set."""

    model_fingerprint: str  # sha256 of the float flatbuffer the stats were collected on
    calibration_fingerprint: str
    samples: int
    names: dict[TensorKey, str]  # (subgraph, tensor) -> name
    producers: dict[TensorKey, str]  # (subgraph, tensor) -> op type that computes it ("INPUT" for model inputs)
    tensors: dict[TensorKey, TensorStats] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # how the calibration images were fed

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (metadata as JSON in ``meta``), atomically."""
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "model_fingerprint": self.model_fingerprint,
                "calibration_fingerprint": self.calibration_fingerprint, "samples": self.samples,
                "names": {_key_text(k): v for k, v in self.names.items()},
                "producers": {_key_text(k): v for k, v in self.producers.items()},
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
        for key, stats in self.tensors.items():
            arrays.update(stats.to_arrays(_prefix(key)))
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
        version = meta.get("version")
        if meta.get("format") != STATS_FORMAT or version not in (1, STATS_VERSION):
            raise InputError(f"{path} is not an edgeq stats file of version {STATS_VERSION}")
        try:
            names = {_parse_key(k): v for k, v in meta["names"].items()}
            producers = {_parse_key(k): v for k, v in meta["producers"].items()}
            tensors = {key: TensorStats.from_arrays(arrays, _prefix(key)) for key in names}
        except (KeyError, ValueError) as exc:
            raise InputError(f"{path} is a damaged edgeq stats file ({type(exc).__name__})") from None
        return cls(model_fingerprint=meta["model_fingerprint"],
                   calibration_fingerprint=meta["calibration_fingerprint"], samples=int(meta["samples"]),
                   names=names, producers=producers, tensors=tensors,
                   preprocessing=_preprocessing(meta.get("preprocessing")))


def _key_text(key: TensorKey) -> str:
    return f"{key[0]}:{key[1]}"


def _parse_key(text: str) -> TensorKey:
    """``"g:i"`` (version 2) or ``"i"`` (version 1, main graph)."""
    subgraph, _, index = text.rpartition(":")
    return (int(subgraph) if subgraph else 0, int(index))


def _prefix(key: TensorKey) -> str:
    """Array-name prefix of a tensor's statistics: ``t12_`` in the main graph (as version 1 wrote), ``s2t5_``."""
    return f"t{key[1]}_" if key[0] == 0 else f"s{key[0]}t{key[1]}_"


def _preprocessing(document: dict[str, Any] | None) -> Preprocessing | None:
    return Preprocessing.from_dict(document) if document else None


def model_inputs(interpreter: Any) -> list[ModelInput]:
    return [ModelInput(name=d["name"], shape=tuple(int(s) for s in d["shape"][1:]))
            for d in interpreter.get_input_details()]


Observer = Callable[[TensorKey, np.ndarray, int], None]


class GraphReplay:
    """Hands every value of the watched tensors to ``observe(key, value, sample)`` after each run of their
    subgraph, replaying control flow (see the module doc): a loop body's tensors are observed once per
    iteration. Works on float and quantized models alike."""

    def __init__(self, parsed: Any, model: bytes, keys: Iterable[TensorKey], observe: Observer) -> None:
        self.parsed, self.model, self.observe = parsed, model, observe
        self.keys: dict[int, list[TensorKey]] = {}
        for key in keys:
            self.keys.setdefault(key[0], []).append(key)
        self.interpreters: dict[int, Any] = {}
        self.running: set[int] = set()
        self.control: dict[int, list[tuple[int, Any, str, list[int]]]] = {}  # per subgraph: ops that run others

    def _where(self, g: int) -> str:
        return tfl.describe_subgraph(self.parsed, g)

    def measure(self, g: int, interpreter: Any, sample: int) -> None:
        """Accumulate subgraph ``g``'s tensors from ``interpreter`` (which runs ``g`` as its main graph), then
        replay the control flow ``g`` contains."""
        for key in self.keys.get(g, []):
            self.observe(key, interpreter.get_tensor(key[1]), sample)
        if g not in self.control:
            ops = enumerate(self.parsed.subgraphs[g].operators or [])
            self.control[g] = [(i, op, tfl.op_type(self.parsed, op), called) for i, op in ops
                               if (called := tfl.called_subgraphs(self.parsed, op))]
        self.running.add(g)
        try:
            for op_index, op, kind, called in self.control[g]:
                self._replay(g, interpreter, op_index, op, kind, called, sample)
        finally:
            self.running.discard(g)

    def _replay(self, g: int, interpreter: Any, op_index: int, op: Any, kind: str, called: list[int],
                sample: int) -> None:
        """Replay one control-flow op of subgraph ``g`` from its recorded inputs; check it reproduces the run."""
        if kind not in REPLAYED_OPS:
            measured = [h for h in called if self.keys.get(h)]
            if measured:
                raise InputError(f"cannot collect ranges for {self._where(measured[0])}: it runs under {kind} "
                                 f"(op {op_index} of {self._where(g)}), which edgeq cannot replay")
            return
        inputs = [interpreter.get_tensor(int(i)) for i in op.inputs]
        if kind == "WHILE":
            results = self._while(called[0], called[1], inputs, sample)
        else:
            branch = called[0] if bool(np.asarray(inputs[0]).ravel()[0]) else called[1]
            results = self.run(branch, inputs[1:], sample)
        for position, (out, replayed) in enumerate(zip(op.outputs, results, strict=False)):
            actual = interpreter.get_tensor(int(out))
            if actual.shape != replayed.shape or not np.array_equal(actual, replayed, equal_nan=True):
                raise InputError(f"cannot collect ranges for {self._where(called[-1])}: replaying {kind} (op "
                                 f"{op_index} of {self._where(g)}) did not reproduce its output {position}")

    def _while(self, cond: int, body: int, values: list[np.ndarray], sample: int) -> list[np.ndarray]:
        for _ in range(MAX_LOOP_ITERATIONS):
            (flag,) = self.run(cond, values, sample)[:1]
            if not bool(np.asarray(flag).ravel()[0]):
                return values
            values = self.run(body, values, sample)
        raise InputError(f"cannot collect ranges for {self._where(body)}: its loop ran more than "
                         f"{MAX_LOOP_ITERATIONS} iterations on calibration sample {sample}")

    def run(self, g: int, values: list[np.ndarray], sample: int) -> list[np.ndarray]:
        """Run subgraph ``g`` on ``values`` (its inputs), measure it, and return its outputs."""
        if g in self.running:
            raise InputError(f"cannot collect ranges for {self._where(g)}: it runs itself (recursion)")
        interpreter = self._interpreter(g)
        details = interpreter.get_input_details()
        if len(details) != len(values):
            raise InputError(f"cannot collect ranges for {self._where(g)}: it takes {len(details)} inputs, "
                             f"its caller passes {len(values)}")
        resized = False
        for detail, value in zip(details, values, strict=True):
            if tuple(detail["shape"]) != np.shape(value):
                interpreter.resize_tensor_input(detail["index"], list(np.shape(value)))
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for detail, value in zip(details, values, strict=True):
            interpreter.set_tensor(detail["index"], np.array(value, dtype=detail["dtype"], order="C"))
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        self.measure(g, interpreter, sample)
        return outputs

    def _interpreter(self, g: int) -> Any:
        """An interpreter whose main graph is subgraph ``g`` (the others renumbered), kept for every sample."""
        if g not in self.interpreters:
            model = tfl.parse(self.model)
            order = [g] + [h for h in range(len(model.subgraphs)) if h != g]
            renumber = {old: new for new, old in enumerate(order)}
            model.subgraphs = [model.subgraphs[h] for h in order]
            for graph in model.subgraphs:
                for op in graph.operators or []:
                    tfl.set_called_subgraphs(model, op, renumber)
            model.signatureDefs = []
            try:
                self.interpreters[g], _ = make_interpreter(tfl.serialize(model), CpuKernels.CPU, threads=1,
                                                           preserve_all_tensors=True)
            except InputError as exc:
                raise InputError(f"cannot collect ranges for {self._where(g)}: {exc}") from None
        return self.interpreters[g]


def collect(float_model: bytes, data: CalibrationSet,
            progress: Callable[[int, int], None] | None = None) -> ActivationStats:
    """Run ``float_model`` on every sample of ``data`` with all tensors kept; accumulate their stats, in every
    subgraph the main graph runs."""
    parsed = tfl.parse(float_model)
    activations = tfl.float_activations(parsed)
    producers = tfl.producers(parsed)
    interpreter, _ = make_interpreter(float_model, CpuKernels.CPU, threads=1, preserve_all_tensors=True)
    inputs = model_inputs(interpreter)
    input_indices = [d["index"] for d in interpreter.get_input_details()]
    stats = {a.key: TensorStats.empty() for a in activations}

    def observe(key: TensorKey, value: np.ndarray, sample: int) -> None:
        try:
            stats[key].update(value)
        except ValueError as exc:
            if "non-finite" in str(exc):
                name = tfl.tensor_name(parsed.subgraphs[key[0]].tensors[key[1]])
                where = f" ({tfl.describe_subgraph(parsed, key[0])})" if key[0] else ""
                raise InputError(f"calibration sample {sample} of {data.source} drives tensor '{name}'{where} "
                                 "to NaN or Inf") from None
            raise

    replay = GraphReplay(parsed, float_model, stats, observe)
    for i, batch in data.samples(inputs):
        for index, sample in zip(input_indices, batch, strict=True):
            interpreter.set_tensor(index, sample)
        interpreter.invoke()
        replay.measure(0, interpreter, i)
        if progress is not None:
            progress(i + 1, len(data))
    return ActivationStats(
        model_fingerprint=tfl.sha256(float_model), calibration_fingerprint=data.fingerprint(),
        samples=len(data), names={a.key: a.name for a in activations},
        producers={a.key: producers.get(a.key, "?") for a in activations}, tensors=stats,
        preprocessing=data.preprocessing,
    )
