"""The one place that creates a LiteRT interpreter: ai_edge_litert, else tflite_runtime, else tf.lite.

Never imports TensorFlow unless both lighter runtimes are missing, so the device harness stays slim.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendUnavailable, InputError
from edgeq.quiet import native_output_captured

_RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow", "tensorflow.lite.python.interpreter", "tensorflow"),
)


class CpuKernels(enum.StrEnum):
    """Which CPU kernels run the graph."""

    REF = "ref"  # reference kernels: slow, the numerical ground truth
    CPU = "cpu"  # builtin optimized kernels, no default delegate
    XNNPACK = "xnnpack"  # builtin kernels with the XNNPACK delegate applied by default


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    module: Any


def load_runtime() -> Runtime:
    """The first LiteRT runtime that imports, with its distribution version."""
    from importlib.metadata import PackageNotFoundError, version

    reasons = []
    for name, module_name, dist in _RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        try:
            dist_version = version(dist)
        except PackageNotFoundError:
            dist_version = "unknown"
        return Runtime(name=name, version=dist_version, module=module)
    raise BackendUnavailable("no LiteRT runtime found (" + "; ".join(reasons) + ")")


def make_interpreter(model: bytes | str | Path, kernels: CpuKernels = CpuKernels.XNNPACK,
                     threads: int = 1, preserve_all_tensors: bool = False) -> tuple[Any, Runtime]:
    """An interpreter with tensors allocated, for a model given as bytes or a path."""
    runtime = load_runtime()
    api = runtime.module
    resolver = {
        CpuKernels.REF: api.OpResolverType.BUILTIN_REF,
        CpuKernels.CPU: api.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        CpuKernels.XNNPACK: api.OpResolverType.AUTO,
    }[CpuKernels(kernels)]
    source: dict[str, Any]
    if isinstance(model, bytes):
        source = {"model_content": model}
    else:
        if not Path(model).is_file():
            raise InputError(f"no such model file: {model}")
        source = {"model_path": str(model)}
    try:
        with native_output_captured((2,)) as captured:  # "INFO: Created XNNPACK delegate" and errors
            interpreter = api.Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolver,
                                          experimental_preserve_all_tensors=preserve_all_tensors)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        reason = captured.first_error_line() or (lines[0] if lines else type(exc).__name__)
        raise InputError(f"the runtime could not load the model: {reason}") from exc
    return interpreter, runtime


def seeded_inputs(specs: list[tuple[tuple[int, ...], np.dtype]], seed: int) -> list[np.ndarray]:
    """Seeded random data for inputs given as (shape, dtype): integers over the dtype's whole range, floats
    uniform in [-1, 1] (as benchmark_model feeds)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in specs:
        if np.issubdtype(dtype, np.integer):
            limits = np.iinfo(dtype)
            arrays.append(rng.integers(limits.min, limits.max, size=shape, endpoint=True).astype(dtype))
        else:
            arrays.append(rng.uniform(-1.0, 1.0, size=shape).astype(dtype))
    return arrays
