"""Progress of long steps, reported from deep library code without printing.

Library code never prints (the CLI does), yet calibration loops, evaluation passes, validate's methods and
rungs, build's stages and zoo training run for minutes. They report here instead: ``step(message)`` for a
stage starting, ``with task(label, total) as t: t.advance()`` for a counted loop. Where the reports go is
decided by whoever runs the library: the reporter in effect is context-local (``reporting(r)``) or
process-wide (``install(r)``, what the CLI does), and the default discards everything, so a Python caller
sees no output. No callback is threaded through signatures; the older ``progress=(done, total)`` callback
parameters still work and are fed by :func:`task` (``callback=``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Protocol

ProgressCallback = Callable[[int, int], None]


class Bar(Protocol):
    """One counted loop as a reporter shows it."""

    def update(self, done: int) -> None:
        """``done`` items of the total are finished (absolute, never decreasing)."""

    def close(self, done: int) -> None:
        """The loop ended after ``done`` items (short of the total when it failed or stopped early)."""


class Reporter(Protocol):
    """Where progress goes: a terminal bar, timestamped log lines, or nowhere."""

    def step(self, message: str) -> None:
        """A stage of the work begins (one line, e.g. ``converting int8``)."""

    def start(self, label: str, total: int | None) -> Bar:
        """A counted loop of ``total`` items (None: unknown) begins."""


class _NullBar:
    def update(self, done: int) -> None:
        pass

    def close(self, done: int) -> None:
        pass


class NullReporter:
    """Reports nothing: the library's default, and what ``--quiet`` installs."""

    def step(self, message: str) -> None:
        pass

    def start(self, label: str, total: int | None) -> Bar:
        return _NullBar()


_process_reporter: Reporter = NullReporter()
_context_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("edgeq_progress",
                                                                                    default=None)


def current() -> Reporter:
    """The reporter in effect here: the context's own, else the process-wide one (threads the library starts
    do not inherit a context, so the process-wide reporter is what reaches them)."""
    return _context_reporter.get() or _process_reporter


def install(reporter: Reporter | None) -> None:
    """Make ``reporter`` the process-wide reporter (None restores the silent default)."""
    global _process_reporter
    _process_reporter = reporter if reporter is not None else NullReporter()


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Send this context's progress to ``reporter`` for the block (tests, embedding applications)."""
    token = _context_reporter.set(reporter)
    try:
        yield reporter
    finally:
        _context_reporter.reset(token)


def step(message: str) -> None:
    """Report that a stage of the work begins."""
    current().step(message)


class Task:
    """A counted loop in progress: ``advance(n)`` after each batch of items."""

    def __init__(self, bar: Bar, total: int | None, callback: ProgressCallback | None) -> None:
        self.done = 0
        self.total = total
        self._bar = bar
        self._callback = callback

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        """Set the count to ``done`` (for loops that know their count rather than their increments)."""
        self.done = done
        self._bar.update(done)
        if self._callback is not None:
            self._callback(done, self.total if self.total is not None else done)


@contextlib.contextmanager
def task(label: str, total: int | None, *, callback: ProgressCallback | None = None) -> Iterator[Task]:
    """A counted loop for the block; the bar closes when the block ends, at whatever count it reached.

    ``callback`` is a caller's ``(done, total)`` function from the older API; it is called on every advance.
    """
    bar = current().start(label, total)
    handle = Task(bar, total, callback)
    try:
        yield handle
    finally:
        bar.close(handle.done)
