"""Task metrics: how faithful the INT8 model's outputs are to the FP32 model's, judged the way users judge them.

Pure numpy, no TensorFlow, no files: the caller runs both models, loads anchors, and hands over one array per
model output holding N samples, ``[N, ...]`` (the batch dimension of each invocation removed, samples stacked
along axis 0). INT8 outputs are compared after dequantization, in output units. docs/tasks.md gives the
formulas, the defaults and the undefined cases.

- :func:`output_fidelity` for every output: SQNR, cosine similarity, max and mean absolute error.
- Task presets in :data:`TASKS` (``generic``, ``classification``, ``detection``, ``landmarks``,
  ``segmentation``), declared per output by an :class:`OutputTask` parsed strictly from a recipe or CLI mapping.

Per-condition breakdowns: every metric is computed per sample first (a :class:`PerSample` of arrays with one
row per sample, holding additive parts such as signal and noise power, or matched and detected counts) and
then reduced. ``metrics.subset(indices)`` (a boolean mask or integer indices) reduces the same per-sample
values over those samples only, and equals the metrics computed on the subset's arrays. A figure with
nothing to average over (no samples, no FP32 detections, no matched pair) is None.

Adding a task: write a config dataclass (subclass :class:`TaskConfig`, every field with a default; override
``reads`` if the task reads more than its own output), a function ``(config, TaskInputs) -> Metrics`` (usually
a :class:`PerSample` subclass whose ``_summarize`` builds a :class:`Metrics` subclass), and one line in
:data:`TASKS`. Parsing, the declaration type and the registry need no change.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, Union, get_args, get_origin, get_type_hints

import numpy as np

from edgeq.configfile import bounded_repr
from edgeq.errors import InputError
from edgeq.metrics import sqnr_db

Indices = np.ndarray | Sequence[int] | None  # None: every sample; else a boolean mask or integer indices


# ---------------------------------------------------------------------------------------------------------
# Per-sample values and their reduction


def sample_indices(n: int, indices: Indices) -> np.ndarray:
    """Integer indices into ``n`` samples from None (all), a boolean mask of length n, or integer indices."""
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise InputError(f"a sample mask must have shape [{n}], got {list(idx.shape)}")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"sample indices must be a boolean mask or a list of integers, got {idx.dtype} "
                         f"{list(idx.shape)}")
    if idx.min() < 0 or idx.max() >= n:
        raise InputError(f"sample indices must lie in [0, {n}), got {int(idx.min())}..{int(idx.max())}")
    return idx


@dataclass(frozen=True, eq=False)
class PerSample:
    """Per-sample values of one metric family: every ndarray field has one row per sample."""

    def __len__(self) -> int:
        return next(len(v) for v in vars(self).values() if isinstance(v, np.ndarray))

    def take(self, indices: Indices) -> Self:
        """The same values for the selected samples only (in the order given)."""
        idx = sample_indices(len(self), indices)
        return dataclasses.replace(self, **{k: v[idx] for k, v in vars(self).items() if isinstance(v, np.ndarray)})

    def summary(self, indices: Indices = None) -> Metrics:
        """The metrics over the selected samples (all when None)."""
        return (self if indices is None else self.take(indices))._summarize()

    def _summarize(self) -> Metrics:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Summary figures over ``n`` samples; ``samples`` keeps the per-sample values they were reduced from."""

    n: int
    samples: PerSample = field(repr=False, compare=False)

    def subset(self, indices: Indices) -> Self:
        """The same metrics over some of these samples (a boolean mask or indices into ``samples``)."""
        return self.samples.summary(indices)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures: a non-finite float (an infinite SQNR) becomes None; flags say why."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "samples"}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


# ---------------------------------------------------------------------------------------------------------
# Validation of arrays


def _values(array: Any, what: str, min_ndim: int = 1) -> np.ndarray:
    """``array`` as float64 with at least ``min_ndim`` dimensions, real and finite."""
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.issubdtype(a.dtype, np.complexfloating):
        raise InputError(f"{what} must hold real numbers, got dtype {a.dtype}")
    if a.ndim < min_ndim:
        raise InputError(f"{what} must have at least {min_ndim} dimensions [N, ...], got shape {list(a.shape)}")
    a = a.astype(np.float64)
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise InputError(f"{what} has {bad} non-finite values (NaN or infinity)")
    return a


