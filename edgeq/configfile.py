"""Reading user config files (recipes, custom conditions, preprocessing, budgets) within bounds.

``yaml.safe_load`` refuses code-running tags but keeps aliases cheap only while nothing walks the
result: a billion-laughs document is a few hundred bytes that ``json.dumps``, ``str()`` or an error
message expand to gigabytes. So a config file is size-capped, must be UTF-8, and its YAML node graph
is measured as it would be expanded before anything is constructed; error messages quote at most a
bounded ``repr``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeq.errors import InputError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: recipes and condition files are a few hundred bytes
MAX_EXPANDED_NODES = 100_000  # scalars + collections after every alias is expanded
MAX_DEPTH = 200


def bounded_repr(value: Any, limit: int = 80) -> str:
    """``repr`` cut at ``limit`` characters (safe on huge or alias-shared structures)."""
    text = reprlib_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reprlib_repr(value: Any) -> str:
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, 60, 60
    return short.repr(value)


def read_config_text(path: str | Path, what: str = "config file") -> str:
    """The file's text: exists, at most MAX_CONFIG_BYTES, UTF-8."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(f"{what} {path} is not a regular file")
        if size > MAX_CONFIG_BYTES:
            raise InputError(f"{what} {path} is {size:,} bytes; edgeq reads config files up to {MAX_CONFIG_BYTES:,}")
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"no such {what}: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{what} {path} is larger than {MAX_CONFIG_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def _expanded_size(node: Any, memo: dict[int, int], depth: int, where: str) -> int:
    import yaml

    if depth > MAX_DEPTH:
        raise InputError(f"{where} nests deeper than {MAX_DEPTH} levels")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle counts once; the constructor builds it without expanding
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(child, memo, depth + 1, where) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, memo, depth + 1, where) + _expanded_size(v, memo, depth + 1, where)
                        for k, v in node.value)
    else:
        total = 1
    memo[key] = min(total, MAX_EXPANDED_NODES + 1)
    if total > MAX_EXPANDED_NODES:
        raise InputError(f"{where} expands to more than {MAX_EXPANDED_NODES:,} values (YAML aliases?); refused")
    return memo[key]


def parse_yaml(text: str, where: str) -> Any:
    """Safe YAML with the expansion of aliases bounded before construction."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, 0, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot parse {where}: {first[:200]}") from None
    except RecursionError:
        raise InputError(f"{where} nests too deeply") from None
    finally:
        loader.dispose()


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{where} nests too deeply") from None
    except ValueError as exc:
        raise InputError(f"cannot parse {where}: {str(exc)[:200]}") from None


def load_config(path: str | Path, what: str = "config file") -> Any:
    """A YAML or JSON config file (JSON by suffix, else YAML, which also reads JSON), within bounds."""
    text = read_config_text(path, what)
    where = f"{what} {path}"
    return parse_json(text, where) if str(path).endswith(".json") else parse_yaml(text, where)
