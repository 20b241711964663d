"""ONNX models -> a float32 TFLite flatbuffer with static shapes, through onnx2tf (the converter this field uses).

onnx2tf runs in a child process (``edgeq/intake/onnx_driver.py``), never in edgeq's own: importing it sets
process-wide state (``TF_USE_LEGACY_KERAS=1``, a 2**31 recursion limit, warnings silenced, TensorFlow's op
determinism) and its simplifier rewrites its input file in place, so it gets a copy. The child is the Python
named by ``EDGEQ_ONNX2TF_PYTHON`` when set (a separate converter environment, e.g. onnx2tf 1.29.x with its exact
pins), else edgeq's own Python when onnx2tf is installed there (``pip install 'edgeq[onnx]'``: onnx2tf 1.28.8
under edgeq's TensorFlow 2.21; docs/onnx.md says why and what was measured).

Layout: onnx2tf turns every 3D/4D/5D input channels-last (NCHW -> NHWC, NCW -> NWC, NCDHW -> NDHWC) and
leaves other ranks alone; 4D outputs usually come out NHWC too. ``OnnxConversion.inputs`` records each
input's permutation, so a caller can say how data must be laid out: images (edgeq's preprocessing is NHWC)
need nothing, an NCHW ``.npy`` needs ``np.transpose(a, (0, 2, 3, 1))``.

Every conversion is checked: the child feeds one seeded input to onnxruntime and to the float TFLite model,
and edgeq refuses a result whose outputs differ by more than ``MAX_REL_ERROR`` of the output's largest
magnitude.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import BackendUnavailable, InputError, MissingDependencyError, UsageError
from edgeq.subprocesses import stop_group
from edgeq.tflite import model as tfl

ONNX2TF_VERSION = "1.28.8"  # what `pip install 'edgeq[onnx]'` installs (docs/onnx.md)
CONVERTER_ENV = "EDGEQ_ONNX2TF_PYTHON"
SETUP_COMMAND = "pip install 'edgeq[onnx]'"
TIMEOUT_S = 1800.0  # onnx2tf on a ~100 MB model takes minutes; the test model takes seconds
MAX_REL_ERROR = 1e-3  # float32 conversions differ by ~1e-6 of the output scale; a wrong layout by ~1
DRIVER = Path(__file__).with_name("onnx_driver.py")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class TensorLayout:
    """One input or output: its ONNX name and shape, the TFLite tensor it became, and the axes order
    ``perm`` with ``tflite_array = np.transpose(onnx_array, perm)`` (None: onnx2tf did something else)."""

    onnx_name: str
    onnx_shape: tuple[int, ...]
    tflite_name: str
    tflite_shape: tuple[int, ...]
    perm: tuple[int, ...] | None

    @property
    def layout(self) -> str:
        """``NHWC (from NCHW)``-style description, ``unchanged``, or ``permuted (...)``."""
        if self.perm is None:
            return "unknown"
        if list(self.perm) == list(range(len(self.perm))):
            return "unchanged"
        names = {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}
        channels_last = (0, *range(2, len(self.perm)), 1)
        if self.perm == channels_last and len(self.perm) in names:
            before, after = names[len(self.perm)]
            return f"{after} (from {before})"
        return f"permuted {self.perm}"


@dataclass(frozen=True)
class OnnxConversion:
    """A float TFLite flatbuffer made from an ONNX model, with how its tensors relate to the ONNX ones."""

    flatbuffer: bytes
    inputs: tuple[TensorLayout, ...]
    outputs: tuple[TensorLayout, ...]
    converter: str  # "onnx2tf 1.28.8"
    max_rel_error: float | None  # largest output difference vs onnxruntime on one seeded input; None: unchecked
    unverified: str | None  # why the onnxruntime check could not run


_cache: dict[tuple[object, ...], OnnxConversion] = {}
_cache_lock = threading.Lock()


def onnx_to_float_tflite(path: Path, input_shape: tuple[int, ...] | None = None, batch_size: int = 1) -> bytes:
    """Convert the ONNX model at ``path`` to a float32 ``.tflite`` flatbuffer with static shapes.

    ``input_shape`` fixes a single input's non-batch dimensions, given in the ONNX model's own layout (e.g.
    ``(3, 224, 224)``); the batch dimension becomes ``batch_size``. Image inputs come out NHWC (see
    :func:`convert_onnx` for the per-tensor layouts). Raises InputError for a file the converter refuses,
    MissingDependencyError when no onnx2tf is installed, BackendUnavailable when the converter times out.
    """
    return convert_onnx(path, input_shape, batch_size).flatbuffer


def convert_onnx(path: Path, input_shape: tuple[int, ...] | None = None, batch_size: int = 1,
                 timeout_s: float = TIMEOUT_S) -> OnnxConversion:
    """:func:`onnx_to_float_tflite` with the layouts and the check against onnxruntime. A repeated call with the
    same file contents and arguments returns the first result (a conversion takes seconds to minutes)."""
    path = Path(path)
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if input_shape is not None and (not input_shape or any(int(d) < 1 for d in input_shape)):
        raise UsageError(f"--input-shape {input_shape} must be positive dimensions")
    if not path.is_file():
        raise InputError(f"no such ONNX model: {path}")
    python = converter_python()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = (digest, tuple(input_shape) if input_shape else None, batch_size, python)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    conversion = _run(path, python, input_shape, batch_size, timeout_s)
    with _cache_lock:
        _cache[key] = conversion
    return conversion


def converter_python() -> str:
    """The Python that runs onnx2tf: ``$EDGEQ_ONNX2TF_PYTHON``, else edgeq's own when onnx2tf is installed."""
    named = os.environ.get(CONVERTER_ENV, "").strip()
    if named:
        if not (Path(named).is_file() and os.access(named, os.X_OK)):
            raise MissingDependencyError(f"{CONVERTER_ENV}={named} is not an executable Python; point it at the "
                                         "python of an environment with onnx2tf, or unset it and run: "
                                         f"{SETUP_COMMAND}")
        return named
    if not _onnx2tf_installed():
        raise MissingDependencyError(f"converting an ONNX model needs onnx2tf; install it with: {SETUP_COMMAND} "
                                     f"(or set {CONVERTER_ENV} to a Python that has it; see docs/onnx.md)")
    return sys.executable


