"""An evaluation pass (``predict`` / ``predict_outputs``) over contiguous shards of the inputs on an executor.

Each worker opens its own session of the model on the same backend with the same threads, once, and runs its
shards one sample at a time as ``predict`` does; the shards' rows are concatenated in order. Every sample is
run alone, so its outputs do not depend on which worker ran it or with which others: the result equals the
one-pass result bit for bit (docs/executors.md). Backends bound to one device (Edge TPU, Android) are refused.
"""

from __future__ import annotations

import dataclasses
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from edgeq.calib.parallel import check_stateless
from edgeq.errors import UsageError
from edgeq.execute import Executor, Job, shards
from edgeq.harness.accuracy import predict, predict_outputs
from edgeq.harness.backends import BACKENDS, BackendName, open_session
from edgeq.harness.session import Session
from edgeq.progress import task


@dataclass(frozen=True)
class ModelPass:
    """What every worker needs: the model, where it runs, the float model inputs (N, ...), and what to return:
    ``predict``'s scores of output ``scores`` (an index) and/or every output (``predict_outputs``)."""

    model: bytes
    backend: BackendName
    threads: int
    x: np.ndarray
    scores: int | None = None
    outputs: bool = False


Results = tuple[np.ndarray | None, dict[str, np.ndarray] | None]  # (scores, outputs), None where not asked


def _run(session: Session, run: ModelPass, x: np.ndarray) -> Results:
    """One pass as the caller would run it in this process: predict, then predict_outputs, on one session."""
    scores = None if run.scores is None else predict(session, x, run.scores)
    return scores, predict_outputs(session, x) if run.outputs else None


def _open(run: ModelPass) -> tuple[Session, ModelPass]:
    return open_session(run.model, run.backend, run.threads), run


def _shard(state: tuple[Session, ModelPass], x: np.ndarray) -> Results:
    session, run = state
    return _run(session, run, x)


def check_shardable(backend: BackendName, executor: str) -> None:
    """A backend bound to one device cannot be opened by several workers: refuse it (before any work) unless
    ``executor`` (its name) is local."""
    if executor != "local" and BACKENDS[backend.kind].takes_option:  # its option names the device (or serial)
        raise UsageError(f"the {backend.kind} backend is one device, which workers cannot share: use --executor local")


def evaluation_pass(executor: Executor, run: ModelPass, session: Session | None = None) -> Results:
    """``run``'s scores and/or outputs over every sample, in shards on ``executor`` (one job: each worker opens
    the model once for both); ``session`` (that model's) is reused when the work stays in this process."""
    ranges = shards(len(run.x), executor.workers)
    if executor.name == "local" or len(ranges) <= 1:
        return _run(session or open_session(run.model, run.backend, run.threads), run, run.x)
    check_shardable(run.backend, executor.name)
    check_stateless(run.model, executor.name)
    parts: list[Results] = []
    # Each shard carries its own rows (every byte of the inputs is sent once); the job's shared value, sent to each
    # worker once, is the pass without them.
    job = Job(_open, _shard, dataclasses.replace(run, x=run.x[:0]))
    items = [run.x[rows.start:rows.stop] for rows in ranges]
    with task("evaluating", len(run.x)) as counted, closing(executor.imap(job, items)) as results:
        for rows, part in zip(ranges, results, strict=True):
            parts.append(part)
            counted.advance(len(rows))
    scores = None if run.scores is None else np.concatenate([p[0] for p in parts])
    outputs = None
    if run.outputs:
        outputs = {name: np.concatenate([p[1][name] for p in parts]) for name in parts[0][1]}  # type: ignore[index]
    return scores, outputs


def predict_on(executor: Executor, model: bytes, backend: BackendName, threads: int, x: np.ndarray, output: int = 0,
               session: Session | None = None) -> np.ndarray:
    """``predict(open_session(model, backend, threads), x, output)`` on ``executor``."""
    scores, _ = evaluation_pass(executor, ModelPass(model, backend, threads, x, scores=output), session)
    assert scores is not None
    return scores


def predict_outputs_on(executor: Executor, model: bytes, backend: BackendName, threads: int, x: np.ndarray,
                       session: Session | None = None) -> dict[str, np.ndarray]:
    """``predict_outputs(open_session(model, backend, threads), x)`` on ``executor``."""
    _, outputs = evaluation_pass(executor, ModelPass(model, backend, threads, x, outputs=True), session)
    assert outputs is not None
    return outputs
