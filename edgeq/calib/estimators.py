"""Activation-range estimators: pure functions from a tensor's ``TensorStats`` to an int8 clipping range.

Every range contains 0 (a zero point must represent it exactly) and has ``hi > lo``: an all-zero tensor
gets ``(0.0, ZERO_WIDTH)``, so a scale can always be formed and zero is still exact. Estimators see
only the histogram, never the raw samples, so the cost of a choice does not grow with the data set.

The sample guard (``SampleGuard``) keeps one calibration sample from setting ranges on its own. Per tensor,
with A1 >= A2 >= ... >= A8 the largest per-sample max|x| (A1 from the most extreme sample), the stretch
A1 / A2 says how far that sample sits beyond every other, the spread A2 / A8 how much the samples after it
disagree. On a tensor at least ``min_samples`` samples reached, where the stretch is at least the spread
(the top sample is further beyond the next one than the next one is beyond the eighth), the estimator
runs on the statistics of the other samples when the stretch is at least ``factor`` (10), or at least
``follow`` (3) and the sample is an *outlier sample*: one the first rule trims somewhere in the model. A
pathological input grows through the network (measured on MediaPipe's short-range face detector with one
black image among 64: 3.7x beyond every other sample twelve layers before the logits, 20x at them), so
once a sample is known to be pathological the guard follows it upstream at a lower factor. A tail that
several samples share is never trimmed (A1 / A2 is small then), nor one that continues a wide spread of
per-sample maxima. ``minmax`` is never guarded: it is the observed range by definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from edgeq.artifacts import Estimator
from edgeq.calib.stats import HIST_BINS, SampleExtremes, TensorStats
from edgeq.errors import UsageError

ZERO_WIDTH = 1e-6  # range width given to an all-zero tensor: (0.0, ZERO_WIDTH)
KL_BINS = 2048  # |x| histogram resolution of the entropy (KL) calibration, as in TensorRT
KL_MIN_KEPT = 0.99  # KL may clip at most the top 1 % of |x| (see kl_range)
INT8_STEPS = 255  # affine int8: 256 levels, scale = (hi - lo) / 255
_HALF = HIST_BINS // 2
_COARSE = 256  # mse_range searches at most this many candidates per side before refining
GUARD_FACTOR = 10.0  # the sample guard trims a sample whose max|x| is at least this many times every other's
GUARD_FOLLOW = 3.0  # ... and an outlier sample (trimmed somewhere by the factor) wherever it stretches this much
GUARD_MIN_SAMPLES = 16  # ... on tensors that at least this many samples reached


@dataclass(frozen=True)
class RangeChoice:
    """The clipping range chosen for one tensor, and why."""

    lo: float  # lo <= 0 <= hi and hi > lo
    hi: float
    estimator: Estimator  # the estimator that produced the range (never AUTO)
    rule: str  # "method=mse", or which AUTO rule fired with the ratio that fired it
    outlier_ratio: float  # max|x| / p99|x| (of the statistics the range was chosen from)
    clip_fraction: float  # expected share of values outside [lo, hi], from the histogram (every sample)
    sample_stretch: float | None = None  # top sample's max|x| / every other sample's (None: not known or 0)
    trimmed_sample: int | None = None  # the sample the guard left out of this range
    untrimmed: tuple[float, float] | None = None  # the range with every sample, when the guard trimmed one

    def __post_init__(self) -> None:
        if not (self.lo <= 0.0 <= self.hi and self.hi > self.lo):
            raise ValueError(f"a range must contain 0 and be non-empty, got [{self.lo}, {self.hi}]")
        if self.estimator is Estimator.AUTO:
            raise ValueError("a RangeChoice names the estimator that ran, not AUTO")


def _require(stats: TensorStats) -> None:
    if stats.count == 0:
        raise ValueError("cannot estimate a range from empty stats (the tensor was never observed)")


def _finish(lo: float, hi: float) -> tuple[float, float]:
    """Widen to contain 0 and to at least ZERO_WIDTH (all-zero or subnormal-only tensors)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    return (lo, lo + ZERO_WIDTH) if hi - lo < ZERO_WIDTH else (lo, hi)


