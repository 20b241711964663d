"""Small helpers the verbs share for printing: aligned tables and JSON documents."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """A plain aligned text table; numbers right-aligned."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells[1:]:
        print(line(row), file=out)


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    text = str(value).rstrip("%")
    try:
        float(text)
    except ValueError:
        return False
    return True


def print_json(document: Any, out: TextIO | None = None) -> None:
    print(json.dumps(document, indent=2, sort_keys=True), file=out or sys.stdout)
