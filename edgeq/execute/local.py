"""``local``: the job in this process, item after item; what every verb did before executors existed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from edgeq.execute.base import ExecutorSpec, Job, R, T, run_items


class LocalExecutor:
    name = "local"
    workers = 1

    def imap(self, job: Job[Any, T, R], items: Sequence[T], *, chunksize: int = 1) -> Iterator[R]:
        return run_items(job, items)


@contextmanager
def open_local(spec: ExecutorSpec) -> Iterator[LocalExecutor]:
    yield LocalExecutor()
