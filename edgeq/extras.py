"""Which optional package comes with which extra, and the one way to say so when it is missing.

The slim ``edgeq[device]`` install runs models (check, bench, eval, the device suite) without TensorFlow,
scikit-learn, OpenCV, albumentations, pillow or matplotlib. A feature that truly needs one of them calls
:func:`require_extra` before importing it, so the user reads one line naming the extra to install (exit 2)
instead of an ``internal error: ModuleNotFoundError``. The CLI turns any import of a registered module that
slipped past such a check into the same message (:func:`missing_dependency`), so an unchecked path still exits 2.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from edgeq.errors import MissingDependencyError, require


@dataclass(frozen=True)
class OptionalPackage:
    """An importable top-level module, the distribution that provides it and the smallest extra that installs it."""

    distribution: str
    extra: str


#: Top-level module -> where it comes from. Keep in step with pyproject.toml's extras.
OPTIONAL: dict[str, OptionalPackage] = {
    "ai_edge_litert": OptionalPackage("ai-edge-litert", "device"),
    "pytest": OptionalPackage("pytest", "device-test"),
    "tflite_micro": OptionalPackage("tflite-micro", "tflm"),
    "tensorflow": OptionalPackage("tensorflow", "full"),
    "keras": OptionalPackage("tensorflow", "full"),
    "sklearn": OptionalPackage("scikit-learn", "full"),
    "skimage": OptionalPackage("scikit-image", "full"),
    "cv2": OptionalPackage("opencv-python-headless", "full"),
    "albumentations": OptionalPackage("albumentations", "full"),
    "PIL": OptionalPackage("pillow", "full"),
    "matplotlib": OptionalPackage("matplotlib", "full"),
    "ai_edge_quantizer": OptionalPackage("ai-edge-quantizer", "full"),
    "onnx": OptionalPackage("onnx", "onnx"),
    "onnx2tf": OptionalPackage("onnx2tf", "onnx"),
    "onnxruntime": OptionalPackage("onnxruntime", "onnx"),
    "onnxsim": OptionalPackage("onnxsim", "onnx"),
    "ray": OptionalPackage("ray", "ray"),  # --executor ray (docs/executors.md)
}


def extra_for(module: str) -> str:
    """The extra that installs ``module`` (a dotted name is looked up by its top level); ``full`` if unknown."""
    known = OPTIONAL.get(module.partition(".")[0])
    return known.extra if known is not None else "full"


def require_extra(module: str, purpose: str) -> None:
    """Raise MissingDependencyError (exit 2) naming the extra when ``module`` cannot be imported here."""
    require(module, purpose, extra_for(module))


def missing_dependency(exc: ModuleNotFoundError) -> MissingDependencyError | None:
    """The user-facing error for an import of a registered optional module that is not installed; None for
    anything else: a missing edgeq module, or a registered package that is installed but fails to import a part of
    itself (a broken install or a bug, not a missing extra: installing the extra would not help)."""
    top = (exc.name or "").partition(".")[0]
    known = OPTIONAL.get(top)
    if known is None or _installed(top):
        return None
    return MissingDependencyError(f"this needs the '{top}' package ({known.distribution}), which the installed "
                                  f"extras leave out; install it with: pip install 'edgeq[{known.extra}]'")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module whose __spec__ is None
        return False
