"""The executors by name: what each needs installed and how to open it (modules load only when chosen)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from edgeq.execute.base import Executor, ExecutorSpec


@dataclass(frozen=True)
class ExecutorEntry:
    description: str
    opener: str  # "module:function" taking an ExecutorSpec, returning a context manager of an Executor
    needs: str | None = None  # an optional top-level module (registered in edgeq.extras)
    takes_address: bool = False


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("this process, one item after another (the default)", "edgeq.execute.local:open_local"),
    "processes": ExecutorEntry("worker processes on this machine (spawned), all cores by default",
                               "edgeq.execute.processes:open_processes"),
    "ray": ExecutorEntry("one Ray actor per worker: a local Ray, or a cluster at ray:ADDRESS",
                         "edgeq.execute.rayactors:open_ray", needs="ray", takes_address=True),
}


def check_available(spec: ExecutorSpec) -> None:
    """Raise MissingDependencyError (exit 2, naming the extra) when the executor's package is not installed.

    Cheap (no import of the package): verbs call it before loading models or data."""
    from edgeq.extras import require_extra

    needs = EXECUTORS[spec.name].needs
    if needs is not None:
        require_extra(needs, f"--executor {spec.name}")


def open_executor(spec: ExecutorSpec) -> AbstractContextManager[Executor]:
    """The executor ``spec`` names, as a context manager: what it started (a local Ray) stops on exit."""
    check_available(spec)
    module, _, function = EXECUTORS[spec.name].opener.partition(":")
    opener: Callable[[ExecutorSpec], AbstractContextManager[Executor]] = getattr(importlib.import_module(module),
                                                                                 function)
    return opener(spec)



