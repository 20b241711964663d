"""Time of each range estimator on one tensor's statistics, and mse's coarse-to-fine search against
an exhaustive search over every pair of bin edges, measured side by side in one run.

Usage: python benchmarks/estimator_speed.py [--repeats 7] [--samples 50000]
The tensor is a two-sided Laplace sample (every bin edge a candidate). The exhaustive search evaluates
the same cost (scale²/12 inside the range, squared distance outside) at every candidate pair, so the
ratio is the speed-up of the search, and the last column checks that it found the same optimum.
Replaces a 30 ms timing assertion that used to sit in tests/test_estimators.py: the suite runs on
shared machines, so speed is measured here and written to docs/estimator_speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from edgeq.artifacts import Estimator
from edgeq.calib import estimators as est
from edgeq.calib.stats import TensorStats


def cost(stats: TensorStats, lo: float, hi: float) -> float:
    """The documented mse cost: scale²/12 for values inside, squared distance for values outside."""
    counts, lows, highs = stats.occupied_bins()
    centers = (lows + highs) / 2
    outside = np.where(centers > hi, centers - hi, np.where(centers < lo, lo - centers, 0.0))
    inside = (centers >= lo) & (centers <= hi)
    return float(np.sum(counts * np.where(inside, ((hi - lo) / 255) ** 2 / 12, outside**2)))


def exhaustive_mse(stats: TensorStats) -> tuple[float, float]:
    """Every (lo, hi) pair on the occupied bin edges, cost written out directly: the slow reference."""
    counts, lows, highs = stats.occupied_bins()
    centers = (lows + highs) / 2
    his = np.unique(np.concatenate([highs[highs > 0], [max(stats.max, 0.0)]]))
    los = np.unique(np.concatenate([lows[lows < 0], [min(stats.min, 0.0)]]))
    best, best_pair = np.inf, (min(stats.min, 0.0), max(stats.max, 0.0))
    for lo in los:
        outside_lo = np.where(centers < lo, lo - centers, 0.0)
        for hi in his:
            outside = np.where(centers > hi, centers - hi, outside_lo)
            inside = (centers >= lo) & (centers <= hi)
            cost = float(np.sum(counts * np.where(inside, ((hi - lo) / 255) ** 2 / 12, outside**2)))
            if cost < best:
                best, best_pair = cost, (float(lo), float(hi))
    return best_pair


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samples", type=int, default=50_000)
    args = parser.parse_args()
    x = np.random.default_rng(8).laplace(0.0, 1.0, args.samples)
    stats = TensorStats.empty()
    for part in np.array_split(x, 5):
        stats.update(part)
    print(f"tensor: Laplace(0, 1), {args.samples} samples; median of {args.repeats} runs")
    print(f"{'estimator':<12} {'ms':>10}")
    for method in (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL, Estimator.AUTO):
        print(f"{method.value:<12} {timed(lambda m=method: est.estimate(stats, m), args.repeats):>10.3f}")
    fast = timed(lambda: est.mse_range(stats), args.repeats)
    slow = timed(lambda: exhaustive_mse(stats), max(1, args.repeats // 3))
    (lo, hi), (rlo, rhi) = est.mse_range(stats), exhaustive_mse(stats)
    print(f"mse search {fast:.3f} ms vs exhaustive {slow:.1f} ms: {slow / fast:.0f}x faster; "
          f"range ({lo:.4f}, {hi:.4f}) vs exhaustive ({rlo:.4f}, {rhi:.4f}); "
          f"cost {cost(stats, lo, hi) / cost(stats, rlo, rhi):.4f}x the exhaustive optimum")


if __name__ == "__main__":
    main()