def outlier_ratio(stats: TensorStats) -> float:
    """max|x| / p99|x|: how far the extreme values sit beyond the bulk (1.0 all-zero, inf if p99 is 0)."""
    _require(stats)
    abs_max = stats.abs_max
    if abs_max == 0:
        return 1.0
    p99 = stats.abs_quantile(0.99)
    return math.inf if p99 == 0 else abs_max / p99


def clip_fraction(stats: TensorStats, lo: float, hi: float) -> float:
    """Expected share of values outside [lo, hi], taking each bin's mass as uniform over its extent."""
    _require(stats)
    counts, lows, highs = stats.occupied_bins()
    width = highs - lows
    overlap = np.clip(np.minimum(highs, hi) - np.maximum(lows, lo), 0.0, None)
    # A bin narrowed to a point (all its values equal min == max) is inside or outside as a whole.
    point_inside = (lows >= lo) & (lows <= hi)
    inside = np.where(width > 0, overlap / np.where(width > 0, width, 1.0), point_inside.astype(np.float64))
    return float(np.clip(1.0 - float(np.dot(counts, inside)) / stats.count, 0.0, 1.0))


def minmax_range(stats: TensorStats) -> tuple[float, float]:
    """The observed range, widened to contain 0."""
    _require(stats)
    return _finish(stats.min, stats.max)


def percentile_range(stats: TensorStats, percentile: float = 99.99) -> tuple[float, float]:
    """Clip the ``100 - percentile`` % most extreme values on each side that has values.

    A one-sided tensor (min >= 0, e.g. after ReLU) keeps lo = 0 and clips only the top; a two-sided one
    clips both tails, lo = quantile(1 - p), hi = quantile(p). Monotone in ``percentile`` (up to the
    ZERO_WIDTH floor a collapsed [0, 0] range is widened to) and always inside ``minmax_range``.
    """
    _require(stats)
    if not 50.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [50, 100], got {percentile}")
    q = percentile / 100.0
    lo = 0.0 if stats.min >= 0 else stats.quantile(1.0 - q)
    hi = 0.0 if stats.max <= 0 else stats.quantile(q)
    return _finish(lo, hi)


