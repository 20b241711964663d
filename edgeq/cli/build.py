"""``edgeq build RECIPE.yaml -o DIR``: the CI entry point (datagen -> convert -> check -> validate -> bench)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeq import progress
from edgeq.cli import options
from edgeq.cli.ci import check_ci_outputs, ci_outputs
from edgeq.cli.output import emit_json, info, print_table, tables_wanted
from edgeq.cli.validate import OUTPUT_HEADERS, method_headers, method_rows, output_rows, selection_lines
from edgeq.errors import GateFailed


def register(verbs: Any) -> None:
    build = options.verb_parser(
        verbs, "build", help="run a build recipe end to end and gate it (the CI entry point)",
        description="Generates the calibration and evaluation sets, converts with every method, validates, "
                    "checks each target, benchmarks, writes the best INT8 artifact, its sidecar and "
                    "report.html to DIR, and exits 1 naming each failed gate. Unchanged steps are reused.",
        handler=run_build_command)
    build.add_argument("recipe", help="build recipe (YAML)")
    options.add_output_option(build, "folder for the INT8 artifact, its sidecar and report.html", metavar="DIR")
    build.add_argument("--no-cache", action="store_true", help="recompute every step")
    build.add_argument("--baseline", metavar="REPORT",
                       help="an earlier build's report.json: show accuracy, fidelity, size and latency deltas "
                            "against it and judge the recipe's gates.max_regression (docs/ci.md)")
    options.add_ci_output_options(build)
    options.add_machine_output_options(build, "the verdict, the gates and where the artifact and report are")


def run_build_command(args: argparse.Namespace) -> int:
    from edgeq.build.baseline import load_baseline
    from edgeq.build.pipeline import run_build
    from edgeq.build.recipe import load_build_recipe
    from edgeq.tfimport import import_tensorflow

    check_ci_outputs(args)  # an unwritable summary must not fail the build after the work
    recipe = load_build_recipe(args.recipe)
    baseline = load_baseline(args.baseline) if args.baseline else None  # a bad one fails before any work
    import_tensorflow("edgeq build")
    # Build's stages are progress steps like every other long step's: timestamped lines in CI logs, lines above
    # the bars on a terminal, nothing under --quiet (edgeq/cli/progress.py).
    outcome = run_build(recipe, Path(args.output), progress.step, use_cache=not args.no_cache, baseline=baseline)
    validation = outcome.report.validation_report.validation
    if tables_wanted(args):
        print()
        print_table(method_headers(validation), method_rows(validation))
        if recipe.tasks or validation.baseline is None:  # every output, as the recipe's tasks read it
            print()
            print_table(OUTPUT_HEADERS, output_rows(outcome.report.validation_report))
        for line in selection_lines(validation):
            print(line)
        print()
        print_table(["gate", "result", "detail"], [[g.name, "pass" if g.passed else "FAIL", g.detail]
                                                   for g in outcome.gates])
    if outcome.reused:
        info(f"\nreused cached steps: {', '.join(outcome.reused)}")
    print(f"artifact: {outcome.artifact} (+ {outcome.artifact.with_suffix('.json').name})")
    print(f"report:   {outcome.report_html}")
    ci_outputs(args, outcome.report, Path(args.output))  # before the document: exit 2 here leaves none
    emit_json(args.json, "edgeq.build", {
        "recipe": args.recipe, "name": recipe.name, "output": args.output, "passed": outcome.passed,
        "exit_status": 0 if outcome.passed else 1, "best_method": validation.best_method, "gates": outcome.gates,
        "artifact": str(outcome.artifact), "sidecar": str(outcome.artifact.with_suffix(".json")),
        "report": str(outcome.report_html.with_name("report.json")), "report_html": str(outcome.report_html),
        "reused": outcome.reused})
    failed = [g for g in outcome.gates if not g.passed]
    if failed:
        raise GateFailed("gate(s) failed: " + "; ".join(f"{g.name} ({g.detail})" for g in failed))
    return 0
