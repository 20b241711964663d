"""Options several verbs share behave alike everywhere: each verb lists them in --help, parses a value to
the same result, refuses a bad value with the same message, and declares them through edgeq/cli/options.py
(a copy declared by hand in a verb would drift: another type, metavar or help)."""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from edgeq.cli import argtypes, options
from edgeq.cli import main as cli
from edgeq.cli.paths import ROLES
from edgeq.errors import UsageError


@dataclass(frozen=True)
class Shared:
    spellings: tuple[tuple[str, ...], ...]  # the option strings a declaration has (positional: ())
    help: Callable[[str], bool]  # what every verb's help for it must say
    types: tuple[Any, ...] = (None,)  # the one type object (per form) every verb uses
    metavar: str | None = None
    values: tuple[str, ...] = ()  # parsed alike by every verb
    bad: tuple[str, ...] = ()  # refused alike by every verb
    fragment: str | None = None  # printed in every verb's --help

    def help_ok(self, text: str | None) -> bool:
        return text is not None and self.help(text)


def _is(expected: str) -> Callable[[str], bool]:
    return lambda text: text == expected


def _has(expected: str) -> Callable[[str], bool]:
    return lambda text: expected in text


SHARED: dict[str, Shared] = {
    "model": Shared(((),), lambda t: t == options.FLOAT_MODEL_HELP or ".tflite model" in t, values=("m.keras",)),
    "--calib": Shared((("--calib",),), _is(options.CALIB_HELP), metavar="SET", values=("digits:train",),
                      fragment=options.CALIB_HELP),
    "labelled set": Shared((("--data",), ("--eval",)), _is(options.LABELLED_SET_HELP), metavar="SET",
                           values=("digits:test",), fragment=options.LABELLED_SET_HELP),
    "--preprocess": Shared((("--preprocess",),), _has(options.PREPROCESS_FORMS), metavar="SPEC",
                           values=("mean=127.5,std=127.5", "none", "pp.json"), fragment=options.PREPROCESS_FORMS),
    "--input-shape": Shared((("--input-shape",),), _is(options.INPUT_SHAPE_HELP), types=(argtypes.shape,),
                            metavar="HxWxC", values=("224x224x3", "28,28"), bad=("0x3", "ax3", ""),
                            fragment=options.INPUT_SHAPE_HELP),
    "-o": Shared((("-o", "--output"),), lambda t: bool(t.strip()), values=("out",)),
    "--force": Shared((("--force",),), lambda t: bool(t.strip())),
    "--json": Shared((("--json",),), _has(f"as JSON {options.JSON_STDOUT}"), metavar="PATH",
                     values=("-", "out.json", ""), fragment=options.JSON_STDOUT),
    "--quiet": Shared((("--quiet",),), _is(options.QUIET_HELP), fragment=options.QUIET_HELP),
    "--backend": Shared((("--backend",),), _has(options.BACKENDS), values=("cpu", "ref,xnnpack"),
                        fragment=options.BACKENDS),
    "--threads": Shared((("--threads",),), _has("thread"), types=(options.THREADS, options.THREAD_COUNTS),
                        values=("2", "256"), bad=("0", "257", "x", "-1")),
    "--cache-dir": Shared((("--cache-dir",),), _is(options.CACHE_DIR_HELP), values=("/tmp/c",),
                          fragment=options.CACHE_DIR_HELP),
    # the data-parallel verbs: where the work runs (docs/executors.md)
    "--executor": Shared((("--executor",),), _is(options.EXECUTOR_HELP), metavar="SPEC",
                         values=("local", "processes", "ray", "ray:auto"), fragment=options.EXECUTOR_HELP),
    # build and validate: the CI outputs (docs/ci.md)
    "--summary-md": Shared((("--summary-md",),), _is(options.SUMMARY_MD_HELP), metavar="FILE", values=("s.md",)),
    "--junit": Shared((("--junit",),), _is(options.JUNIT_HELP), metavar="FILE", values=("j.xml",)),
}


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every verb's parser by its words on the command line (("zoo", "build") for a zoo action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                yield from _verbs(sub, (*path, name)) if nested else [((*path, name), sub)]


PARSER = cli.build_parser()
VERBS = dict(_verbs(PARSER))


def shared_key(action: argparse.Action) -> str | None:
    """Which shared option this declaration is, if any."""
    opts = action.option_strings
    if not opts:
        return "model" if action.dest == "model" else None
    if opts == ["--output"]:
        return None  # eval --output: which output of the model to score, not a path edgeq writes
    for key, spec in SHARED.items():
        if any(o in spelling for spelling in spec.spellings for o in opts):
            return key
    return None


DECLARED = [(path, key, action) for path, sub in VERBS.items() for action in sub._actions
            if (key := shared_key(action)) is not None]


def _id(value: Any) -> str:
    if isinstance(value, argparse.Action):
        return "/".join(value.option_strings) or value.dest
    return " ".join(value) if isinstance(value, tuple) else str(value)


def test_every_shared_option_is_shared() -> None:
    verbs = defaultdict(set)
    for path, key, _ in DECLARED:
        verbs[key].add(path)
    assert set(verbs) == set(SHARED)
    assert all(len(v) >= 2 for v in verbs.values()), verbs


@pytest.mark.parametrize(("path", "key", "action"), DECLARED, ids=_id)
def test_no_verb_declares_a_shared_option_by_hand(path: tuple[str, ...], key: str, action: argparse.Action) -> None:
    """Each declaration is the one options.py makes: same spelling, type object, metavar and help."""
    spec = SHARED[key]
    assert tuple(action.option_strings) in spec.spellings
    assert any(action.type is t for t in spec.types), action.type
    assert action.metavar == spec.metavar or (key == "-o" and action.metavar in (None, "DIR"))
    assert spec.help_ok(action.help), action.help


