"""``processes``: the job on spawned worker processes of this machine, results in item order.

Spawned, not forked: OpenCV's and TensorFlow's thread pools do not survive fork (a child can deadlock). Each
worker receives the job's ``shared`` value once, at start-up, and sets its state up on its first item, so an
error there reaches the caller as itself rather than as a broken pool. Workers never outlive the ``imap`` that
started them: an error, Ctrl-C or SIGTERM in the parent terminates them, and Ctrl-C reaches only the parent.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from edgeq.errors import InputError, Terminated
from edgeq.execute.base import ExecutorSpec, Job, R, T


class _Worker:
    """Per worker process: the job's shared value until the first item, then its state."""

    shared: Any = None
    state: Any = None
    ready = False


def _worker_init(shared: Any = None) -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no KeyboardInterrupt traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored now; the block came from spawning()
    _Worker.shared, _Worker.state, _Worker.ready = shared, None, False


def _call(job: Job[Any, T, R], item: T) -> R:
    if not _Worker.ready:
        _Worker.state, _Worker.ready = job.setup(_Worker.shared), True
        _Worker.shared = None
    return job.run(_Worker.state, item)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and terminate the workers now (``shutdown`` alone waits for queued work)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)
    # The executor's manager thread notices the dead workers and closes its wake-up pipe; if the interpreter
    # exits meanwhile, concurrent.futures' atexit hook writes to that pipe as it closes ("Exception ignored
    # ... Bad file descriptor" on stderr, seen once in a full-suite run). Wait for the thread to finish.
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None and manager.is_alive():
        manager.join(timeout=10)


def termination_signals() -> list[int]:
    """SIGTERM and (where it exists) SIGHUP: the signals that end a run like Ctrl-C does."""
    return [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Start worker processes without being interrupted halfway, and with the workers deaf to Ctrl-C.

    A child whose parent stops between starting it and sending its start-up data prints a traceback,
    and a child that gets Ctrl-C (sent to the whole process group) while importing prints one too. So
    while workers start, SIGINT, SIGTERM and SIGHUP are only recorded (whatever handler is installed)
    and delivered again right after, and SIGINT is blocked in this thread: the children inherit the
    block, so Ctrl-C is only ever handled by the parent, which stops them.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    # Started first: launching it unblocks SIGINT in this thread again (multiprocessing's own handling).
    resource_tracker.ensure_running()
    held: list[int] = []
    previous = {}
    for s in (signal.SIGINT, *termination_signals()):
        handler = signal.getsignal(s)
        if handler is not None and handler is not signal.SIG_IGN:
            previous[s] = signal.signal(s, lambda signum, _frame: held.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a blocked Ctrl-C arrives now
    for signum in dict.fromkeys(held):
        if previous[signum] is signal.SIG_DFL:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        signal.raise_signal(signum)  # handled now by whatever handler is installed


def pool_map(job: Job[Any, T, R], items: Sequence[T], workers: int, chunksize: int = 1) -> Iterator[R]:
    """``job`` over ``items`` on up to ``workers`` spawned processes, results in order; the pool lives as long
    as the iteration (an error, Ctrl-C or closing the iterator early stops the workers)."""
    if not items:
        return
    pool: ProcessPoolExecutor | None = None
    try:
        with spawning():
            try:
                pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=_worker_init,
                                           initargs=(job.shared,), mp_context=multiprocessing.get_context("spawn"))
            except OSError as exc:
                raise InputError(f"cannot start worker processes: {exc.strerror or exc}") from None
            # submits everything, spawning the workers; the job is sent without its shared value (sent once above)
            light = Job(job.setup, job.run)
            results = pool.map(functools.partial(_call, light), items, chunksize=chunksize)
        yield from results
    except BrokenProcessPool:
        stop_pool(pool)  # type: ignore[arg-type]
        raise InputError("a worker process died (killed by the system, out of memory?); "
                         "retry with fewer --workers") from None
    except BaseException:
        if pool is not None:
            stop_pool(pool)
        raise
    pool.shutdown(wait=True)


class ProcessesExecutor:
    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def imap(self, job: Job[Any, T, R], items: Sequence[T], *, chunksize: int = 1) -> Iterator[R]:
        return pool_map(job, items, self.workers, chunksize)


@contextlib.contextmanager
def open_processes(spec: ExecutorSpec) -> Iterator[ProcessesExecutor]:
    yield ProcessesExecutor(spec.workers or os.cpu_count() or 1)
