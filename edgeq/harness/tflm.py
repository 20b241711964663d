"""TFLite Micro as a portability check: does the model load and run on the microcontroller runtime?

Uses the ``tflite-micro`` Python package (the TFLM interpreter with all its kernels, built for the
host). TFLM has fewer ops than LiteRT, fewer tensor types per kernel, and runs out of one fixed tensor
arena, so the three failures that matter are reported by name, each from TFLM's own log: an op TFLM has
no kernel for (UnsupportedOpError), a kernel that refuses the node's tensors, say an int8 EXP, at
prepare or at the first invoke (KernelRefusedError, naming the op and TFLM's reason), and an arena the
model does not fit. The Python binding raises the same "TFLM failed to allocate tensors" for all of
them, so that text alone never decides. Never imports TensorFlow.

TFLM can crash the process (not fail) when the arena is too small even for its own bookkeeping, so
the arena size is never guessed upwards from below: the model is first allocated in an arena at the
cap, its real use is read back from TFLM's recording allocator, and the session then gets an arena
of about that size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendUnavailable, InputError, UsageError
from edgeq.harness.litert_session import check_inputs
from edgeq.harness.session import Availability, TensorInfo
from edgeq.quiet import native_output_captured
from edgeq.tflite import model as tfl

ARENA_CAP = 128 << 20  # bytes; far beyond any microcontroller, so only a broken model fails to fit
_MIN_ARENA = 4096  # below about 500 bytes TFLM crashes creating its allocator
#: Only nightlies of tflite-micro exist, for x86_64 Linux; the tflm extra pins one (pyproject.toml).
_INSTALL = "pip install 'edgeq[tflm]' (x86_64 Linux only)"
_MISSING_BUILTIN = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
_MISSING_ANY = re.compile(r"Failed to get registration from op code (\S+)")
#: TFLM's own messages when memory runs out (case-sensitive: the binding's generic "TFLM failed to allocate
#: tensors" follows every kind of allocation failure, a kernel's refusal included).
_ARENA_FAILURE = re.compile(r"Failed to (?:resize buffer|allocate (?:tail|temp|memory|persistent|variable))|"
                            r"Requested: \d+, available|\d+ bytes required|[Aa]rena (?:size|too small)")
_KERNEL_FAILED = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke|init)")
#: What the Python binding adds on top of TFLM's log: never the reason.
_BINDING_NOISE = ("TFLM failed to allocate tensors", "Interpreter invocation failed.")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


class UnsupportedOpError(InputError):
    """The model uses an op TFLite Micro has no kernel for.

    ``ops`` is the builtin TFLM stopped at (it reports only the first), or for a custom op, the model's custom codes.
    """

    def __init__(self, message: str, ops: tuple[str, ...]) -> None:
        super().__init__(message)
        self.ops = ops


class KernelRefusedError(UnsupportedOpError):
    """TFLite Micro has the op, but its kernel refuses this node: a tensor type (an int8 EXP, say) or a parameter
    it does not implement. ``ops`` is the refused op; ``phase`` is TFLM's (prepare, or invoke for kernels that only
    check types when they run); ``reason`` is TFLM's own message."""

    def __init__(self, message: str, op: str, phase: str, reason: str) -> None:
        super().__init__(message, (op,))
        self.phase = phase
        self.reason = reason


def _import() -> Any:
    """The ``tflite_micro`` package, or BackendUnavailable saying how to get it."""
    try:
        import tflite_micro
    except ImportError as exc:
        detail = "" if exc.name in (None, "tflite_micro") else f" ({exc})"
        raise BackendUnavailable(f"TFLite Micro needs the tflite-micro package: {_INSTALL}{detail}") from None
    except OSError as exc:  # the native extension does not load on this platform
        raise BackendUnavailable(f"the tflite-micro package does not load here: {exc}") from None
    return tflite_micro


def _version(package: Any) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tflite-micro")
    except PackageNotFoundError:
        return str(getattr(package, "__version__", "unknown"))


def availability() -> Availability:
    """Whether the TFLite Micro interpreter can run here, and if not, why. Never raises."""
    try:
        package = _import()
    except BackendUnavailable as exc:
        return Availability(False, str(exc))
    return Availability(True, f"tflite-micro {_version(package)}")


def _lines(text: str) -> list[str]:
    seen: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and line not in seen:
            seen.append(line)
    return seen