def _clip_costs(x: np.ndarray, c: np.ndarray, candidates: np.ndarray, above: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mass clipped, sum of squared clipping distances) for each candidate bound, via prefix sums."""
    p0 = np.concatenate([[0.0], np.cumsum(c)])
    p1 = np.concatenate([[0.0], np.cumsum(c * x)])
    p2 = np.concatenate([[0.0], np.cumsum(c * x * x)])
    if above:  # values > bound are clipped down to it
        k = np.searchsorted(x, candidates, side="right")
        n, s1, s2 = p0[-1] - p0[k], p1[-1] - p1[k], p2[-1] - p2[k]
    else:  # values < bound are clipped up to it
        k = np.searchsorted(x, candidates, side="left")
        n, s1, s2 = p0[k], p1[k], p2[k]
    return n, np.maximum(s2 - 2.0 * candidates * s1 + candidates * candidates * n, 0.0)


def _candidates(extreme: float, width: float) -> np.ndarray:
    """Grid points width, 2*width, ... strictly inside (0, |extreme|), then |extreme|, signed like it."""
    if extreme == 0:
        return np.zeros(1)
    magnitude = abs(extreme)
    grid = np.arange(1, math.ceil(magnitude / width), dtype=np.float64) * width
    return math.copysign(1.0, extreme) * np.append(grid[grid < magnitude], magnitude)


def _subsample(n: int, start: int, stop: int, stride: int) -> np.ndarray:
    """Indices start, start+stride, ... below stop, plus stop-1; within [0, n)."""
    start, stop = max(start, 0), min(stop, n)
    return np.unique(np.append(np.arange(start, stop, stride), stop - 1))


def mse_range(stats: TensorStats) -> tuple[float, float]:
    """The range minimizing the expected squared error of int8 affine quantization under the histogram.

    Cost of [lo, hi], with scale = (hi - lo) / 255 and each bin's mass at its centre: scale**2 / 12
    rounding noise for every in-range value plus the squared distance to the range for every clipped
    one. Candidate bounds are the histogram's own bin edges (and the observed extremes); a side with no
    values stays at 0, so one-sided tensors search hi only. Two-sided tensors are searched on a coarse
    2-D grid first, then at full resolution around the coarse optimum.
    """
    _require(stats)
    if stats.abs_max == 0:
        return _finish(0.0, 0.0)
    counts, lows, highs = stats.occupied_bins()
    lo_bounds = _candidates(min(stats.min, 0.0), stats.radius / _HALF)
    hi_bounds = _candidates(max(stats.max, 0.0), stats.radius / _HALF)
    # Costs in units of the radius (a power of two) so squares cannot overflow; the argmin is unchanged.
    unit = stats.radius
    x, c = (lows + highs) / (2.0 * unit), counts.astype(np.float64)
    lo_cand, hi_cand = lo_bounds / unit, hi_bounds / unit
    n_below, cost_below = _clip_costs(x, c, lo_cand, above=False)
    n_above, cost_above = _clip_costs(x, c, hi_cand, above=True)
    total = c.sum()

    def best(li: np.ndarray, hi_: np.ndarray) -> tuple[int, int]:
        span = hi_cand[hi_][None, :] - lo_cand[li][:, None]
        inside = total - n_below[li][:, None] - n_above[hi_][None, :]
        cost = inside * (span / INT8_STEPS) ** 2 / 12.0 + cost_below[li][:, None] + cost_above[hi_][None, :]
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        return int(li[a]), int(hi_[b])

    n_lo, n_hi = len(lo_cand), len(hi_cand)
    s_lo, s_hi = max(1, math.ceil(n_lo / _COARSE)), max(1, math.ceil(n_hi / _COARSE))
    a, b = best(_subsample(n_lo, 0, n_lo, s_lo), _subsample(n_hi, 0, n_hi, s_hi))
    if s_lo > 1 or s_hi > 1:
        a, b = best(_subsample(n_lo, a - 2 * s_lo, a + 2 * s_lo + 1, 1),
                    _subsample(n_hi, b - 2 * s_hi, b + 2 * s_hi + 1, 1))
    return _finish(lo_bounds[a], hi_bounds[b])


def abs_histogram(stats: TensorStats, bins: int = KL_BINS) -> np.ndarray:
    """Counts of |x| in ``bins`` uniform bins over [0, max|x|], re-binned from the stats histogram.

    Mass is taken as uniform within each stats bin, narrowed to the known bounds of |x| (max|x|, and
    min for a one-sided tensor), so the result holds fractional counts that sum to ``stats.count``.
    """
    _require(stats)
    abs_max = stats.abs_max
    floor = stats.min if stats.min >= 0 else -stats.max if stats.max <= 0 else 0.0  # |x| >= floor
    out = np.zeros(bins)
    if floor == abs_max:  # every |x| is the same: a point mass (bin 0 when all zero)
        out[-1 if abs_max > 0 else 0] = stats.count
        return out
    folded = (stats.hist[_HALF:] + stats.hist[_HALF - 1::-1]).astype(np.float64)  # bin j: (j, j+1] widths
    width = stats.radius / _HALF
    k = math.ceil(abs_max / width)  # bins k.. are empty
    # In units of the stats bin width (interpolation does not change under scaling): a tensor of subnormal values
    # would otherwise give subnormal edge spacings, infinite slopes and NaN counts.
    top, bottom = abs_max / width, floor / width
    xp = np.maximum(np.append(np.arange(k, dtype=np.float64), top), bottom)
    fp = np.concatenate([[0.0], np.cumsum(folded[:k])])
    keep = np.append(xp[1:] != xp[:-1], True)  # clamping repeats edges: keep the last (a point mass at floor)
    cdf = np.interp(np.arange(bins + 1, dtype=np.float64) * (top / bins), xp[keep], fp[keep], left=0.0)
    return np.diff(cdf)


def kl_divergences(hist: np.ndarray, num_quantized_bins: int = 128) -> np.ndarray:
    """KL(P || Q) of TensorRT's entropy calibration for every candidate i = num_quantized_bins .. len(hist).

    P: the first i bins of ``hist`` with the mass beyond them added to bin i-1. Q: the first i bins
    (without that tail) merged into ``num_quantized_bins`` groups of i // num_quantized_bins bins (the
    last group takes the remainder), each group's mass spread evenly over the bins where P is nonzero.
    A candidate where Q is 0 but P is not scores inf (no smoothing). Vectorized over all candidates with
    prefix sums; element ``i - num_quantized_bins`` belongs to candidate i.
    """
    h = np.asarray(hist, dtype=np.float64)
    nq = int(num_quantized_bins)
    if not 2 <= nq <= len(h):
        raise ValueError(f"num_quantized_bins must be in [2, {len(h)}], got {num_quantized_bins}")
    total = float(h.sum())
    if total <= 0:
        raise ValueError("the histogram is empty")
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
        mass = np.concatenate([[0.0], np.cumsum(h)])
        nonzero = np.concatenate([[0], np.cumsum(h > 0)])
        entropy_terms = np.concatenate([[0.0], np.cumsum(xlogx)])

        i = np.arange(nq, len(h) + 1)
        merged = i // nq
        starts = np.arange(nq)[None, :] * merged[:, None]
        stops = starts + merged[:, None]
        stops[:, -1] = i
        tail = np.maximum(total - mass[i], 0.0)
        nnz = nonzero[stops] - nonzero[starts]
        nnz[:, -1] += (tail > 0) & (h[i - 1] == 0)  # the tail makes P's last bin nonzero
        q_mass = np.where(nnz > 0, mass[stops] - mass[starts], 0.0)  # exact 0 where a group has no mass
        p_mass = q_mass.copy()
        p_mass[:, -1] += tail

        last = h[i - 1] + tail
        p_log_p = entropy_terms[i - 1] + np.where(last > 0, last * np.log(np.where(last > 0, last, 1.0)), 0.0)
        impossible = ((p_mass > 0) & (q_mass <= 0)).any(axis=1)
        log_q = np.log(np.where(q_mass > 0, q_mass, 1.0) / np.maximum(nnz, 1))
        p_log_q = np.where(p_mass > 0, p_mass * log_q, 0.0).sum(axis=1)
        kl = (p_log_p - p_log_q) / total - math.log(total) + np.log(np.maximum(mass[i], 1e-300))
    return np.where(impossible, np.inf, np.maximum(kl, 0.0))


def near_zero_kl_bins(stats: TensorStats) -> int:
    """How many of the KL_BINS |x| bins start inside the first stats bin (1 or 2: radius < 2 max|x|)."""
    kl_width = stats.abs_max / KL_BINS
    if not kl_width > 0:  # subnormal data: every bin is "near zero"
        return KL_BINS
    return min(KL_BINS, max(1, math.ceil((stats.radius / _HALF) / kl_width - 1e-9)))


def kl_range(stats: TensorStats, num_quantized_bins: int = 128) -> tuple[float, float]:
    """TensorRT-style entropy calibration on the |x| histogram (KL_BINS bins over [0, max|x|]).

    The threshold T is the upper edge of the best candidate's last bin; the range is [-T, T] clamped to
    the observed range (widened to contain 0), so a one-sided tensor gets [0, min(T, max)].
    """
    _require(stats)
    if stats.abs_max == 0:
        return _finish(0.0, 0.0)
    hist = abs_histogram(stats)
    # The KL bins under the first stats bin hold |x| < radius/2048 (ReLU's exact zeros among them): always
    # quantized to the zero level or its neighbour whatever the threshold. Left in, this spike dominates P
    # and makes KL favour ever smaller thresholds (measured: 25-75 % top-1 on the zoo CNNs).
    hist[: near_zero_kl_bins(stats)] = 0.0
    if hist.sum() <= 0:
        return _finish(min(stats.min, 0.0), max(stats.max, 0.0))
    divergences = kl_divergences(hist, num_quantized_bins)
    # A threshold below the bulk folds everything into P's last bin, where Q matches P exactly (KL 0):
    # on tensors far from zero (LayerNorm variances, RSQRT) plain TensorRT KL clips ~100 % of the
    # values. Candidates therefore keep at least KL_MIN_KEPT of the mass inside the range.
    first = max(num_quantized_bins, math.ceil(stats.abs_quantile(KL_MIN_KEPT) / (stats.abs_max / KL_BINS)))
    first = min(first, KL_BINS)
    best = first + int(np.argmin(divergences[first - num_quantized_bins :]))
    threshold = best * (stats.abs_max / KL_BINS)
    return _finish(max(-threshold, min(stats.min, 0.0)), min(threshold, max(stats.max, 0.0)))


RangeEstimator = Callable[[TensorStats, float], tuple[float, float]]  # (stats, percentile) -> (lo, hi)

#: The estimators that compute a range themselves, by name. ``auto`` is not one: it picks among them by the
#: outlier ratio (``_estimate``). Adding an estimator is an ``Estimator`` member and one line here.
RANGE_ESTIMATORS: dict[Estimator, RangeEstimator] = {
    Estimator.MINMAX: lambda stats, _percentile: minmax_range(stats),
    Estimator.PERCENTILE: percentile_range,
    Estimator.MSE: lambda stats, _percentile: mse_range(stats),
    Estimator.KL: lambda stats, _percentile: kl_range(stats),
}

#: Every method convert accepts, in the order tables and reports list them: the range estimators, then auto.
METHODS: tuple[Estimator, ...] = (*RANGE_ESTIMATORS, Estimator.AUTO)


@dataclass(frozen=True)
class SampleGuard:
    """When one calibration sample may not set a tensor's range by itself (see the module docstring)."""

    factor: float = GUARD_FACTOR
    follow: float = GUARD_FOLLOW
    min_samples: int = GUARD_MIN_SAMPLES
    outliers: frozenset[int] = frozenset()  # outlier samples: trimmed somewhere by ``factor`` (outlier_set)

    def __post_init__(self) -> None:
        if not (1.0 < self.follow <= self.factor and self.min_samples >= 2):
            raise ValueError(f"a sample guard needs 1 < follow <= factor and min_samples >= 2, got {self}")


