"""The options several verbs share, declared once: one flag has one type, metavar and default everywhere.

Each function adds one option (or a coherent group) to a parser; a verb passes only what is its own, such
as what its output holds or where its preprocessing comes from by default. Like the verb modules, this
imports nothing heavy: ``edgeq --help`` builds every parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeq.cli.argtypes import integer, integer_list, shape

if TYPE_CHECKING:
    from edgeq.execute import ExecutorSpec

Handler = Callable[[argparse.Namespace], int]

FLOAT_MODEL_HELP = "float model: .keras/.h5, a SavedModel folder, or a float .tflite"
TFLITE_MODEL_HELP = ".tflite model"
CALIB_HELP = ("calibration data: a set from 'edgeq datagen', .npy, .npz (one array per input name), an image "
              "folder, or digits:/lfw:<split>")
# The evaluation data a verb measures on (edgeq.harness.evaldata.load_eval_set reads every form).
LABELLED_SET_HELP = ("evaluation data: a set from 'edgeq datagen' (labelled or not), a .npy/.npz of images or model "
                     "inputs (.npz: optional 'labels' and 'conditions'), an image folder, or digits:test|val|train, "
                     "lfw:test|...")
INPUT_SHAPE_HELP = ("static input shape without the batch, for dynamic dimensions (default: the model's own, batch "
                    "1); for .onnx in the ONNX layout, e.g. 3x224x224")
PREPROCESS_FORMS = ("inline 'mean=127.5,std=127.5' (also size=HxW, order=bgr), none (raw 0-255 values), "
                    "or a JSON file")
# Examples only: the registry (edgeq.harness.backends.BACKENDS) is the list, and an unknown name prints it.
BACKENDS = "e.g. ref, cpu, xnnpack, edgetpu[:DEVICE], tflm"
CACHE_DIR_HELP = "zoo cache folder (default: $EDGEQ_CACHE_DIR or ~/.cache/edgeq)"
JSON_STDOUT = "to PATH (.json), or to stdout with no PATH or '-' (then stdout holds only the JSON)"
QUIET_HELP = "no progress or informational lines: results, warnings and errors only"

THREADS = integer(1, 256)
THREAD_COUNTS = integer_list(1, 256)


def verb_parser(verbs: Any, name: str, *, help: str, description: str | None = None,
                handler: Handler | None = None) -> argparse.ArgumentParser:
    """A verb (or a ``zoo`` action) under ``verbs``, dispatching to ``handler`` when one is given."""
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help, description=description)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_model_argument(parser: argparse.ArgumentParser, help: str = FLOAT_MODEL_HELP) -> None:
    """The ``model`` positional: a float model unless ``help`` says otherwise."""
    parser.add_argument("model", help=help)


def add_calib_option(parser: Any, *, required: bool = True) -> None:
    """``--calib SET``; ``parser`` may be a mutually exclusive group (then the group is the one required)."""
    parser.add_argument("--calib", required=required, metavar="SET", help=CALIB_HELP)


def add_labelled_set_option(parser: argparse.ArgumentParser, flag: str, *, dest: str | None = None) -> None:
    """The evaluation data a verb measures on (``eval --data``, ``validate --eval``); top-1 needs labels."""
    parser.add_argument(flag, dest=dest, required=True, metavar="SET", help=LABELLED_SET_HELP)


def add_preprocess_option(parser: argparse.ArgumentParser, *, default: str | None,
                          purpose: str = "preprocessing for uint8 images") -> None:
    """``--preprocess SPEC``: the forms are the same for every verb; what it is for and where the
    preprocessing comes from without it are the verb's own."""
    tail = f"; default: {default}" if default else ""
    parser.add_argument("--preprocess", metavar="SPEC", help=f"{purpose}: {PREPROCESS_FORMS}{tail}")


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", type=shape, metavar="HxWxC", help=INPUT_SHAPE_HELP)


