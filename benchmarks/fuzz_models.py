"""Fuzz the model reader, the checker and the runtime wrapper with mutated valid models.

Usage: python benchmarks/fuzz_models.py [--cases 10000] [--seed 0] [--models a.tflite,b.tflite]
Mutations: byte flips, truncation, random bodies behind a valid header, and field edits through the
flatbuffer object API (tensor types, shapes, buffer and tensor indices, opcodes, quantization). Each case
goes to the reader (edgeq.tflite.model.parse), the checker (check_model, all targets, size breakdown) in
this process, and to the LiteRT runtime in a persistent worker process (load, allocate, one invoke):
a worker crash is recorded with its signal and the worker restarted, like `edgeq.tflite.probe` does.
Reports cases run, how each stage ended, and fails (exit 1) on any unhandled exception in edgeq's process.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKER = r"""
import sys
from pathlib import Path
from edgeq.errors import EdgeqError
from edgeq.harness.latency import random_inputs
from edgeq.harness.litert_session import LiteRTSession
from edgeq.tflite.runtime import CpuKernels, make_interpreter
for line in sys.stdin:
    path = line.strip()
    try:
        interpreter, runtime = make_interpreter(Path(path), CpuKernels.CPU)
        session = LiteRTSession(interpreter, "cpu", runtime.name, None)
        session.set_inputs(random_inputs(session, 0))
        session.invoke()
        print("ok", flush=True)
    except EdgeqError:
        print("refused", flush=True)
    except Exception as exc:
        print("error " + type(exc).__name__, flush=True)
"""


class RuntimeWorker:
    """A child process running models one by one; restarted after a crash."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def run(self, path: Path, timeout_s: float = 30.0) -> str:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if line:
            return line.strip().split()[0] if not line.startswith("error") else line.strip()
        code = self.process.wait(timeout=timeout_s)
        self.process = None
        try:
            return f"crash {signal.Signals(-code).name}"
        except ValueError:
            return f"crash exit {code}"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=10)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    from edgeq.tflite import model as tfl

    kind = int(rng.integers(0, 5))
    if kind == 0:
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            out[int(rng.integers(0, len(out)))] ^= 1 << int(rng.integers(0, 8))
        return "byte flips", bytes(out)
    if kind == 1:
        return "truncation", data[: int(rng.integers(0, len(data)))]
    if kind == 2:
        return "random body", data[:8] + rng.integers(0, 256, int(rng.integers(8, 4000)), dtype=np.uint8).tobytes()
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    tensor = graph.tensors[int(rng.integers(0, len(graph.tensors)))]
    op = graph.operators[int(rng.integers(0, len(graph.operators)))]
    edit = int(rng.integers(0, 6))
    if edit == 0:
        tensor.type = int(rng.integers(0, 18))
    elif edit == 1 and tensor.shape is not None and len(tensor.shape):
        tensor.shape = np.asarray(tensor.shape).copy()
        tensor.shape[int(rng.integers(0, len(tensor.shape)))] = int(rng.integers(-2, 3000))
    elif edit == 2:
        tensor.buffer = int(rng.integers(0, len(parsed.buffers) + 3))
    elif edit == 3:
        op.inputs = np.asarray(op.inputs).copy()
        op.inputs[int(rng.integers(0, len(op.inputs)))] = int(rng.integers(-1, len(graph.tensors) + 3))
    elif edit == 4:
        op.opcodeIndex = int(rng.integers(0, len(parsed.operatorCodes) + 2))
    elif tensor.quantization is not None and tensor.quantization.scale is not None:
        tensor.quantization.scale = np.asarray(rng.choice([0.0, -1.0, np.nan, 1e30]), np.float32).reshape(1)
    try:
        return f"field edit {edit}", tfl.serialize(parsed)
    except Exception:  # the object API refused to pack the edit: fall back to a byte flip
        out = bytearray(data)
        out[int(rng.integers(0, len(out)))] ^= 0xFF
        return "byte flips", bytes(out)


def _where(exc: BaseException) -> str:
    """The exception and the innermost frame that raised it (file:line), to find the bug from the summary."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} at {Path(frame.filename).name}:{frame.lineno}"


def _keep(save_dir: Path | None, case: int, what: str, data: bytes) -> None:
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / f"case{case:05d}-{what}.tflite").write_bytes(data)


def fuzz(models: list[Path], cases: int, seed: int, runtime_every: int = 1,
         save_dir: Path | None = None) -> dict[str, Any]:
    from edgeq.errors import EdgeqError
    from edgeq.spec.check import check_model
    from edgeq.spec.rules import PROFILES
    from edgeq.spec.size import size_breakdown
    from edgeq.tflite import model as tfl

    rng = np.random.default_rng(seed)
    originals = [m.read_bytes() for m in models]
    outcomes: dict[str, collections.Counter[str]] = {s: collections.Counter() for s in ("reader", "checker", "runtime")}
    unhandled: list[str] = []
    worker = RuntimeWorker()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.tflite"
        for i in range(cases):
            kind, data = mutate(originals[i % len(originals)], rng)
            try:
                tfl.parse(data)
                outcomes["reader"]["parsed"] += 1
            except EdgeqError:
                outcomes["reader"]["refused"] += 1
            except Exception as exc:
                unhandled.append(f"case {i} ({kind}) reader: {_where(exc)}")
                _keep(save_dir, i, "unhandled-reader", data)
            try:
                for target in PROFILES:
                    check_model(data, target=target)
                size_breakdown(data)
                outcomes["checker"]["checked"] += 1
            except EdgeqError:
                outcomes["checker"]["refused"] += 1
            except Exception as exc:
                unhandled.append(f"case {i} ({kind}) checker: {_where(exc)}")
                _keep(save_dir, i, "unhandled-checker", data)
            if i % runtime_every == 0:
                path.write_bytes(data)
                outcome = worker.run(path)
                outcomes["runtime"][outcome] += 1
                if outcome not in ("ok", "refused"):
                    _keep(save_dir, i, outcome.replace(" ", "-"), data)
    worker.close()
    return {"cases": cases, "outcomes": {k: dict(v) for k, v in outcomes.items()}, "unhandled": unhandled}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=str(ROOT / "tests" / "data" / "tiny_int8.tflite"))
    parser.add_argument("--save-crashes", metavar="DIR", help="keep the models that crashed or errored the runtime")
    args = parser.parse_args()
    started = time.perf_counter()
    result = fuzz([Path(m) for m in args.models.split(",")], args.cases, args.seed,
                  save_dir=Path(args.save_crashes) if args.save_crashes else None)
    print(f"{result['cases']} cases in {time.perf_counter() - started:.0f} s (seed {args.seed})")
    for stage, counts in result["outcomes"].items():
        print(f"  {stage}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"unhandled exceptions in edgeq's process: {len(result['unhandled'])}")
    for line in result["unhandled"][:20]:
        print(f"    {line}")
    return 1 if result["unhandled"] else 0


if __name__ == "__main__":
    sys.exit(main())