def _onnx2tf_installed() -> bool:
    return importlib.util.find_spec("onnx2tf") is not None


def _run(path: Path, python: str, input_shape: tuple[int, ...] | None, batch_size: int,
         timeout_s: float) -> OnnxConversion:
    with tempfile.TemporaryDirectory(prefix="edgeq-onnx-") as tmp:
        work = Path(tmp)
        request = {"onnx": str(path.resolve()), "workdir": str(work), "batch_size": batch_size,
                   "input_shape": [int(d) for d in input_shape] if input_shape is not None else None}
        (work / "request.json").write_text(json.dumps(request))
        log_path = work / "onnx2tf.log"
        env = dict(os.environ)
        # onnx2tf runs its simplifier as the `onnxsim` command: the converter's scripts folder must be on PATH
        # even when its environment is not activated. Conversion runs on the CPU, as it is tested.
        env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "wb") as log:
            try:
                process = subprocess.Popen([python, str(DRIVER), str(work / "request.json")], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env,
                                           start_new_session=True)
            except OSError as exc:
                raise MissingDependencyError(f"cannot run the ONNX converter {python}: {exc.strerror or exc}; "
                                             f"install it with: {SETUP_COMMAND}") from None
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop_group(process, b"")
                raise BackendUnavailable(f"onnx2tf did not finish converting {path} within {timeout_s:g} s and "
                                         "was stopped") from None
            except BaseException:  # Ctrl-C, SIGTERM: take the converter down with us
                stop_group(process, b"")
                raise
        log_text = _ANSI.sub("", log_path.read_text(errors="replace"))
        answer = work / "result.json"
        if not answer.is_file():
            raise _with_log(InputError(f"the ONNX converter crashed on {path} (exit {process.returncode}"
                                       f"{_signal_name(process.returncode)}): {_last_line(log_text)}"), log_text)
        result = json.loads(answer.read_text())
        status = result.get("status")
        version = result.get("onnx2tf_version")
        tool = f"onnx2tf {version}" if version else "onnx2tf"
        if status == "missing":
            module = result.get("module") or "a module"
            raise _with_log(MissingDependencyError(
                f"the ONNX converter ({python}) cannot import {module}; install it with: {SETUP_COMMAND}"), log_text)
        if status == "refused":
            raise InputError(f"{path}: {result['message']}")
        if status != "ok":
            raise _with_log(InputError(f"{tool} cannot convert {path}: {_failure(result['message'], log_text)}"),
                            log_text)
        flatbuffer = Path(result["tflite"]).read_bytes()
    return _checked(path, flatbuffer, result, tool, log_text)


