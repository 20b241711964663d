"""Named image conditions with severities 1–5, each an albumentations 2.x pipeline.

A condition is what a deployed camera may see (low light, sensor noise, blur, JPEG artefacts, ...).
Calibration sets are stratified over conditions so the INT8 ranges cover them. Everything here is
built so that one sample can be reproduced from its manifest entry alone:

- every transform is built with ``strict=True`` (albumentations 2.x otherwise *silently ignores*
  misspelled or 1.x-era arguments) and ``p=1.0`` (a severity is a level, not a probability);
- randomness comes only from the per-sample seed: :func:`apply_condition` reseeds the pipeline and
  each of its transforms before every image, so the output depends on (image, condition, severity,
  seed) and never on call order, process or worker count. :func:`sample_seed` derives that seed
  from (base seed, condition, sample id, severity) with SHA-256, not ``hash()``;
- images stay uint8 in and out; sampled parameters are returned JSON-safe for the manifest.

``Condition.spec`` is the explicit pipeline per severity (``spec[s - 1]``), JSON-safe::

    {"severity": 3, "transforms": [{"transform": "GaussNoise", "args": {"std_range": [0.03, 0.045], ...}}]}

Built-ins and custom files share one *template* form in which an argument given as a list of exactly
five values means one value per severity (see :func:`load_custom_conditions`).

Grayscale: HxW and HxWx1 uint8 images are accepted. A few albumentations transforms only take
3 channels (``ISONoise``, ``RandomFog``, ...); for those the grey image is repeated to RGB, the
pipeline runs, and the result goes back to one channel with OpenCV's luma weights
(``COLOR_RGB2GRAY``), which a mono sensor would see as the same physical effect.

Byte-identical results are promised for the same platform and library versions (OpenCV, numpy,
albumentations); a different CPU or OpenCV build may round differently.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datagen.limits import clip, quote
from edgeq.errors import InputError, UsageError, require

if TYPE_CHECKING:
    import albumentations

SEVERITIES = (1, 2, 3, 4, 5)
#: Arrays and lists with more elements than this are summarised in the applied-params record.
MAX_INLINE_ELEMENTS = 64
#: Part of every derived seed: change it only together with a manifest format version.
_SEED_DOMAIN = "edgeq.datagen.conditions/v1"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _albumentations():
    """Import albumentations with its update check disabled (it phones home on import otherwise)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    require("albumentations", "datagen conditions")
    import albumentations

    return albumentations


# ----------------------------------------------------------------------------------------------
# Templates: an argument given as a list of exactly five values is one value per severity.
# ----------------------------------------------------------------------------------------------


def _per_severity(value: Any) -> bool:
    return isinstance(value, list) and len(value) == len(SEVERITIES)


def _expand(transforms: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], ...]:
    """Template -> explicit per-severity spec (JSON-safe: tuples become lists, p is always 1.0)."""
    spec = []
    for i, severity in enumerate(SEVERITIES):
        steps = []
        for name, args in transforms:
            concrete = {k: (v[i] if _per_severity(v) else v) for k, v in args.items()}
            concrete["p"] = 1.0
            steps.append({"transform": name, "args": json.loads(json.dumps(concrete))})
        spec.append({"severity": severity, "transforms": steps})
    return tuple(spec)


def _build_transform(name: str, args: Mapping[str, Any]):
    """One strictly validated albumentations transform (an unknown or bad argument raises)."""
    alb = _albumentations()
    cls = getattr(alb, name)
    try:
        return cls(**dict(args), strict=True)
    except TypeError as error:
        # MedianBlur and ToSepia take no ``strict``; their plain signatures refuse unknown arguments anyway.
        if "unexpected keyword argument 'strict'" not in str(error):
            raise
        return cls(**dict(args))


