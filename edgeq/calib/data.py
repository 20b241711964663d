"""Calibration inputs: arrays, image folders or bundled data, fed to a model one sample at a time.

Images stay uint8 until the preprocessing spec turns each sample into model input, so a set of a
few hundred 224×224 images costs its uint8 size, not four times that.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.artifacts import ChannelOrder, Interpolation, Preprocessing
from edgeq.configfile import bounded_repr
from edgeq.errors import InputError
from edgeq.preprocess import RAW, PreprocessingWarning, Source, apply_preprocessing, resolve

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
BUNDLED_PREFIXES = ("digits:", "lfw:")


@dataclass(frozen=True)
class ModelInput:
    """What one model input expects (batch dimension excluded)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CalibrationSet:
    """Per-input sample arrays (uint8 images or ready float input) plus how to preprocess them."""

    source: str
    arrays: tuple[np.ndarray, ...]  # one per model input, each (N, ...)
    preprocessing: Preprocessing | None  # applied to uint8 image arrays; None: arrays are model input
    conditions: tuple[str, ...] | None = None  # per-sample condition, for sets from `edgeq datagen`
    preprocessing_source: Source | None = None  # where `preprocessing` came from
    warnings: tuple[str, ...] = ()  # disagreements between --preprocess, the model's metadata and the set

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def samples(self, inputs: Sequence[ModelInput]) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(sample index, batch-1 float32 arrays per input), validated against the model's inputs."""
        if len(self.arrays) != len(inputs):
            raise InputError(f"calibration data has {len(self.arrays)} input array(s), the model has {len(inputs)}")
        for i in range(len(self)):
            batch = []
            for array, model_input in zip(self.arrays, inputs, strict=True):
                sample = array[i : i + 1]
                if self.preprocessing is not None and sample.dtype == np.uint8 and sample.ndim == 4:
                    sample = apply_preprocessing(self.preprocessing, sample)
                sample = np.asarray(sample, dtype=np.float32)
                if tuple(sample.shape[1:]) != model_input.shape:
                    raise InputError(f"calibration samples are shaped {tuple(sample.shape[1:])}, model input "
                                     f"'{model_input.name}' expects {model_input.shape}")
                if not np.all(np.isfinite(sample)):
                    raise InputError(f"calibration sample {i} of {self.source} contains NaN or Inf")
                batch.append(sample)
            yield i, batch

    def fingerprint(self) -> str:
        """sha256 of the raw arrays and the preprocessing: equal sets give equal fingerprints."""
        digest = hashlib.sha256()
        for array in self.arrays:
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        spec = self.preprocessing.to_dict() if self.preprocessing else None
        digest.update(json.dumps(spec, sort_keys=True).encode())
        return digest.hexdigest()


def parse_preprocessing(text: str | None) -> Preprocessing | None:
    """A spec from a JSON file, inline ``size=32x32,mean=127.5,std=127.5,order=rgb,interp=bilinear``, or
    ``none``: the model takes raw 0..255 values (mean 0, std 1).

    Inline lists use ``/`` between channel values: ``mean=123.7/116.3/103.5``.
    """
    if text is None:
        return None
    if text.strip().lower() == "none":
        return RAW
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        return _preprocessing_file(path)
    fields: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise InputError(f"preprocessing item {bounded_repr(part)} is not key=value")
        if key not in INLINE_KEYS:
            raise InputError(f"unknown preprocessing key {bounded_repr(key)}{_suggest(key, INLINE_KEYS)} "
                             f"(size, mean, std, order, interp)")
        try:
            if key == "size":
                height, width = (int(v) for v in value.lower().split("x"))
                fields["size"] = (height, width)
            elif key in ("mean", "std"):
                fields[key] = tuple(float(v) for v in value.split("/"))
            elif key == "order":
                fields["channel_order"] = ChannelOrder(value)
            else:
                fields["interpolation"] = Interpolation(value)
        except ValueError:
            raise InputError(f"bad preprocessing value {bounded_repr(part)}") from None
    return checked_preprocessing(Preprocessing(**fields), "--preprocess")  # type: ignore[arg-type]


