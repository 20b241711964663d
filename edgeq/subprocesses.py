"""Stopping a child process that timed out: the whole process group, then whatever it printed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import AnyStr


def stop_group(process: subprocess.Popen[AnyStr], empty: AnyStr) -> AnyStr:
    """Kill ``process`` (started with ``start_new_session=True``) and its descendants; return its output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        out, _ = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a descendant that left the group still holds the pipe
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        return empty
    return out or empty
