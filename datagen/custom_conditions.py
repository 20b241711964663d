"""Custom conditions from a YAML or JSON file, validated strictly before any sample is generated.

Kept apart from the built-in table (``conditions.py``) because this is the one part that reads a
user's file: it bounds the file and every number in it, accepts only pixel-level albumentations
transforms that read no other files, and builds and runs each severity once on a test card, so a
bad condition fails here with the file, condition and problem named, not halfway through a set.
Custom files use the same template form as the built-ins (see :func:`load_custom_conditions`).
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datagen.condition_engine import apply_condition
from datagen.conditions import CONDITIONS, SEVERITIES, Condition, _albumentations, _build_transform, _expand
from datagen.limits import clip, quote
from edgeq.errors import InputError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _one_line(error: BaseException) -> str:
    """An albumentations/pydantic error on one line, without the documentation links."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("For further information")
            and not re.match(r"^\d+ validation errors? for ", ln)]
    return clip("; ".join(kept) or type(error).__name__, 300)


def _image_only_transforms() -> dict[str, type]:
    alb = _albumentations()
    return {
        name: obj for name, obj in vars(alb).items()
        if inspect.isclass(obj) and issubclass(obj, alb.ImageOnlyTransform) and obj is not alb.ImageOnlyTransform
    }


def _probe_image() -> np.ndarray:
    """A small deterministic RGB test card with edges and gradients, for trial runs of custom conditions."""
    y, x = np.mgrid[0:64, 0:64]
    card = np.stack([x * 4, y * 4, ((x // 8 + y // 8) % 2) * 200 + 20], axis=-1)
    return np.clip(card, 0, 255).astype(np.uint8)


#: Transforms that read other files (reference images through OpenCV, fonts): a condition must be
#: reproducible from the set's manifest alone, and those files would be decoded outside every budget.
_READS_FILES = frozenset({"FDA", "HistogramMatching", "PixelDistributionAdaptation", "TextImage"})
#: Largest magnitude of any number in a custom transform's arguments. Kernel sizes, radii and counts
#: scale memory and time with the value (MotionBlur's blur_limit 20001 needs over 13 GB); at 1000 the
#: worst measured here stays under 400 MB on a 224x224 image.
MAX_ARGUMENT = 1000
#: Tighter or looser bounds for particular arguments.
_ARGUMENT_BOUNDS = {
    ("ZoomBlur", "max_factor"): 4.0,  # the image is resized by this factor
    ("GlassBlur", "iterations"): 20,  # a Python loop over every pixel per iteration
    ("PlanckianJitter", "temperature_limit"): 20_000,  # kelvin
}


def _check_numbers(value: Any, bound: float, where: str) -> None:
    """Every number inside ``value`` finite and of magnitude at most ``bound``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int | float):
            if not math.isfinite(item) or abs(item) > bound:
                raise InputError(f"{where}: {quote(item)} is out of range (numbers in custom conditions must be "
                                 f"finite and at most {bound:g} in magnitude)")
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _parse_transforms(entries: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{where}: 'transforms' must be a non-empty list of {{TransformName: {{arg: value}}}}")
    known = _image_only_transforms()
    template: list[tuple[str, dict[str, Any]]] = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise InputError(f"{where}: transform #{position} must be a one-key mapping "
                             f"{{TransformName: {{arg: value}}}}, got {quote(entry)}")
        (name, args), = entry.items()
        if name not in known:
            close = difflib.get_close_matches(str(name)[:100], list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (pixel-level albumentations transforms only)"
            raise InputError(f"{where}: unknown transform {quote(name)}{hint}")
        if name in _READS_FILES:
            raise InputError(f"{where}: {name} reads other files (reference images or fonts); conditions must be "
                             "reproducible from the set alone, so it is not supported")
        args = {} if args is None else args
        if not isinstance(args, Mapping):
            raise InputError(f"{where}: arguments of {name} must be a mapping, got {quote(args)}")
        allowed = [p for p in inspect.signature(known[name]).parameters if p not in ("self", "strict")]
        for arg, value in args.items():
            if arg not in allowed:
                close = difflib.get_close_matches(str(arg)[:100], allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(allowed)})"
                raise InputError(f"{where}: unknown argument {quote(arg)} for {name}{hint}")
            if arg == "p" and value != 1.0:
                raise InputError(f"{where}: {name} p must be 1.0 (severity sets strength; p would skip samples)")
            _check_numbers(value, _ARGUMENT_BOUNDS.get((name, arg), MAX_ARGUMENT), f"{where}: {name} {arg}")
        template.append((str(name), dict(args)))
    return template


def _validate_spec(spec: tuple[dict[str, Any], ...], template: list[tuple[str, dict[str, Any]]], where: str) -> None:
    """Build every transform at every severity and run it once on a test card."""
    for step_spec in spec:
        severity = step_spec["severity"]
        for (name, raw_args), step in zip(template, step_spec["transforms"], strict=True):
            try:
                _build_transform(name, step["args"])
            except (ValueError, TypeError) as error:
                message = _one_line(error)
                odd = [a for a, v in raw_args.items() if isinstance(v, list) and len(v) > 3 and a in message]
                if odd:
                    raise InputError(
                        f"{where}: {name} argument {odd[0]!r} has a list of {len(raw_args[odd[0]])} values; a "
                        f"per-severity list needs exactly {len(SEVERITIES)}, one per severity ({message})"
                    ) from None
                raise InputError(f"{where}: {name} at severity {severity}: {message}") from None


def load_custom_conditions(path: str | Path) -> dict[str, Condition]:
    """Conditions from a YAML or JSON file, validated strictly. The format::

        rain:                                   # the condition name (letters, digits, _ . -)
          description: "Rain streaks"           # optional
          transforms:                           # applied in order, each with p=1.0
            - RandomRain: {drop_length: [5, 10, 15, 20, 25], slant_range: [-10, 10]}
            - GaussianBlur: {sigma_limit: [[0.2, 0.3], [0.3, 0.5], [0.5, 0.7], [0.7, 0.9], [0.9, 1.1]]}

    A list of exactly five values is one value per severity 1..5; anything else is passed as is to
    every severity (to pass a literal five-item list, write it five times as a per-severity list).
    Only pixel-level albumentations transforms (``ImageOnlyTransform``) are accepted, ``p`` may only
    be 1.0, and every severity is built with ``strict=True`` and run once on a small test card, so a
    misspelled argument or bad value fails here, with the file, condition and problem named.
    """
    from edgeq.configfile import parse_json, parse_yaml, read_config_text

    path = Path(path)
    # Within edgeq's config-file bounds: size, UTF-8, and YAML alias expansion (billion laughs) measured
    # before anything is constructed.
    text = read_config_text(path, "custom-conditions file")
    is_json = path.suffix.lower() == ".json"
    where = f"custom-conditions file {path}"
    try:
        data = parse_json(text, where) if is_json else parse_yaml(text, where)
    except InputError:
        raise
    except Exception as error:  # a YAML scalar the constructor refuses (a bad timestamp, ...)
        raise InputError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {_one_line(error)}") from None
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"{path}: must be a non-empty mapping of condition name -> "
                         f"{{description, transforms}}, got {type(data).__name__}")
    probe = _probe_image()
    conditions: dict[str, Condition] = {}
    for name, body in data.items():
        where = f"{path}: condition {quote(name)}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InputError(f"{where}: a name must be 1..64 letters, digits, '_', '.' or '-'")
        if name in CONDITIONS:
            raise InputError(f"{where} clashes with a built-in condition ({', '.join(CONDITIONS)}); rename it")
        if not isinstance(body, Mapping):
            raise InputError(f"{where}: must be a mapping with 'transforms' (and optionally 'description')")
        unknown = sorted(set(body) - {"description", "transforms"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             "expected 'description' and 'transforms'")
        description = body.get("description", f"custom condition from {path.name}")
        if not isinstance(description, str):
            raise InputError(f"{where}: 'description' must be a string")
        if "transforms" not in body:
            raise InputError(f"{where}: missing 'transforms'")
        template = _parse_transforms(body["transforms"], where)
        try:
            spec = _expand(template)
        except (TypeError, ValueError) as error:
            raise InputError(f"{where}: arguments are not JSON-compatible: {_one_line(error)}") from None
        _validate_spec(spec, template, where)
        condition = Condition(name=name, description=description, spec=spec)
        for severity in SEVERITIES:
            try:
                apply_condition(probe, condition, severity, seed=0)
            except Exception as error:
                raise InputError(f"{where}: fails on a test image at severity {severity}: {_one_line(error)}") from None
        conditions[name] = condition
    return conditions
