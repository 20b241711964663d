"""One streaming pass of the float model over the calibration set, accumulating per-tensor stats.

The collector only accumulates; estimators turn the statistics into ranges later. Memory is one
bounded histogram per activation tensor, whatever the number of samples.

Two engines run the model (``ENGINES``). A main graph that runs no other subgraph and computes no tensor
from constants alone (``outputs_engine.applies``) is collected on XNNPACK,
its measured tensors appended to a copy's outputs (``edgeq.calib.outputs_engine``; docs/collect_speed.md);
``collection_kernels`` says which kernels a model gets. Otherwise the replay engine below runs it on the
builtin kernels with every tensor kept.

Every subgraph the main graph runs is measured, keyed by (subgraph, tensor). The interpreter keeps a
loop body's tensors of the last iteration only, so control flow is replayed here: after each sample,
every WHILE / IF of a measured graph is run again from its recorded inputs over standalone copies of its
subgraphs (cond, body, branch), each iteration measured, and the replay's result must equal what the
runtime computed. What cannot be replayed (CALL_ONCE, CALL, recursion) is refused, naming the subgraph.

Each sample's values are first gathered into statistics of their own, then recorded per tensor in a
``SampleExtremes``: which samples produced the extreme values, and the statistics with and without the
most extreme one (``edgeq.calib.stats``). The set's statistics are those of every sample merged, bit for
bit what a plain streaming pass gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Preprocessing
from edgeq.calib.data import CalibrationSet, ModelInput
from edgeq.calib.outputs_engine import NonFiniteValues, OutputsEngine, applies
from edgeq.calib.stats import SampleExtremes, TensorStats
from edgeq.errors import InputError
from edgeq.files import atomic_path
from edgeq.npzio import save_npz
from edgeq.progress import task
from edgeq.tflite import model as tfl
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

STATS_FORMAT = "edgeq-activation-stats"
STATS_VERSION = 3  # 3: + per-sample extremes; 2: tensors keyed by (subgraph, tensor); 1: subgraph 0 only
READABLE_VERSIONS = (1, 2, 3)
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
    # Which samples set each tensor's range (empty when loaded from a version 1 or 2 file).
    extremes: dict[TensorKey, SampleExtremes] = field(default_factory=dict)
    # What each sample named in ``extremes`` is: {"id", "condition", "source"} as far as known.
    sample_info: dict[int, dict[str, str]] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (metadata as JSON in ``meta``), atomically."""
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "model_fingerprint": self.model_fingerprint,
                "calibration_fingerprint": self.calibration_fingerprint, "samples": self.samples,
                "names": {_key_text(k): v for k, v in self.names.items()},
                "producers": {_key_text(k): v for k, v in self.producers.items()},
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
                "extremes": bool(self.extremes),
                "sample_info": {str(k): v for k, v in sorted(self.sample_info.items())}}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
        for key, stats in self.tensors.items():
            arrays.update(stats.to_arrays(_prefix(key)))
            if key in self.extremes:
                arrays.update(self.extremes[key].to_arrays(_prefix(key) + "x_"))
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
        version = meta.get("version") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT or version not in READABLE_VERSIONS:
            raise InputError(f"{path} is not an edgeq stats file of version {STATS_VERSION} (or an earlier one)")
        try:
            names = {_parse_key(k): v for k, v in meta["names"].items()}
            producers = {_parse_key(k): v for k, v in meta["producers"].items()}
            tensors = {key: TensorStats.from_arrays(arrays, _prefix(key)) for key in names}
            extremes = {}
            if version >= 3 and meta.get("extremes"):
                extremes = {key: SampleExtremes.from_arrays(arrays, _prefix(key) + "x_", tensors[key])
                            for key in names if f"{_prefix(key)}x_samples" in arrays}
            sample_info = {int(k): {str(f): str(v) for f, v in info.items()}
                           for k, info in (meta.get("sample_info") or {}).items()}
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"{path} is a damaged edgeq stats file ({type(exc).__name__})") from None
        return cls(model_fingerprint=meta["model_fingerprint"],
                   calibration_fingerprint=meta["calibration_fingerprint"], samples=int(meta["samples"]),
                   names=names, producers=producers, tensors=tensors,
                   preprocessing=_preprocessing(meta.get("preprocessing")), extremes=extremes,
                   sample_info=sample_info)


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


