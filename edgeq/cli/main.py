"""The ``edgeq`` command: parse, dispatch to a verb, map errors to documented exit codes.

argparse is deliberate: no dependency for the slim device install, fast start-up (verbs import
TensorFlow lazily, only when they need it), and full control of the one-line error contract.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from edgeq import __version__
from edgeq.errors import EdgeqError, ExitCode, Terminated, UsageError

#: Verb modules, each exposing ``register(subparsers)``. A verb is listed here when its issue lands.
VERB_MODULES: tuple[str, ...] = (
    "edgeq.cli.bench", "edgeq.cli.build", "edgeq.cli.check", "edgeq.cli.convert", "edgeq.cli.coverage",
    "edgeq.cli.datagen", "edgeq.cli.device_test",
    "edgeq.cli.evaluate", "edgeq.cli.instrument", "edgeq.cli.sensitivity", "edgeq.cli.validate", "edgeq.cli.zoo",
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _OneLineParser(
        prog="edgeq",
        description="Full-integer INT8 TensorFlow Lite models for the edge, proven on the target.",
        epilog="exit codes: 0 success, 1 a check or gate failed, 2 bad usage or bad input, "
        "3 requested backend unavailable, 4 internal error (a bug: please report it with --debug output)",
    )
    parser.add_argument("--version", action="version", version=f"edgeq {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_OneLineParser)
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(verbs)
    return parser


def _quiet_frameworks() -> None:
    """Keep TensorFlow's C++ start-up chatter off the user's terminal (before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings reach the user as one line, like errors (Python's default adds the source line)."""
    print(f"edgeq: warning: {_bounded(message)}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("EDGEQ_DEBUG") == "1"
    _quiet_frameworks()
    if not debug:
        warnings.showwarning = _one_line_warning
    with _termination_unwinds():
        return _run(argv, debug)


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Terminated` while a verb runs, so its cleanup (staging folders, half-filled
    outputs, worker processes) runs as for Ctrl-C; the default would kill the process mid-write. Handlers a
    caller installed are left alone, and the previous ones are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    taken = {}
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            taken[signum] = signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum, previous in taken.items():
            signal.signal(signum, previous)


def _run(argv: list[str], debug: bool) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
        if handler is None:
            build_parser().print_help(sys.stderr)
            return ExitCode.BAD_INPUT
        from edgeq.cli.output import machine_stdout
        from edgeq.cli.paths import check_paths
        from edgeq.cli.progress import configure

        check_paths(args)
        configure(quiet=bool(getattr(args, "quiet", False)))  # progress and informational lines
        with machine_stdout(getattr(args, "json", None) == "-"):
            return int(handler(args))
    except EdgeqError as exc:
        if debug:
            traceback.print_exc()
        print(f"edgeq: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print("edgeq: terminated" if signum != signal.SIGINT else "edgeq: interrupted", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal(exc, debug)
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"edgeq: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except MemoryError:
        print("edgeq: error: out of memory: the input is too large for this machine (reduce it, or use --limit)",
              file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except ModuleNotFoundError as exc:  # an optional package the installed extras leave out: say which extra
        from edgeq.extras import missing_dependency

        missing = missing_dependency(exc)
        if missing is None:
            return _internal(exc, debug)
        if debug:
            traceback.print_exc()
        print(f"edgeq: error: {missing}", file=sys.stderr)
        return int(missing.exit_code)
    except Exception as exc:  # a bug, not a user mistake: still one line unless --debug
        return _internal(exc, debug)


#: OS errors that come from the user's environment (disk full, permissions, a path that is a folder or
#: under a file, a missing file): one line and exit 2. Any other OSError is treated as a bug.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
    errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG, errno.EIO, errno.EMFILE,
    errno.ENFILE, errno.EXDEV, errno.ENOTEMPTY, errno.EBUSY, errno.ETXTBSY, errno.ENXIO, errno.ENODEV,
})


def _internal(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"edgeq: internal error: {type(exc).__name__}: {_bounded(exc)} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return int(ExitCode.INTERNAL)


def _bounded(exc: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _broken_pipe() -> int:
    """The reader of stdout went away (``edgeq ... | head``): stop quietly with the conventional status."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not raise again
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
