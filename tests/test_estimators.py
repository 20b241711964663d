"""Range estimators against slow, obvious references on the raw samples, plus their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeq.artifacts import Estimator
from edgeq.calib import estimators as est
from edgeq.calib.stats import HIST_BINS, TensorStats

N = 20_000


def stats_of(x: np.ndarray, pieces: int = 5) -> TensorStats:
    stats = TensorStats.empty()
    for part in np.array_split(x, pieces):
        stats.update(part)
    return stats


def heavy_tail(rng: np.random.Generator, n: int, share: float, scale: float = 50.0) -> np.ndarray:
    """Standard normal with ``share`` of the values replaced by +-``scale``."""
    x = rng.normal(0.0, 1.0, n)
    k = max(1, round(n * share))
    x[rng.choice(n, k, replace=False)] = scale * np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    return x


DISTRIBUTIONS = {
    "uniform": lambda rng: rng.uniform(-2.0, 3.0, N),
    "gaussian": lambda rng: rng.normal(0.5, 1.0, N),
    "laplace": lambda rng: rng.laplace(0.0, 1.0, N),
    "relu": lambda rng: np.maximum(0.0, rng.normal(0.0, 1.0, N)),
    "heavy": lambda rng: heavy_tail(rng, N, 0.0005),  # 0.05 % at 50x
}


@pytest.fixture(scope="module", params=sorted(DISTRIBUTIONS))
def sample(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, TensorStats]:
    x = DISTRIBUTIONS[request.param](np.random.default_rng(sorted(DISTRIBUTIONS).index(request.param)))
    return request.param, x, stats_of(x)


def bin_width(stats: TensorStats) -> float:
    return stats.radius / (HIST_BINS // 2)


def fake_quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Empirical MSE of int8 affine quantize-dequantize with 256 levels over [lo, hi]."""
    scale = (hi - lo) / 255.0
    q = np.clip(np.round((x - lo) / scale), 0, 255)
    return float(np.mean((lo + q * scale - x) ** 2))


def brute_force_mse(x: np.ndarray) -> tuple[float, float, float]:
    """The best (mse, lo, hi) over a grid of shrink factors of min and max, refined once around the best."""
    lo_max, hi_max = min(float(x.min()), 0.0), max(float(x.max()), 0.0)

    def search(lo_factors: np.ndarray, hi_factors: np.ndarray) -> tuple[float, float, float]:
        best = (math.inf, 0.0, 0.0)
        for s in lo_factors:
            for t in hi_factors:
                lo, hi = lo_max * s, hi_max * t
                if hi > lo:
                    best = min(best, (fake_quant_mse(x, lo, hi), lo, hi))
        return best

    def factors(extreme: float, around: float | None = None) -> np.ndarray:
        if extreme == 0:
            return np.zeros(1)
        if around is None:
            return np.linspace(0.02, 1.0, 50)
        return np.clip(np.linspace(around - 0.02, around + 0.02, 11), 0.001, 1.0)

    _, lo, hi = search(factors(lo_max), factors(hi_max))
    return search(factors(lo_max, lo / lo_max if lo_max else None),
                  factors(hi_max, hi / hi_max if hi_max else None))


