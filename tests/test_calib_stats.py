"""TensorStats: exact min/max/count, a bounded histogram that is bit-identical however the data arrives."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeq.calib.stats import HIST_BINS, MIN_EXPONENT, TensorStats, radius_for
from edgeq.errors import InputError

MID = HIST_BINS // 2

# Values spanning many binades (including subnormals and exact powers of two) so regridding is exercised.
values = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)
batches = st.lists(hnp.arrays(np.float64, st.integers(0, 40), elements=values), min_size=1, max_size=6)
# Tensors with a few magnitudes apart: a small batch first, then one that forces many doublings.
scaled = st.builds(lambda a, k: a * 2.0**k,
                   hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-4, 4)), st.integers(-60, 60))


def stats_of(*arrays: np.ndarray) -> TensorStats:
    stats = TensorStats.empty()
    for array in arrays:
        stats.update(array)
    return stats


def bin_of(value: float, anchor: float) -> tuple[int, np.ndarray]:
    """The bin ``value`` falls in on the grid set by ``anchor`` (|anchor| >= |value|), and that grid's edges."""
    grid = stats_of(np.array([anchor]))
    (index,) = np.flatnonzero(stats_of(np.array([anchor, value])).hist - grid.hist)
    return int(index), grid.bin_edges()


def test_radius_is_the_smallest_covering_power_of_two() -> None:
    assert radius_for(0.0) == 0.0
    assert radius_for(1.0) == 1.0
    assert radius_for(1.0000001) == 2.0
    assert radius_for(0.75) == 1.0
    assert radius_for(0.5) == 0.5
    assert radius_for(3e-3) == 2.0**-8
    assert radius_for(6.0) == 8.0
    assert radius_for(1e-300) == 2.0**MIN_EXPONENT  # floored: bin widths stay far from subnormals
    with pytest.raises(ValueError):
        radius_for(1e305)


def test_update_keeps_exact_count_min_max_and_power_of_two_radius() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 3.0, size=(7, 11, 13)).astype(np.float32)
    stats = stats_of(x)
    assert stats.count == x.size and int(stats.hist.sum()) == x.size
    assert stats.min == float(x.min()) and stats.max == float(x.max())
    assert stats.radius == radius_for(float(np.abs(x).max()))
    assert stats.radius / 2 < np.abs(x).max() <= stats.radius
    assert stats.hist.dtype == np.int64 and stats.hist.shape == (HIST_BINS,)


@settings(max_examples=200, deadline=None)
@given(values.filter(lambda v: v != 0), st.floats(0, 1), st.integers(0, 40))
def test_every_value_lies_within_its_bin(anchor: float, fraction: float, shift: int) -> None:
    value = anchor * fraction * 2.0**-shift
    b, edges = bin_of(value, anchor)
    assert edges[b] <= value <= edges[b + 1]
    # Closed on the side away from zero: a positive value never sits on its bin's lower edge.
    if value > 0:
        assert edges[b] < value
    elif value < 0:
        assert value < edges[b + 1]
    else:
        assert b == MID


def test_edge_values_follow_the_documented_rule() -> None:
    width = 1.0 / MID  # radius 1
    assert bin_of(1.0, 1.0)[0] == HIST_BINS - 1  # +radius lands in the last bin
    assert bin_of(-1.0, 1.0)[0] == 0
    assert bin_of(0.0, 1.0)[0] == MID
    assert bin_of(width, 1.0)[0] == MID  # (0, w] joins 0
    assert bin_of(1.5 * width, 1.0)[0] == MID + 1
    assert bin_of(-width, 1.0)[0] == MID - 1  # [-w, 0)
    assert bin_of(-2 * width, 1.0)[0] == MID - 2
    assert bin_of(5e-324, 1.0)[0] == MID and bin_of(-5e-324, 1.0)[0] == MID - 1


def test_non_finite_values_are_refused_and_leave_stats_unchanged() -> None:
    stats = stats_of(np.array([1.0, -2.0]))
    before = stats.merge(TensorStats.empty())
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="non-finite"):
            stats.update(np.array([0.5, bad], dtype=np.float32))
        assert stats == before


