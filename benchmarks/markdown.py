"""The generated part of a results page in docs/: what a benchmark replaces, leaving the hand-written rest."""

from __future__ import annotations

from pathlib import Path


def write_generated(path: Path, generated: str, begin: str, end: str, title: str) -> None:
    """Put ``generated`` between the ``begin`` / ``end`` markers of ``path`` (appended, or a new page headed
    ``title``, when they are missing); everything outside the markers stays as it was."""
    text = path.read_text() if path.exists() else f"# {title}\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{generated}\n{end}{tail}")
