"""``--executor local|processes|ray[:ADDRESS]`` and ``--workers N``, parsed and checked before any work."""

from __future__ import annotations

from edgeq.errors import UsageError
from edgeq.execute.base import DEFAULT, ExecutorSpec
from edgeq.execute.registry import EXECUTORS

MAX_WORKERS = 1024


def parse_executor(text: str | None, workers: int | None = None) -> ExecutorSpec:
    """``local``, ``processes``, ``ray`` or ``ray:ADDRESS`` (``ray:auto``, ``ray:10.0.0.5:6379``,
    ``ray:ray://host:10001``); an unknown name or a bad worker count is a UsageError (exit 2)."""
    name, sep, address = (text or DEFAULT).strip().partition(":")
    name = name.lower()
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {text!r}; choose one of {', '.join(EXECUTORS)} (ray takes ray:ADDRESS)")
    if sep and not EXECUTORS[name].takes_address:
        raise UsageError(f"executor {name} takes no address (only ray:ADDRESS does), got {text!r}")
    if sep and not address.strip():
        raise UsageError(f"executor {text!r} names no address; use ray alone for a local Ray, or ray:ADDRESS")
    if address.strip().startswith("ray://") and not address.strip().removeprefix("ray://").strip("/"):
        raise UsageError(f"executor {text!r} names no host; use ray:ray://HOST:10001")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= MAX_WORKERS):
        raise UsageError(f"--workers must be an integer in 1..{MAX_WORKERS}, got {workers!r}")
    if name == DEFAULT and workers not in (None, 1):
        raise UsageError("--workers needs --executor processes or ray: local runs in this process")
    return ExecutorSpec(name, address.strip() or None, workers)
