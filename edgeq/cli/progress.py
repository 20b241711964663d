"""How the CLI shows progress: a tqdm bar with rate and ETA on a terminal, timestamped lines elsewhere.

The library reports through :mod:`edgeq.progress` and never prints; :func:`configure` (called once per
command after parsing) installs the reporter for this process. On a terminal, bars go to stderr and each
finished bar ends its line, so nothing is ever glued to it. Off a terminal (pipes, CI logs, ``CI`` set), a
CI log must stay readable and bounded: one line per step and per loop start and end, each with a UTC
timestamp and the time since the command began, and for long loops at most one line every
``interval`` seconds, never one per item. Either way a loop is shown only once it has run ``DELAY_S``:
one that ends sooner needs no progress. ``EDGEQ_PROGRESS`` (``bar``, ``log``, ``off``) overrides the
choice; the test suite sets ``off`` except where it tests progress. ``--quiet`` installs the silent
reporter and silences :func:`info`; results, warnings and errors are printed elsewhere and are never
silenced.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from edgeq import progress
from edgeq.errors import UsageError

#: Seconds between two lines of one loop in the timestamped log (CI logs stay short on long loops).
LOG_INTERVAL_S = 10.0
#: A loop is shown once it has run this long: one that ends sooner needs no progress (tqdm's ``delay``).
DELAY_S = 1.0

_quiet = False


def configure(*, quiet: bool) -> None:
    """Install this command's progress reporter: silent under ``--quiet``, else one chosen for stderr."""
    global _quiet
    _quiet = quiet
    progress.install(progress.NullReporter() if quiet else reporter_for(sys.stderr))


def quiet() -> bool:
    """Whether ``--quiet`` is in effect (informational lines are dropped)."""
    return _quiet


def info(message: str) -> None:
    """An informational line on stderr (``--quiet`` drops it); never use this for results or warnings."""
    if _quiet:
        return
    if _open_bars:  # above the open bar, not glued to its line
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def reporter_for(stream: TextIO) -> progress.Reporter:
    """The reporter ``EDGEQ_PROGRESS`` names; by default (``auto``) bars when ``stream`` is a terminal
    outside CI, else timestamped lines."""
    choice = os.environ.get("EDGEQ_PROGRESS", "auto").strip().lower() or "auto"
    if choice not in REPORTERS:
        raise UsageError(f"EDGEQ_PROGRESS must be one of {', '.join(REPORTERS)}, got {choice!r}")
    if choice == "auto":
        choice = "bar" if _is_terminal(stream) and not os.environ.get("CI") else "log"
    return REPORTERS[choice]()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def _stderr() -> TextIO:
    """stderr as it is now (tests and wrappers replace sys.stderr after the reporter is made)."""
    return sys.stderr


#: The terminal bars drawn now, innermost last (a nested bar takes the next row).
_open_bars: list[object] = []


# ---------------------------------------------------------------------------------------------- terminal


def _terminal_size(stream: TextIO) -> os.terminal_size | None:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return size if size.columns > 0 and size.lines > 0 else None


class _TqdmBar:
    def __init__(self, label: str, total: int | None, stream: TextIO, delay: float) -> None:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: a bar is drawn only from the loop, never mid-capture
        nested = len(_open_bars)
        sized = _terminal_size(stream) is not None  # tqdm draws nothing on a terminal reporting 0x0
        self._bar = tqdm(total=total, desc=label, file=stream, leave=nested == 0, position=nested,
                         dynamic_ncols=sized, ncols=None if sized else 80, nrows=None if sized else 24,
                         mininterval=0.2, unit="it", smoothing=0.1, delay=delay)
        _open_bars.append(self)

    def update(self, done: int) -> None:
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self, done: int) -> None:
        self.update(done)
        self._bar.close()  # draws the final count, then ends the line
        if self in _open_bars:
            _open_bars.remove(self)


class TerminalReporter:
    """tqdm bars on stderr (rate, ETA); step lines are written above any open bar, never on its line."""

    def __init__(self, stream: Callable[[], TextIO] = _stderr, *, delay: float | None = None) -> None:
        self._stream = stream
        self._delay = DELAY_S if delay is None else delay

    def step(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=self._stream())

    def start(self, label: str, total: int | None) -> progress.Bar:
        return _TqdmBar(label, total, self._stream(), self._delay)


# ------------------------------------------------------------------------------------------- log lines


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _rate(done: int, seconds: float) -> str:
    if seconds <= 0 or done <= 0:
        return ""
    per_s = done / seconds
    return f"{per_s:.1f}/s" if per_s >= 1 else f"{seconds / done:.1f} s/it"


class _LogBar:
    """A loop in the log: nothing until it has run ``delay`` s, then a line every ``interval`` s, then its end."""

    def __init__(self, log: LogReporter, label: str, total: int | None) -> None:
        self._log = log
        self._label = label
        self._total = total
        self._began = self._last_line = log.clock()
        self._done = 0
        self._shown = self._closed = False

    def _count(self, done: int) -> str:
        if self._total:
            return f"{done}/{self._total} ({100 * done // self._total} %)"
        return str(done)

    def update(self, done: int) -> None:
        self._done = max(self._done, done)
        now = self._log.clock()
        if self._closed or now - self._last_line < (self._log.interval if self._shown else self._log.delay):
            return
        spent = now - self._began
        parts = [self._count(self._done), _rate(self._done, spent)]
        if self._total and self._done and self._done < self._total:
            parts.append(f"ETA {_duration(spent * (self._total - self._done) / self._done)}")
        opening = "" if self._shown else f"started {_duration(spent)} ago, "
        self._shown, self._last_line = True, now
        self._log.line(f"{self._label}: {opening}" + ", ".join(p for p in parts if p))

    def close(self, done: int) -> None:
        if self._closed:
            return
        self._closed = True
        self._done = max(self._done, done)
        spent = self._log.clock() - self._began
        if not self._shown and spent < self._log.delay:
            return  # a short loop needs no progress
        finished = self._total is None or self._done >= self._total
        verb = "done" if finished else "stopped at"
        rate = _rate(self._done, spent)
        self._log.line(f"{self._label}: {verb} {self._count(self._done)} in {_duration(spent)}"
                       + (f" ({rate})" if rate else ""))


class LogReporter:
    """One timestamped line per step; a loop that runs ``delay`` s gets a start line, a line every ``interval``
    s and an end line. ``clock`` (monotonic seconds) and ``now`` (UTC wall time) are injectable, so tests
    need no sleeping.
    """

    def __init__(self, stream: Callable[[], TextIO] = _stderr, *, interval: float = LOG_INTERVAL_S,
                 delay: float | None = None, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._stream = stream
        self.interval = interval
        self.delay = DELAY_S if delay is None else delay
        self.clock = clock
        self._now = now
        self._began = clock()

    def line(self, message: str) -> None:
        stamp = self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elapsed = _duration(self.clock() - self._began)
        print(f"{stamp} [{elapsed:>9}] {message}", file=self._stream(), flush=True)

    def step(self, message: str) -> None:
        self.line(message)

    def start(self, label: str, total: int | None) -> progress.Bar:
        return _LogBar(self, label, total)


#: What ``EDGEQ_PROGRESS`` may name (``auto`` picks ``bar`` or ``log`` by the stream).
REPORTERS: dict[str, Callable[[], progress.Reporter]] = {
    "auto": LogReporter, "bar": TerminalReporter, "log": LogReporter, "off": progress.NullReporter}