def _attempt(package: Any, data: bytes, arena: int) -> tuple[Any, list[str]]:
    """(interpreter, []) or (None, what TFLM wrote while failing)."""
    interpreter, error = None, ""
    with native_output_captured((1, 2)) as captured:
        try:
            interpreter = package.runtime.Interpreter.from_bytes(data, arena_size=arena)
        except (RuntimeError, ValueError) as exc:
            error = str(exc)
    return (interpreter, []) if interpreter is not None else (None, [*_lines(captured.text), *_lines(error)])


def _custom_codes(parsed: Any) -> list[str]:
    codes = {tfl.op_type(parsed, op) for graph in parsed.subgraphs for op in graph.operators or []}
    return sorted(code.removeprefix("CUSTOM:") for code in codes if code.startswith("CUSTOM:"))


def _node_types(parsed: Any, op: str, node: int) -> str:
    """The tensor types of node ``node`` ("INT8 -> INT8") when the main graph's node there is ``op``; TFLM numbers
    nodes per subgraph, so a refusal in another subgraph gets none."""
    graph = parsed.subgraphs[0]
    operators = graph.operators or []
    if not 0 <= node < len(operators) or tfl.op_type(parsed, operators[node]) != op:
        return ""

    def types(indices: Any) -> str:
        found = [tfl.tensor_type_name(graph.tensors[int(i)].type) for i in ([] if indices is None else indices)
                 if int(i) >= 0 and not tfl.is_constant(parsed, graph.tensors[int(i)])]
        return ", ".join(dict.fromkeys(found)) or "-"

    return f"{types(operators[node].inputs)} -> {types(operators[node].outputs)}"


def _kernel_refusal(lines: list[str], parsed: Any) -> KernelRefusedError | None:
    """TFLM's "Node OP (number N) failed to prepare/invoke" with the kernel's own reason, as one error."""
    for k, line in enumerate(lines):
        found = _KERNEL_FAILED.search(line)
        if found is None:
            continue
        op, node, phase = found.group(1), int(found.group(2)), found.group(3)
        said = [x for x in lines[:k] if x not in _BINDING_NOISE and not _KERNEL_FAILED.search(x)]
        if any(_ARENA_FAILURE.search(x) for x in said):
            return None  # the kernel asked for scratch memory the arena did not have: not a refusal
        reason = "; ".join(said[-2:]) or "it gave no reason"
        types = _node_types(parsed, op, node)
        on = f" ({types})" if types else ""
        return KernelRefusedError(f"TFLite Micro's {op} kernel refuses node {node}{on} at {phase}: {reason}",
                                  op, phase, reason)
    return None


def _failure(lines: list[str], parsed: Any, arena: int) -> InputError:
    """The one-line error for a model TFLM refused to allocate in an arena of ``arena`` bytes."""
    text = "\n".join(lines)
    builtin = _MISSING_BUILTIN.findall(text)
    missing = builtin or [op for op in _MISSING_ANY.findall(text) if op != "CUSTOM"]
    if missing:
        ops = tuple(dict.fromkeys(missing))
        return UnsupportedOpError(f"TFLite Micro has no kernel for op {', '.join(ops)}", ops)
    if "CUSTOM" in _MISSING_ANY.findall(text):
        custom = _custom_codes(parsed)
        named = ", ".join(repr(code) for code in custom) or "(unnamed)"
        which = "custom op" if len(custom) <= 1 else "one of the custom ops"
        return UnsupportedOpError(f"TFLite Micro has no kernel for {which} {named}", tuple(custom))
    refused = _kernel_refusal(lines, parsed)
    if refused is not None:
        return refused
    if _ARENA_FAILURE.search(text):
        detail = next(line for line in lines if _ARENA_FAILURE.search(line))
        return InputError(f"the model does not fit a TFLite Micro tensor arena of {arena} bytes (the cap): {detail}")
    said = [line for line in lines if line not in _BINDING_NOISE] or lines
    return InputError("TFLite Micro cannot load the model: " + ("; ".join(said[:2]) or "it gave no reason"))


def _arena_used(interpreter: Any) -> int | None:
    """Bytes of arena the allocated model uses, from TFLM's recording allocator (None if it says nothing)."""
    with native_output_captured((1, 2)) as captured:
        interpreter.print_allocations()
    found = _ARENA_TOTAL.search(captured.text)
    return int(found.group(1)) if found else None


