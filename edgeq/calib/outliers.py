"""Outlier samples: calibration samples that set activation ranges on their own.

A sample *stretches* a tensor by A1 / A2 when its max|x| there is A1 and every other sample's is at most A2
(``edgeq.calib.estimators.sample_stretch``; tensors where every other sample is exactly 0 are not counted:
there is no scale to compare with). An outlier sample stretches at least one tensor by the guard's
``factor`` (10); it is listed with the tensors it stretches by at least the guard's ``follow`` (3), the
largest stretch, how many ranges the sample guard chose without it and the tensors it stretches most,
named by index and, as far as the set says, by its datagen manifest id, condition and source image.
Pure functions of ``ActivationStats``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edgeq.artifacts import OutlierSample, QuantizedArtifact, SampleDominance
from edgeq.calib.collect import ActivationStats
from edgeq.calib.estimators import SampleGuard, sample_stretch
from edgeq.calib.stats import TensorStats
from edgeq.tflite.model import TensorKey

WORST_TENSORS = 5  # per outlier sample, the tensors it stretches most


def _signed_extreme(stats: TensorStats) -> float:
    """The value of largest magnitude (the max on a tie)."""
    return stats.min if -stats.min > stats.max else stats.max


def outlier_samples(stats: ActivationStats, guard: SampleGuard | None = None,
                    trimmed: Mapping[TensorKey, int | None] | None = None) -> tuple[OutlierSample, ...]:
    """Every sample that stretches at least one tensor by ``guard.factor``: most tensors first, then the largest
    stretch, then the lower index. ``trimmed`` maps a tensor to the sample the guard left out of its range."""
    guard = guard or SampleGuard()
    trimmed = trimmed or {}
    found: dict[int, list[SampleDominance]] = {}
    for key in sorted(stats.extremes):
        extremes = stats.extremes[key]
        stretch = sample_stretch(extremes)
        if stretch is None or stretch < guard.follow:
            continue
        (top, _), (second, _) = extremes.top_abs[:2]
        found.setdefault(top, []).append(SampleDominance(
            tensor=stats.names[key], value=_signed_extreme(extremes.top), next_value=_signed_extreme(extremes.rest),
            next_sample=second, factor=float(stretch), trimmed=trimmed.get(key) == top))
    found = {sample: rows for sample, rows in found.items() if max(r.factor for r in rows) >= guard.factor}
    out = []
    for sample, rows in found.items():
        rows.sort(key=lambda r: -r.factor)  # stable: tensors of equal stretch stay in graph order
        info = stats.sample_info.get(sample, {})
        out.append(OutlierSample(sample=sample, tensors=len(rows), max_factor=rows[0].factor,
                                 trimmed=sum(r.trimmed for r in rows), id=info.get("id"),
                                 condition=info.get("condition"), source=info.get("source"),
                                 worst=tuple(rows[:WORST_TENSORS])))
    return tuple(sorted(out, key=lambda o: (-o.tensors, -o.max_factor, o.sample)))


def describe(sample: OutlierSample) -> str:
    """``sample 17 (id original-00017, condition original, source img_3.png)``."""
    named = [f"{field} {value}" for field, value in (("id", sample.id), ("condition", sample.condition),
                                                     ("source", sample.source)) if value]
    return f"sample {sample.sample}" + (f" ({', '.join(named)})" if named else "")


def summary(sample: OutlierSample, tensors: int) -> str:
    """One line: who, how many tensors, by how much, what the guard did."""
    worst = sample.worst[0] if sample.worst else None
    text = (f"{describe(sample)} alone sets the range of {sample.tensors} of {tensors} activation tensors, "
            f"up to {sample.max_factor:.3g}x beyond every other sample")
    if worst is not None:
        text += f" ({worst.tensor}: {worst.value:.4g} vs {worst.next_value:.4g})"
    if sample.trimmed:
        text += f"; the sample guard left it out of {sample.trimmed} range(s)"
    return text


def samples_document(artifact: QuantizedArtifact) -> dict[str, Any]:
    """The report section of a converted model: the sample guard's settings (from its recipe), the outlier
    samples with a line for each, and the ranges the guard chose without a sample."""
    recipe = artifact.recipe
    default = SampleGuard()
    guard = {"enabled": bool(recipe.get("sample_guard", True)),
             "factor": recipe.get("sample_guard_factor", default.factor),
             "follow": recipe.get("sample_guard_follow", default.follow), "min_samples": default.min_samples}
    tensors = len(artifact.ranges.ranges)
    trimmed = [{"tensor": r.name, "sample": r.trimmed_sample, "stretch": r.sample_stretch, "min": r.min, "max": r.max,
                "untrimmed": list(r.untrimmed) if r.untrimmed else None}
               for r in artifact.ranges.ranges if r.trimmed_sample is not None]
    return {"guard": guard, "samples": artifact.calibration_samples, "tensors": tensors,
            "tracked": any(r.top_max for r in artifact.ranges.ranges),
            "outlier_samples": [dataclasses.asdict(s) for s in artifact.outlier_samples],
            "summary": [summary(s, tensors) for s in artifact.outlier_samples], "trimmed": trimmed}
