"""From activation statistics to the range table convert stamps: the recipe's estimator per tensor, its
override rules, and the sample guard. Lives with the estimators so validate and the report choose ranges
exactly as convert does."""

from __future__ import annotations

from dataclasses import replace

from edgeq.artifacts import RangeTable, SampleValue, TensorRange
from edgeq.calib.collect import ActivationStats
from edgeq.calib.estimators import SampleGuard, estimate, outlier_set
from edgeq.errors import InputError
from edgeq.quant_recipe import QuantRecipe

SIDECAR_SAMPLES = 3  # per tensor, the sidecar lists this many samples by largest max and by smallest min


def sample_guard(recipe: QuantRecipe, stats: ActivationStats | None = None) -> SampleGuard:
    """The recipe's sample guard thresholds, with the outlier samples of ``stats`` when given."""
    guard = SampleGuard(factor=recipe.sample_guard_factor, follow=recipe.sample_guard_follow)
    return replace(guard, outliers=outlier_set(stats.extremes.values(), guard)) if stats is not None else guard


def choose_ranges(stats: ActivationStats, recipe: QuantRecipe) -> RangeTable:
    """A range per activation tensor, in (subgraph, tensor) order: the recipe's method, or the first override
    rule that matches; the recipe's sample guard (when on) applies to every estimator but minmax."""
    guard = sample_guard(recipe, stats) if recipe.sample_guard else None
    used = [0] * len(recipe.overrides)
    ranges = []
    for key in sorted(stats.tensors):
        name, producer = stats.names[key], stats.producers[key]
        method, percentile, why = recipe.method, recipe.percentile, ""
        for k, rule in enumerate(recipe.overrides):
            if rule.matches(name, producer):
                used[k] += 1
                method = rule.method
                percentile = rule.percentile if rule.percentile is not None else recipe.percentile
                why = f"recipe override #{k + 1} ({rule.describe()}); "
                break
        tensor_stats = stats.tensors[key]
        if tensor_stats.count == 0:
            where = f" of subgraph {key[0]} (its loop or branch never ran)" if key[0] else ""
            raise InputError(f"tensor '{name}'{where} was never computed during calibration")
        extremes = stats.extremes.get(key)
        choice = estimate(tensor_stats, method, percentile=percentile, auto_thresholds=recipe.auto_thresholds,
                          extremes=extremes, guard=guard)
        ranges.append(TensorRange(
            name=name, min=float(choice.lo), max=float(choice.hi), estimator=choice.estimator,
            rule=why + choice.rule, outlier_ratio=float(choice.outlier_ratio),
            clip_fraction=float(choice.clip_fraction),
            top_max=tuple(SampleValue(s, v) for s, v in extremes.top_max[:SIDECAR_SAMPLES]) if extremes else (),
            top_min=tuple(SampleValue(s, v) for s, v in extremes.top_min[:SIDECAR_SAMPLES]) if extremes else (),
            sample_stretch=choice.sample_stretch, trimmed_sample=choice.trimmed_sample,
            untrimmed=choice.untrimmed))
    unused = [k for k, n in enumerate(used) if n == 0]
    if unused:
        rule = recipe.overrides[unused[0]]
        raise InputError(f"recipe override #{unused[0] + 1} ({rule.describe()}) matches no activation tensor")
    return RangeTable(model_fingerprint=stats.model_fingerprint, ranges=tuple(ranges))
