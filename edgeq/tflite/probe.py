"""Crash isolation: run an untrusted model once in a child process before edgeq touches it in-process.

The LiteRT runtime can abort or segfault on a malformed model. Loading, allocating and invoking it once
in a child turns such a crash into an error for that model (with the signal named) instead of a dead
CI job with no report. Run as ``python -m edgeq.tflite.probe MODEL KERNELS``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeq.errors import InputError

PROBE_TIMEOUT_S = 120.0


class ModelCrashed(InputError):
    """The runtime died (signal) or hung on this model; edgeq itself did not."""


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def probe_command(path: Path, kernels: str) -> list[str]:
    """The child process that loads and runs the model (tests replace it with a process that crashes)."""
    return [sys.executable, "-m", "edgeq.tflite.probe", str(path), kernels]


def probe(model: bytes | str | Path, kernels: str = "cpu", what: str | None = None,
          timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ModelCrashed / InputError when loading and running ``model`` once fails in a child process."""
    with tempfile.TemporaryDirectory(prefix="edgeq-probe-") as tmp:
        if isinstance(model, bytes):
            path = Path(tmp) / "model.tflite"
            path.write_bytes(model)
        else:
            path = Path(model)
        label = what or str(model if not isinstance(model, bytes) else "the model")
        try:
            result = subprocess.run(probe_command(path, kernels), capture_output=True, text=True, timeout=timeout_s,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise ModelCrashed(f"the runtime hung on {label} for {timeout_s:.0f} s (probe process killed)") from None
    if result.returncode == 0:
        return
    if result.returncode < 0:
        raise ModelCrashed(f"the LiteRT runtime crashed on {label} ({_signal_name(result.returncode)}); "
                           "the model is malformed or uses an op the runtime cannot execute")
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    raise InputError(lines[-1].removeprefix("edgeq: error: ") if lines else f"{label} failed to run")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _run_once(path: str, kernels: str) -> None:
    """Load, allocate, fill every input with seeded random data, invoke, read every output."""
    import numpy as np

    from edgeq.tflite.runtime import CpuKernels, make_interpreter, seeded_inputs

    interpreter, _ = make_interpreter(Path(path), CpuKernels(kernels))
    try:
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    except UnicodeDecodeError:  # LiteRT decodes tensor names as UTF-8; a damaged file's may not be
        raise InputError("damaged model: an input or output tensor name is not UTF-8 text") from None
    arrays = seeded_inputs([(tuple(int(d) for d in i["shape"]), np.dtype(i["dtype"])) for i in inputs], 0)
    for detail, array in zip(inputs, arrays, strict=True):
        try:
            interpreter.set_tensor(int(detail["index"]), array)
        except ValueError as exc:  # e.g. an input tensor that the file wrongly backs with constant data
            raise InputError(f"{kernels} refused input data: {_first_line(exc)}") from None
    try:
        interpreter.invoke()
    except RuntimeError as exc:
        raise InputError(f"{kernels} failed to run the model: {_first_line(exc)}") from None
    for detail in outputs:
        np.asarray(interpreter.get_tensor(int(detail["index"]))).sum()


def main(argv: list[str]) -> int:
    from edgeq.errors import EdgeqError

    path, kernels = argv[0], argv[1] if len(argv) > 1 else "cpu"
    try:
        _run_once(path, kernels)
    except EdgeqError as exc:
        print(f"edgeq: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