def test_all_zero_tensor() -> None:
    stats = stats_of(np.zeros(10), np.zeros((2, 3)))
    assert (stats.count, stats.min, stats.max, stats.radius) == (16, 0.0, 0.0, 0.0)
    assert stats.hist[MID] == 16 and int(stats.hist.sum()) == 16
    assert stats.quantile(0.5) == 0.0 and stats.abs_quantile(0.99) == 0.0
    # Zeros stay in the centre bin when real data arrives, so the order still does not matter.
    assert stats_of(np.zeros(16), np.array([3.0])) == stats_of(np.array([3.0]), np.zeros(16))
    assert stats_of(np.zeros(16), np.array([3.0])).hist[MID] == 16


def test_empty_stats() -> None:
    stats = TensorStats.empty()
    assert (stats.count, stats.min, stats.max, stats.radius) == (0, math.inf, -math.inf, 0.0)
    stats.update(np.array([], dtype=np.float32))
    assert stats == TensorStats.empty()
    with pytest.raises(ValueError):
        stats.quantile(0.5)
    assert TensorStats.empty().merge(stats_of(np.array([2.0]))) == stats_of(np.array([2.0]))


def test_memory_does_not_grow_with_samples() -> None:
    rng = np.random.default_rng(2)
    stats = stats_of(rng.normal(size=100))
    size = len(pickle.dumps(stats))
    for _ in range(300):
        stats.update(rng.normal(size=100))
    assert stats.count == 30_100
    assert len(pickle.dumps(stats)) <= size + 16 and stats.hist.shape == (HIST_BINS,)