def _pair(fp32: Any, int8: Any, what: str, min_ndim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    y, q = _values(fp32, f"FP32 {what}", min_ndim), _values(int8, f"INT8 {what}", min_ndim)
    if y.shape != q.shape:
        raise InputError(f"FP32 and INT8 {what} differ in shape: {list(y.shape)} vs {list(q.shape)}")
    return y, q


def _rows(a: np.ndarray, what: str) -> np.ndarray:
    """[N, ...] -> [N, M] with M >= 1 values per sample."""
    values = math.prod(a.shape[1:])
    if values == 0:
        raise InputError(f"{what} has no values per sample: shape {list(a.shape)}")
    return a.reshape(a.shape[0], values)


def _vector_rows(a: np.ndarray, what: str, axis: str = "C") -> np.ndarray:
    """[N, C] or [N, 1, ..., 1, C] -> [N, C]."""
    if a.ndim < 2 or any(d != 1 for d in a.shape[1:-1]) or a.shape[-1] == 0:
        raise InputError(f"{what} must have shape [N, {axis}] (or [N, 1, ..., 1, {axis}]), got {list(a.shape)}")
    return a.reshape(a.shape[0], a.shape[-1])


# ---------------------------------------------------------------------------------------------------------
# Output fidelity (every output)


@dataclass(frozen=True, kw_only=True)
class OutputFidelity(Metrics):
    """One output's fidelity to FP32 over ``n`` samples. Every figure is None when n is 0.

    sqnr_db: 10·log10(Σy² / Σ(y−ŷ)²) over every value of every sample; +inf when the outputs are identical
    (``exact``), -inf when the FP32 output is all zero and the INT8 one is not. In ``to_dict`` both infinities
    are None: ``exact`` tells them apart.
    """

    sqnr_db: float | None
    cosine: float | None  # mean over samples of each sample's cosine similarity
    max_abs_error: float | None
    mean_abs_error: float | None  # over every value of every sample
    exact: bool  # n > 0 and every INT8 value equals the FP32 one


@dataclass(frozen=True, eq=False)
class FidelitySamples(PerSample):
    """Per sample: signal power Σy², noise power Σ(y−ŷ)², cosine similarity, max |y−ŷ| and Σ|y−ŷ|."""

    signal: np.ndarray
    noise: np.ndarray
    cosine: np.ndarray
    max_abs: np.ndarray
    abs_sum: np.ndarray
    size: int  # values per sample

    @property
    def sqnr_db(self) -> np.ndarray:
        """Each sample's own SQNR (±inf as in :func:`_db`)."""
        return np.array([sqnr_db(s, e) for s, e in zip(self.signal, self.noise, strict=True)], dtype=np.float64)

    def _summarize(self) -> OutputFidelity:
        n = len(self.signal)
        noise = float(np.sum(self.noise))
        return OutputFidelity(n=n, samples=self, sqnr_db=sqnr_db(float(np.sum(self.signal)), noise) if n else None,
                              cosine=_mean(self.cosine), max_abs_error=float(np.max(self.max_abs)) if n else None,
                              mean_abs_error=float(np.sum(self.abs_sum)) / (n * self.size) if n else None,
                              exact=n > 0 and noise == 0)


def fidelity_samples(fp32: Any, int8: Any) -> FidelitySamples:
    """Per-sample fidelity of an INT8 output ``[N, ...]`` to the FP32 one (same shape).

    Cosine similarity of a sample: y·ŷ / (|y|·|ŷ|) on the flattened sample; exactly 1.0 when the two are
    identical (both all zero included), 0.0 when exactly one is all zero.
    """
    y, q = _pair(fp32, int8, "output")
    y, q = _rows(y, "the output"), _rows(q, "the output")
    err = np.abs(y - q)
    signal = np.einsum("ij,ij->i", y, y)
    norms = np.linalg.norm(y, axis=1) * np.linalg.norm(q, axis=1)
    y_zero, q_zero = ~y.any(axis=1), ~q.any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.clip(np.einsum("ij,ij->i", y, q) / norms, -1.0, 1.0)
    noise = np.einsum("ij,ij->i", err, err)
    cosine = np.where(noise == 0, 1.0, np.where(y_zero | q_zero, 0.0, cosine))
    return FidelitySamples(signal=signal, noise=noise, cosine=cosine,
                           max_abs=err.max(axis=1), abs_sum=err.sum(axis=1), size=y.shape[1])


def output_fidelity(fp32: Any, int8: Any, indices: Indices = None) -> OutputFidelity:
    """SQNR, cosine similarity, max and mean absolute error of an INT8 output against FP32's."""
    return fidelity_samples(fp32, int8).summary(indices)


# ---------------------------------------------------------------------------------------------------------
# Task configs: frozen dataclasses with defaults, parsed strictly from mappings

_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the field type ``hint`` (bool, int, float, str, Literal, tuple, X | None)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise InputError(f"{name} must be one of {', '.join(args)}, got {bounded_repr(value)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(name, next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_coerce(name, a, v) for a, v in zip(args, value, strict=True))
        raise InputError(f"{name} must be a list of {len(args)} values, got {bounded_repr(value)}")
    ok = not isinstance(value, bool) or hint is bool
    ok = ok and (isinstance(value, hint) or (hint is float and isinstance(value, int)))
    if not ok or (hint is float and not math.isfinite(value)):
        raise InputError(f"{name} must be {_KINDS[hint]}, got {bounded_repr(value)}")
    return float(value) if hint is float else value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


@dataclass(frozen=True)
class TaskConfig:
    """Base of every task's config: fields are type-checked on construction (ints become floats where a
    float is declared), then ``validate`` checks values. A task reads its declared output as role ``output``."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, hints[f.name], getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Value checks beyond the field types; raise InputError."""

    def reads(self, output: str) -> dict[str, str]:
        """Role -> model output name, for a task declared on ``output``."""
        return {"output": output}

    @classmethod
    def parse(cls, mapping: Mapping[str, Any], where: str = "task config") -> Self:
        """The config from a recipe/CLI mapping: unknown keys and ill-typed values are refused naming the key."""
        if not isinstance(mapping, Mapping):
            raise InputError(f"{where} must be a mapping of keys to values, got {bounded_repr(mapping)}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in mapping:
            if key not in known:
                raise InputError(f"{where}: unknown key {bounded_repr(key)}; known keys: {', '.join(known) or 'none'}")
        try:
            return cls(**mapping)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class GenericConfig(TaskConfig):
    """``generic``: the fidelity numbers only; nothing to configure."""


@dataclass(frozen=True)
class ClassificationConfig(TaskConfig):
    top_k: int = 5  # k for top-k containment (at most the number of classes)

    def validate(self) -> None:
        _check(self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class DetectionConfig(TaskConfig):
    """``detection`` on a boxes output (decoded) or an SSD regressors output (``form: ssd``).

    The ssd fields mirror MediaPipe's TensorsToDetectionsCalculatorOptions (names and meaning), except that
    the scales default to 1 instead of 0.
    """

    scores: str | None = None  # the model output holding the scores (required in a declaration)
    classes: str | None = None  # decoded form: an output of class ids [N, D] (else argmax of [N, D, C] scores)
    form: Literal["decoded", "ssd"] = "decoded"
    box_format: Literal["yxyx", "xyxy", "cxcywh"] = "yxyx"  # decoded form
    anchors: str | None = None  # ssd: file of an [A, 4] (cx, cy, w, h) array; the caller loads it
    x_scale: float = 1.0
    y_scale: float = 1.0
    w_scale: float = 1.0
    h_scale: float = 1.0
    reverse_output_order: bool = False  # False: regressors are (y, x, h, w) as in MediaPipe; True: (x, y, w, h)
    apply_exponential_on_box_size: bool = False
    box_coord_offset: int = 0
    sigmoid_score: bool = False  # scores are logits
    score_clipping_thresh: float | None = None  # logits clipped to ±this before the sigmoid
    score_threshold: float = 0.5  # a detection is a box whose score is >= this
    iou_threshold: float = 0.5  # a pair matches when IoU >= this
    match_classes: bool = True  # a pair must also agree on the class id

    def validate(self) -> None:
        for name in ("x_scale", "y_scale", "w_scale", "h_scale"):
            _check(getattr(self, name) != 0, f"{name} must not be 0")
        _check(0 < self.iou_threshold <= 1, f"iou_threshold must lie in (0, 1], got {self.iou_threshold}")
        _check(self.box_coord_offset >= 0, f"box_coord_offset must be >= 0, got {self.box_coord_offset}")
        _check(self.score_clipping_thresh is None or self.score_clipping_thresh > 0,
               f"score_clipping_thresh must be positive, got {self.score_clipping_thresh}")
        _check(self.form == "ssd" or self.anchors is None, "anchors apply to form: ssd only")
        _check(self.form == "decoded" or self.classes is None, "classes (an output of class ids) applies to "
               "form: decoded only")

    def reads(self, output: str) -> dict[str, str]:
        _check(self.scores is not None, "detection needs scores: the name of the model output holding the scores")
        roles = {"boxes": output, "scores": str(self.scores)}
        return roles | ({"classes": self.classes} if self.classes else {})


@dataclass(frozen=True)
class LandmarksConfig(TaskConfig):
    dims: int | None = None  # values per point (x, y[, z, ...]); needed unless the output is [N, K, d]
    coordinates: Literal["pixels", "normalized"] = "pixels"
    image_size: tuple[float, float] | None = None  # (width, height) in pixels: normalized coordinates only
    box_size: float | None = None  # errors / this length in pixels, instead of FP32's landmark box diagonal

    def validate(self) -> None:
        _check(self.dims is None or self.dims >= 2, f"dims must be at least 2 (x, y), got {self.dims}")
        _check((self.coordinates == "normalized") == (self.image_size is not None),
               "image_size (width, height) is needed with, and only with, coordinates: normalized")
        _check(self.image_size is None or min(self.image_size) > 0, f"image_size must be positive, got "
               f"{self.image_size}")
        _check(self.box_size is None or self.box_size > 0, f"box_size must be positive, got {self.box_size}")


@dataclass(frozen=True)
class SegmentationConfig(TaskConfig):
    threshold: float = 0.5  # one channel: foreground where the (sigmoid of the) value is >= this
    sigmoid: bool = False  # one channel: the values are logits

    def validate(self) -> None:
        _check(not self.sigmoid or 0 < self.threshold < 1,
               f"threshold must lie in (0, 1) with sigmoid, got {self.threshold}")


# ---------------------------------------------------------------------------------------------------------
# classification


@dataclass(frozen=True, kw_only=True)
class ClassificationMetrics(Metrics):
    k: int  # the k of top-k: min(top_k, classes)
    agreement: float | None  # share of samples where INT8's argmax is FP32's
    top_k_containment: float | None  # share where FP32's argmax is among INT8's k highest scores
    fp32_accuracy: float | None  # top-1 against the labels; None without labels
    int8_accuracy: float | None


@dataclass(frozen=True, eq=False)
class ClassificationSamples(PerSample):
    fp32_top1: np.ndarray
    int8_top1: np.ndarray
    in_top_k: np.ndarray  # bool
    labels: np.ndarray | None
    k: int

    def _summarize(self) -> ClassificationMetrics:
        labelled = self.labels is not None
        return ClassificationMetrics(
            n=len(self.fp32_top1), samples=self, k=self.k, agreement=_mean(self.fp32_top1 == self.int8_top1),
            top_k_containment=_mean(self.in_top_k),
            fp32_accuracy=_mean(self.fp32_top1 == self.labels) if labelled else None,
            int8_accuracy=_mean(self.int8_top1 == self.labels) if labelled else None)


def classification_metrics(fp32: Any, int8: Any, labels: Any = None,
                           config: ClassificationConfig = ClassificationConfig()) -> ClassificationMetrics:
    """Agreement, top-k containment and (with labels) top-1 of scores [N, C]. Ties rank the lower class first."""
    y, q = _pair(fp32, int8, "scores", min_ndim=2)
    y, q = _vector_rows(y, "classification scores"), _vector_rows(q, "classification scores")
    n, classes = y.shape
    k = min(config.top_k, classes)
    f1 = np.argmax(y, axis=1)
    picked = q[np.arange(n), f1][:, None]
    rank = (q > picked).sum(axis=1) + ((q == picked) & (np.arange(classes) < f1[:, None])).sum(axis=1)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be {n} integer class ids, got {labels.dtype} {list(labels.shape)}")
        if n and (labels.min() < 0 or labels.max() >= classes):
            raise InputError(f"labels must lie in [0, {classes}), got {int(labels.min())}..{int(labels.max())}")
    return ClassificationSamples(fp32_top1=f1, int8_top1=np.argmax(q, axis=1), in_top_k=rank < k,
                                 labels=labels, k=k).summary()


# ---------------------------------------------------------------------------------------------------------
# detection


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (ymin, xmin, ymax, xmax) boxes, broadcast over leading axes. A box with max < min on an axis
    has no extent; two boxes with an empty union have IoU 1 when they are equal, else 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)

    def area(box: np.ndarray) -> np.ndarray:
        return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)

    inter = h * w
    union = area(a) + area(b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.all(a == b, axis=-1).astype(np.float64))


def to_yxyx(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Boxes [..., 4] in ``yxyx``, ``xyxy`` or ``cxcywh`` as (ymin, xmin, ymax, xmax)."""
    c0, c1, c2, c3 = np.moveaxis(np.asarray(boxes, dtype=np.float64)[..., :4], -1, 0)
    if box_format == "yxyx":
        return np.stack([c0, c1, c2, c3], axis=-1)
    if box_format == "xyxy":
        return np.stack([c1, c0, c3, c2], axis=-1)
    return np.stack([c1 - c3 / 2, c0 - c2 / 2, c1 + c3 / 2, c0 + c2 / 2], axis=-1)  # cx, cy, w, h


def decode_ssd_boxes(regressors: np.ndarray, anchors: np.ndarray | None, config: DetectionConfig) -> np.ndarray:
    """SSD anchor regressors [N, A, R] -> (ymin, xmin, ymax, xmax) [N, A, 4] as MediaPipe's
    TensorsToDetectionsCalculator decodes them. Without anchors every anchor is the unit anchor (0, 0, 1, 1):
    the IoU of two boxes decoded from one anchor does not depend on it (docs/tasks.md)."""
    regressors = _values(regressors, "ssd regressors", min_ndim=3)
    if regressors.ndim != 3:
        raise InputError(f"ssd regressors must have shape [N, A, R], got {list(regressors.shape)}")
    _, count, coords = regressors.shape
    if coords < config.box_coord_offset + 4:
        raise InputError(f"ssd regressors have {coords} values per anchor; box_coord_offset "
                         f"{config.box_coord_offset} needs at least {config.box_coord_offset + 4}")
    if anchors is None:
        anchors = np.tile([0.0, 0.0, 1.0, 1.0], (count, 1))
    anchors = _values(anchors, "anchors", min_ndim=2)
    if anchors.shape != (count, 4):
        raise InputError(f"anchors must have shape [{count}, 4] (cx, cy, w, h), got {list(anchors.shape)}")
    if anchors[:, 2:].min(initial=1.0) <= 0:
        raise InputError("anchor widths and heights must be positive")
    r = regressors[..., config.box_coord_offset:config.box_coord_offset + 4]
    x, y, w, h = (r[..., 0], r[..., 1], r[..., 2], r[..., 3]) if config.reverse_output_order else (
        r[..., 1], r[..., 0], r[..., 3], r[..., 2])
    acx, acy, aw, ah = anchors.T
    x, y = x / config.x_scale * aw + acx, y / config.y_scale * ah + acy
    if config.apply_exponential_on_box_size:
        w, h = np.exp(w / config.w_scale) * aw, np.exp(h / config.h_scale) * ah
    else:
        w, h = w / config.w_scale * aw, h / config.h_scale * ah
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)


def _score_classes(scores: np.ndarray, count: int, config: DetectionConfig, what: str) -> tuple[np.ndarray, ...]:
    """Scores [N, D] or [N, D, C] -> (score, class id), each [N, D]: the maximum over classes."""
    if scores.ndim not in (2, 3) or scores.shape[1] != count or (scores.ndim == 3 and scores.shape[2] == 0):
        raise InputError(f"{what} must have shape [N, {count}] or [N, {count}, C], got {list(scores.shape)}")
    if config.sigmoid_score:
        if config.score_clipping_thresh is not None:
            scores = np.clip(scores, -config.score_clipping_thresh, config.score_clipping_thresh)
        scores = 1 / (1 + np.exp(-np.clip(scores, -500, 500)))
    if scores.ndim == 2:
        return scores, np.zeros(scores.shape, dtype=np.int64)
    return scores.max(axis=2), scores.argmax(axis=2)


def greedy_matches(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with IoU >= threshold, highest IoU first; ties by row, then column.
    Entries below 0 are never candidates."""
    rows, cols = np.nonzero(iou >= threshold)
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for k in np.lexsort((cols, rows, -iou[rows, cols])):
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


@dataclass(frozen=True, kw_only=True)
class DetectionMetrics(Metrics):
    """FP32's detections recovered by INT8, pooled over the samples (counts add up across samples)."""

    fp32_detections: int
    int8_detections: int
    matched: int
    recall: float | None  # matched / fp32_detections; None without FP32 detections
    precision: float | None  # matched / int8_detections; None without INT8 detections
    mean_iou: float | None  # over matched pairs; None without one
    score_mae: float | None  # |FP32 score − INT8 score| over matched pairs


@dataclass(frozen=True, eq=False)
class DetectionSamples(PerSample):
    fp32_detections: np.ndarray
    int8_detections: np.ndarray
    matched: np.ndarray
    iou_sum: np.ndarray
    score_error_sum: np.ndarray

    @property
    def recall(self) -> np.ndarray:
        """Each sample's recall; NaN where FP32 has no detection."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.fp32_detections > 0, self.matched / self.fp32_detections, np.nan)

    def _summarize(self) -> DetectionMetrics:
        found, made, matched = (int(np.sum(a)) for a in (self.fp32_detections, self.int8_detections, self.matched))
        return DetectionMetrics(n=len(self.matched), samples=self, fp32_detections=found, int8_detections=made,
                                matched=matched, recall=_ratio(matched, found), precision=_ratio(matched, made),
                                mean_iou=_ratio(float(np.sum(self.iou_sum)), matched),
                                score_mae=_ratio(float(np.sum(self.score_error_sum)), matched))


def _match_detections(boxes: tuple[np.ndarray, np.ndarray], scores: tuple[np.ndarray, np.ndarray],
                      classes: tuple[np.ndarray, np.ndarray], same_index: bool,
                      config: DetectionConfig) -> DetectionSamples:
    """Per sample: detections (score >= threshold) of FP32 and INT8, greedily matched by IoU."""
    n = len(scores[0])
    counts = np.zeros((3, n), dtype=np.int64)
    sums = np.zeros((2, n))
    for i in range(n):
        f, q = (np.flatnonzero(s[i] >= config.score_threshold) for s in scores)
        iou = box_iou(boxes[0][i, f][:, None], boxes[1][i, q][None, :])
        if config.match_classes:
            iou[classes[0][i, f][:, None] != classes[1][i, q][None, :]] = -1
        if same_index:
            iou[f[:, None] != q[None, :]] = -1
        pairs = greedy_matches(iou, config.iou_threshold)
        counts[:, i] = len(f), len(q), len(pairs)
        sums[0, i] = sum(iou[r, c] for r, c in pairs)
        sums[1, i] = sum(abs(scores[0][i, f[r]] - scores[1][i, q[c]]) for r, c in pairs)
    return DetectionSamples(fp32_detections=counts[0], int8_detections=counts[1], matched=counts[2],
                            iou_sum=sums[0], score_error_sum=sums[1])


def detection_metrics(fp32_boxes: Any, fp32_scores: Any, int8_boxes: Any, int8_scores: Any, *,
                      config: DetectionConfig = DetectionConfig(), fp32_classes: Any = None, int8_classes: Any = None,
                      anchors: Any = None) -> DetectionMetrics:
    """Recall, precision, mean IoU and score error of INT8's detections against FP32's.

    ``form: decoded``: boxes [N, D, 4] in ``box_format``, scores [N, D] or [N, D, C] (class = argmax) or class
    ids [N, D] given. ``form: ssd``: regressors [N, A, R], scores [N, A] / [N, A, 1] / [N, A, C], decoded
    against ``anchors`` [A, 4]; without anchors only detections of the same anchor can match.
    """
    fb, qb = _pair(fp32_boxes, int8_boxes, "boxes", min_ndim=3)
    fs, qs = _pair(fp32_scores, int8_scores, "scores", min_ndim=2)
    if fb.ndim != 3 or (config.form == "decoded" and fb.shape[2] != 4) or fs.shape[0] != fb.shape[0]:
        need = "[N, D, 4]" if config.form == "decoded" else "[N, A, >=4]"
        raise InputError(f"detection boxes must have shape {need} and scores [N, D...], got {list(fb.shape)} and "
                         f"{list(fs.shape)}")
    (fs, fc), (qs, qc) = (_score_classes(s, fb.shape[1], config, f"{which} scores")
                          for s, which in ((fs, "FP32"), (qs, "INT8")))
    if fp32_classes is not None or int8_classes is not None:
        fc, qc = (np.rint(c).astype(np.int64) for c in _pair(fp32_classes, int8_classes, "classes", min_ndim=2))
        if fc.shape != fs.shape:
            raise InputError(f"detection classes must have shape {list(fs.shape)}, got {list(fc.shape)}")
    if config.form == "ssd":
        fb, qb = decode_ssd_boxes(fb, anchors, config), decode_ssd_boxes(qb, anchors, config)
    else:
        fb, qb = to_yxyx(fb, config.box_format), to_yxyx(qb, config.box_format)
    same_index = config.form == "ssd" and anchors is None
    return _match_detections((fb, qb), (fs, qs), (fc, qc), same_index, config).summary()


# ---------------------------------------------------------------------------------------------------------
# landmarks


@dataclass(frozen=True, kw_only=True)
class LandmarkMetrics(Metrics):
    """Point errors in pixels, and divided by each sample's scale (FP32's landmark box diagonal or box_size)."""

    points: int  # landmarks per sample
    mean_error_px: float | None  # over every point of every sample
    p95_error_px: float | None  # 95th percentile (linear interpolation) of the same errors
    max_error_px: float | None
    mean_error_norm: float | None  # over samples with a positive scale
    p95_error_norm: float | None
    unscaled_samples: int  # samples left out of the normalized figures: FP32's points span no box


@dataclass(frozen=True, eq=False)
class LandmarkSamples(PerSample):
    errors: np.ndarray  # [N, K] pixels
    scale: np.ndarray  # [N] pixels; 0 when FP32's landmarks have a degenerate box

    @property
    def mean_px(self) -> np.ndarray:
        return self.errors.mean(axis=1)

    @property
    def p95_px(self) -> np.ndarray:
        return np.percentile(self.errors, 95, axis=1)

    @property
    def mean_norm(self) -> np.ndarray:
        """Each sample's mean error over its scale; NaN where the scale is 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.scale > 0, self.mean_px / self.scale, np.nan)

    def _summarize(self) -> LandmarkMetrics:
        scaled = self.scale > 0
        norm = self.errors[scaled] / self.scale[scaled, None]
        return LandmarkMetrics(
            n=len(self.errors), samples=self, points=self.errors.shape[1], mean_error_px=_mean(self.errors.ravel()),
            p95_error_px=float(np.percentile(self.errors, 95)) if self.errors.size else None,
            max_error_px=float(self.errors.max()) if self.errors.size else None,
            mean_error_norm=_mean(norm.ravel()), p95_error_norm=float(np.percentile(norm, 95)) if norm.size else None,
            unscaled_samples=int(np.count_nonzero(~scaled)))


def _points(a: np.ndarray, config: LandmarksConfig, what: str) -> np.ndarray:
    """[N, K, d] (d = dims when declared) or [N, K·d] / [N, 1, ..., 1, K·d] with dims -> x, y in pixels [N, K, 2]."""
    if a.ndim == 3 and a.shape[1] and a.shape[2] >= 2 and config.dims in (None, a.shape[2]):
        xy = a[..., :2]
    elif config.dims is None:
        raise InputError(f"{what} have shape {list(a.shape)}: declare dims (values per point, 2 or 3)")
    else:
        flat = _vector_rows(a, what, f"K·{config.dims}")
        if flat.shape[1] % config.dims:
            raise InputError(f"{what} have {flat.shape[1]} values per sample, not a multiple of dims {config.dims}")
        xy = flat.reshape(len(flat), flat.shape[1] // config.dims, config.dims)[..., :2]
    return xy * np.asarray(config.image_size) if config.coordinates == "normalized" else xy


def landmark_metrics(fp32: Any, int8: Any, config: LandmarksConfig = LandmarksConfig()) -> LandmarkMetrics:
    """Mean, p95 and max point error (x, y only) of INT8's landmarks against FP32's."""
    y, q = _pair(fp32, int8, "landmarks", min_ndim=2)
    y, q = _points(y, config, "FP32 landmarks"), _points(q, config, "INT8 landmarks")
    errors = np.hypot(*np.moveaxis(y - q, -1, 0))
    if config.box_size is not None:
        scale = np.full(len(y), config.box_size)
    else:
        extent = y.max(axis=1) - y.min(axis=1)
        scale = np.hypot(extent[:, 0], extent[:, 1])
    return LandmarkSamples(errors=errors, scale=scale).summary()


# ---------------------------------------------------------------------------------------------------------
# segmentation


@dataclass(frozen=True, kw_only=True)
class SegmentationMetrics(Metrics):
    """Mask IoU with FP32's mask. One channel: the foreground mask; C > 1 channels: per class (argmax)."""

    classes: int  # 1 (foreground of a one-channel mask) or C
    mean_iou: float | None  # mean over samples of each sample's IoU
    class_iou: tuple[float | None, ...]  # per class, Σ intersection / Σ union over the samples; None if absent
    mean_class_iou: float | None  # mean of class_iou over the classes present


@dataclass(frozen=True, eq=False)
class SegmentationSamples(PerSample):
    intersection: np.ndarray  # [N, classes] pixel counts
    union: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        """Each sample's IoU: mean over the classes present in either mask (empty ∪ empty = 1.0)."""
        present = (self.union > 0).sum(axis=1)
        total = (self.intersection / np.maximum(self.union, 1)).sum(axis=1)
        return np.where(present > 0, total / np.maximum(present, 1), 1.0)

    def _summarize(self) -> SegmentationMetrics:
        n, classes = self.union.shape
        inter, union = self.intersection.sum(axis=0), self.union.sum(axis=0)
        class_iou = tuple(float(i / u) if u else None for i, u in zip(inter, union, strict=True))
        present = [v for v in class_iou if v is not None]
        mean_class = (sum(present) / len(present) if present else 1.0) if n else None
        return SegmentationMetrics(n=n, samples=self, classes=classes, mean_iou=_mean(self.iou), class_iou=class_iou,
                                   mean_class_iou=mean_class)


def segmentation_metrics(fp32: Any, int8: Any,
                         config: SegmentationConfig = SegmentationConfig()) -> SegmentationMetrics:
    """Mask IoU per sample and pooled per class, masks [N, H, W] or [N, H, W, C]."""
    y, q = _pair(fp32, int8, "masks", min_ndim=3)
    if y.ndim not in (3, 4) or 0 in y.shape[1:]:
        raise InputError(f"segmentation masks must have shape [N, H, W] or [N, H, W, C], got {list(y.shape)}")
    n, pixels = len(y), y.shape[1] * y.shape[2]
    if y.ndim == 3 or y.shape[3] == 1:
        cut = math.log(config.threshold / (1 - config.threshold)) if config.sigmoid else config.threshold
        a, b = (m.reshape(n, pixels) >= cut for m in (y, q))
        return SegmentationSamples(intersection=(a & b).sum(axis=1)[:, None],
                                   union=(a | b).sum(axis=1)[:, None]).summary()
    classes = y.shape[3]
    a, b = (m.argmax(axis=3).reshape(n, pixels) + classes * np.arange(n)[:, None] for m in (y, q))

    def count(ids: np.ndarray) -> np.ndarray:
        return np.bincount(ids.ravel(), minlength=n * classes).reshape(n, classes)

    inter = count(a[a == b])
    return SegmentationSamples(intersection=inter, union=count(a) + count(b) - inter).summary()


# ---------------------------------------------------------------------------------------------------------
# The registry and the per-output declaration


@dataclass(frozen=True)
class TaskInputs:
    """What a task measures on: arrays by role (``config.reads``), labels, and anchors the caller loaded."""

    fp32: Mapping[str, np.ndarray]
    int8: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    anchors: np.ndarray | None = None


@dataclass(frozen=True)
class Task:
    config: type[TaskConfig]
    measure: Callable[[Any, TaskInputs], Metrics]
    summary: str  # one line, for help texts and docs


def _detection(config: DetectionConfig, inputs: TaskInputs) -> DetectionMetrics:
    if config.anchors is not None and inputs.anchors is None:
        raise InputError(f"detection declares anchors {config.anchors!r} but the caller did not load them")
    f, q = inputs.fp32, inputs.int8
    return detection_metrics(f["boxes"], f["scores"], q["boxes"], q["scores"], config=config,
                             fp32_classes=f.get("classes"), int8_classes=q.get("classes"), anchors=inputs.anchors)


TASKS: dict[str, Task] = {
    "generic": Task(GenericConfig, lambda c, i: output_fidelity(i.fp32["output"], i.int8["output"]),
                    "fidelity to FP32 only: SQNR, cosine similarity, max and mean absolute error"),
    "classification": Task(ClassificationConfig,
                           lambda c, i: classification_metrics(i.fp32["output"], i.int8["output"], i.labels, c),
                           "agreement with FP32's class, top-k containment, top-1 when labels are given"),
    "detection": Task(DetectionConfig, _detection,
                      "FP32's detections recovered by INT8: recall, precision, mean IoU, score error"),
    "landmarks": Task(LandmarksConfig, lambda c, i: landmark_metrics(i.fp32["output"], i.int8["output"], c),
                      "point error in pixels (mean, p95) and normalized by the landmarks' box"),
    "segmentation": Task(SegmentationConfig, lambda c, i: segmentation_metrics(i.fp32["output"], i.int8["output"], c),
                         "mask IoU with FP32's mask, per sample and per class"),
}


@dataclass(frozen=True)
class OutputTask:
    """The task declared on one model output, e.g. ``{"output": "regressors", "task": "detection",
    "form": "ssd", "scores": "classificators", "anchors": "anchors.npy"}``."""

    output: str
    task: str
    config: TaskConfig

    def __post_init__(self) -> None:
        _check(self.task in TASKS, f"unknown task {self.task!r}; known tasks: {', '.join(TASKS)}")
        _check(isinstance(self.config, TASKS[self.task].config),
               f"task {self.task} needs a {TASKS[self.task].config.__name__}, got {type(self.config).__name__}")

    @classmethod
    def parse(cls, mapping: Mapping[str, Any], where: str = "output task") -> OutputTask:
        """From a recipe/CLI mapping: ``output`` and ``task`` plus the task's config keys, strictly."""
        if not isinstance(mapping, Mapping):
            raise InputError(f"{where} must be a mapping with output and task, got {bounded_repr(mapping)}")
        rest = dict(mapping)
        output, task = rest.pop("output", None), rest.pop("task", None)
        if not isinstance(output, str) or not output:
            raise InputError(f"{where} needs output: the name of a model output, got {bounded_repr(output)}")
        where = f"{where} {output!r}"
        if not isinstance(task, str) or task not in TASKS:
            raise InputError(f"{where}: task must be one of {', '.join(TASKS)}, got {bounded_repr(task)}")
        declared = cls(output, task, TASKS[task].config.parse(rest, f"{where} ({task})"))
        try:
            declared.reads()
        except InputError as exc:
            raise InputError(f"{where} ({task}): {exc}") from None
        return declared

    def reads(self) -> dict[str, str]:
        """Role -> the model output it reads."""
        return self.config.reads(self.output)

    def measure(self, fp32: Mapping[str, Any], int8: Mapping[str, Any], *, labels: Any = None,
                anchors: Any = None) -> Metrics:
        """The task's metrics from both models' outputs by name ([N, ...] each)."""
        roles = self.reads()
        for name in roles.values():
            for which, outputs in (("FP32", fp32), ("INT8", int8)):
                if name not in outputs:
                    raise InputError(f"output task {self.output!r} ({self.task}) reads {name!r}, which the {which} "
                                     f"outputs lack (outputs: {', '.join(map(str, outputs)) or 'none'})")
        inputs = TaskInputs(fp32={r: fp32[n] for r, n in roles.items()}, int8={r: int8[n] for r, n in roles.items()},
                            labels=labels, anchors=anchors)
        return TASKS[self.task].measure(self.config, inputs)
