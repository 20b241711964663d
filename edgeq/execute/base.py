"""The two types every executor shares: the work (:class:`Job`) and the thing that runs it (:class:`Executor`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

S = TypeVar("S")  # what a worker keeps between items (an interpreter, a session)
T = TypeVar("T")  # one item of work (a shard's range of samples)
R = TypeVar("R")  # its result

DEFAULT = "local"


@dataclass(frozen=True)
class Job(Generic[S, T, R]):
    """Work a worker does: ``setup(shared)`` once per worker, then ``run(state, item)`` per item.

    ``setup`` and ``run`` must be module-level functions (they are sent to other processes by reference);
    ``shared`` is what every worker needs whatever the item (the model bytes, the data arrays), sent to each
    worker once rather than with every item.
    """

    setup: Callable[[Any], S]
    run: Callable[[S, T], R]
    shared: Any = None


class Executor(Protocol):
    """Runs a job's items and hands the results back in item order; opened with ``open_executor``."""

    name: str  # the registry name: local, processes, ray
    workers: int  # how many items may run at once

    def imap(self, job: Job[Any, T, R], items: Sequence[T], *, chunksize: int = 1) -> Iterator[R]:
        """The results of ``job`` on each item, in item order, as they complete; workers started for this call
        are stopped when the iterator ends, fails or is closed (use ``contextlib.closing`` so an error in the
        caller's loop stops them at once)."""
        ...


def run_items(job: Job[Any, T, R], items: Iterable[T]) -> Iterator[R]:
    """The job in this process: one setup, then every item in order."""
    state = job.setup(job.shared)
    for item in items:
        yield job.run(state, item)


def no_state(shared: Any) -> Any:
    """A ``setup`` for jobs that need nothing kept between items: the shared value itself."""
    return shared


@dataclass(frozen=True)
class ExecutorSpec:
    """Which executor, where (Ray's address; None starts a local Ray) and how many workers (None: the default)."""

    name: str = DEFAULT
    address: str | None = None
    workers: int | None = None

    def __str__(self) -> str:
        return self.name + (f":{self.address}" if self.address else "")
