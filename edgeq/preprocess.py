"""Apply a Preprocessing spec to uint8 NHWC images: the one way every stage feeds a model."""

from __future__ import annotations

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