def sample_stretch(extremes: SampleExtremes) -> float | None:
    """How far the most extreme sample sits beyond every other: its max|x| / the next sample's max|x|.

    None with fewer than two samples or when every other sample is exactly 0 there (no scale to compare).
    """
    if len(extremes.top_abs) < 2 or extremes.top_abs[1][1] == 0:
        return None
    return extremes.top_abs[0][1] / extremes.top_abs[1][1]


def runner_up_spread(extremes: SampleExtremes) -> float | None:
    """How much the samples after the top one disagree: 2nd largest per-sample max|x| / the last one kept
    (the TOP_SAMPLES-th largest, or the smallest with fewer samples). None when that is 0."""
    if len(extremes.top_abs) < 2 or extremes.top_abs[-1][1] == 0:
        return None
    return extremes.top_abs[1][1] / extremes.top_abs[-1][1]


def _stands_out(extremes: SampleExtremes, guard: SampleGuard) -> float | None:
    """The stretch when the top sample stands out from samples that agree, on a tensor enough samples reached."""
    stretch, spread = sample_stretch(extremes), runner_up_spread(extremes)
    if extremes.samples < guard.min_samples or stretch is None or spread is None or spread > stretch:
        return None
    return stretch


def outlier_set(extremes: Iterable[SampleExtremes], guard: SampleGuard) -> frozenset[int]:
    """The samples the guard's first rule trims from at least one tensor: its outlier samples."""
    return frozenset(e.top_abs[0][0] for e in extremes if (_stands_out(e, guard) or 0.0) >= guard.factor)


