"""A progress line for long steps: shown on a terminal, silent in CI logs and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A callback drawing ``label  done/total`` in place, or None when stderr is not a terminal."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        return None

    def draw(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return draw
