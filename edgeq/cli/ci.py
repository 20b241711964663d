"""The CI outputs of ``build`` and ``validate`` (``--summary-md``, $GITHUB_STEP_SUMMARY, ``--junit``; docs/ci.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edgeq.cli.output import info
from edgeq.errors import InputError


def check_ci_outputs(args: argparse.Namespace, environ: Any = os.environ) -> None:
    """Refuse, before any work, a CI output that could not be written after it (InputError, exit 2): the summary
    and the JUnit file are written atomically, creating their folder, so the nearest existing folder above each
    must be a writable folder; $GITHUB_STEP_SUMMARY is appended to, so its folder must exist and be writable, and
    the file, when present, too. None of them may be a folder."""
    from edgeq.build.summary import STEP_SUMMARY

    for option, value in (("--summary-md", args.summary_md), ("--junit", args.junit)):
        if value:
            _check_writable(option, Path(value), create_folders=True)
    step = environ.get(STEP_SUMMARY)
    if step:
        _check_writable(f"${STEP_SUMMARY}", Path(step), create_folders=False)


def _check_writable(label: str, path: Path, create_folders: bool) -> None:
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise InputError(f"{label} {path} is a folder; give a file name")
    folder = path.parent
    while create_folders and not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        why = "is not a folder" if os.path.lexists(folder) else "does not exist"
        raise InputError(f"cannot write {label} {path}: {folder} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {label} {path}: the folder {folder} is not writable")
    if not create_folders and path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {label} {path}: the file is not writable")


def ci_outputs(args: argparse.Namespace, report: Any, report_dir: Path) -> None:
    """``--summary-md`` (and $GITHUB_STEP_SUMMARY), ``--junit`` and, after a --baseline, its notes, for a build's
    or a validation's report; written whatever the verdict, since a failed run is when CI readers need them."""
    from edgeq.build.junit import write_junit
    from edgeq.build.summary import render, validation_of, write_summary

    comparison = getattr(report, "baseline_comparison", None)
    for note in comparison.notes if comparison is not None else ():
        info(f"baseline: {note}")
    for gate in report.gates:
        if gate.judged is False:
            print(f"edgeq: warning: {gate.name} {gate.detail}", file=sys.stderr)
    for written in write_summary(render(report, report_dir), args.summary_md):
        info(f"summary:  {written}")
    if args.junit:
        model = validation_of(report).model
        write_junit(report, f"edgeq.{args.verb}.{model.name or Path(model.source).stem}", args.junit)
        info(f"junit:    {args.junit}")