INLINE_KEYS = ("size", "mean", "std", "order", "interp")
FILE_KEYS = ("size", "mean", "std", "channel_order", "interpolation", "kind", "schema_version")
MAX_SIDE = 8192  # pixels per side of a resize: far beyond any edge model's input


def _suggest(key: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _preprocessing_file(path: Path) -> Preprocessing:
    """A preprocessing JSON file: bounded, UTF-8, and strict — an unknown key ("stdev") is an error, never a
    silently ignored one that leaves std at 1.0."""
    from edgeq.configfile import parse_json, read_config_text

    document = parse_json(read_config_text(path, "preprocessing file"), f"preprocessing file {path}")
    if not isinstance(document, dict):
        raise InputError(f"{path} must hold a JSON object")
    unknown = [str(k) for k in document if k not in FILE_KEYS]
    if unknown:
        first = unknown[0]
        raise InputError(f"{path}: unknown preprocessing key {bounded_repr(first)}{_suggest(first, FILE_KEYS)} "
                         f"(size, mean, std, channel_order, interpolation)")
    for key in ("mean", "std"):  # one number for every channel, as inline specs allow
        if isinstance(document.get(key), (int, float)) and not isinstance(document.get(key), bool):
            document[key] = [document[key]]
    spec = Preprocessing.from_dict({"kind": Preprocessing.kind, "schema_version": 1, **document})
    return checked_preprocessing(spec, str(path))


def checked_preprocessing(spec: Preprocessing, where: str) -> Preprocessing:
    """Values that would silently wreck every input: non-finite means, zero or negative stds, absurd sizes."""
    import math

    if spec.size is not None and not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in spec.size):
        raise InputError(f"{where}: size must be HxW with each side 1..{MAX_SIDE}, got {spec.size}")
    if not spec.mean or not all(math.isfinite(v) for v in spec.mean):
        raise InputError(f"{where}: mean must be finite numbers, got {bounded_repr(spec.mean)}")
    if not spec.std or not all(math.isfinite(v) and v > 0 for v in spec.std):
        raise InputError(f"{where}: std must be positive finite numbers, got {bounded_repr(spec.std)}")
    if len(spec.mean) > 4 or len(spec.std) > 4:
        raise InputError(f"{where}: mean and std take one value or one per channel (at most 4)")
    return spec


def input_aliases(name: str) -> tuple[str, ...]:
    """The names a user may give an input by: the tensor's (``serving_default_in_a:0``), without the output
    index (``serving_default_in_a``), and the Keras/SavedModel signature name (``in_a``)."""
    names = [name]
    base = re.sub(r":\d+$", "", name)
    names.append(base)
    for prefix in ("serving_default_",):
        if base.startswith(prefix) and len(base) > len(prefix):
            names.append(base[len(prefix):])
    return tuple(dict.fromkeys(names))


def _load_npz(path: Path, inputs: Sequence[ModelInput]) -> tuple[np.ndarray, ...]:
    from datagen.arrays import load_npz

    arrays = load_npz(path)  # every member's header checked against a memory budget before reading
    if not arrays:
        raise InputError(f"{path} holds no arrays")
    if len(arrays) == 1 and len(inputs) == 1:
        return (next(iter(arrays.values())),)
    chosen = []
    for model_input in inputs:
        found = [alias for alias in input_aliases(model_input.name) if alias in arrays]
        if not found:
            raise InputError(f"{path} has arrays {sorted(arrays)}; no array for the model input "
                             f"{model_input.name!r} (name it one of {list(input_aliases(model_input.name))})")
        chosen.append(arrays[found[0]])
    return tuple(chosen)