def add_float_input_options(parser: argparse.ArgumentParser) -> None:
    """``--preprocess`` and ``--input-shape`` of a verb that runs a float model over calibration data."""
    add_preprocess_option(parser, default="the model's own TFLite Metadata, else the set's datagen.json; none "
                                          "known is an error")
    add_input_shape_option(parser)


def add_output_option(parser: argparse.ArgumentParser, help: str, *, metavar: str | None = None,
                      required: bool = True) -> None:
    """``-o/--output``: ``help`` says what is written there (a file or a folder)."""
    parser.add_argument("-o", "--output", required=required, metavar=metavar, help=help)


def add_force_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--force``: ``help`` says what it replaces or redoes."""
    parser.add_argument("--force", action="store_true", help=help)


def add_json_option(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json [PATH]`` on every verb: ``what`` as an enveloped JSON document (docs/json.md), to standard output
    with no value or ``-`` (then stdout carries nothing else), else written atomically to PATH (a .json file)."""
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH", help=f"write {what} as JSON {JSON_STDOUT}")


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` on every verb: results, warnings and errors only."""
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_machine_output_options(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """What every verb has: ``--json [PATH]`` and ``--quiet``."""
    add_json_option(parser, what)
    add_quiet_option(parser)


def add_runtime_options(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--backend`` and ``--threads``: one of each, or (``several``) comma-separated lists to compare."""
    if several:
        parser.add_argument("--backend", default="xnnpack",
                            help=f"comma-separated ({BACKENDS}, android:SERIAL; default xnnpack)")
        parser.add_argument("--threads", type=THREAD_COUNTS, default=[1], help="comma-separated thread counts (1)")
    else:
        parser.add_argument("--backend", default="xnnpack", help=f"{BACKENDS} (default xnnpack)")
        parser.add_argument("--threads", type=THREADS, default=1, help="interpreter threads (1)")


def add_cache_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help=CACHE_DIR_HELP)


SUMMARY_MD_HELP = ("write a GitHub-flavoured Markdown summary (verdict, gates, accuracy, size, ...) to FILE; "
                   "under GitHub Actions it is also appended to $GITHUB_STEP_SUMMARY")
JUNIT_HELP = "write each gate as a JUnit XML test case to FILE (failure: not met; skipped: not judged)"


def add_ci_output_options(parser: argparse.ArgumentParser) -> None:
    """``--summary-md FILE`` and ``--junit FILE``: the gates of a build or a validation, for CI (docs/ci.md)."""
    group = parser.add_argument_group("CI outputs (docs/ci.md)")
    group.add_argument("--summary-md", metavar="FILE", help=SUMMARY_MD_HELP)
    group.add_argument("--junit", metavar="FILE", help=JUNIT_HELP)


EXECUTOR_HELP = ("where the work runs: local (this process, the default), processes (worker processes on this "
                 "machine), ray (a local Ray) or ray:ADDRESS (a Ray cluster: ray:auto, ray:HOST:6379, "
                 "ray:ray://HOST:10001; needs edgeq[ray]); results are bit-identical on every executor")
WORKERS_HELP = "workers of --executor processes or ray (default: every core of this machine, or the Ray cluster's CPUs)"


def add_executor_options(parser: argparse.ArgumentParser, *, workers: bool = True) -> None:
    """``--executor SPEC`` and ``--workers N`` of a data-parallel verb (``workers=False``: the verb has its own)."""
    group = parser.add_argument_group("execution (docs/executors.md)")
    group.add_argument("--executor", metavar="SPEC", help=EXECUTOR_HELP)
    if workers:
        group.add_argument("--workers", type=integer(1, 1024), metavar="N", help=WORKERS_HELP)


def executor_spec(args: argparse.Namespace, *, default: str = "local") -> ExecutorSpec:
    """The executor the options name (``default`` without ``--executor``), checked before any heavy work: a bad
    spec is a usage error and a missing package (ray) one line naming the extra, both exit 2."""
    from edgeq.execute import parse_executor
    from edgeq.execute.registry import check_available

    spec = parse_executor(args.executor or default, args.workers)
    check_available(spec)
    return spec