class ReplayEngine:
    """Every tensor of every subgraph the main graph runs, on the builtin kernels with all tensors kept, control
    flow replayed (``GraphReplay``): for graphs the outputs engine does not take."""

    kernels = CpuKernels.CPU

    def __init__(self, parsed: Any, model: bytes, keys: Sequence[TensorKey]) -> None:
        self.interpreter, _ = make_interpreter(model, self.kernels, threads=1, preserve_all_tensors=True)
        self.replay = GraphReplay(parsed, model, keys, self._observe)
        self.current: dict[TensorKey, TensorStats] = {}

    def _observe(self, key: TensorKey, value: np.ndarray, sample: int) -> None:
        try:
            self.current.setdefault(key, TensorStats.empty()).update(value)
        except ValueError as exc:
            if "non-finite" in str(exc):
                raise NonFiniteValues(key) from None
            raise

    def sample_stats(self, sample: Sequence[np.ndarray], number: int) -> dict[TensorKey, TensorStats]:
        """Run one sample and return each tensor's statistics (a loop body's over all its iterations)."""
        self.current = {}
        for detail, array in zip(self.interpreter.get_input_details(), sample, strict=True):
            self.interpreter.set_tensor(detail["index"], array)
        self.interpreter.invoke()
        self.replay.measure(0, self.interpreter, number)
        return self.current


ENGINES: dict[str, type[ReplayEngine] | type[OutputsEngine]] = {"outputs": OutputsEngine, "replay": ReplayEngine}


def _engine_name(parsed: Any, engine: str) -> str:
    if engine == "auto":
        return "outputs" if applies(parsed) else "replay"
    if engine not in ENGINES:
        raise ValueError(f"unknown collection engine {engine!r}; known: auto, {', '.join(ENGINES)}")
    return engine


def collection_kernels(float_model: bytes) -> CpuKernels:
    """Which kernels ``collect()`` runs this model on: XNNPACK (as deployed) unless the main graph computes a
    tensor from constants alone (XNNPACK never writes those) or runs other
    subgraphs, whose control flow is replayed on the builtin kernels."""
    return ENGINES[_engine_name(tfl.parse(float_model), "auto")].kernels


class Collector:
    """A float model prepared for statistics collection (parsed, its activations, the engine and its interpreter),
    to run over any number of sets or shards: a worker of a sharded pass builds it once, not once per shard
    (parsing a 14 MB model and preparing XNNPACK's weights took a good part of a shard's time)."""

    def __init__(self, float_model: bytes, engine: str = "auto") -> None:
        self.model = float_model
        self.parsed = tfl.parse(float_model)
        self.activations = tfl.float_activations(self.parsed)
        self.producers = tfl.producers(self.parsed)
        self.runner = ENGINES[_engine_name(self.parsed, engine)](self.parsed, float_model,
                                                                 [a.key for a in self.activations])
        self.fingerprint = tfl.sha256(float_model)

    def collect(self, data: CalibrationSet, progress: Callable[[int, int], None] | None = None, *,
                sample_indices: Sequence[int] | None = None) -> ActivationStats:
        """``collect(self.model, data, progress, sample_indices=...)``."""
        parsed, runner = self.parsed, self.runner
        numbers = list(range(len(data))) if sample_indices is None else [int(i) for i in sample_indices]
        if len(numbers) != len(data) or len(set(numbers)) != len(numbers):
            raise ValueError("sample_indices must number every sample of the set once")
        extremes = {a.key: SampleExtremes.empty() for a in self.activations}
        with task("calibration statistics", len(data), callback=progress) as counted:
            for i, batch in data.samples(model_inputs(runner.interpreter)):
                try:
                    found = runner.sample_stats(batch, numbers[i])
                except NonFiniteValues as exc:
                    key = exc.key
                    name = tfl.tensor_name(parsed.subgraphs[key[0]].tensors[key[1]])
                    where = f" ({tfl.describe_subgraph(parsed, key[0])})" if key[0] else ""
                    raise InputError(f"calibration sample {numbers[i]} of {data.source} drives tensor '{name}'"
                                     f"{where} to NaN or Inf") from None
                for key, sample_stats in found.items():
                    extremes[key].add(numbers[i], sample_stats)
                counted.advance()
        return self.stats(data, extremes, describe=sample_indices is None)

    def stats(self, data: CalibrationSet, extremes: dict[TensorKey, SampleExtremes], *,
              describe: bool = True) -> ActivationStats:
        return assemble_stats(data, extremes, names={a.key: a.name for a in self.activations},
                              producers={a.key: self.producers.get(a.key, "?") for a in self.activations},
                              model_fingerprint=self.fingerprint, describe=describe)