def reference_kl(hist: np.ndarray, nq: int = 128) -> np.ndarray:
    """TensorRT's entropy calibration, candidate by candidate, as in the published pseudo-code."""
    hist = np.asarray(hist, dtype=np.float64)
    out = []
    for i in range(nq, len(hist) + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # outliers folded into the last bin
        merged = i // nq
        starts = np.arange(nq) * merged  # the last group runs to i
        q_bins = np.add.reduceat(hist[:i], starts)
        nonzero = p != 0
        sizes = np.diff(np.append(starts, i))
        per_bin = q_bins / np.maximum(np.add.reduceat(nonzero.astype(np.float64), starts), 1)
        q = np.repeat(per_bin, sizes) * nonzero
        p, q = p / p.sum(), q / max(q.sum(), 1e-300)
        mask = p > 0
        out.append(np.inf if (q[mask] == 0).any() else float(np.sum(p[mask] * np.log(p[mask] / q[mask]))))
    return np.array(out)


# --- each estimator against its reference ---------------------------------------------------------------


def test_minmax_is_the_exact_observed_range(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    _, x, stats = sample
    assert est.minmax_range(stats) == (min(float(x.min()), 0.0), max(float(x.max()), 0.0))
    assert est.clip_fraction(stats, *est.minmax_range(stats)) == 0.0


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_matches_numpy_on_raw_samples(sample: tuple[str, np.ndarray, TensorStats], p: float) -> None:
    name, x, stats = sample
    lo, hi = est.percentile_range(stats, p)
    ordered, width = np.sort(x), bin_width(stats)

    def near(value: float, q: float) -> bool:
        # Within a couple of bins of np.percentile, or between the order statistics around it (sparse tails).
        k = q * (x.size - 1)
        below, above = ordered[max(math.floor(k) - 1, 0)], ordered[min(math.ceil(k) + 1, x.size - 1)]
        return abs(value - np.percentile(x, 100 * q)) <= 2 * width or below - width <= value <= above + width

    assert near(hi, p / 100)
    if name == "relu":
        assert lo == 0.0  # one-sided: only the top is clipped
    else:
        assert near(lo, 1 - p / 100)
    # No more than the tail share is clipped by more than a bin (ties at the extremes, like the heavy tail's
    # outliers all at exactly +-50, may be clipped by less: the histogram spreads them over their bin).
    clipped = np.mean((x < lo - width) | (x > hi + width))
    assert clipped <= (2 if name != "relu" else 1) * (1 - p / 100) + 3 / x.size
    clipped = np.mean((x < lo) | (x > hi))
    assert est.clip_fraction(stats, lo, hi) == pytest.approx(clipped, abs=0.002)


def test_mse_is_as_good_as_a_brute_force_search(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    name, x, stats = sample
    lo, hi = est.mse_range(stats)
    best, best_lo, best_hi = brute_force_mse(x)
    # 3 %: tight enough that minmax fails it wherever clipping pays (gaussian, laplace, relu).
    assert fake_quant_mse(x, lo, hi) <= 1.03 * best, (name, (lo, hi), (best_lo, best_hi))
    if name == "relu":
        assert lo == 0.0
    if name == "uniform":  # nothing to gain from clipping a flat distribution: keep (almost) all of it
        assert lo <= 0.97 * x.min() and hi >= 0.97 * x.max()
    if name == "heavy":
        # At 0.05 % the outliers cost more clipped (share * 45**2 ~ 1) than kept (rounding noise ~ 0.013):
        # the MSE optimum keeps them, and the brute force agrees.
        assert hi > 0.9 * x.max() and best_hi > 0.9 * x.max()


def histogram_cost(stats: TensorStats, lo: float, hi: float) -> float:
    """The documented mse cost, written out directly: scale**2/12 inside, squared distance outside."""
    counts, lows, highs = stats.occupied_bins()
    centers = (lows + highs) / 2
    outside = np.where(centers > hi, centers - hi, np.where(centers < lo, lo - centers, 0.0))
    inside = (centers >= lo) & (centers <= hi)
    return float(np.sum(counts * np.where(inside, ((hi - lo) / 255) ** 2 / 12, outside**2)))


def test_mse_finds_the_optimum_of_its_cost_at_full_resolution(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    name, _, stats = sample
    lo, hi = est.mse_range(stats)
    best = histogram_cost(stats, lo, hi)
    width = bin_width(stats)
    # No neighbour on the bin-edge grid is better: the coarse-to-fine search ends at a full-resolution optimum.
    lo_steps = [0] if stats.min >= 0 else range(-3, 4)
    for dl in lo_steps:
        for dh in range(-3, 4):
            lo2 = max(min(lo + dl * width, 0.0), stats.min)
            hi2 = min(max(hi + dh * width, 0.0), stats.max)
            assert best <= histogram_cost(stats, lo2, hi2) * (1 + 1e-9), (name, dl, dh)
    # And nothing on a global grid of shrink factors beats it.
    factors = np.linspace(0.05, 1.0, 40)
    for s in [0.0] if stats.min >= 0 else factors:
        for t in factors:
            assert best <= histogram_cost(stats, stats.min * s, stats.max * t) * (1 + 1e-9)


def test_mse_clips_rare_outliers() -> None:
    """With outliers at 2 ppm clipping them is cheaper than the rounding noise they cause: mse clips."""
    x = heavy_tail(np.random.default_rng(7), 1_000_000, 2e-6)
    stats = stats_of(x, pieces=3)
    lo, hi = est.mse_range(stats)
    assert hi < 0.5 * x.max() and lo > 0.5 * x.min()
    assert fake_quant_mse(x, lo, hi) < 0.5 * fake_quant_mse(x, *est.minmax_range(stats))
    best = min(fake_quant_mse(x, -t, t) for t in np.linspace(3.0, 50.0, 48))  # symmetric brute force
    assert fake_quant_mse(x, lo, hi) <= 1.05 * best


@pytest.mark.parametrize("seed", range(4))
def test_kl_divergences_match_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bins, nq = 512, 32
    hist = np.histogram(np.abs(rng.standard_t(3, 5000)), bins=bins)[0].astype(np.float64)
    if seed % 2:
        hist = hist * rng.uniform(0.3, 1.7, bins)  # fractional counts, as re-binning produces
    if seed == 3:
        hist[bins // 3: bins // 2] = 0.0  # an empty stretch: candidates ending there put P's tail where Q is 0
    reference = reference_kl(hist, nq)
    vectorized = est.kl_divergences(hist, nq)
    assert np.array_equal(np.isinf(reference), np.isinf(vectorized))
    finite = np.isfinite(reference)
    np.testing.assert_allclose(vectorized[finite], reference[finite], rtol=1e-9, atol=1e-12)
    assert np.argmin(vectorized) == np.argmin(reference)


def test_kl_threshold_matches_the_reference_on_raw_samples(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    name, x, stats = sample
    abs_max = float(np.abs(x).max())
    raw_hist = np.histogram(np.abs(x), bins=est.KL_BINS, range=(0.0, abs_max))[0]
    raw_hist[: est.near_zero_kl_bins(stats)] = 0  # kl_range drops the near-zero spike (see its comment)
    divergences = reference_kl(raw_hist)
    threshold = (128 + int(np.argmin(divergences))) * abs_max / est.KL_BINS
    lo, hi = est.kl_range(stats)
    if name == "relu":
        # Without its zero spike a half-gaussian has a flat KL curve near the optimum, so the argmin
        # moves with the re-binning; require a threshold that is near-optimal on the raw histogram.
        chosen = round(max(hi, -lo) / abs_max * est.KL_BINS) - 128
        assert divergences[chosen] <= divergences.min() * 1.05 + 1e-6
        assert lo == 0.0
        return
    tolerance = 2 * abs_max / est.KL_BINS + 1e-12  # two KL bins: the estimator sees the re-binned histogram
    assert hi == pytest.approx(min(threshold, max(x.max(), 0.0)), abs=tolerance)
    assert lo == pytest.approx(max(-threshold, min(x.min(), 0.0)), abs=tolerance)


def test_abs_histogram_rebins_without_losing_mass(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    _, x, stats = sample
    rebinned = est.abs_histogram(stats)
    assert rebinned.shape == (est.KL_BINS,) and rebinned.sum() == pytest.approx(x.size)
    raw = np.histogram(np.abs(x), bins=est.KL_BINS, range=(0.0, float(np.abs(x).max())))[0]
    # Cumulative counts agree to within one stats bin's worth of mass (uniform-in-bin assumption).
    worst_bin = stats.hist.max()
    assert np.abs(np.cumsum(rebinned) - np.cumsum(raw)).max() <= worst_bin


def test_clip_fraction_counts_partial_bins() -> None:
    x = np.linspace(-1.0, 1.0, 400_001)  # evenly spread: the exact answer is far finer than a bin
    stats = stats_of(x)
    for lo, hi in [(-0.50031, 0.25017), (-1.0, 0.99999), (-0.1, 0.0), (0.0, 1.0)]:
        assert est.clip_fraction(stats, lo, hi) == pytest.approx(np.mean((x < lo) | (x > hi)), abs=2e-5)


def test_outlier_ratio_matches_raw_samples(sample: tuple[str, np.ndarray, TensorStats]) -> None:
    _, x, stats = sample
    expected = np.abs(x).max() / np.percentile(np.abs(x), 99)
    assert est.outlier_ratio(stats) == pytest.approx(expected, rel=0.01)


# --- AUTO ------------------------------------------------------------------------------------------------


def test_auto_picks_by_outlier_ratio() -> None:
    rng = np.random.default_rng(9)
    flat = stats_of(rng.uniform(-1.0, 1.0, N))  # ratio ~1
    middling = rng.normal(0.0, 1.0, N)
    middling[:20] = 15.0  # 0.1 % at 15x: ratio ~ 15 / 2.6
    spiky = stats_of(heavy_tail(rng, N, 0.0005))  # ratio ~ 50 / 2.6
    cases = [(flat, Estimator.MINMAX, "< 3 -> minmax"),
             (stats_of(middling), Estimator.PERCENTILE, "in [3, 10) -> percentile 99.99"),
             (spiky, Estimator.MSE, ">= 10 -> mse")]
    for stats, expected, rule_tail in cases:
        choice = est.estimate(stats, Estimator.AUTO)
        ratio = est.outlier_ratio(stats)
        assert choice.estimator is expected
        assert choice.rule == f"auto: outlier ratio {ratio:.2f} {rule_tail}"
        assert choice.outlier_ratio == ratio
        explicit = est.estimate(stats, expected)
        assert (choice.lo, choice.hi) == (explicit.lo, explicit.hi)
        half_step = (choice.hi - choice.lo) / 255 / 2  # values within half a step round to the edge level
        assert choice.clip_fraction == est.clip_fraction(stats, choice.lo - half_step, choice.hi + half_step)
    assert 3.0 < est.outlier_ratio(stats_of(middling)) < 10.0


def test_auto_threshold_boundaries() -> None:
    stats = stats_of(np.random.default_rng(10).normal(0.0, 1.0, N))
    ratio = est.outlier_ratio(stats)
    assert est.estimate(stats, Estimator.AUTO, auto_thresholds=(ratio, 2 * ratio)).estimator is Estimator.PERCENTILE
    assert est.estimate(stats, Estimator.AUTO, auto_thresholds=(ratio / 2, ratio)).estimator is Estimator.MSE
    assert est.estimate(stats, Estimator.AUTO, auto_thresholds=(ratio * 1.01, ratio * 2)).estimator is Estimator.MINMAX
    choice = est.estimate(stats, Estimator.AUTO, percentile=99.9, auto_thresholds=(ratio, 2 * ratio))
    assert (choice.lo, choice.hi) == est.percentile_range(stats, 99.9)
    assert "percentile 99.9" in choice.rule
    with pytest.raises(ValueError):
        est.estimate(stats, Estimator.AUTO, auto_thresholds=(5.0, 2.0))


def test_explicit_methods_name_themselves() -> None:
    stats = stats_of(np.random.default_rng(11).laplace(0.0, 1.0, N))
    for method, function in [(Estimator.MINMAX, est.minmax_range), (Estimator.MSE, est.mse_range),
                             (Estimator.KL, est.kl_range), (Estimator.PERCENTILE, est.percentile_range)]:
        choice = est.estimate(stats, method)
        assert choice.estimator is method and (choice.lo, choice.hi) == function(stats)
        assert choice.rule.startswith(f"method={method.value}")


# --- edge cases ------------------------------------------------------------------------------------------


def test_empty_stats_are_refused() -> None:
    empty = TensorStats.empty()
    for function in (est.minmax_range, est.percentile_range, est.mse_range, est.kl_range, est.outlier_ratio):
        with pytest.raises(ValueError):
            function(empty)
    with pytest.raises(ValueError):
        est.estimate(empty, Estimator.AUTO)


def test_all_zero_tensor_gets_a_tiny_range_and_minmax() -> None:
    stats = stats_of(np.zeros(100))
    for function in (est.minmax_range, est.percentile_range, est.mse_range, est.kl_range):
        assert function(stats) == (0.0, est.ZERO_WIDTH)
    choice = est.estimate(stats, Estimator.AUTO)
    assert choice.estimator is Estimator.MINMAX and choice.outlier_ratio == 1.0 and choice.clip_fraction == 0.0


def test_negative_one_sided_tensor_keeps_hi_at_zero() -> None:
    x = -np.maximum(0.0, np.random.default_rng(12).normal(0.0, 1.0, N))
    stats = stats_of(x)
    for function in (est.minmax_range, est.percentile_range, est.mse_range, est.kl_range):
        lo, hi = function(stats)
        assert hi == 0.0 and x.min() <= lo < 0.0


def test_constant_positive_tensor_keeps_its_value() -> None:
    stats = stats_of(np.full(50, 3.0))
    for function in (est.minmax_range, est.percentile_range, est.kl_range):
        assert function(stats) == (0.0, 3.0)
    # The mse cost model charges scale**2/12 to every in-range value, even one sitting exactly on the top
    # level, so clipping a constant by a hair looks (slightly) cheaper: within one bin of the value.
    lo, hi = est.mse_range(stats)
    assert lo == 0.0 and 3.0 - bin_width(stats) <= hi <= 3.0
    assert est.clip_fraction(stats, 0.0, 3.0) == 0.0 and est.clip_fraction(stats, 0.0, 2.9) == 1.0


# --- properties ------------------------------------------------------------------------------------------

tensors = hnp.arrays(np.float64, st.integers(1, 300),
                     elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False))


@settings(max_examples=40, deadline=None)
@given(tensors)
def test_every_range_contains_zero_and_stays_within_minmax(x: np.ndarray) -> None:
    stats = stats_of(x, pieces=min(3, x.size))
    mm_lo, mm_hi = est.minmax_range(stats)
    assert est.clip_fraction(stats, mm_lo, mm_hi) == 0.0
    for method in (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL, Estimator.AUTO):
        choice = est.estimate(stats, method)
        assert choice.lo <= 0.0 <= choice.hi and choice.hi > choice.lo
        # Ranges narrower than ZERO_WIDTH are widened to it, so compare up to that width.
        assert mm_lo - est.ZERO_WIDTH <= choice.lo and choice.hi <= mm_hi + est.ZERO_WIDTH
        assert choice.estimator is not Estimator.AUTO
        assert 0.0 <= choice.clip_fraction <= 1.0


@settings(max_examples=40, deadline=None)
@given(tensors, st.floats(50.0, 100.0), st.floats(50.0, 100.0))
def test_percentile_is_monotone(x: np.ndarray, p1: float, p2: float) -> None:
    stats = stats_of(x, pieces=min(2, x.size))
    p1, p2 = sorted((p1, p2))
    lo1, hi1 = est.percentile_range(stats, p1)
    lo2, hi2 = est.percentile_range(stats, p2)
    # Monotone up to the ZERO_WIDTH floor: a range that collapses to [0, 0] is widened upward to 1e-6, which
    # a wider percentile's [-0.5, 0] does not contain (found by hypothesis on [-1, 0, 0]).
    floor = est.ZERO_WIDTH
    assert lo2 <= lo1 + floor and lo1 <= 0.0 <= hi1 and hi1 <= hi2 + floor
    assert est.percentile_range(stats, 100.0) == est.minmax_range(stats)
    assert est.clip_fraction(stats, lo2, hi2) <= est.clip_fraction(stats, lo1, hi1) + 1e-12


@pytest.mark.parametrize("offset", [1.0, 2.0, 10.0])
def test_kl_keeps_the_bulk_of_a_tensor_far_from_zero(offset: float) -> None:
    """LayerNorm variances and RSQRT outputs sit far from 0: plain TensorRT KL would clip them all."""
    x = np.random.default_rng(3).uniform(offset, offset + 2.0, 50_000)
    stats = stats_of(x)
    lo, hi = est.kl_range(stats)
    assert lo == 0.0
    assert est.clip_fraction(stats, lo, hi) <= 1 - est.KL_MIN_KEPT + 1e-3
    assert hi >= np.quantile(x, 0.985)


@pytest.mark.parametrize("method", est.METHODS)
def test_subnormal_only_tensor_gets_the_minimum_width(method: Estimator) -> None:
    """Found by hypothesis in CI: a tensor holding one subnormal value broke KL's bin width."""
    stats = stats_of(np.array([5e-324]))
    choice = est.estimate(stats, method)
    assert (choice.lo, choice.hi) == (0.0, est.ZERO_WIDTH)



def _stats(values: np.ndarray) -> TensorStats:
    stats = TensorStats.empty()
    stats.update(values.astype(np.float32))
    return stats


def test_every_estimator_is_registered_and_auto_picks_among_them() -> None:
    """The registry is the one list of methods: every Estimator either computes a range itself or is auto,
    and auto's choice is one of the registered estimators, with the range that estimator gives directly."""
    # the same order: the CLI lists the enum without importing numpy; search (which measures the model, not
    # statistics) is the one method beyond the registry, last
    assert tuple(Estimator) == (*est.METHODS, Estimator.SEARCH)
    assert est.METHODS[-1] is Estimator.AUTO and Estimator.AUTO not in est.RANGE_ESTIMATORS
    rng = np.random.default_rng(0)
    picked = set()
    for values in (rng.uniform(-1, 1, 4096), np.r_[rng.normal(size=4096), 15.0], np.abs(rng.standard_cauchy(4096))):
        choice = est.estimate(_stats(values), Estimator.AUTO)
        picked.add(choice.estimator)
        direct = est.estimate(_stats(values), choice.estimator)
        assert (choice.lo, choice.hi) == (direct.lo, direct.hi)
    assert picked == {Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE}  # all three of auto's branches ran


def test_estimate_dispatches_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing a registry entry changes what estimate (and auto) return: no chain bypasses the registry."""
    stats = _stats(np.linspace(-1.0, 3.0, 1001))
    monkeypatch.setitem(est.RANGE_ESTIMATORS, Estimator.KL, lambda _stats, _percentile: (-0.5, 0.5))
    monkeypatch.setitem(est.RANGE_ESTIMATORS, Estimator.MINMAX, lambda _stats, _percentile: (-0.25, 0.25))
    assert (est.estimate(stats, Estimator.KL).lo, est.estimate(stats, Estimator.KL).hi) == (-0.5, 0.5)
    auto = est.estimate(stats, Estimator.AUTO)  # a linear ramp has no outliers: auto picks minmax
    assert auto.estimator is Estimator.MINMAX and (auto.lo, auto.hi) == (-0.25, 0.25)


def test_search_is_not_an_estimator_of_statistics() -> None:
    """search measures the model on calibration samples; asked of statistics alone it is a usage error (exit 2)."""
    from edgeq.errors import UsageError

    with pytest.raises(UsageError, match="--calib"):
        est.estimate(stats_of(np.array([1.0, 2.0])), Estimator.SEARCH)


@pytest.mark.parametrize("x", [np.array([2.22507386e-309, 0.0]), np.array([1e-45, -3e-45, 0.0], np.float32)])
def test_subnormal_tensors_rebin_without_nan(x: np.ndarray) -> None:
    """A tensor of subnormal values: re-binning divided by subnormal edge spacings (inf slopes, NaN counts, found
    by hypothesis); it now works in units of the stats bin width."""
    hist = est.abs_histogram(stats_of(x, pieces=1))
    assert np.isfinite(hist).all() and (hist >= 0).all() and hist.sum() == pytest.approx(x.size)
