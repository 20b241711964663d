"""Small helpers the verbs share for printing: aligned tables, informational lines and JSON documents.

Machine output has one convention (docs/json.md): ``--json [PATH]`` on every verb, one enveloped document
(:func:`edgeq.envelope.envelope`), to standard output with no PATH or ``-``. Then stdout holds that document
and nothing else: :func:`machine_stdout` sends every other line the verb prints to stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

#: Where ``--json -`` writes while :func:`machine_stdout` sends the verb's other lines to stderr.
_json_stdout: list[TextIO] = []


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


def info(line: str, out: TextIO | None = None) -> None:
    """A line of a verb's summary that helps a person follow the run (which preprocessing, where a file went)
    rather than a result: ``--quiet`` drops it (edgeq.cli.progress.info is the same for lines on stderr)."""
    from edgeq.cli.progress import quiet

    if not quiet():
        print(line, file=out or sys.stdout)


@contextlib.contextmanager
def machine_stdout(active: bool) -> Iterator[None]:
    """While a verb runs with ``--json -``: everything it prints goes to stderr and :func:`emit_json` alone
    writes to the real stdout, so a reader can parse stdout whole."""
    if not active:
        yield
        return
    _json_stdout.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stdout.pop()


def tables_wanted(args: Any) -> bool:
    """Whether a verb prints its human summary (tables, verdict lines): not with ``--json -``, where the
    document is the result and a copy on stderr would only bury the warnings."""
    return getattr(args, "json", None) != "-"


def json_text(kind: str, body: Mapping[str, Any]) -> str:
    """The document as edgeq writes it: enveloped, strict JSON. Non-finite floats become null, as in
    report.json (JSON has no Infinity); dataclasses, enums and numpy values become plain JSON
    (:func:`edgeq.results.document.encode`)."""
    from edgeq.envelope import envelope
    from edgeq.results.document import encode

    return json.dumps(envelope(kind, encode(dict(body))), indent=2, allow_nan=False) + "\n"


def emit_json(destination: str | None, kind: str, body: Mapping[str, Any]) -> Path | None:
    """``--json``'s document: nothing for None, stdout for ``-``, else written atomically to the path
    (returned). Every verb writes its machine output through here."""
    if destination is None:
        return None
    text = json_text(kind, body)
    if destination == "-":
        out = _json_stdout[-1] if _json_stdout else sys.stdout
        out.write(text)
        out.flush()
        return None
    from edgeq.files import write_text_atomic

    return write_text_atomic(destination, text)
