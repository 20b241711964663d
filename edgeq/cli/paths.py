"""Which arguments of each verb are inputs and which are outputs, and the refusal of any overlap.

Before a verb does any work, every input and output path is resolved (symlinks followed) and an
output that would replace, contain or sit inside an input is refused with one line (exit 2): an
output never replaces an input. One table for all verbs, checked for completeness by a test, so a
new verb cannot forget it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import UsageError
from edgeq.files import refuse_non_regular

Paths = Callable[[argparse.Namespace], Iterable[str | None]]


def _args(*names: str) -> Paths:
    """The values of these arguments (a list-valued argument contributes each element)."""

    def values(args: argparse.Namespace) -> list[str | None]:
        found: list[str | None] = []
        for name in names:
            value = getattr(args, name, None)
            found.extend(value if isinstance(value, list) else [value])
        return found

    return values


def _convert_outputs(args: argparse.Namespace) -> list[str | None]:
    from edgeq.converter.api import sidecar_path

    if not Path(args.output).name or Path(args.output).name in (".", ".."):
        raise UsageError(f"output {args.output} is not a file name")
    return [args.output, str(sidecar_path(args.output))]


def _instrument_outputs(args: argparse.Namespace) -> list[str | None]:
    from edgeq.cli.instrument import sidecar_path

    return [args.output, str(sidecar_path(args.output))]


def _stdout_or_file(name: str) -> Paths:
    """A ``--json [PATH]`` option where ``-`` (or no value) means standard output."""

    def values(args: argparse.Namespace) -> list[str | None]:
        value = getattr(args, name, None)
        return [None if value in (None, "-") or isinstance(value, bool) else value]

    return values


def _and_json(paths: Paths) -> Paths:
    """``paths`` and the ``--json`` file every verb may write."""

    def values(args: argparse.Namespace) -> list[str | None]:
        return [*paths(args), *JSON(args)]

    return values


NOTHING: Paths = _args()
JSON: Paths = _stdout_or_file("json")

#: The device suite's file options (its conftest.py), which ``edgeq device-test`` passes to pytest unread.
SUITE_FILE_OPTIONS = ("--model", "--eval-set", "--reference", "--budget", "--latency-from", "--preprocess")
#: pytest's own file outputs that take a value: its JUnit XML report and its log file.
PYTEST_FILE_OUTPUTS = ("--junit-xml", "--junitxml", "--log-file")


def _suite_values(options: tuple[str, ...]) -> Paths:
    """The values of these options in device-test's pytest arguments, ``--opt V`` and ``--opt=V`` alike (pytest
    takes no abbreviations, so only the full names count)."""

    def values(args: argparse.Namespace) -> list[str | None]:
        given: list[str] = list(getattr(args, "suite_args", None) or [])
        found: list[str | None] = []
        for i, argument in enumerate(given):
            name, sep, value = argument.partition("=")
            if name not in options:
                continue
            if sep:
                found.append(value)
            elif i + 1 < len(given):
                found.append(given[i + 1])
        return found

    return values


@dataclass(frozen=True)
class PathRoles:
    inputs: Paths
    file_outputs: Paths = JSON
    folder_outputs: Paths = NOTHING


ROLES: dict[str, PathRoles] = {
    "bench": PathRoles(inputs=_args("models", "android_binary", "preprocess")),
    "build": PathRoles(inputs=_args("recipe", "baseline"), file_outputs=_and_json(_args("summary_md", "junit")),
                       folder_outputs=_args("output")),
    "calibrate": PathRoles(inputs=_args("model", "calib", "preprocess"), file_outputs=_and_json(_args("output"))),
    "check": PathRoles(inputs=_args("model", "float_model")),
    "convert": PathRoles(inputs=_args("model", "calib", "stats", "recipe", "preprocess"),
                         file_outputs=_and_json(_convert_outputs)),
    "coverage": PathRoles(inputs=_args("model", "calib", "production", "production_log", "instrumented", "candidates",
                                       "preprocess"),
                          folder_outputs=_args("output")),
    "datagen": PathRoles(inputs=_args("source", "custom_conditions", "preprocess"), folder_outputs=_args("output")),
    "device-test": PathRoles(inputs=_suite_values(SUITE_FILE_OPTIONS),  # the rest of its command line is pytest's
                             file_outputs=_and_json(_suite_values(PYTEST_FILE_OUTPUTS))),
    "eval": PathRoles(inputs=_args("model", "data", "reference", "preprocess")),
    "instrument": PathRoles(inputs=_args("model"), file_outputs=_and_json(_instrument_outputs)),
    "sensitivity": PathRoles(inputs=_args("model", "calib", "eval_set", "preprocess"), folder_outputs=_args("output")),
    "validate": PathRoles(inputs=_args("model", "calib", "eval_set", "preprocess", "tasks"),
                          file_outputs=_and_json(_args("summary_md", "junit")), folder_outputs=_args("output")),
    "zoo list": PathRoles(inputs=NOTHING),
    "zoo build": PathRoles(inputs=NOTHING, file_outputs=_and_json(_args("output"))),
}


def verb_key(args: argparse.Namespace) -> str:
    return " ".join(v for v in (args.verb, getattr(args, "zoo_action", None)) if v)


def _resolved(value: str) -> Path:
    return Path(os.path.abspath(value)).resolve(strict=False)


def _existing_inputs(values: Iterable[str | None]) -> list[tuple[str, Path]]:
    """Inputs that name something on disk (``digits:test``, ``zoo:cnn`` or inline specs are not paths)."""
    found = []
    for value in values:
        if isinstance(value, str) and value and os.path.lexists(value):
            found.append((value, _resolved(value)))
    return found


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_paths(args: argparse.Namespace) -> None:
    """Refuse outputs that would replace or nest with an input, or collide with each other (UsageError)."""
    roles = ROLES.get(verb_key(args))
    if roles is None:
        return
    inputs = _existing_inputs(roles.inputs(args))
    files = [(v, _resolved(v)) for v in roles.file_outputs(args) if isinstance(v, str) and v]
    folders = [(v, _resolved(v)) for v in roles.folder_outputs(args) if isinstance(v, str) and v]
    for value, path in files:
        for given, source in inputs:
            if path == source:
                raise UsageError(f"output {value} is the input {given}: edgeq never writes over its inputs")
        if os.path.isdir(value):
            raise UsageError(f"output {value} is a folder; give a file name")
        refuse_non_regular(Path(value))  # before any work, not after a long run
    seen: dict[Path, str] = {}
    for value, path in files:
        if path in seen:
            raise UsageError(f"outputs {seen[path]} and {value} are the same file")
        seen[path] = value
    for value, folder in folders:
        for given, source in inputs:
            if _inside(source, folder):
                raise UsageError(f"output folder {value} holds the input {given}: edgeq never writes over its inputs")
            if source.is_dir() and _inside(folder, source):
                raise UsageError(f"output folder {value} is inside the input folder {given}")
        if os.path.lexists(value) and not os.path.isdir(value):
            raise UsageError(f"output {value} exists and is not a folder")
        for file_value, path in files:
            if _inside(path, folder):
                raise UsageError(f"output {file_value} is inside the output folder {value}, which the verb writes; "
                                 "put it beside the folder")
    _check_json_name(getattr(args, "json", None))


def _check_json_name(value: object) -> None:
    """A ``--json`` path ends in .json: ``--json model.tflite`` is most likely a positional the optional
    value took, and must not be replaced by a document."""
    if isinstance(value, str) and value != "-" and Path(value).suffix.lower() != ".json":
        raise UsageError(f"--json {value}: a JSON output's name ends in .json (or give no value or '-' for stdout; "
                         "put --json after the positional arguments)")