def assemble_stats(data: CalibrationSet, extremes: dict[TensorKey, SampleExtremes], *, names: dict[TensorKey, str],
                   producers: dict[TensorKey, str], model_fingerprint: str, describe: bool = True) -> ActivationStats:
    """The set's statistics from every sample's extremes (collected in one pass, or merged from shards); the
    samples named in them are described from ``data`` when ``describe``."""
    named = sorted({s for e in extremes.values() for ranked in (e.top_max, e.top_min, e.top_abs) for s, _ in ranked})
    described = describe_samples(data) if describe else None
    return ActivationStats(
        model_fingerprint=model_fingerprint, calibration_fingerprint=data.fingerprint(), samples=len(data),
        names=names, producers=producers, tensors={key: e.total() for key, e in extremes.items()},
        preprocessing=data.preprocessing, extremes=extremes,
        sample_info={s: described[s] for s in named if described and described[s]})


def collect(float_model: bytes, data: CalibrationSet, progress: Callable[[int, int], None] | None = None, *,
            sample_indices: Sequence[int] | None = None, engine: str = "auto") -> ActivationStats:
    """Run ``float_model`` on every sample of ``data``; accumulate the stats of its float activations, in every
    subgraph the main graph runs, and which samples produced each tensor's extremes.

    ``sample_indices`` numbers the samples (default 0, 1, ...): a subset of a set keeps the set's numbering,
    so statistics of disjoint subsets merge into those of the whole. Samples are then described by the
    caller; by default they are described from ``data`` (a datagen manifest, an image folder's files).
    ``engine`` (internal: benchmarks and tests) forces ``"outputs"`` or ``"replay"``; ``"auto"`` picks the
    outputs engine whenever it applies (``collection_kernels``).
    """
    return Collector(float_model, engine).collect(data, progress, sample_indices=sample_indices)


def describe_samples(data: CalibrationSet) -> list[dict[str, str]] | None:
    """What each sample of ``data`` is, as far as the set says: for a set from ``edgeq datagen`` its manifest
    ``id``, ``condition`` and ``source`` image; for an image folder the file (``source``); else nothing.

    Only for naming samples in reports: a manifest that no longer lines up with the data (other length or
    conditions) names nothing rather than the wrong image.
    """
    from edgeq.calib.data import IMAGE_SUFFIXES

    folder = Path(data.source)
    try:
        if (folder / "datagen.json").is_file():
            return _manifest_descriptions(folder, data)
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if len(files) == len(data):
                return [{"source": str(p.relative_to(folder))} for p in files]
    except (OSError, ValueError, InputError):
        return None
    if data.conditions and len(data.conditions) == len(data):
        return [{"condition": c} for c in data.conditions]
    return None


def _manifest_descriptions(folder: Path, data: CalibrationSet) -> list[dict[str, str]] | None:
    from datagen.calibset import MANIFEST_FILE
    from datagen.limits import MAX_MANIFEST_BYTES, decode_utf8, read_capped

    path = folder / MANIFEST_FILE
    text = decode_utf8(read_capped(path, MAX_MANIFEST_BYTES, "calibration set manifest"), path,
                       "calibration set manifest")
    records = [json.loads(line) for line in text.split("\n") if line]
    if len(records) < len(data) or not all(isinstance(r, dict) for r in records):
        return None
    records = records[: len(data)]  # a --limit keeps the first samples
    out = [{k: str(r[f]) for k, f in (("id", "id"), ("condition", "condition"), ("source", "source_id")) if f in r}
           for r in records]
    if data.conditions and [d.get("condition") for d in out] != list(data.conditions):
        return None
    return out
