"""The error hierarchy. Each class maps to exactly one documented exit code.

Library code raises these; only the CLI turns them into a one-line message and an exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of the ``edgeq`` command, documented in the README."""

    OK = 0
    GATE_FAILED = 1  # a check or gate failed: the tool worked, the artifact did not pass
    BAD_INPUT = 2  # bad usage or bad input: the user has something to fix
    BACKEND_UNAVAILABLE = 3  # the requested backend cannot run here
    INTERNAL = 4  # a bug in edgeq: anything that is not an EdgeqError


class EdgeqError(Exception):
    """Base of every error edgeq raises on purpose. The message is one line meant for a user."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class UsageError(EdgeqError):
    """The command line or API call itself is wrong (unknown option value, conflicting flags)."""


class InputError(EdgeqError):
    """An input file or dataset is missing, unreadable, malformed or inconsistent."""


class MissingDependencyError(EdgeqError):
    """A feature needs a package the slim (device) install leaves out."""


class GateFailed(EdgeqError):
    """A check or quality gate did not pass."""

    exit_code = ExitCode.GATE_FAILED


class BackendUnavailable(EdgeqError):
    """The requested backend cannot run here (library missing, no device attached)."""

    exit_code = ExitCode.BACKEND_UNAVAILABLE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C, so partial outputs and worker processes are cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def require(module: str, feature: str, extra: str = "full") -> None:
    """Raise MissingDependencyError naming the extra to install when ``module`` is absent."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{feature} needs the '{module}' package; install it with: pip install 'edgeq[{extra}]'"
        )
