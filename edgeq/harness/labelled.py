"""Labelled evaluation data: sets from ``edgeq datagen`` (with conditions) or the bundled test splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import InputError


def load_labelled(data: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None, Any]:
    """(uint8 images, labels, per-sample conditions or None, the set's Preprocessing or None)."""
    from datagen.calibset import is_set, load_set

    if is_set(data):
        loaded = load_set(data)
        if loaded.labels is None:
            raise InputError(f"{data} has no labels: eval needs a labelled source")
        images, labels, conditions, pp = loaded.images, loaded.labels, list(loaded.conditions), loaded.preprocessing
    elif data.startswith(("digits:", "lfw:")):
        from datagen import bundled

        dataset, _, split = data.partition(":")
        loader = bundled.load_digits if dataset == "digits" else bundled.load_lfw
        if split not in bundled.SPLITS:
            raise InputError(f"unknown split in {data!r}; use one of {', '.join(bundled.SPLITS)}")
        split_data = loader(split)  # type: ignore[arg-type]
        images, labels, conditions, pp = split_data.images, split_data.labels, None, None
    else:
        raise InputError(f"{data} is neither a labelled set from 'edgeq datagen' nor digits:/lfw:<split>")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
        conditions = conditions[:limit] if conditions else None
    return images, labels, conditions, pp
