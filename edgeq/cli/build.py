"""``edgeq build RECIPE.yaml -o DIR``: the CI entry point (datagen -> convert -> check -> validate -> bench)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.output import print_table
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


def run_build_command(args: argparse.Namespace) -> int:
    from edgeq.build.pipeline import run_build
    from edgeq.build.recipe import load_build_recipe
    from edgeq.tfimport import import_tensorflow

    recipe = load_build_recipe(args.recipe)
    import_tensorflow("edgeq build")
    started = time.perf_counter()

    def log(line: str) -> None:  # one line per step: readable in CI logs; progress bars only on a terminal
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)

    outcome = run_build(recipe, Path(args.output), log, use_cache=not args.no_cache)
    validation = outcome.report.validation_report.validation
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
        print(f"\nreused cached steps: {', '.join(outcome.reused)}")
    print(f"artifact: {outcome.artifact} (+ {outcome.artifact.with_suffix('.json').name})")
    print(f"report:   {outcome.report_html}")
    failed = [g for g in outcome.gates if not g.passed]
    if failed:
        raise GateFailed("gate(s) failed: " + "; ".join(f"{g.name} ({g.detail})" for g in failed))
    return 0
