"""Import TensorFlow without its start-up chatter on the user's terminal.

TF 2.21 writes oneDNN/CUDA notices to file descriptor 2 before absl logging is initialised, so no
environment variable silences them; the import runs captured, and the capture is replayed only
when the import fails.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from edgeq.errors import require
from edgeq.quiet import native_output_captured


def import_tensorflow(feature: str = "this command") -> ModuleType:
    """``import tensorflow`` (and keras) quietly; a clear error when it is not installed."""
    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    require("tensorflow", feature)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with native_output_captured((2,)) as captured:
            import keras  # noqa: F401
            import tensorflow as tf
    except BaseException:
        sys.stderr.write(captured.text)
        raise
    return tf
