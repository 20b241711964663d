"""Does the calibration set cover what production data does to the model's activations?

Per activation tensor: max|x| and p99.99|x| of the calibration set and of production data, their
ratio, and, for the layers where production goes beyond calibration, which calibration conditions
alone reach production's range (per-condition statistics merge into the set's, so one pass serves both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.calib.collect import ActivationStats, collect
from edgeq.calib.data import CalibrationSet
from edgeq.calib.stats import TensorStats
from edgeq.converter.load import FloatModel

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


@dataclass(frozen=True)
class CoverageReport:
    threshold: float
    layers: tuple[LayerCoverage, ...]
    per_condition_max: dict[str, tuple[float, ...]] = field(default_factory=dict)  # condition -> per-layer max|x|

    @property
    def flagged(self) -> tuple[LayerCoverage, ...]:
        return tuple(layer for layer in self.layers if layer.flagged)


def _subset(data: CalibrationSet, indices: np.ndarray, name: str) -> CalibrationSet:
    return CalibrationSet(source=f"{data.source}[{name}]", arrays=tuple(a[indices] for a in data.arrays),
                          preprocessing=data.preprocessing, conditions=None)


def per_condition_stats(float_model: FloatModel, data: CalibrationSet) -> dict[str, ActivationStats]:
    """Statistics per condition (one group, 'all', when the set has no conditions)."""
    labels = np.asarray(data.conditions if data.conditions else ["all"] * len(data))
    return {name: collect(float_model.flatbuffer, _subset(data, np.flatnonzero(labels == name), name))
            for name in dict.fromkeys(labels.tolist())}


def _merged(groups: dict[str, ActivationStats]) -> dict[int, TensorStats]:
    merged: dict[int, TensorStats] = {}
    for stats in groups.values():
        for index, tensor in stats.tensors.items():
            merged[index] = merged[index].merge(tensor) if index in merged else tensor
    return merged


def coverage(float_model: FloatModel, calibration: CalibrationSet, production: CalibrationSet,
             threshold: float = 1.0) -> CoverageReport:
    groups = per_condition_stats(float_model, calibration)
    calib = _merged(groups)
    prod = collect(float_model.flatbuffer, production)
    names = next(iter(groups.values())).names
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
            closing_conditions=closing))
    per_condition = {name: tuple(g.tensors[i].abs_max for i in sorted(calib)) for name, g in groups.items()}
    return CoverageReport(threshold=threshold, layers=tuple(layers), per_condition_max=per_condition)


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
