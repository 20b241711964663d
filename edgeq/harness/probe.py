"""Crash isolation: run an untrusted model once in a child process before edgeq touches it in-process.

The LiteRT runtime can abort or segfault on a malformed model. Loading, allocating and invoking it once
in a child turns such a crash into an error for that model (with the signal named) instead of a dead
CI job with no report. Run as ``python -m edgeq.harness.probe MODEL KERNELS``.
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
    return [sys.executable, "-m", "edgeq.harness.probe", str(path), kernels]


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


def main(argv: list[str]) -> int:
    import numpy as np

    from edgeq.errors import EdgeqError
    from edgeq.harness.latency import random_inputs
    from edgeq.harness.litert_session import LiteRTSession
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    path, kernels = argv[0], argv[1] if len(argv) > 1 else "cpu"
    try:
        interpreter, runtime = make_interpreter(Path(path), CpuKernels(kernels))
        session = LiteRTSession(interpreter, kernels, runtime.name, None)
        session.set_inputs(random_inputs(session, 0))
        session.invoke()
        for output in session.get_outputs():
            np.asarray(output).sum()
    except EdgeqError as exc:
        print(f"edgeq: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
