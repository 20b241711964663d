"""Run noisy native code (TensorFlow, the LiteRT runtime) with its stdout/stderr captured.

Native libraries write straight to file descriptors 1 and 2, past Python's sys.stdout, so the
descriptors themselves are redirected to a temporary file. The capture is kept for error messages.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Captured:
    """What the native code wrote while captured (filled in when the block exits)."""

    text: str = ""
    lines: list[str] = field(default_factory=list)

    def first_error_line(self) -> str | None:
        """The first line that looks like an error, for a one-line message."""
        for line in self.lines:
            if "error" in line.lower():
                return line.strip()
        return None


@contextlib.contextmanager
def native_output_captured(fds: tuple[int, ...] = (1, 2)) -> Iterator[Captured]:
    """Redirect ``fds`` to a temporary file for the block; yield what was written there."""
    sys.stdout.flush()
    sys.stderr.flush()
    captured = Captured()
    saved = {fd: os.dup(fd) for fd in fds}
    python_level = io.StringIO()  # Python prints reach sys.stdout even when it is not fd 1 (pytest, IDEs)
    streams = [contextlib.redirect_stdout(python_level)] if 1 in fds else []
    streams += [contextlib.redirect_stderr(python_level)] if 2 in fds else []
    with tempfile.TemporaryFile() as sink, contextlib.ExitStack() as stack:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        for stream in streams:
            stack.enter_context(stream)
        try:
            yield captured
        finally:
            stack.close()
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace") + python_level.getvalue()
            captured.lines = captured.text.splitlines()
