"""The CI outputs of ``build`` and ``validate`` (``--summary-md``, $GITHUB_STEP_SUMMARY, ``--junit``; docs/ci.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeq.cli.output import info


def ci_outputs(args: argparse.Namespace, report: Any, report_dir: Path) -> None:
    """``--summary-md`` (and $GITHUB_STEP_SUMMARY), ``--junit`` and, after a --baseline, its notes, for a build's
    or a validation's report; written whatever the verdict, since a failed run is when CI readers need them."""
    from edgeq.build.junit import write_junit
    from edgeq.build.summary import render, validation_of, write_summary

    comparison = getattr(report, "baseline_comparison", None)
    for note in comparison.notes if comparison is not None else ():
        print(f"baseline: {note}")
    for gate in report.gates:
        if gate.judged is False:
            print(f"warning: {gate.name} {gate.detail}")
    for written in write_summary(render(report, report_dir), args.summary_md):
        info(f"summary:  {written}")
    if args.junit:
        model = validation_of(report).model
        write_junit(report, f"edgeq.{args.verb}.{model.name or Path(model.source).stem}", args.junit)
        info(f"junit:    {args.junit}")