def _padded(used: int) -> int:
    """``used`` plus room for the scratch TFLM takes while preparing ops, which the total leaves out."""
    return -(-(used + max(1024, used // 8)) // 256) * 256


class TFLMSession:
    """The Session protocol over the TFLite Micro interpreter."""

    backend = "tflm"
    delegation = None

    def __init__(self, interpreter: Any, parsed: Any, runtime: str, arena_size: int, arena_used: int | None,
                 warnings: tuple[str, ...] = ()) -> None:
        self.interpreter = interpreter
        self._parsed = parsed
        self.runtime = runtime
        self.arena_size = arena_size  # bytes allocated for this session's arena
        self.arena_used = arena_used  # bytes of it the model uses (what a microcontroller must provide)
        self.warnings = tuple(warnings)
        graph = parsed.subgraphs[0]
        inputs = [int(i) for i in graph.inputs]
        outputs = [int(i) for i in graph.outputs]
        self.inputs = tuple(_info(graph.tensors[t], interpreter.get_input_details(i)) for i, t in enumerate(inputs))
        self.outputs = tuple(_info(graph.tensors[t], interpreter.get_output_details(i)) for i, t in enumerate(outputs))

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        check_inputs(self.inputs, arrays)
        held = [np.ascontiguousarray(array).copy() for array in arrays]
        self._write_inputs(held)
        self._held = held

    def _write_inputs(self, arrays: list[np.ndarray]) -> None:
        for index, array in enumerate(arrays):
            try:
                self.interpreter.set_input(array, index)
            except ValueError as exc:
                raise InputError(f"TFLite Micro refused input {self.inputs[index].name!r}: {exc}") from None

    def invoke(self) -> None:
        # TFLM plans its arena so that the input's bytes are reused by later ops: a second invoke would run
        # on overwritten input. Every invoke writes the held inputs first (a copy of a few KiB on models
        # that fit a microcontroller), so repeated invokes — the latency protocol's — see the same data.
        self._write_inputs(getattr(self, "_held", []))
        with native_output_captured((1, 2)) as captured:
            try:
                self.interpreter.invoke()
                error = ""
            except RuntimeError as exc:
                error = str(exc)
        if error:
            lines = _lines(captured.text) or _lines(error)
            refused = _kernel_refusal(lines, self._parsed)
            if refused is not None:
                raise refused
            said = "; ".join([line for line in lines if line not in _BINDING_NOISE][:2] or lines[:2])
            raise InputError(f"TFLite Micro failed to run the model: {said}")

    def get_outputs(self) -> list[np.ndarray]:
        return [self.interpreter.get_output(index) for index in range(len(self.outputs))]


def _info(tensor: Any, detail: dict[str, Any]) -> TensorInfo:
    quantization = detail.get("quantization_parameters") or {}
    scales = np.asarray(quantization.get("scales", []), dtype=np.float64).ravel()
    zero_points = np.asarray(quantization.get("zero_points", []), dtype=np.int64).ravel()
    per_tensor = scales.size == 1  # a per-axis input or output has no single scale to report
    return TensorInfo(name=tfl.tensor_name(tensor), shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]), scale=float(scales[0]) if per_tensor else 0.0,
                      zero_point=int(zero_points[0]) if per_tensor and zero_points.size else 0)


def _model_bytes(model: bytes | str | Path) -> bytes:
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    return tfl.read_bytes(model)


def open_session(model: bytes | str | Path, arena_size: int | None = None, *,
                 arena_cap: int = ARENA_CAP) -> TFLMSession:
    """``model`` in the TFLite Micro interpreter, with an arena of at least ``arena_size`` bytes.

    A model that needs more than ``arena_size`` gets a larger arena (``session.warnings`` says so); one
    that does not fit ``arena_cap`` (or uses an op TFLM lacks) is an InputError naming why.
    """
    if arena_size is not None and arena_size < 1:
        raise UsageError(f"arena_size must be a positive number of bytes, got {arena_size}")
    data = _model_bytes(model)
    parsed = tfl.parse(data)  # also keeps damaged flatbuffers away from TFLM, which does not verify them
    package = _import()
    cap = max(arena_cap, arena_size or 0, _MIN_ARENA)
    probe, lines = _attempt(package, data, cap)
    if probe is None:
        raise _failure(lines, parsed, cap)
    used = _arena_used(probe)
    interpreter, size = probe, cap
    if used is not None:
        candidate = arena_size if arena_size is not None and arena_size >= used else _padded(used)
        while candidate < cap:  # at or above the recorded use TFLM fails cleanly if it still needs more
            smaller, _ = _attempt(package, data, candidate)
            if smaller is not None:
                interpreter, size = smaller, candidate
                break
            candidate *= 2
    warnings: tuple[str, ...] = ()
    if arena_size is not None and size > arena_size:
        warnings = (f"arena_size {arena_size} is too small for this model (it uses {used} bytes); "
                    f"allocated {size}",)
    return TFLMSession(interpreter, parsed, f"tflite-micro {_version(package)}", size, used, warnings)
