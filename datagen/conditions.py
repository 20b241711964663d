"""Named image conditions with severities 1–5, each an albumentations 2.x pipeline: the built-in table.

A condition is what a deployed camera may see (low light, sensor noise, blur, JPEG artefacts, ...).
Calibration sets are stratified over conditions so the INT8 ranges cover them. This module says
what each condition is; applying one to an image reproducibly is ``condition_engine.py``, and
reading custom conditions from a file is ``custom_conditions.py``.

Every transform is built with ``strict=True`` (albumentations 2.x otherwise *silently ignores*
misspelled or 1.x-era arguments) and ``p=1.0`` (a severity is a level, not a probability).

``Condition.spec`` is the explicit pipeline per severity (``spec[s - 1]``), JSON-safe::

    {"severity": 3, "transforms": [{"transform": "GaussNoise", "args": {"std_range": [0.03, 0.045], ...}}]}

Built-ins and custom files share one *template* form in which an argument given as a list of exactly
five values means one value per severity (see :func:`custom_conditions.load_custom_conditions`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from datagen.limits import quote
from edgeq.errors import InputError, UsageError, require

if TYPE_CHECKING:
    import albumentations

SEVERITIES = (1, 2, 3, 4, 5)


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
        """A fresh, strictly validated pipeline for ``severity``; seed it with ``condition_engine.seed_pipeline``."""
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