def _checked(path: Path, flatbuffer: bytes, result: dict, tool: str, log_text: str) -> OnnxConversion:
    """The flatbuffer is float32, static, builtin-only, runs, and agrees with onnxruntime."""
    parsed = tfl.parse(flatbuffer, f"{tool}'s conversion of {path}")
    flex = sorted({tfl.op_type(parsed, op).removeprefix("CUSTOM:") for graph in parsed.subgraphs
                   for op in graph.operators or [] if tfl.op_type(parsed, op).startswith("CUSTOM:Flex")})
    if flex:
        raise InputError(f"{tool} needed TensorFlow ops that LiteRT cannot run for {path}: {', '.join(flex)}; "
                         "simplify or re-export the model without them")
    if result.get("run_error"):
        raise _with_log(InputError(f"{tool}'s conversion of {path} does not run in LiteRT: {result['run_error']}"),
                        log_text)
    graph = parsed.subgraphs[0]
    float32 = tfl.tensor_type("FLOAT32")
    for index in graph.inputs:
        tensor = graph.tensors[index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        shape = [int(d) for d in (signature if signature is not None else [])]
        if any(d < 0 for d in shape):
            raise InputError(f"{tool}'s conversion of {path} has a dynamic input '{tfl.tensor_name(tensor)}' "
                             f"{shape}; give --input-shape")
        if tensor.type != float32:
            raise InputError(f"{tool}'s conversion of {path} has a {tfl.tensor_type_name(tensor.type)} input "
                             f"'{tfl.tensor_name(tensor)}'; edgeq quantizes float models")
    outputs = tuple(_layout(o.get("onnx_name", ""), o.get("onnx_shape", ()), o["tflite_name"], o["tflite_shape"],
                            o.get("perm")) for o in result["outputs"])
    errors = [(o.get("onnx_name", o["tflite_name"]), o["max_rel_error"]) for o in result["outputs"]
              if o.get("max_rel_error") is not None]
    worst = max(errors, key=lambda e: e[1]) if errors else None
    if worst is not None and worst[1] > MAX_REL_ERROR:
        raise InputError(f"{tool}'s conversion of {path} computes something else: output '{worst[0]}' differs "
                         f"from onnxruntime's by {worst[1]:.3g} of its largest value on a random input")
    inputs = tuple(_layout(i["name"], i["onnx_shape"], i["tflite_name"], i["tflite_shape"], i.get("perm"))
                   for i in result["inputs"])
    return OnnxConversion(flatbuffer=flatbuffer, inputs=inputs, outputs=outputs, converter=tool,
                          max_rel_error=worst[1] if worst is not None else None,
                          unverified=result.get("unverified"))


def _layout(onnx_name: str, onnx_shape: object, tflite_name: str, tflite_shape: object,
            perm: object) -> TensorLayout:
    return TensorLayout(onnx_name=onnx_name, onnx_shape=tuple(int(d) for d in onnx_shape),  # type: ignore[attr-defined]
                        tflite_name=tflite_name, tflite_shape=tuple(int(d) for d in tflite_shape),  # type: ignore[attr-defined]
                        perm=tuple(int(p) for p in perm) if perm is not None else None)  # type: ignore[attr-defined]


def _failure(message: str, log_text: str) -> str:
    """The driver's one line, plus the ONNX node onnx2tf names in its log when it names one."""
    errors = [line.split("ERROR:", 1)[1].strip() for line in log_text.splitlines() if "ERROR:" in line]
    node = next((e.split(":", 1)[1].strip() for e in errors if e.startswith("onnx_op_name:")), None)
    useful = [e for e in errors if e and not e.startswith(("The trace log", "input_onnx_file_path:", "onnx_op_name:",
                                                            "Read this", "Alternatively", "If the input OP",
                                                            "Also, for models"))]
    if useful:  # onnx2tf's own words ("FancyOp OP is not yet implemented.") beat the exception it then raised
        message = useful[0]
    line = f"{message} (at ONNX node {node})" if node else message
    return " ".join(line.split())[:400]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _signal_name(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f", {signal.Signals(-returncode).name}"
        except ValueError:
            return ""
    return ""


def _with_log(error: Exception, log_text: str) -> Exception:
    """Keep the converter's log on the exception (``edgeq --debug`` prints it with the traceback)."""
    tail = "\n".join(log_text.splitlines()[-60:])
    if tail:
        error.add_note(f"onnx2tf log (last lines):\n{tail}")
    return error