def guard_trims(extremes: SampleExtremes, guard: SampleGuard) -> bool:
    """Whether ``guard`` leaves the most extreme sample out of this tensor's range."""
    stretch = _stands_out(extremes, guard)
    return stretch is not None and (stretch >= guard.factor
                                    or (stretch >= guard.follow and extremes.top_abs[0][0] in guard.outliers))


def estimate(stats: TensorStats, method: Estimator, *, percentile: float = 99.99,
             auto_thresholds: tuple[float, float] = (3.0, 10.0), extremes: SampleExtremes | None = None,
             guard: SampleGuard | None = None) -> RangeChoice:
    """Run ``method`` on ``stats``; AUTO picks by outlier ratio r = max|x| / p99|x| with (t0, t1):

    r < t0 -> minmax (no outliers worth clipping); t0 <= r < t1 -> percentile; r >= t1 -> mse (t1 itself
    goes to mse). An all-zero tensor has r = 1.0, hence minmax.

    With ``extremes`` (which samples produced ``stats``) and a ``guard``, a tensor whose range one sample
    alone stretches (``guard_trims``) gets the range ``method`` chooses from the other samples' statistics;
    the choice records the sample, the stretch and the range it would have had. ``minmax`` is never trimmed.
    """
    choice = _estimate(stats, method, percentile, auto_thresholds)
    if extremes is None:
        return choice
    stretch = sample_stretch(extremes)
    if guard is None or Estimator(method) is Estimator.MINMAX or not guard_trims(extremes, guard):
        return replace(choice, sample_stretch=stretch)
    (top, a1), (second, a2) = extremes.top_abs[:2]
    rest = _estimate(extremes.rest, method, percentile, auto_thresholds)
    half_step = (rest.hi - rest.lo) / INT8_STEPS / 2
    why = "outlier sample" if stretch is not None and stretch < guard.factor else "sample"
    rule = (f"sample guard: {why} {top} alone stretched max|x| {stretch:.3g}x beyond every other sample "
            f"({a1:.4g} vs {a2:.4g} of sample {second}), range from the other {extremes.samples - 1} samples; "
            f"{rest.rule}")
    return replace(rest, rule=rule, clip_fraction=clip_fraction(stats, rest.lo - half_step, rest.hi + half_step),
                   sample_stretch=stretch, trimmed_sample=top, untrimmed=(choice.lo, choice.hi))


