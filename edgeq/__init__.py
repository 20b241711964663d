"""edgeq: full-integer INT8 TensorFlow Lite models for the edge, with calibration you can trust.

``edgeq.convert(...)`` and ``edgeq.calibrate(...)`` mirror the CLI verbs; they are imported lazily
so that ``import edgeq`` (and the slim device install) never pulls in TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgeq.artifacts import QuantizedArtifact
    from edgeq.converter.api import Calibration


def convert(*args: Any, **kwargs: Any) -> QuantizedArtifact:
    """See :func:`edgeq.converter.api.convert`."""
    from edgeq.converter.api import convert as _convert

    return _convert(*args, **kwargs)


def calibrate(*args: Any, **kwargs: Any) -> Calibration:
    """See :func:`edgeq.converter.api.calibrate`."""
    from edgeq.converter.api import calibrate as _calibrate

    return _calibrate(*args, **kwargs)
