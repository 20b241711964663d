"""Labelled evaluation data only: sets from ``edgeq datagen`` with labels, or the bundled test splits.

The general loader, for labelled and unlabelled data alike, is :func:`edgeq.harness.evaldata.load_eval_set`;
this keeps the tuple API of the commands that measure top-1 against labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.harness.evaldata import BUNDLED_PREFIXES, load_eval_set


def load_labelled(data: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None, Any]:
    """(uint8 images, labels, per-sample conditions or None, the set's Preprocessing or None)."""
    from datagen.calibset import is_set

    if not (is_set(data) or data.startswith(BUNDLED_PREFIXES)):
        raise InputError(f"{data} is neither a labelled set from 'edgeq datagen' nor digits:/lfw:<split>")
    loaded = load_eval_set(data, limit=limit)
    if loaded.labels is None:
        raise InputError(f"{data} has no labels: eval needs a labelled source")
    assert loaded.images is not None  # datagen sets and the bundled splits are uint8 images
    conditions = list(loaded.conditions) if loaded.conditions is not None else None
    return loaded.images, loaded.labels, conditions, loaded.preprocessing