def _derived_seed(*parts: object) -> int:
    """A 63-bit integer from SHA-256 of the parts: stable across processes, platforms and versions."""
    text = "\x1f".join(str(p) for p in (_SEED_DOMAIN, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Condition:
    """A named condition: ``spec[s - 1]`` is the explicit pipeline for severity ``s`` (treat it as read-only)."""

    name: str
    description: str
    spec: tuple[dict[str, Any], ...]
    # Per-thread pipelines for apply_condition; rebuilt on demand, never pickled or compared.
    _pipelines: dict[tuple[int, int], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        severities = [s.get("severity") if isinstance(s, Mapping) else None for s in self.spec]
        if severities != list(SEVERITIES):
            raise UsageError(f"condition {quote(self.name)}: spec needs one entry per severity {SEVERITIES}")

    def __reduce__(self):
        return (Condition, (self.name, self.description, self.spec))

    def pipeline(self, severity: int) -> albumentations.Compose:
        """A fresh, strictly validated pipeline for ``severity``; seed it with :func:`seed_pipeline`."""
        _check_severity(severity)
        alb = _albumentations()
        steps = self.spec[severity - 1]["transforms"]
        transforms = [_build_transform(step["transform"], step["args"]) for step in steps]
        return alb.Compose(transforms, p=1.0, strict=True, save_applied_params=True)

    def _cached_pipeline(self, severity: int) -> albumentations.Compose:
        # One pipeline per thread: its transforms hold random state, reset before every sample.
        key = (threading.get_ident(), severity)
        pipe = self._pipelines.get(key)
        if pipe is None:
            pipe = self._pipelines[key] = self.pipeline(severity)
        return pipe


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise UsageError(f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {quote(severity)}")


def _check_seed(seed: int, what: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"{what} must be a non-negative integer, got {quote(seed)}")


def seed_pipeline(pipeline: albumentations.Compose, seed: int) -> None:
    """Reset all random state of ``pipeline`` from ``seed`` alone.

    ``Compose.set_random_seed`` gives every transform the *same* seed, so two transforms would draw
    the same uniform numbers (e.g. correlated noise maps); each transform gets its own derived seed.
    """
    pipeline.set_random_seed(int(seed))
    for index, transform in enumerate(pipeline.transforms):
        transform.set_random_seed(_derived_seed("transform", int(seed), index))


# ----------------------------------------------------------------------------------------------
# Built-in conditions. Values are per severity 1..5 (lists of five); pixel sizes are tuned for
# 96–224 px inputs. Severity 3 = a clearly stressed but still usable camera image.
# ----------------------------------------------------------------------------------------------

_BUILTIN_TEMPLATES: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "original": ("The source image unchanged (identity).", []),
    "low_light": (
        "Under-exposure: multiplicative gain below 1 (fewer photons; a gain is also a gain after "
        "gamma encoding), a darkening tone curve, and the faint read noise that shows in the dark.",
        [
            ("RandomBrightnessContrast", {
                "brightness_limit": [0.0, 0.0],
                # out = (1 + c) * in: gain 0.80, 0.65, 0.50, 0.38, 0.28 at the centre of each range
                "contrast_limit": [[-0.25, -0.15], [-0.40, -0.30], [-0.55, -0.45], [-0.66, -0.58], [-0.76, -0.68]],
                "brightness_by_max": True,
            }),
            ("RandomGamma", {"gamma_limit": [[102, 108], [108, 115], [115, 125], [125, 140], [140, 155]]}),
            ("GaussNoise", {
                "std_range": [[0.002, 0.004], [0.004, 0.007], [0.007, 0.010], [0.010, 0.015], [0.015, 0.020]],
                "mean_range": [0.0, 0.0],
                "per_channel": True,
            }),
        ],
    ),
    "high_contrast": (
        "Harsh light or an aggressive tone curve: contrast stretched about the image mean, "
        "clipping shadows and highlights.",
        [
            ("RandomBrightnessContrast", {
                # out = a * in + b * mean(in) with b = 1 - a: a stretch about the mean.
                "contrast_limit": [[0.15, 0.25], [0.30, 0.40], [0.45, 0.60], [0.70, 0.85], [0.95, 1.20]],
                "brightness_limit": [[-0.25, -0.15], [-0.40, -0.30], [-0.60, -0.45], [-0.85, -0.70], [-1.20, -0.95]],
                "brightness_by_max": False,
            }),
        ],
    ),
    "noise": (
        "Sensor noise at high ISO: Gaussian read noise per channel plus albumentations' ISO model "
        "(Poisson luminance noise and chroma noise). In gamma-encoded values photon shot noise has a "
        "nearly constant spread, which the Gaussian term also covers.",
        [
            ("GaussNoise", {
                "std_range": [[0.010, 0.020], [0.020, 0.030], [0.030, 0.045], [0.045, 0.065], [0.065, 0.090]],
                "mean_range": [0.0, 0.0],
                "per_channel": True,
            }),
            ("ISONoise", {
                "color_shift": [[0.01, 0.02], [0.015, 0.025], [0.02, 0.035], [0.03, 0.045], [0.04, 0.05]],
                "intensity": [[0.05, 0.08], [0.08, 0.12], [0.12, 0.18], [0.18, 0.26], [0.26, 0.36]],
            }),
        ],
    ),
    "blur": (
        "Missed focus and camera shake: a disc (defocus) point-spread function plus a short linear "
        "motion kernel, both growing with severity.",
        [
            ("Defocus", {"radius": [[1, 1], [1, 2], [2, 3], [3, 4], [4, 5]], "alias_blur": [0.1, 0.3]}),
            ("MotionBlur", {
                "blur_limit": [[3, 3], [3, 5], [5, 7], [7, 9], [9, 11]],
                "allow_shifted": False,
            }),
        ],
    ),
    "jpeg": (
        "JPEG compression artefacts (blocking, ringing, chroma loss) as quality falls.",
        [
            ("ImageCompression", {
                "compression_type": "jpeg",
                "quality_range": [[70, 80], [50, 60], [32, 42], [18, 26], [8, 14]],
            }),
        ],
    ),
    "fog": (
        "Haze by the atmospheric scattering model I = t*J + (1 - t)*A: transmission t falls with "
        "severity, airlight A about 0.8 of white, plus the slight veil of forward scattering.",
        [
            ("GaussianBlur", {
                "blur_limit": 0,
                "sigma_limit": [[0.3, 0.5], [0.5, 0.7], [0.7, 0.9], [0.9, 1.2], [1.2, 1.5]],
            }),
            ("RandomBrightnessContrast", {
                # contrast = t - 1 (t = 0.88, 0.76, 0.64, 0.52, 0.38); brightness = (1 - t) * A
                "contrast_limit": [[-0.15, -0.10], [-0.28, -0.20], [-0.40, -0.32], [-0.52, -0.45], [-0.65, -0.58]],
                "brightness_limit": [[0.08, 0.12], [0.16, 0.22], [0.26, 0.32], [0.36, 0.42], [0.46, 0.52]],
                "brightness_by_max": True,
            }),
        ],
    ),
    "overexposed": (
        "Over-exposure: multiplicative gain above 1 with clipped highlights and lifted mid-tones.",
        [
            ("RandomBrightnessContrast", {
                "brightness_limit": [0.0, 0.0],
                "contrast_limit": [[0.10, 0.20], [0.20, 0.30], [0.35, 0.45], [0.50, 0.65], [0.75, 0.95]],
                "brightness_by_max": True,
            }),
            ("RandomGamma", {"gamma_limit": [[95, 100], [90, 95], [85, 90], [78, 85], [70, 78]]}),
        ],
    ),
}

#: The built-in conditions, by name.
CONDITIONS: dict[str, Condition] = {
    name: Condition(name=name, description=description, spec=_expand(template))
    for name, (description, template) in _BUILTIN_TEMPLATES.items()
}


def get_condition(name: str, registry: Mapping[str, Condition] | None = None) -> Condition:
    """The condition called ``name`` in ``registry`` (the built-ins by default)."""
    known = CONDITIONS if registry is None else registry
    if name not in known:
        raise InputError(f"unknown condition {quote(name)}; known conditions: {', '.join(known)}")
    return known[name]


def registry_with(custom: Mapping[str, Condition]) -> dict[str, Condition]:
    """The built-ins plus ``custom``; a custom name may not replace a built-in."""
    merged = dict(CONDITIONS)
    for name, condition in custom.items():
        if not isinstance(condition, Condition) or condition.name != name:
            raise UsageError(f"custom condition {quote(name)} must be a Condition with that name")
        if name in CONDITIONS:
            raise InputError(f"custom condition {quote(name)} clashes with a built-in condition; choose another name")
        merged[name] = condition
    return merged


def sample_seed(base_seed: int, condition: str, sample_id: str | int, severity: int) -> int:
    """The seed of one sample: SHA-256 of its identity, so it is independent of generation order.

    ``sample_id`` is used through ``str()``, so ``7`` and ``"7"`` give the same seed.
    """
    _check_seed(base_seed, "base_seed")
    _check_severity(severity)
    if not isinstance(condition, str) or not condition:
        raise UsageError(f"condition must be a non-empty name, got {quote(condition)}")
    return _derived_seed("sample", int(base_seed), condition, str(sample_id), int(severity))


# ----------------------------------------------------------------------------------------------
# Applying a condition
# ----------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Sampled parameters -> JSON; big arrays (noise maps, particle lists) become a short summary."""
    if isinstance(value, np.ndarray):
        if value.size > MAX_INLINE_ELEMENTS:
            summary: dict[str, Any] = {"summary": "array", "shape": list(value.shape), "dtype": str(value.dtype)}
            if value.size and np.issubdtype(value.dtype, np.number):
                as_float = value.astype(np.float64)
                summary.update(min=_jsonable(as_float.min()), max=_jsonable(as_float.max()),
                               mean=_jsonable(as_float.mean()), std=_jsonable(as_float.std()))
            return summary
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) > MAX_INLINE_ELEMENTS:
            return {"summary": "list", "length": len(value)}
        return [_jsonable(v) for v in value]
    return repr(value)


def _is_rgb_only_error(error: ValueError) -> bool:
    return "3-channel" in str(error)


def _run(pipeline: albumentations.Compose, image: np.ndarray, seed: int) -> dict[str, Any]:
    seed_pipeline(pipeline, seed)
    return pipeline(image=image)


def apply_condition(
    image: np.ndarray, condition: Condition, severity: int, seed: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply ``condition`` at ``severity`` to a uint8 HxW, HxWx1 or HxWx3 image.

    Returns the uint8 image of the same shape and the applied transforms with their sampled
    parameters (JSON-safe). The result depends only on the arguments: same inputs, same bytes.
    """
    import cv2

    _check_severity(severity)
    _check_seed(seed)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError(f"condition {condition.name!r} needs a uint8 image, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))) or 0 in image.shape:
        raise InputError(f"condition {condition.name!r} needs an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    pipeline = condition._cached_pipeline(severity)
    work = np.ascontiguousarray(image).copy()  # a copy: no transform can touch the caller's array
    is_grey = image.ndim == 2 or image.shape[2] == 1
    try:
        result = _run(pipeline, work, seed)
        out = result["image"]
    except ValueError as error:
        if not (is_grey and _is_rgb_only_error(error)):
            raise
        rgb = np.repeat(work.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
        result = _run(pipeline, rgb, seed)
        out = cv2.cvtColor(result["image"], cv2.COLOR_RGB2GRAY).reshape(image.shape)
    if out.shape != image.shape or out.dtype != np.uint8:
        raise InputError(f"condition {condition.name!r} severity {severity} turned a {image.shape} uint8 image "
                         f"into {out.shape} {out.dtype}; conditions must keep shape and dtype")
    applied = [{"transform": name, "params": _jsonable(params)} for name, params in result["applied_transforms"]]
    return np.ascontiguousarray(out), applied


# ----------------------------------------------------------------------------------------------
# Custom conditions from YAML or JSON
# ----------------------------------------------------------------------------------------------


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
