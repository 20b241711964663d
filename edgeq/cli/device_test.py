"""``edgeq device-test``: the on-device suite that ships inside the package, run with pytest.

On a board, ``pip install 'edgeq[device-test]'`` then ``edgeq device-test --model m.tflite --budget b.yaml``.
Every argument but ``--json`` and ``--quiet`` goes to pytest unchanged: the suite's own options and pytest's
(``-k``, ``-x``, ``-v``, ``--junit-xml``, ...); after ``--`` everything goes to pytest.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from edgeq.cli import options
from edgeq.cli.output import emit_json
from edgeq.errors import ExitCode, UsageError

SUITE_OPTIONS = (
    "suite options (anything else goes to pytest unchanged; after '--' everything does): "
    "--model M.tflite (default: the CNN shipped with the suite, on its shipped digits test set); "
    "--backend ref,cpu,xnnpack; --eval-set SET (a set from 'edgeq datagen', .npy/.npz, an image folder); "
    "--reference FP32.tflite; --budget budget.yaml (latency, min_top1, min_output_sqnr_db, "
    "require_full_delegation, ...); --preprocess SPEC; --latency-from BENCH_JSON. "
    "Exit codes: 0 every test passed or was skipped, 1 a test or budget failed, 2 bad usage (a bad budget, "
    "nothing selected), 4 an internal error."
)
#: pytest's exit status -> edgeq's (pytest.ExitCode values; 2, interrupted, unwinds as Ctrl-C does; 4 and 5 are
#: usage errors, raised after pytest printed why).
EXIT_CODES = {0: ExitCode.OK, 1: ExitCode.GATE_FAILED, 3: ExitCode.INTERNAL}
INTERRUPTED, USAGE_ERROR, NO_TESTS_COLLECTED = 2, 4, 5


def register(verbs: Any) -> None:
    parser = options.verb_parser(
        verbs, "device-test", help="run the device suite shipped with edgeq (pytest) on this machine",
        description="Runs the on-device suite installed with edgeq: the model loads and runs on each backend, agrees "
                    "with the reference kernels, and meets the budget (latency percentile, top-1, output SQNR, "
                    "delegation). Needs pytest: pip install 'edgeq[device-test]'.",
        handler=run_device_test)
    parser.epilog = SUITE_OPTIONS
    options.add_machine_output_options(parser, "per-test outcomes and the budget verdict")
    _pass_unknown_to_suite(parser)


def _pass_unknown_to_suite(parser: argparse.ArgumentParser) -> None:
    """Keep the arguments this verb does not declare (in order) as ``args.suite_args`` instead of refusing them:
    the suite's options are declared by its conftest.py, and pytest's are pytest's."""
    parse = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = parse(args, namespace)
        if "--" in rest:
            rest.remove("--")  # the first '--' only separates; pytest would read what follows it as paths
        parsed.suite_args = [*getattr(parsed, "suite_args", []), *rest]
        return parsed, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run_device_test(args: argparse.Namespace) -> int:
    from edgeq.harness.device_suite import run_suite

    arguments = list(args.suite_args)
    if args.quiet:
        arguments.append("-q")
    run = run_suite(arguments)
    if run.pytest_exit == INTERRUPTED:
        raise KeyboardInterrupt
    if run.pytest_exit == USAGE_ERROR:  # no result, so no document (docs/json.md)
        raise UsageError("the device suite refused its options (pytest's message above)")
    if run.pytest_exit == NO_TESTS_COLLECTED:
        raise UsageError("no test of the device suite was selected (see -k and the test names with --collect-only)")
    document = run.to_dict()
    counts = ", ".join(f"{n} {name}" for name, n in document["counts"].items() if n)
    print(f"edgeq device-test: {counts or 'no test ran'}; budget: {document['budget']['verdict']}")
    status = EXIT_CODES.get(run.pytest_exit, ExitCode.INTERNAL)
    if status is not ExitCode.INTERNAL:  # exit 4 is a failure of the run, not a result
        emit_json(args.json, "edgeq.device-test", document)
    return int(status)
