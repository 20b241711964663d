"""Does the calibration set cover what production data does to the model's activations?

Per activation tensor: max|x| and p99.99|x| of the calibration set and of production data, their
ratio, and, for the layers where production goes beyond calibration, which calibration conditions
alone reach production's range (per-condition statistics merge into the set's, so one pass serves both).
Per tensor also the calibration sample that sets its max|x|, how far beyond every other sample it sits
and the max|x| without it; and the calibration set's outlier samples (``edgeq.calib.outliers``), named by
their manifest id, condition and source image for sets from ``edgeq datagen``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.artifacts import OutlierSample
from edgeq.calib.collect import ActivationStats, collect, describe_samples
from edgeq.calib.data import CalibrationSet
from edgeq.calib.estimators import SampleGuard, sample_stretch
from edgeq.calib.outliers import outlier_samples
from edgeq.calib.stats import SampleExtremes
from edgeq.intake.float_model import FloatModel

TOP_QUANTILE = 0.9999


@dataclass(frozen=True)
class LayerCoverage:
    name: str
    producer: str
    calib_max: float  # max|x| over the calibration set
    calib_p9999: float
    production_max: float
    production_p9999: float
    ratio: float  # calib_max / production_max: below the threshold, production leaves the calibrated range
    flagged: bool
    closing_conditions: tuple[str, ...] = ()  # calibration conditions whose own max|x| reaches production's
    calib_top_sample: int | None = None  # the calibration sample with the largest max|x| here
    calib_stretch: float | None = None  # its max|x| / every other calibration sample's (None: unknown or 0)
    calib_max_without_top: float = 0.0  # max|x| of the other calibration samples


@dataclass(frozen=True)
class CoverageReport:
    threshold: float
    layers: tuple[LayerCoverage, ...]
    per_condition_max: dict[str, tuple[float, ...]] = field(default_factory=dict)  # condition -> per-layer max|x|
    outlier_samples: tuple[OutlierSample, ...] = ()  # calibration samples that alone set tensors' ranges

    @property
    def flagged(self) -> tuple[LayerCoverage, ...]:
        return tuple(layer for layer in self.layers if layer.flagged)


def _subset(data: CalibrationSet, indices: np.ndarray, name: str) -> CalibrationSet:
    return CalibrationSet(source=f"{data.source}[{name}]", arrays=tuple(a[indices] for a in data.arrays),
                          preprocessing=data.preprocessing, conditions=None)


def per_condition_stats(float_model: FloatModel, data: CalibrationSet) -> dict[str, ActivationStats]:
    """Statistics per condition (one group, 'all', when the set has no conditions); samples keep their index
    in ``data``."""
    labels = np.asarray(data.conditions if data.conditions else ["all"] * len(data))
    groups = {}
    for name in dict.fromkeys(labels.tolist()):
        indices = np.flatnonzero(labels == name)
        groups[name] = collect(float_model.flatbuffer, _subset(data, indices, name), sample_indices=indices.tolist())
    return groups


def _merged(groups: dict[str, ActivationStats]) -> dict[tuple[int, int], SampleExtremes]:
    """Per tensor, the sample extremes of every group together (the groups' samples are disjoint)."""
    merged: dict[tuple[int, int], SampleExtremes] = {}
    for stats in groups.values():
        for key, extremes in stats.extremes.items():
            merged[key] = merged[key].merge(extremes) if key in merged else extremes
    return merged


def coverage(float_model: FloatModel, calibration: CalibrationSet, production: CalibrationSet,
             threshold: float = 1.0, guard: SampleGuard | None = None) -> CoverageReport:
    groups = per_condition_stats(float_model, calibration)
    extremes = _merged(groups)
    calib = {key: e.total() for key, e in extremes.items()}
    prod = collect(float_model.flatbuffer, production)
    first = next(iter(groups.values()))
    names = first.names
    layers = []
    for index in sorted(calib):
        c, p = calib[index], prod.tensors[index]
        ratio = c.abs_max / p.abs_max if p.abs_max > 0 else float("inf")
        flagged = ratio < threshold
        closing = tuple(name for name, g in groups.items()
                        if flagged and g.tensors[index].abs_max >= p.abs_max) if len(groups) > 1 else ()
        layers.append(LayerCoverage(
            name=names[index], producer=prod.producers[index], calib_max=c.abs_max,
            calib_p9999=c.abs_quantile(TOP_QUANTILE), production_max=p.abs_max,
            production_p9999=p.abs_quantile(TOP_QUANTILE), ratio=ratio, flagged=flagged,
            closing_conditions=closing, calib_top_sample=extremes[index].top_sample,
            calib_stretch=sample_stretch(extremes[index]), calib_max_without_top=extremes[index].rest.abs_max))
    per_condition = {name: tuple(g.tensors[i].abs_max for i in sorted(calib)) for name, g in groups.items()}
    described = describe_samples(calibration) or []
    merged = ActivationStats(model_fingerprint=first.model_fingerprint,
                             calibration_fingerprint=calibration.fingerprint(), samples=len(calibration),
                             names=names, producers=first.producers, tensors=calib, extremes=extremes,
                             sample_info={i: d for i, d in enumerate(described) if d})
    return CoverageReport(threshold=threshold, layers=tuple(layers), per_condition_max=per_condition,
                          outlier_samples=outlier_samples(merged, guard))


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
