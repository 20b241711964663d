"""Apply a Preprocessing spec to uint8 NHWC images: the one way every stage feeds a model."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import ChannelOrder, Interpolation, Preprocessing
from edgeq.errors import InputError


def _resize(images: np.ndarray, size: tuple[int, int], interpolation: Interpolation) -> np.ndarray:
    from PIL import Image

    method = {
        Interpolation.NEAREST: Image.Resampling.NEAREST,
        Interpolation.BILINEAR: Image.Resampling.BILINEAR,
        Interpolation.BICUBIC: Image.Resampling.BICUBIC,
        Interpolation.AREA: Image.Resampling.BOX,
    }[interpolation]
    height, width = size
    out = np.empty((images.shape[0], height, width, images.shape[3]), dtype=np.uint8)
    for i, img in enumerate(images):
        plane = img[..., 0] if img.shape[-1] == 1 else img
        resized = np.asarray(Image.fromarray(plane).resize((width, height), method))
        out[i] = resized.reshape(height, width, -1)
    return out


def apply_preprocessing(spec: Preprocessing, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) images -> float32 model input under ``spec``."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"expected uint8 images shaped (N, H, W, C), got {images.dtype} {images.shape}")
    channels = images.shape[-1]
    for name, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, channels):
            raise InputError(f"preprocessing {name} has {len(values)} values for {channels}-channel images")
    if any(s == 0 for s in spec.std):
        raise InputError("preprocessing std must not contain 0")
    if spec.size is not None and tuple(images.shape[1:3]) != tuple(spec.size):
        images = _resize(images, spec.size, spec.interpolation)
    if spec.channel_order is ChannelOrder.BGR and channels == 3:
        images = images[..., ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return ((images.astype(np.float32) - mean) / std).astype(np.float32)


# ---- which preprocessing a stage uses, and why ----------------------------------------------------

RAW = Preprocessing()  # `--preprocess none`: the model takes raw 0..255 values


class PreprocessingWarning(UserWarning):
    """An explicit preprocessing disagrees with what the model or the data set records."""


class Source(StrEnum):
    """Where the preprocessing a stage applied came from (a field of JSON outputs)."""

    OPTION = "option"  # --preprocess / preprocessing= given by the caller
    MODEL = "model-metadata"  # the .tflite's TFLite Metadata (NormalizationOptions)
    SIDECAR = "sidecar"  # edgeq's sidecar JSON next to the model, whose sha256 matches the model
    DATA_SET = "data-set"  # the datagen.json of a set made by `edgeq datagen --preprocess`
    NONE = "none"  # the data are float arrays, fed as they are

    def of(self, model_name: str) -> str:
        """``cnn_int8.tflite's metadata``: the model's own record, named."""
        return {"model-metadata": f"{model_name}'s metadata", "sidecar": f"{model_name}'s sidecar"}.get(
            self.value, self.text)

    @property
    def text(self) -> str:
        return {"option": "--preprocess", "model-metadata": "the model's metadata", "sidecar": "the model's sidecar",
                "data-set": "the data set's datagen.json", "none": "float data fed as they are"}[self.value]


def describe(spec: Preprocessing | None) -> str:
    """``mean=127.5,std=127.5`` (the inline form ``--preprocess`` takes), or ``none``."""
    if spec is None:
        return "none (data fed as they are)"
    if spec == RAW:
        return "none (raw 0-255 values)"
    parts = []
    if spec.size is not None:
        parts.append(f"size={spec.size[0]}x{spec.size[1]}")
    parts.append("mean=" + "/".join(f"{v:g}" for v in spec.mean))
    parts.append("std=" + "/".join(f"{v:g}" for v in spec.std))
    if spec.channel_order is not ChannelOrder.RGB:
        parts.append(f"order={spec.channel_order.value}")
    if spec.interpolation is not Interpolation.BILINEAR:
        parts.append(f"interp={spec.interpolation.value}")
    return ",".join(parts)


def same_normalization(a: Preprocessing, b: Preprocessing) -> bool:
    """Whether two specs turn the same pixels into the same model input (mean, std, channel order)."""
    n = max(len(a.mean), len(a.std), len(b.mean), len(b.std))

    def per_channel(values: tuple[float, ...]) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)) if len(values) in (1, n) else \
            np.asarray(values, dtype=np.float64)

    try:
        close = all(np.allclose(per_channel(x), per_channel(y), rtol=1e-5, atol=1e-6)
                    for x, y in ((a.mean, b.mean), (a.std, b.std)))
    except ValueError:  # channel counts that do not broadcast
        return False
    return close and a.channel_order == b.channel_order


@dataclass(frozen=True)
class Resolved:
    """The preprocessing a stage applies, where it came from, and what disagreed with it."""

    spec: Preprocessing | None
    source: Source
    warnings: tuple[str, ...] = ()
    given_as: str = "--preprocess"  # how the caller's own spec is named (a build recipe's ``preprocess`` key)

    def line(self) -> str:
        origin = self.given_as if self.source is Source.OPTION else self.source.text
        return f"preprocessing: {describe(self.spec)} (from {origin})"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.value, "spec": self.spec.to_dict() if self.spec else None,
                "inline": describe(self.spec) if self.spec else None, "warnings": list(self.warnings)}


MISSING_HINT = ("give --preprocess mean=...,std=... (the normalization the model was trained with), "
                "or --preprocess none for a model that takes raw 0-255 values")


def resolve(explicit: Preprocessing | None, *, model: tuple[Preprocessing, Source] | None = None,
            data_set: Preprocessing | None = None, images: bool = True, model_name: str = "the model",
            data_name: str = "the data", given_as: str = "--preprocess") -> Resolved:
    """Choose the preprocessing: ``explicit`` (--preprocess, or what ``given_as`` names) first, then the
    model's own (its metadata or sidecar), then the data set's. A disagreement with the model's own is a
    warning. uint8 images with none of them known are refused (InputError): a guess would be a silent wrong
    result."""
    warnings: list[str] = []
    if explicit is not None:
        if model is not None and not same_normalization(explicit, model[0]):
            warnings.append(f"{given_as} {describe(explicit)} differs from {model[1].of(model_name)} "
                            f"({describe(model[0])}); using {given_as}")
        return Resolved(explicit, Source.OPTION, tuple(warnings), given_as)
    if model is not None:
        if data_set is not None and not same_normalization(data_set, model[0]):
            warnings.append(f"{data_name} records preprocessing {describe(data_set)}, {model[1].of(model_name)} "
                            f"says {describe(model[0])}; using the model's")
        return Resolved(model[0], model[1], tuple(warnings))
    if data_set is not None:
        return Resolved(data_set, Source.DATA_SET)
    if images:
        raise InputError(f"{data_name} holds uint8 images and no preprocessing is known for {model_name} "
                         f"(no --preprocess, no TFLite Metadata normalization, no preprocessing in the data set): "
                         f"{MISSING_HINT}")
    return Resolved(None, Source.NONE)


def sidecar_preprocessing(model_path: str | Path, model_bytes: bytes) -> Preprocessing | None:
    """The preprocessing edgeq's sidecar (``MODEL.json``) records, if that sidecar describes these bytes."""
    import hashlib
    import json

    sidecar = Path(model_path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        document = json.loads(sidecar.read_text())
        if document.get("sha256") != hashlib.sha256(model_bytes).hexdigest() or not document.get("preprocessing"):
            return None
        return Preprocessing.from_dict(document["preprocessing"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def own_preprocessing(model_bytes: bytes, model_path: str | Path | None = None) -> tuple[Preprocessing, Source] | None:
    """What a .tflite model itself says about its preprocessing: its TFLite Metadata, else edgeq's sidecar
    next to it (when its sha256 matches). None for other model formats and models that say nothing."""
    from edgeq.tflite import metadata

    if len(model_bytes) >= 8 and model_bytes[4:8] == b"TFL3":
        spec = metadata.model_preprocessing(model_bytes)
        if spec is not None:
            return spec, Source.MODEL
    if model_path is not None:
        spec = sidecar_preprocessing(model_path, model_bytes)
        if spec is not None:
            return spec, Source.SIDECAR
    return None


def model_file_preprocessing(model_path: str | Path) -> tuple[Preprocessing, Source] | None:
    """:func:`own_preprocessing` of a model file (only .tflite files carry metadata)."""
    path = Path(model_path)
    if path.suffix != ".tflite" or not path.is_file():
        return None
    return own_preprocessing(path.read_bytes(), path)