def _load_image_folder(folder: Path, model_input: ModelInput) -> np.ndarray:
    from PIL import Image

    from datagen.sources import DecodeError, decode_image, to_channels, to_uint8

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    if len(model_input.shape) != 3:
        raise InputError(f"an image folder needs an image input (H, W, C); the model input is {model_input.shape}")
    height, width, channels = model_input.shape
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, file in enumerate(files):
        # datagen's decoder: the same pixel budget (decompression bombs), the same 16-bit rule (high byte)
        # and the same alpha and palette handling, so convert and datagen see one image the same way.
        try:
            pixels, _ = to_channels(to_uint8(decode_image(file))[0], channels)
        except DecodeError as exc:
            raise InputError(f"cannot decode image {file}: {exc}") from None
        resized = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
        resized = resized.resize((width, height), Image.Resampling.BILINEAR)
        images[i] = np.asarray(resized).reshape(height, width, channels)
    return images


def _load_bundled(name: str) -> np.ndarray:
    from datagen import bundled

    dataset, _, split = name.partition(":")
    loader = bundled.load_digits if dataset == "digits" else bundled.load_lfw
    return loader(split).images  # type: ignore[arg-type]


def load_calibration(source: str | Path, inputs: Sequence[ModelInput], preprocessing: Preprocessing | None,
                     limit: int | None = None, model: bytes | None = None) -> CalibrationSet:
    """Open ``source``: a set from ``edgeq datagen``, .npy, .npz, an image folder, or ``digits:train``.

    uint8 images are preprocessed by ``preprocessing`` when given, else by what the float ``model``'s own
    TFLite Metadata asks for, else by the set's own spec; with none of them they are refused, since a
    guess (raw 0..255 into a model trained on [-1, 1]) gives a model that converts and scores ~10 %.
    A disagreement with the model's metadata is a warning (PreprocessingWarning, and in ``warnings``).
    """
    text = str(source)
    path = Path(text)
    conditions = None
    set_preprocessing = None
    if text.startswith(BUNDLED_PREFIXES) and not path.exists():
        arrays: tuple[np.ndarray, ...] = (_load_bundled(text),)
    elif path.is_dir() and (path / "datagen.json").is_file():
        from datagen.calibset import load_set

        calibration_set = load_set(path)
        arrays, conditions = (calibration_set.images,), tuple(calibration_set.conditions)
        set_preprocessing = calibration_set.preprocessing
    elif path.is_dir():
        if len(inputs) != 1:
            raise InputError("an image folder can only calibrate a single-input model")
        arrays = (_load_image_folder(path, inputs[0]),)
    elif path.suffix == ".npy" and path.is_file():
        from datagen.arrays import load_npy

        arrays = (load_npy(path),)  # the header is checked against a memory budget before anything is read
    elif path.suffix == ".npz" and path.is_file():
        arrays = _load_npz(path, inputs)
    elif not path.exists():
        raise InputError(f"no such calibration data: {text}")
    else:
        raise InputError(f"calibration data must be .npy, .npz, an image folder or digits:/lfw:<split>: {text}")
    for array in arrays:
        if array.dtype.kind not in "uif" or array.ndim < 1:
            raise InputError(f"calibration arrays must be numeric, got {array.dtype} in {text}")
        if array.shape[0] != arrays[0].shape[0]:
            raise InputError(f"calibration arrays in {text} have different sample counts")
    if arrays[0].shape[0] == 0:
        raise InputError(f"calibration set {text} is empty")
    if limit is not None:
        arrays = tuple(a[:limit] for a in arrays)
        conditions = conditions[:limit] if conditions else None
    from edgeq.tflite.metadata import model_preprocessing

    own = model_preprocessing(model) if model is not None else None
    images = any(a.dtype == np.uint8 and a.ndim == 4 for a in arrays)
    resolved = resolve(preprocessing, model=(own, Source.MODEL) if own is not None else None,
                       data_set=set_preprocessing, images=images, model_name="the float model",
                       data_name=f"calibration data {text}")
    for message in resolved.warnings:
        warnings.warn(message, PreprocessingWarning, stacklevel=3)
    return CalibrationSet(source=text, arrays=arrays, preprocessing=resolved.spec, conditions=conditions,
                          preprocessing_source=resolved.source, warnings=resolved.warnings)