def _help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*path, "--help"])
    assert stop.value.code == 0
    return "".join(capsys.readouterr().out.split())  # argparse wraps lines: compare without whitespace


@pytest.mark.parametrize("path", list(VERBS), ids=_id)
def test_help_lists_each_shared_option(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(path, capsys)
    for _, key, action in [d for d in DECLARED if d[0] == path]:
        for flag in action.option_strings or [action.metavar or action.dest]:
            assert flag in text, (key, flag)
        fragment = SHARED[key].fragment
        assert fragment is None or "".join(fragment.split()) in text, (key, fragment)


def _argv(path: tuple[str, ...], tested: argparse.Action | None) -> list[str]:
    """The least a command line of this verb needs besides ``tested`` (placeholders for required values)."""
    sub = VERBS[path]
    groups = [g for g in sub._mutually_exclusive_groups if g.required]
    grouped = {a for g in groups for a in g._group_actions}
    argv, positionals = [*path], []
    for action in sub._actions:
        if action is tested or isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            positionals.append("x")
        elif action.required and action not in grouped:
            argv += [action.option_strings[0], "x"]
    for group in groups:
        if tested not in group._group_actions:
            argv += [group._group_actions[0].option_strings[0], "x"]
    if tested is not None and not tested.option_strings:
        positionals[:0] = ["VALUE"]
    return [*argv, *positionals]


def _parse(argv: list[str]) -> argparse.Namespace | str:
    """The parsed namespace, or the usage error without the verb-specific '(see ...)' tail."""
    try:
        return PARSER.parse_args(argv)
    except UsageError as exc:
        return str(exc).split(" (see ")[0]


def _results(key: str, value: str | None) -> dict[tuple[Any, ...], dict[tuple[str, ...], Any]]:
    """Per (option, type object): what each verb declaring it makes of ``value`` (None: the option left out)."""
    found: dict[tuple[Any, ...], dict[tuple[str, ...], Any]] = defaultdict(dict)
    for path, declared, action in DECLARED:
        if declared != key:
            continue
        if value is None and (action.required or not action.option_strings):
            continue  # only an optional option can be left out
        argv = _argv(path, action if value is not None else None)
        if value is not None and action.option_strings:
            bare = action.nargs == 0 or (action.nargs == "?" and value == "")  # "": the option without a value
            argv += [action.option_strings[-1]] + ([] if bare else [value])
        elif value is not None:
            argv = [v if v != "VALUE" else value for v in argv]
        parsed = _parse(argv)
        result = parsed if isinstance(parsed, str) else getattr(parsed, action.dest)
        found[(action.nargs, id(action.type))][path] = result
    return found


CASES = [(key, value) for key, spec in SHARED.items() for value in (None, *spec.values, *spec.bad)]
CASES += [(key, "") for key, spec in SHARED.items() if spec.metavar is None and not spec.values]  # flags


@pytest.mark.parametrize(("key", "value"), CASES, ids=lambda v: repr(v) if v is not None else "left out")
def test_shared_options_parse_alike_across_verbs(key: str, value: str | None) -> None:
    for group in _results(key, value).values():
        assert len(set(map(repr, group.values()))) == 1, group


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, spec in SHARED.items() for v in spec.bad])
def test_bad_values_are_refused_with_one_message(key: str, value: str) -> None:
    messages = {path: result for group in _results(key, value).values() for path, result in group.items()}
    assert all(isinstance(m, str) and m.startswith(f"argument {key}: ") for m in messages.values()), messages
    assert len(set(messages.values())) == 1, messages


class _Recording(argparse.Namespace):
    """A namespace that remembers every argument read from it, present or not."""

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        object.__setattr__(self, "read", set())

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name != "read":
            object.__getattribute__(self, "read").add(name)
        return object.__getattribute__(self, name)


#: device-test hands every argument it does not declare to pytest (edgeq/cli/device_test.py).
PASSED_ON: dict[tuple[str, ...], dict[str, Any]] = {("device-test",): {"suite_args": ["--model", "p/m.tflite"]}}


@pytest.mark.parametrize("path", list(VERBS), ids=_id)
def test_path_roles_name_real_options_and_cover_the_shared_ones(path: tuple[str, ...]) -> None:
    """paths.ROLES reads only this verb's own arguments, and every shared path option is in it."""
    sub = VERBS[path]
    dests = {a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction)}
    passed_on = PASSED_ON.get(path, {})  # arguments a verb keeps for a tool it runs, not declared as options
    args = _Recording(verb=path[0], **{d: f"p/{d}.x" for d in dests}, **passed_on)
    dests |= set(passed_on)
    roles = ROLES[" ".join(path)]
    for paths in (roles.inputs, roles.file_outputs, roles.folder_outputs):
        list(paths(args))
    read = args.read - {"verb"}
    assert read <= dests, read - dests
    path_options = {a.dest for p, key, a in DECLARED
                    if p == path and key in ("model", "--calib", "labelled set", "--preprocess", "-o", "--json")}
    assert path_options <= read, path_options - read


@pytest.mark.parametrize("key", ["--json", "--quiet"])
def test_every_verb_has_the_machine_output_options(key: str) -> None:
    """``--json [PATH]`` and ``--quiet`` are on every verb and zoo action (docs/json.md), not only some."""
    assert {path for path, declared, _ in DECLARED if declared == key} == set(VERBS)


def test_json_without_a_value_is_stdout_everywhere() -> None:
    for group in _results("--json", "").values():
        assert set(group.values()) == {"-"}, group
