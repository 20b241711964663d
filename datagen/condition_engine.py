"""Apply a condition to an image so that one sample can be reproduced from its manifest entry alone.

Kept apart from the condition table (``conditions.py``) because this is where reproducibility is
made, and it holds for built-in and custom conditions alike:

- randomness comes only from the per-sample seed: :func:`apply_condition` reseeds the pipeline and
  each of its transforms before every image, so the output depends on (image, condition, severity,
  seed) and never on call order, process or worker count. :func:`sample_seed` derives that seed
  from (base seed, condition, sample id, severity) with SHA-256, not ``hash()``;
- images stay uint8 in and out; sampled parameters are returned JSON-safe for the manifest.

Grayscale: HxW and HxWx1 uint8 images are accepted. A few albumentations transforms only take
3 channels (``ISONoise``, ``RandomFog``, ...); for those the grey image is repeated to RGB, the
pipeline runs, and the result goes back to one channel with OpenCV's luma weights
(``COLOR_RGB2GRAY``), which a mono sensor would see as the same physical effect.

Byte-identical results are promised for the same platform and library versions (OpenCV, numpy,
albumentations); a different CPU or OpenCV build may round differently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from datagen.conditions import Condition, _check_severity
from datagen.limits import quote
from edgeq.errors import InputError, UsageError

if TYPE_CHECKING:
    import albumentations

#: Arrays and lists with more elements than this are summarised in the applied-params record.
MAX_INLINE_ELEMENTS = 64
#: Part of every derived seed: change it only together with a manifest format version.
_SEED_DOMAIN = "edgeq.datagen.conditions/v1"


def _derived_seed(*parts: object) -> int:
    """A 63-bit integer from SHA-256 of the parts: stable across processes, platforms and versions."""
    text = "\x1f".join(str(p) for p in (_SEED_DOMAIN, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


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
