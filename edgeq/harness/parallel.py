"""An evaluation pass (``predict`` / ``predict_outputs``) over contiguous shards of the inputs on an executor.

Each worker opens its own session of the model on the same backend with the same threads, once, and runs its
shards one sample at a time as ``predict`` does; the shards' rows are concatenated in order. Every sample is
run alone, so its outputs do not depend on which worker ran it or with which others: the result equals the
one-pass result bit for bit (docs/executors.md). Backends bound to one device (Edge TPU, Android) are refused.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import UsageError
from edgeq.execute import Executor, Job, shards
from edgeq.harness.accuracy import predict, predict_outputs
from edgeq.harness.backends import BACKENDS, BackendName, open_session
from edgeq.harness.session import Session
from edgeq.progress import task


@dataclass(frozen=True)
class ModelPass:
    """What every worker needs: the model, where it runs, and the float model inputs (N, ...)."""

    model: bytes
    backend: BackendName
    threads: int
    x: np.ndarray
    output: int | None = None  # predict's output index; None: every output (predict_outputs)


def _open(run: ModelPass) -> tuple[Session, ModelPass]:
    return open_session(run.model, run.backend, run.threads), run


def _shard(state: tuple[Session, ModelPass], rows: range) -> Any:
    session, run = state
    x = run.x[rows.start:rows.stop]
    return predict_outputs(session, x) if run.output is None else predict(session, x, run.output)


def check_shardable(backend: BackendName, executor: str) -> None:
    """A backend bound to one device cannot be opened by several workers: refuse it (before any work) unless
    ``executor`` (its name) is local."""
    if executor != "local" and BACKENDS[backend.kind].takes_option:  # its option names the device (or serial)
        raise UsageError(f"the {backend.kind} backend is one device, which workers cannot share: use --executor local")


def _sharded(run: ModelPass, executor: Executor, session: Session | None) -> Any:
    ranges = shards(len(run.x), executor.workers)
    if executor.name == "local" or len(ranges) <= 1:
        session = session or open_session(run.model, run.backend, run.threads)
        return predict_outputs(session, run.x) if run.output is None else predict(session, run.x, run.output)
    check_shardable(run.backend, executor.name)
    parts = []
    with task("evaluating", len(run.x)) as counted, closing(executor.imap(Job(_open, _shard, run), ranges)) as results:
        for rows, part in zip(ranges, results, strict=True):
            parts.append(part)
            counted.advance(len(rows))
    if run.output is not None:
        return np.concatenate(parts)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def predict_on(executor: Executor, model: bytes, backend: BackendName, threads: int, x: np.ndarray, output: int = 0,
               session: Session | None = None) -> np.ndarray:
    """``predict(open_session(model, backend, threads), x, output)`` on ``executor``; ``session`` (that model's)
    is reused when the work stays in this process."""
    return _sharded(ModelPass(model, backend, threads, x, output), executor, session)


def predict_outputs_on(executor: Executor, model: bytes, backend: BackendName, threads: int, x: np.ndarray,
                       session: Session | None = None) -> dict[str, np.ndarray]:
    """``predict_outputs(open_session(model, backend, threads), x)`` on ``executor``."""
    return _sharded(ModelPass(model, backend, threads, x), executor, session)