@settings(max_examples=60, deadline=None)
@given(batches, batches)
def test_merged_stats_equal_stats_of_the_union(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    left, right = stats_of(*a), stats_of(*b)
    union = stats_of(*a, *b)
    merged = left.merge(right)
    assert merged.count == union.count and merged.radius == union.radius
    assert merged.min == union.min and merged.max == union.max
    assert np.array_equal(merged.hist, union.hist)
    assert right.merge(left) == union
    assert left == stats_of(*a) and right == stats_of(*b)  # merge is pure


@settings(max_examples=60, deadline=None)
@given(st.lists(scaled, min_size=1, max_size=5), st.randoms(use_true_random=False), st.integers(1, 7))
def test_order_and_batching_do_not_matter(arrays: list[np.ndarray], rnd, pieces: int) -> None:
    reference = stats_of(*arrays)
    flat = np.concatenate(arrays)
    order = list(range(flat.size))
    rnd.shuffle(order)
    reshuffled = stats_of(*np.array_split(flat[order], pieces))
    assert reshuffled == reference and np.array_equal(reshuffled.hist, reference.hist)
    one_by_one = TensorStats.empty()
    for value in flat[::-1]:
        one_by_one = one_by_one.merge(stats_of(np.array([value])))
    assert one_by_one == reference


@settings(max_examples=40, deadline=None)
@given(batches)
def test_arrays_round_trip(arrays: list[np.ndarray]) -> None:
    stats = stats_of(*arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **stats.to_arrays("t3_"), **stats_of(np.ones(3)).to_arrays("t4_"))
    buffer.seek(0)
    with np.load(buffer) as archive:
        loaded = TensorStats.from_arrays({k: archive[k] for k in archive.files}, "t3_")
    assert loaded == stats
    assert loaded.hist.dtype == np.int64


def test_from_arrays_refuses_malformed_stats() -> None:
    good = stats_of(np.array([1.0, -3.0, 0.25])).to_arrays("x_")
    with pytest.raises(InputError, match="missing x_hist"):
        TensorStats.from_arrays({k: v for k, v in good.items() if k != "x_hist"}, "x_")
    bad_count = {**good, "x_count": np.array(4)}
    with pytest.raises(InputError, match="count"):
        TensorStats.from_arrays(bad_count, "x_")
    bad_radius = {**good, "x_radius": np.array(3.0)}
    with pytest.raises(InputError, match="radius"):
        TensorStats.from_arrays(bad_radius, "x_")
    short = {**good, "x_hist": good["x_hist"][:100]}
    with pytest.raises(InputError, match="histogram"):
        TensorStats.from_arrays(short, "x_")


@settings(max_examples=40, deadline=None)
@given(batches.filter(lambda a: sum(x.size for x in a) > 0), st.floats(0, 1), st.floats(0, 1))
def test_quantile_is_monotone_and_bounded(arrays: list[np.ndarray], q1: float, q2: float) -> None:
    stats = stats_of(*arrays)
    q1, q2 = sorted((q1, q2))
    assert stats.min <= stats.quantile(q1) <= stats.quantile(q2) <= stats.max
    assert stats.quantile(0.0) == stats.min and stats.quantile(1.0) == stats.max
    assert 0.0 <= stats.abs_quantile(q1) <= stats.abs_quantile(q2) <= stats.abs_max
    assert stats.abs_quantile(1.0) == stats.abs_max


def test_quantiles_interpolate_within_a_bin() -> None:
    # Evenly spread values: the exact quantile is q itself, far finer than a bin (1/2048) can tell.
    stats = stats_of(np.linspace(0.0, 1.0, 200_001))
    symmetric = stats_of(np.linspace(-1.0, 1.0, 400_001))
    for q in (0.1, 0.333, 0.5, 0.77, 0.999):
        assert stats.quantile(q) == pytest.approx(q, abs=1e-5)
        assert symmetric.quantile(q) == pytest.approx(2 * q - 1, abs=1e-5)
        assert symmetric.abs_quantile(q) == pytest.approx(q, abs=1e-5)


DISTRIBUTIONS = {
    "uniform": lambda rng, n: rng.uniform(-2.0, 3.0, n),
    "gaussian": lambda rng, n: rng.normal(0.5, 1.0, n),
    "laplace": lambda rng, n: rng.laplace(0.0, 1.0, n),
    "relu": lambda rng, n: np.maximum(0.0, rng.normal(0.0, 1.0, n)),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_match_raw_samples(name: str) -> None:
    rng = np.random.default_rng(3)
    x = DISTRIBUTIONS[name](rng, 40_000)
    stats = stats_of(*np.array_split(x, 9))
    width = stats.radius / MID
    ordered, abs_ordered = np.sort(x), np.sort(np.abs(x))
    for q in (0.0001, 0.01, 0.25, 0.5, 0.9, 0.99, 0.9999):
        # np.percentile's position differs from the histogram's mass target by under one rank: the answer
        # must lie between the neighbouring order statistics, give or take one bin.
        k = q * (x.size - 1)
        lo, hi = ordered[max(math.floor(k) - 1, 0)], ordered[min(math.ceil(k) + 1, x.size - 1)]
        assert lo - width <= stats.quantile(q) <= hi + width, q
        assert abs(stats.quantile(q) - np.percentile(x, 100 * q)) <= max(2 * width, hi - lo), q
        lo, hi = abs_ordered[max(math.floor(k) - 1, 0)], abs_ordered[min(math.ceil(k) + 1, x.size - 1)]
        assert lo - width <= stats.abs_quantile(q) <= hi + width, q


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300),
                  elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_float32_fast_path_bins_exactly_like_float64(x: np.ndarray) -> None:
    """Calibration feeds float32 tensors through a float32 path; it must agree bit for bit with float64."""
    fast, slow = TensorStats.empty(), TensorStats.empty()
    fast.update(x)
    slow.update(x.astype(np.float64))
    assert fast == slow


def test_float32_after_a_huge_float64_radius() -> None:
    stats = TensorStats.empty()
    stats.update(np.array([1e200]))
    stats.update(np.array([1.0, -2.0], np.float32))
    reference = TensorStats.empty()
    reference.update(np.array([1e200, 1.0, -2.0]))
    assert stats == reference
