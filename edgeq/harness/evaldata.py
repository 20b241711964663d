"""Evaluation data, labelled or not: what ``validate``, ``eval``, ``build`` and the device suite measure on.

:func:`load_eval_set` opens one source as an :class:`EvalSet`:

- a set from ``edgeq datagen``: its images, its conditions, its labels when its source had them, and its
  preprocessing (datagen.json);
- ``digits:<split>`` / ``lfw:<split>``: the bundled labelled sets;
- a ``.npy``: one array of samples;
- a ``.npz``: the samples under ``images`` or ``inputs`` (or the only array other than these keys, or the array
  named after the model input), optional ``labels`` (``[N]`` integer class ids) and optional ``conditions``
  (``[N]`` strings);
- an image folder: every image under it, sorted by path, decoded and resized (bilinear) to the model input's
  size exactly as calibration reads a folder (edgeq.calib.data); unlabelled. Needs pillow (the ``full`` extra).

Samples that are uint8 ``[N, H, W, C]`` are images: they stay uint8 until :meth:`EvalSet.model_inputs` applies a
preprocessing spec. Any other numeric array is model input and is fed as it is (float32).

Numpy and the datagen set reader only: no TensorFlow, so the slim ``edgeq[device]`` install can load every
source except image folders (pillow) and the bundled sets (scikit-learn, scikit-image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError, UsageError, require

BUNDLED_PREFIXES = ("digits:", "lfw:")
SAMPLE_KEYS = ("images", "inputs")  # where an .npz keeps its samples
LABEL_KEY = "labels"
CONDITION_KEY = "conditions"
SOURCES = ("a set from 'edgeq datagen' (labelled or not), a .npy/.npz of images or model inputs (.npz: optional "
           "'labels' and 'conditions'), an image folder, or digits:/lfw:<split>")


@dataclass(frozen=True, kw_only=True, eq=False)
class EvalSet:
    """Evaluation samples: uint8 ``images`` (preprocessed by :meth:`model_inputs`) or ready model ``inputs``,
    with optional per-sample ``labels`` and ``conditions``.

    ``preprocessing`` is the set's own spec from the loader (datagen.json; None for other sources). A caller
    that resolved the spec to apply (edgeq.preprocess.resolve) stores it with :meth:`with_preprocessing`.
    """

    name: str
    images: np.ndarray | None = None  # uint8 [N, H, W, C]
    inputs: np.ndarray | None = None  # model input [N, ...], fed as it is
    labels: np.ndarray | None = None  # [N] integer class ids
    conditions: Sequence[str] | None = None  # [N] condition names (sets from edgeq datagen)
    preprocessing: Preprocessing | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.inputs is None):
            raise UsageError("an evaluation set holds either images or model inputs (exactly one of them)")
        samples = self.samples
        if samples.ndim < 1 or samples.dtype.kind not in "biuf":
            raise InputError(f"{self.name}: samples must be a numeric array [N, ...], got {samples.dtype} "
                             f"{list(samples.shape)}")
        n = len(samples)
        if self.images is not None and (self.images.dtype != np.uint8 or self.images.ndim != 4):
            raise InputError(f"{self.name}: images must be uint8 [N, H, W, C], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                raise InputError(f"{self.name}: labels must be {n} integer class ids, got {labels.dtype} "
                                 f"{list(labels.shape)}")
            object.__setattr__(self, "labels", labels)
        if self.conditions is not None:
            conditions = tuple(str(c) for c in self.conditions)
            if len(conditions) != n:
                raise InputError(f"{self.name}: {len(conditions)} conditions for {n} samples")
            object.__setattr__(self, "conditions", conditions)

    @property
    def samples(self) -> np.ndarray:
        """The images, or else the model inputs."""
        return self.images if self.images is not None else self.inputs  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def head(self, limit: int | None) -> EvalSet:
        """The first ``limit`` samples (all when None)."""
        if limit is None or limit >= len(self):
            return self

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:limit]

        return dataclasses.replace(self, images=cut(self.images), inputs=cut(self.inputs), labels=cut(self.labels),
                                   conditions=None if self.conditions is None else tuple(self.conditions)[:limit])

    def with_preprocessing(self, preprocessing: Preprocessing | None) -> EvalSet:
        return dataclasses.replace(self, preprocessing=preprocessing)

    def model_inputs(self, preprocessing: Preprocessing | None = None) -> np.ndarray:
        """float32 model input [N, ...]: images under ``preprocessing`` (default: the set's own), inputs as they are."""
        if self.inputs is not None:
            return np.asarray(self.inputs, dtype=np.float32)
        spec = preprocessing if preprocessing is not None else self.preprocessing
        if spec is None:
            raise UsageError(f"{self.name} holds uint8 images and no preprocessing was given for them")
        from edgeq.preprocess import apply_preprocessing

        return apply_preprocessing(spec, np.asarray(self.images))


def is_image_folder(source: str | Path) -> bool:
    """A folder that is not a set from edgeq datagen: read as an image folder."""
    from datagen.calibset import is_set

    path = Path(source)
    return path.is_dir() and not is_set(path)


def load_eval_set(source: str | Path, *, limit: int | None = None, input_shape: Sequence[int] | None = None,
                  input_name: str | None = None) -> EvalSet:
    """Open ``source`` (module docstring) as an :class:`EvalSet`; ``limit`` keeps the first samples.

    ``input_shape`` is the model input's shape without the batch, ``(H, W, C)``: an image folder is resized to
    it. ``input_name`` names the model input an ``.npz`` may key its samples by.
    """
    from datagen.calibset import is_set

    text = str(source)
    path = Path(text)
    if text.startswith(BUNDLED_PREFIXES) and not path.exists():
        loaded = _bundled(text)
    elif is_set(path):
        loaded = _datagen_set(path)
    elif path.is_dir():
        loaded = _image_folder(path, input_shape)
    elif path.suffix.lower() == ".npy" and path.is_file():
        from datagen.arrays import load_npy

        loaded = _from_array(text, np.asarray(load_npy(path)))
    elif path.suffix.lower() == ".npz" and path.is_file():
        loaded = _npz(path, input_name)
    elif not path.exists():
        raise InputError(f"no such evaluation data: {text}")
    else:
        raise InputError(f"evaluation data must be {SOURCES}: {text}")
    if len(loaded) == 0:
        raise InputError(f"evaluation data {text} holds no samples")
    return loaded.head(limit)


def _from_array(name: str, samples: np.ndarray, labels: np.ndarray | None = None,
                conditions: Sequence[str] | None = None) -> EvalSet:
    images = samples.dtype == np.uint8 and samples.ndim == 4
    return EvalSet(name=name, images=samples if images else None, inputs=None if images else samples,
                   labels=labels, conditions=conditions)


def _bundled(text: str) -> EvalSet:
    from datagen import bundled

    dataset, _, split = text.partition(":")
    if split not in bundled.SPLITS:
        raise InputError(f"unknown split in {text!r}; use one of {', '.join(bundled.SPLITS)}")
    loader = bundled.load_digits if dataset == "digits" else bundled.load_lfw
    data = loader(split)  # type: ignore[arg-type]
    return EvalSet(name=text, images=data.images, labels=data.labels)


def _datagen_set(path: Path) -> EvalSet:
    from datagen.calibset import load_set

    loaded = load_set(path)
    return EvalSet(name=str(path), images=loaded.images, labels=loaded.labels, conditions=loaded.conditions,
                   preprocessing=loaded.preprocessing)


def _image_folder(path: Path, input_shape: Sequence[int] | None) -> EvalSet:
    if input_shape is None:
        raise UsageError(f"{path} is an image folder: its images are resized to the model input, so the input "
                         "shape must be known (pass input_shape)")
    require("PIL", f"reading the image folder {path}", "full")
    from edgeq.calib.data import ModelInput, _load_image_folder

    return EvalSet(name=str(path), images=_load_image_folder(path, ModelInput("input", tuple(input_shape))))


def _npz(path: Path, input_name: str | None) -> EvalSet:
    from datagen.arrays import load_npz
    from edgeq.calib.data import input_aliases

    arrays = load_npz(path)
    samples_keys = [k for k in arrays if k not in (LABEL_KEY, CONDITION_KEY)]
    chosen = [k for k in SAMPLE_KEYS if k in arrays]
    if not chosen and input_name is not None:
        chosen = [alias for alias in input_aliases(input_name) if alias in arrays]
    if not chosen and len(samples_keys) == 1:
        chosen = samples_keys
    if not chosen:
        raise InputError(f"{path} has arrays {sorted(arrays) or 'none'}; keep the samples under 'images' or "
                         f"'inputs' (labels under 'labels', conditions under 'conditions')")
    samples = arrays[chosen[0]]
    n = len(samples) if samples.ndim else 0
    labels = arrays.get(LABEL_KEY)
    if labels is not None and (labels.shape != (n,) or labels.dtype.kind not in "iu"):
        raise InputError(f"{path}: 'labels' must be {n} integer class ids, got {labels.dtype} {list(labels.shape)}")
    conditions = arrays.get(CONDITION_KEY)
    if conditions is not None and (conditions.shape != (n,) or conditions.dtype.kind not in "U"):
        raise InputError(f"{path}: 'conditions' must be {n} strings, got {conditions.dtype} "
                         f"{list(conditions.shape)}")
    return _from_array(str(path), samples, labels, None if conditions is None else conditions.tolist())
