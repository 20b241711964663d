"""``ray`` / ``ray:ADDRESS``: one Ray actor per worker, each holding the job's state (an interpreter) over the
items it is given; ``ray.util.ActorPool`` hands items out and returns results in item order.

``ray`` alone starts a local Ray sized to the workers and shuts it down afterwards; ``ray:ADDRESS`` connects to
a running cluster and only disconnects. A Ray already initialized in this process (a notebook, a test) is used
as it is. Ray's own output stays off stdout, so ``--json -`` stays clean. Every actor reports the versions of
the packages that compute results; one that differs from this machine's is refused (bit-identity needs them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from edgeq.errors import InputError
from edgeq.execute.base import ExecutorSpec, Job, R, T
from edgeq.versions import package_versions

# What computes the results a worker returns: the same versions everywhere, or different floats are possible.
WORKER_PACKAGES = ("edgeq", "ai-edge-litert", "tflite-runtime", "tensorflow", "numpy")


class _ShardWorker:
    """The actor: the state of the job it is working on (e.g. an open interpreter), set up on its first item."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.state: Any = None

    def versions(self) -> dict[str, str]:
        return package_versions(WORKER_PACKAGES)

    def run(self, token: str, setup: Any, shared: list[Any], run: Any, item: Any) -> Any:
        if token != self.token:  # a new job: drop the last one's state, fetch this one's shared value once
            import ray

            self.token, self.state = None, None
            self.state, self.token = setup(ray.get(shared[0])), token
        return run(self.state, item)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class RayExecutor:
    """Actors start on the first ``imap`` and serve every later one; all are killed when the executor closes."""

    name = "ray"

    def __init__(self, ray: Any, workers: int) -> None:
        self.ray, self.workers = ray, workers
        self.actor = ray.remote(num_cpus=1)(_ShardWorker)
        self.actors: list[Any] = []

    def _pool(self, count: int) -> list[Any]:
        if len(self.actors) < count:
            new = [self.actor.remote() for _ in range(count - len(self.actors))]
            self.actors.extend(new)
            _check_versions(self.ray.get([a.versions.remote() for a in new]))
        return self.actors[:count]

    def imap(self, job: Job[Any, T, R], items: Sequence[T], *, chunksize: int = 1) -> Iterator[R]:
        if not items:
            return
        import uuid

        from ray.exceptions import RayActorError, RayTaskError
        from ray.util import ActorPool

        # The shared value goes into the object store once; wrapped in a list, Ray does not fetch it per call.
        shared, token = [self.ray.put(job.shared)], uuid.uuid4().hex
        try:
            pool = ActorPool(self._pool(min(self.workers, len(items))))
            yield from pool.map(lambda actor, item: actor.run.remote(token, job.setup, shared, job.run, item), items)
        except RayTaskError as exc:
            self.close()
            raise exc.cause from None  # what the work raised, as it would have raised here
        except RayActorError as exc:
            self.close()
            raise InputError(f"a Ray worker died ({_one_line(exc)}); retry with fewer --workers") from None
        except BaseException:
            self.close()  # Ctrl-C or the caller stopped early: no actor keeps working for nobody
            raise

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def _check_versions(reported: list[dict[str, str]]) -> None:
    here = package_versions(WORKER_PACKAGES)
    for theirs in reported:
        for package, version in theirs.items():
            if here.get(package) != version:
                raise InputError(f"a Ray worker has {package} {version}, this machine {here.get(package)}: results "
                                 "would not be bit-identical; install the same versions on every node")


CONNECT_TIMEOUT_S = 5.0


def unreachable(address: str) -> str | None:
    """Why no TCP connection opens to ``address``'s HOST:PORT (None when one does, or for ``auto``).

    Checked before ``ray.init``, which retries an unreachable address for minutes, printing as it goes."""
    if address.startswith("ray://") and ":" not in address.removeprefix("ray://").strip("[]/"):
        address += ":10001"  # Ray client's default port: checked like any other, not left to Ray's 30 s wait
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return None  # Ray parses the rest (and refuses what it cannot)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


@contextlib.contextmanager
def open_ray(spec: ExecutorSpec) -> Iterator[RayExecutor]:
    import ray

    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False,
                                   "logging_level": logging.ERROR}
        if spec.address:
            options["address"] = spec.address
            where = f"connect to Ray at {spec.address}"
            problem = unreachable(spec.address)
            if problem is not None:
                raise InputError(f"cannot {where}: {problem}")
        else:
            options.update(num_cpus=spec.workers or os.cpu_count() or 1, include_dashboard=False)
            where = "start a local Ray"
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries results only
                ray.init(**options)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ... for a bad address
            raise InputError(f"cannot {where}: {_one_line(exc)}") from None
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        workers = spec.workers or cpus or 1
        if workers > cpus:
            raise InputError(f"--workers {workers} needs {workers} CPUs; the Ray cluster has {cpus}")
        executor = RayExecutor(ray, workers)
        try:
            yield executor
        finally:
            executor.close()
    finally:
        if started:
            ray.shutdown()  # a local Ray stops; a cluster we connected to is only disconnected from
