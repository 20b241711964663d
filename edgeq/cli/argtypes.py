"""argparse value types that check range and finiteness at parse time.

``type=float`` accepts ``nan``, ``inf`` and negatives, which then surface far from the flag (a bench
running to its 150 s cap on ``--min-seconds nan``, a gate that always fails on ``--max-drop nan``).
Each type here names its bounds, and argparse turns a refusal into edgeq's one-line usage error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(low: float | None = None, high: float | None = None, *, strict_low: bool = False) -> Callable[[str], float]:
    """A finite float within [low, high] (or (low, high] with ``strict_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:40]!r}")
        if low is not None and (value <= low if strict_low else value < low):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict_low else 'at least'} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {value:g}")
        return value

    return parse


def integer(low: int, high: int) -> Callable[[str], int]:
    """An integer within [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def integer_list(low: int, high: int) -> Callable[[str], list[int]]:
    """Comma-separated integers, each within [low, high]."""
    one = integer(low, high)

    def parse(text: str) -> list[int]:
        values = [one(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text[:40]!r}")
        return values

    return parse


def shape(text: str) -> tuple[int, ...]:
    """A static input shape without the batch: ``224x224x3`` or ``224,224,3``, every dimension positive."""
    try:
        dims = tuple(int(d) for d in text.lower().replace("x", ",").split(",") if d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}; use e.g. 224x224x3 (no batch)") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}; dimensions must be positive")
    return dims
