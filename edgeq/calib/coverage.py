"""Does the calibration set cover what production data does to the model's activations?

Per activation tensor: max|x| and p99.99|x| of the calibration set and of production data, their
ratio, and, for the layers where production goes beyond calibration, which calibration conditions
alone reach production's range (per-condition statistics merge into the set's, so one pass serves both).
Per tensor also the calibration sample that sets its max|x|, how far beyond every other sample it sits
and the max|x| without it; and the calibration set's outlier samples (``edgeq.calib.outliers``), named by
their manifest id, condition and source image for sets from ``edgeq datagen``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeq.artifacts import OutlierSample
from edgeq.calib.collect import ActivationStats, collect, describe_samples
from edgeq.calib.data import CalibrationSet
from edgeq.calib.estimators import SampleGuard, sample_stretch
from edgeq.calib.outliers import outlier_samples
from edgeq.calib.stats import SampleExtremes, TensorStats
from edgeq.intake.float_model import FloatModel
from edgeq.tflite.model import TensorKey

TOP_QUANTILE = 0.9999


@dataclass(frozen=True)
class LayerCoverage:
    name: str
    producer: str
    calib_max: float  # max|x| over the calibration set
    calib_p9999: float
    production_max: float
    production_p9999: float | None  # None: production logs hold only min and max per inference
    ratio: float  # calib_max / production_max: below the threshold, production leaves the calibrated range
    flagged: bool
    closing_conditions: tuple[str, ...] = ()  # calibration, then candidate, conditions reaching production's max|x|
    calib_top_sample: int | None = None  # the calibration sample with the largest max|x| here
    calib_stretch: float | None = None  # its max|x| / every other calibration sample's (None: unknown or 0)
    calib_max_without_top: float = 0.0  # max|x| of the other calibration samples
    # INT8 logs: the tensor's codes reached the end of its range where production may have gone beyond calibration
    # unseen (log_coverage.saturation_gaps): its max is only a lower bound, so it is flagged whatever the ratio.
    saturated: bool = False


@dataclass(frozen=True)
class CoverageReport:
    threshold: float
    layers: tuple[LayerCoverage, ...]
    per_condition_max: dict[str, tuple[float, ...]] = field(default_factory=dict)  # condition -> per-layer max|x|
    outlier_samples: tuple[OutlierSample, ...] = ()  # calibration samples that alone set tensors' ranges
    candidate_max: dict[str, tuple[float, ...]] = field(default_factory=dict)  # candidate condition -> per-layer max|x|

    @property
    def flagged(self) -> tuple[LayerCoverage, ...]:
        return tuple(layer for layer in self.layers if layer.flagged)


Collect = Callable[..., ActivationStats]  # edgeq.calib.collect.collect's signature: (flatbuffer, set, ...)


def _subset(data: CalibrationSet, indices: np.ndarray, name: str) -> CalibrationSet:
    return CalibrationSet(source=f"{data.source}[{name}]", arrays=tuple(a[indices] for a in data.arrays),
                          preprocessing=data.preprocessing, conditions=None)


def per_condition_stats(float_model: FloatModel, data: CalibrationSet,
                        collect_fn: Collect = collect) -> dict[str, ActivationStats]:
    """Statistics per condition (one group, 'all', when the set has no conditions); samples keep their index
    in ``data``."""
    labels = np.asarray(data.conditions if data.conditions else ["all"] * len(data))
    groups = {}
    for name in dict.fromkeys(labels.tolist()):
        indices = np.flatnonzero(labels == name)
        groups[name] = collect_fn(float_model.flatbuffer, _subset(data, indices, name),
                                  sample_indices=indices.tolist())
    return groups


def _merged(groups: dict[str, ActivationStats]) -> dict[tuple[int, int], SampleExtremes]:
    """Per tensor, the sample extremes of every group together (the groups' samples are disjoint)."""
    merged: dict[tuple[int, int], SampleExtremes] = {}
    for stats in groups.values():
        for key, extremes in stats.extremes.items():
            merged[key] = merged[key].merge(extremes) if key in merged else extremes
    return merged


@dataclass(frozen=True)
class CalibrationSide:
    """The calibration set's statistics, once: per condition, merged per tensor, and the set they came from.

    Production data (images or logs) is compared against this; the statistics are computed in one place,
    ``calibration_side``, whichever way production comes in."""

    data: CalibrationSet
    groups: dict[str, ActivationStats]
    extremes: dict[TensorKey, SampleExtremes]
    # Conditions of a candidate set (e.g. every datagen condition rendered from the calibration's images): not part
    # of the calibration, only asked which of them reach production's range. At a threshold <= 1 a calibration
    # condition never can (the set's max is the largest condition's), so naming what closes a gap needs these.
    candidates: dict[str, ActivationStats] = field(default_factory=dict)

    @property
    def first(self) -> ActivationStats:
        return next(iter(self.groups.values()))

    @property
    def names(self) -> dict[TensorKey, str]:
        return self.first.names

    @cached_property
    def totals(self) -> dict[TensorKey, tuple[float, float]]:
        """Per tensor, the set's max|x| and p99.99|x| (computed once: logs compare them per segment and window)."""
        return {key: (t.abs_max, _p9999(t)) for key, t in ((k, e.total()) for k, e in self.extremes.items())}

    def layer(self, key: TensorKey, production_max: float, production_p9999: float | None,
              threshold: float) -> LayerCoverage:
        """One tensor's comparison: ratio, flag and the conditions that alone reach production's max|x|."""
        extremes = self.extremes[key]
        calib_max, calib_p9999 = self.totals[key]
        ratio = calib_max / production_max if production_max > 0 else float("inf")
        flagged = ratio < threshold
        own = self.groups if len(self.groups) > 1 else {}
        closing = tuple(dict.fromkeys(name for groups in (own, self.candidates) for name, g in groups.items()
                                      if flagged and g.tensors[key].abs_max >= production_max))
        return LayerCoverage(
            name=self.names[key], producer=self.first.producers[key], calib_max=calib_max,
            calib_p9999=calib_p9999, production_max=production_max,
            production_p9999=production_p9999, ratio=ratio, flagged=flagged, closing_conditions=closing,
            calib_top_sample=extremes.top_sample, calib_stretch=sample_stretch(extremes),
            calib_max_without_top=extremes.rest.abs_max)

    def report(self, layers: dict[TensorKey, LayerCoverage], threshold: float,
               guard: SampleGuard | None = None) -> CoverageReport:
        """The report over ``layers`` (in tensor order): per-condition maxima of those tensors and the outlier
        calibration samples."""
        keys = sorted(layers)
        per_condition = {name: tuple(g.tensors[k].abs_max for k in keys) for name, g in self.groups.items()}
        candidate_max = {name: tuple(g.tensors[k].abs_max for k in keys) for name, g in self.candidates.items()}
        described = describe_samples(self.data) or []
        merged = ActivationStats(model_fingerprint=self.first.model_fingerprint,
                                 calibration_fingerprint=self.data.fingerprint(), samples=len(self.data),
                                 names=self.names, producers=self.first.producers,
                                 tensors={key: e.total() for key, e in self.extremes.items()},
                                 extremes=self.extremes, sample_info={i: d for i, d in enumerate(described) if d})
        return CoverageReport(threshold=threshold, layers=tuple(layers[k] for k in keys),
                              per_condition_max=per_condition, outlier_samples=outlier_samples(merged, guard),
                              candidate_max=candidate_max)


def _p9999(stats: TensorStats) -> float:
    """p99.99 of |x|; NaN (null in JSON) for a tensor that never held a value (a data-dependent shape of 0)."""
    return stats.abs_quantile(TOP_QUANTILE) if stats.count else float("nan")


def calibration_side(float_model: FloatModel, calibration: CalibrationSet, collect_fn: Collect = collect,
                     candidates: CalibrationSet | None = None) -> CalibrationSide:
    groups = per_condition_stats(float_model, calibration, collect_fn)
    named = per_condition_stats(float_model, candidates, collect_fn) if candidates is not None else {}
    return CalibrationSide(data=calibration, groups=groups, extremes=_merged(groups), candidates=named)


def coverage(float_model: FloatModel, calibration: CalibrationSet, production: CalibrationSet,
             threshold: float = 1.0, guard: SampleGuard | None = None,
             collect_fn: Collect = collect, candidates: CalibrationSet | None = None) -> CoverageReport:
    """Calibration against production images: both sets run through the float model the same way."""
    side = calibration_side(float_model, calibration, collect_fn, candidates)
    prod = collect_fn(float_model.flatbuffer, production)
    layers = {key: side.layer(key, prod.tensors[key].abs_max, _p9999(prod.tensors[key]), threshold)
              for key in side.extremes}
    return side.report(layers, threshold, guard)


def plot_coverage(report: CoverageReport, path: Path) -> Path:
    """Layer-wise max|x|: one line per calibration condition, production in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(report.layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(x) + 4), 4), dpi=100)
    for name, maxima in report.per_condition_max.items():
        ax.plot(x, maxima, linewidth=1, label=f"calibration: {name}")
    ax.plot(x, [layer.production_max for layer in report.layers], color="black", linewidth=2, label="production")
    flagged = [i for i, layer in enumerate(report.layers) if layer.flagged]
    if flagged:
        ax.scatter(flagged, [report.layers[i].production_max for i in flagged], color="red", zorder=3,
                   label="production beyond calibration")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("activation tensor (execution order)")
    ax.set_ylabel("max |activation|")
    ax.set_title("Calibration coverage per layer")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