def _estimate(stats: TensorStats, method: Estimator, percentile: float,
              auto_thresholds: tuple[float, float]) -> RangeChoice:
    _require(stats)
    method = Estimator(method)
    if method is Estimator.SEARCH:
        raise UsageError("the search method chooses ranges by measuring the model on calibration data, not from "
                         "statistics alone: convert with --calib (not --stats), and not in a recipe override")
    t0, t1 = auto_thresholds
    if not 0 < t0 <= t1:
        raise ValueError(f"auto thresholds must satisfy 0 < t0 <= t1, got {auto_thresholds}")
    ratio = outlier_ratio(stats)
    if method is Estimator.AUTO:
        if ratio < t0:
            chosen, rule = Estimator.MINMAX, f"auto: outlier ratio {ratio:.2f} < {t0:g} -> minmax"
        elif ratio < t1:
            chosen = Estimator.PERCENTILE
            rule = f"auto: outlier ratio {ratio:.2f} in [{t0:g}, {t1:g}) -> percentile {percentile:g}"
        else:
            chosen, rule = Estimator.MSE, f"auto: outlier ratio {ratio:.2f} >= {t1:g} -> mse"
    else:
        chosen = method
        rule = f"method=percentile {percentile:g}" if method is Estimator.PERCENTILE else f"method={method.value}"
    lo, hi = RANGE_ESTIMATORS[chosen](stats, percentile)
    # Values within half a step beyond the range round to the edge level anyway: not clipped.
    half_step = (hi - lo) / INT8_STEPS / 2
    return RangeChoice(lo=lo, hi=hi, estimator=chosen, rule=rule, outlier_ratio=ratio,
                       clip_fraction=clip_fraction(stats, lo - half_step, hi + half_step))
