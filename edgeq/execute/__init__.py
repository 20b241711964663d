"""Where the data-parallel verbs run their work: in this process, in worker processes, or on Ray actors.

A verb describes its work as a :class:`Job` (what every worker sets up once, what it does per item) and maps it
over shards of its data with an :class:`Executor`; results come back in item order, so merging them is the
caller's exact, order-fixed step. docs/executors.md says what each executor does and what bit-identity means.
"""

from __future__ import annotations

from edgeq.execute.base import DEFAULT, Executor, ExecutorSpec, Job
from edgeq.execute.registry import EXECUTORS, open_executor
from edgeq.execute.shards import shards
from edgeq.execute.spec import parse_executor

__all__ = ["DEFAULT", "EXECUTORS", "Executor", "ExecutorSpec", "Job", "open_executor", "parse_executor", "shards"]
