"""Streaming, mergeable per-tensor statistics of bounded size.

A tensor's statistics are its value count, its exact min and max, and a fixed-size histogram over
``[-radius, radius]``. The grid depends only on the data's max|x|: ``radius`` is the smallest power of two
that covers it. When new data exceeds the radius, the radius doubles (as often as needed) and adjacent
bin pairs are summed into the middle half of the new grid. Power-of-two scaling is exact in floating
point and the binning rule below is stable under halving, so stats collected in any order, with any
batch split, or merged from partial stats are bit-identical. Memory never grows with the sample count.

Binning rule, with ``t = x / bin_width`` and ``H = HIST_BINS // 2``: a bin is closed on the side away
from zero. ``t`` in ``[0, 1]`` goes to bin ``H``, ``(c-1, c]`` to bin ``H + c - 1`` and ``[-c, -(c-1))``
to bin ``H - c``. So ``+radius`` lands in the last bin, ``-radius`` in the first, and zero in bin ``H``
(also when the radius is 0, i.e. the tensor has been all zeros so far).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from edgeq.errors import InputError

HIST_BINS = 4096
_HALF = HIST_BINS // 2
# Radii are clamped to 2**MIN_EXPONENT .. 2**MAX_EXPONENT: below, bin widths would approach float64
# subnormals (and lose exactness); above, edges would overflow. float32 activations never reach either.
MIN_EXPONENT = -100
MAX_EXPONENT = 1000
_FIELDS = ("count", "min", "max", "radius", "hist")


def radius_for(abs_max: float) -> float:
    """The histogram radius for data with this max|x|: the smallest power of two >= it (0.0 for 0)."""
    if abs_max == 0:
        return 0.0
    mantissa, exponent = math.frexp(abs_max)  # abs_max = mantissa * 2**exponent, mantissa in [0.5, 1)
    k = max(exponent - 1 if mantissa == 0.5 else exponent, MIN_EXPONENT)
    if k > MAX_EXPONENT:
        raise ValueError(f"values up to {abs_max:g} are too large to histogram")
    return math.ldexp(1.0, k)


def _bin_indices(values: np.ndarray, radius: float) -> np.ndarray:
    """Bin index of each value on the grid of ``radius`` (> 0), by the rule in the module docstring.

    Works in the values' own float precision: scaling by a power of two and ``ceil`` are exact there,
    so float32 activations need no float64 copy (this is the hot loop of calibration).
    """
    per_unit = values.dtype.type(_HALF / radius)  # a power of two: the product below is exact
    if not 0 < per_unit < np.inf:  # a float64-sized radius seen before: float32 cannot hold its scale
        values, per_unit = values.astype(np.float64), np.float64(_HALF / radius)
    scaled = np.abs(values)
    np.multiply(scaled, per_unit, out=scaled)
    np.ceil(scaled, out=scaled)
    # At least 1: a tiny nonzero value whose scaled magnitude underflowed to 0 still belongs to the first bin
    # on its side, exactly as it would on any smaller radius; zero itself (c = 1, x >= 0) lands in bin _HALF.
    np.maximum(scaled, 1.0, out=scaled)
    c = scaled.astype(np.int32)
    return np.where(values >= 0, c + (_HALF - 1), _HALF - c)


def _regrid(hist: np.ndarray, radius: float, new_radius: float, copy: bool = True) -> np.ndarray:
    """``hist`` on the grid of ``new_radius`` (a power-of-two multiple of ``radius``): exact pair sums.
    ``copy=False`` may return ``hist`` itself, for a caller that only reads the result."""
    if radius == 0 or radius == new_radius:
        return hist.copy() if copy else hist  # radius 0: all mass is at zero, which is bin _HALF on every grid
    doublings = math.frexp(new_radius)[1] - math.frexp(radius)[1]
    # After 12 doublings every value sits in one of the two centre bins, a fixed point of the fold.
    for _ in range(min(doublings, 16)):
        folded = np.zeros_like(hist)
        folded[_HALF // 2: _HALF // 2 + _HALF] = hist[0::2] + hist[1::2]
        hist = folded
    return hist


def _interpolate(counts: np.ndarray, lows: np.ndarray, highs: np.ndarray, target: float) -> float:
    """The point below which ``target`` of the mass lies, mass spread uniformly over each [low, high]."""
    cumulative = np.cumsum(counts)
    b = min(int(np.searchsorted(cumulative, target, side="left")), len(counts) - 1)
    before = float(cumulative[b] - counts[b])
    frac = (target - before) / float(counts[b])
    if frac >= 1.0:
        return float(highs[b])
    return float(lows[b] + max(frac, 0.0) * (highs[b] - lows[b]))


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")


@dataclass(eq=False)
class TensorStats:
    """Count, exact min/max and a power-of-two-radius histogram of every value a tensor took."""

    count: int  # number of values seen
    min: float  # exact observed min (inf when empty)
    max: float  # exact observed max (-inf when empty)
    radius: float  # histogram covers [-radius, radius]; a power of two >= max|x|, 0.0 when empty or all-zero
    hist: np.ndarray  # int64 counts, shape (HIST_BINS,), uniform bins over [-radius, radius]

    @classmethod
    def empty(cls) -> TensorStats:
        return cls(count=0, min=math.inf, max=-math.inf, radius=0.0, hist=np.zeros(HIST_BINS, dtype=np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return (self.count == other.count and self.min == other.min and self.max == other.max
                and self.radius == other.radius and np.array_equal(self.hist, other.hist))

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def abs_max(self) -> float:
        """max|x| (0.0 when empty)."""
        return max(-self.min, self.max) + 0.0 if self.count else 0.0  # + 0.0: never -0.0 (an all-zero tensor)

    def update(self, values: np.ndarray) -> None:
        """Add every element of ``values`` (any shape). Raises ValueError on NaN/Inf, leaving self unchanged."""
        array = np.asarray(values)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"tensor stats need real numbers, got dtype {array.dtype}")
        precision = np.float32 if array.dtype.kind == "f" and array.dtype.itemsize <= 4 else np.float64
        flat = array.astype(precision, copy=False).ravel()
        if flat.size == 0:
            return
        # + 0.0 makes -0.0 plain 0.0: min(0.0, -0.0) keeps its first argument, so a signed zero as an extreme
        # would depend on the order samples and shards are merged in (and so would the saved bytes).
        lo, hi = float(flat.min()) + 0.0, float(flat.max()) + 0.0
        if not (math.isfinite(lo) and math.isfinite(hi)):  # min/max propagate NaN and reach +-Inf
            raise ValueError("values contain non-finite numbers (NaN or Inf)")
        radius = max(self.radius, radius_for(max(-lo, hi)))
        hist = _regrid(self.hist, self.radius, radius)
        if radius == 0:
            hist[_HALF] += flat.size
        else:
            hist += np.bincount(_bin_indices(flat, radius), minlength=HIST_BINS)
        self.hist, self.radius = hist, radius
        self.count += int(flat.size)
        self.min, self.max = min(self.min, lo), max(self.max, hi)

    def merge(self, other: TensorStats) -> TensorStats:
        """The stats of both data sets together; neither operand changes."""
        radius = max(self.radius, other.radius)
        hist = _regrid(self.hist, self.radius, radius)
        hist += _regrid(other.hist, other.radius, radius, copy=False)
        return TensorStats(count=self.count + other.count, min=min(self.min, other.min),
                           max=max(self.max, other.max), radius=radius, hist=hist)

    def bin_edges(self) -> np.ndarray:
        """HIST_BINS + 1 edges from -radius to radius (all 0.0 while the radius is 0)."""
        return (np.arange(HIST_BINS + 1, dtype=np.float64) - _HALF) * (self.radius / _HALF)

    def bin_centers(self) -> np.ndarray:
        edges = self.bin_edges()
        return (edges[:-1] + edges[1:]) / 2

    def occupied_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts, lows, highs) of the nonempty bins, edges tightened to the observed [min, max].

        Tightening makes interpolation exact at the extremes: the lowest bin starts at min, the highest
        ends at max. An all-zero tensor is one bin with low == high == 0.
        """
        self._require_data()
        nonempty = np.flatnonzero(self.hist)
        edges = self.bin_edges()
        lows = np.maximum(edges[nonempty], self.min)
        highs = np.minimum(edges[nonempty + 1], self.max)
        return self.hist[nonempty], lows, highs

    def quantile(self, q: float) -> float:
        """Signed quantile from the histogram (uniform within a bin), within [min, max]."""
        _check_q(q)
        counts, lows, highs = self.occupied_bins()
        return min(max(_interpolate(counts, lows, highs, q * self.count), self.min), self.max)

    def abs_quantile(self, q: float) -> float:
        """Quantile of |x| from the histogram folded at zero, within [min|x|-bound, max|x|]."""
        _check_q(q)
        self._require_data()
        if self.radius == 0:
            return 0.0
        # Folded bin j holds |x| in (j, j+1] bin widths (j = 0 also holds exact zeros).
        folded = self.hist[_HALF:] + self.hist[_HALF - 1::-1]
        nonempty = np.flatnonzero(folded)
        width = self.radius / _HALF
        if self.min >= 0:
            floor = self.min
        elif self.max <= 0:
            floor = -self.max
        else:
            floor = 0.0
        lows = np.maximum(nonempty * width, floor)
        highs = np.minimum((nonempty + 1) * width, self.abs_max)
        value = _interpolate(folded[nonempty], lows, highs, q * self.count)
        return min(max(value, floor), self.abs_max)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays named ``prefix + field`` for ``np.savez``; ``from_arrays`` reads them back exactly."""
        return {
            f"{prefix}count": np.array(self.count, dtype=np.int64),
            f"{prefix}min": np.array(self.min, dtype=np.float64),
            f"{prefix}max": np.array(self.max, dtype=np.float64),
            f"{prefix}radius": np.array(self.radius, dtype=np.float64),
            f"{prefix}hist": self.hist.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> TensorStats:
        """Rebuild stats written by ``to_arrays``; InputError if they are missing or inconsistent."""
        missing = [f"{prefix}{name}" for name in _FIELDS if f"{prefix}{name}" not in arrays]
        if missing:
            raise InputError(f"tensor stats are missing {', '.join(missing)}")
        hist = np.asarray(arrays[f"{prefix}hist"])
        try:
            count = int(arrays[f"{prefix}count"])
            lo, hi = float(arrays[f"{prefix}min"]), float(arrays[f"{prefix}max"])
            radius = float(arrays[f"{prefix}radius"])
        except (TypeError, ValueError):
            raise InputError(f"tensor stats {prefix!r} hold non-scalar fields") from None
        problem = None
        if hist.shape != (HIST_BINS,) or hist.dtype.kind not in "iu" or (hist < 0).any():
            problem = f"histogram is not {HIST_BINS} non-negative integer counts"
        elif int(hist.sum()) != count:
            problem = "histogram total differs from the count"
        elif count and not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            problem = "min/max are not a finite interval"
        elif count and radius != radius_for(max(-lo, hi)):
            problem = "radius is not the smallest power of two covering the data"
        elif not count and (radius != 0 or lo != math.inf or hi != -math.inf):
            problem = "empty stats carry a range"
        if problem:
            raise InputError(f"tensor stats {prefix!r} are inconsistent: {problem}")
        return cls(count=count, min=lo, max=hi, radius=radius, hist=hist.astype(np.int64))

    def _require_data(self) -> None:
        if self.count == 0:
            raise ValueError("no values have been collected for this tensor")


TOP_SAMPLES = 8  # per tensor, the samples with the largest max, smallest min and largest max|x| are kept
Ranked = tuple[tuple[int, float], ...]  # (sample index, value), best first


def _ranked(entries: Iterable[tuple[int, float]], descending: bool) -> Ranked:
    """The TOP_SAMPLES best (sample, value) pairs; ties go to the lower sample index, so any order gives the same."""
    key = (lambda e: (-e[1], e[0])) if descending else (lambda e: (e[1], e[0]))
    return tuple(sorted(entries, key=key)[:TOP_SAMPLES])


@dataclass(eq=False)
class SampleExtremes:
    """Which calibration samples set a tensor's range.

    Per tensor, the samples with the largest maxima, the smallest minima and the largest max|x| (each a
    sample's extreme over every value it produced on the tensor, loop iterations included), at most
    TOP_SAMPLES of each; and two full ``TensorStats``: ``top``, the values of the sample with the largest
    max|x| alone, and ``rest``, those of every other sample, at its own (finer) histogram resolution. So the
    range an estimator would choose *without* the most extreme sample is computed exactly, not guessed.

    Built one sample at a time (``add``) and mergeable over disjoint sample sets (``merge``); ties are
    broken by the lower sample index and histogram merges are exact, so the result does not depend on
    the order samples or partial results arrive in. Memory is three histograms and three short lists.
    """

    samples: int  # samples that reached the tensor
    top_max: Ranked  # (sample, its max), largest first
    top_min: Ranked  # (sample, its min), smallest first
    top_abs: Ranked  # (sample, its max|x|), largest first; top_abs[0] is the sample held in ``top``
    top: TensorStats  # the values of sample top_abs[0][0]
    rest: TensorStats  # the values of every other sample

    @classmethod
    def empty(cls) -> SampleExtremes:
        return cls(samples=0, top_max=(), top_min=(), top_abs=(), top=TensorStats.empty(), rest=TensorStats.empty())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SampleExtremes):
            return NotImplemented
        return (self.samples == other.samples and self.top_max == other.top_max and self.top_min == other.top_min
                and self.top_abs == other.top_abs and self.top == other.top and self.rest == other.rest)

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def top_sample(self) -> int | None:
        """The sample with the largest max|x| (None before any sample)."""
        return self.top_abs[0][0] if self.top_abs else None

    def total(self) -> TensorStats:
        """The statistics of every sample together (what ``TensorStats`` of the whole set holds)."""
        return self.rest.merge(self.top)

    def add(self, sample: int, stats: TensorStats) -> None:
        """Record one sample's own statistics on this tensor (``stats``: every value it produced; kept, not copied)."""
        if stats.count == 0:
            return
        if any(s == sample for s, _ in self.top_abs):
            raise ValueError(f"sample {sample} was already recorded")
        self._absorb(self._single(sample, stats))

    @classmethod
    def _single(cls, sample: int, stats: TensorStats) -> SampleExtremes:
        return cls(samples=1, top_max=((sample, stats.max),), top_min=((sample, stats.min),),
                   top_abs=((sample, stats.abs_max),), top=stats, rest=TensorStats.empty())

    def merge(self, other: SampleExtremes) -> SampleExtremes:
        """The extremes of both sample sets together (their sample indices must not overlap); neither changes."""
        merged = SampleExtremes(samples=self.samples, top_max=self.top_max, top_min=self.top_min,
                                top_abs=self.top_abs, top=self.top, rest=self.rest)
        merged._absorb(other)
        return merged

    def _absorb(self, other: SampleExtremes) -> None:
        if other.samples == 0:
            return
        if self.samples == 0:
            self.samples, self.top_max, self.top_min, self.top_abs = (other.samples, other.top_max, other.top_min,
                                                                      other.top_abs)
            self.top, self.rest = other.top, other.rest
            return
        top_abs = _ranked(self.top_abs + other.top_abs, descending=True)
        mine = top_abs[0] == self.top_abs[0]
        winner, loser = (self, other) if mine else (other, self)
        rest = self.rest.merge(other.rest) if other.rest.count else self.rest  # one new sample has no rest
        self.rest = rest.merge(loser.top)
        self.top = winner.top
        self.top_abs = top_abs
        self.top_max = _ranked(self.top_max + other.top_max, descending=True)
        self.top_min = _ranked(self.top_min + other.top_min, descending=False)
        self.samples += other.samples

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays named ``prefix + field``; ``from_arrays`` reads them back given the tensor's total stats.

        ``top``'s histogram is not written: it is the total's minus ``rest``'s (top's max|x| is the total's,
        so both share the total's grid), and the total is in the file already.
        """
        arrays = {f"{prefix}samples": np.array(self.samples, dtype=np.int64),
                  f"{prefix}top_min": np.array(self.top.min, dtype=np.float64),
                  f"{prefix}top_max": np.array(self.top.max, dtype=np.float64)}
        for name, ranked in (("max", self.top_max), ("min", self.top_min), ("abs", self.top_abs)):
            arrays[f"{prefix}rank_{name}_sample"] = np.array([s for s, _ in ranked], dtype=np.int64)
            arrays[f"{prefix}rank_{name}_value"] = np.array([v for _, v in ranked], dtype=np.float64)
        arrays.update(self.rest.to_arrays(f"{prefix}rest_"))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str, total: TensorStats) -> SampleExtremes:
        """Rebuild what ``to_arrays`` wrote; InputError if it is missing or does not add up to ``total``."""
        names = ["samples", "top_min", "top_max"] + [f"rank_{n}_{f}" for n in ("max", "min", "abs")
                                                     for f in ("sample", "value")]
        missing = [f"{prefix}{name}" for name in names if f"{prefix}{name}" not in arrays]
        if missing:
            raise InputError(f"sample extremes are missing {', '.join(missing)}")
        rest = TensorStats.from_arrays(arrays, f"{prefix}rest_")
        try:
            samples = int(arrays[f"{prefix}samples"])
            top_lo, top_hi = float(arrays[f"{prefix}top_min"]), float(arrays[f"{prefix}top_max"])
            ranks = {}
            for name in ("max", "min", "abs"):
                indices = np.asarray(arrays[f"{prefix}rank_{name}_sample"])
                values = np.asarray(arrays[f"{prefix}rank_{name}_value"])
                if indices.ndim != 1 or indices.shape != values.shape or indices.dtype.kind not in "iu":
                    raise ValueError(name)
                ranks[name] = tuple((int(s), float(v)) for s, v in zip(indices, values, strict=True))
        except (TypeError, ValueError):
            raise InputError(f"sample extremes {prefix!r} hold malformed fields") from None
        problem = None
        count = total.count - rest.count
        if samples < 0 or any(len(r) != min(samples, TOP_SAMPLES) for r in ranks.values()):
            problem = "ranked lists do not match the sample count"
        elif any(r != _ranked(r, descending=name != "min") for name, r in ranks.items()):
            problem = "ranked lists are not in order"
        elif samples and (count <= 0 or rest.radius > total.radius):
            problem = "the rest's statistics exceed the total's"
        elif samples and (not (math.isfinite(top_lo) and math.isfinite(top_hi) and top_lo <= top_hi)
                          or ranks["abs"][0][1] != max(-top_lo, top_hi)
                          or total.radius != radius_for(ranks["abs"][0][1])):
            problem = "the top sample's range does not match"
        top = TensorStats.empty()
        if samples and problem is None:
            hist = total.hist - _regrid(rest.hist, rest.radius, total.radius)
            if (hist < 0).any() or int(hist.sum()) != count:
                problem = "the rest's histogram is not part of the total's"
            else:
                top = TensorStats(count=count, min=top_lo, max=top_hi, radius=total.radius, hist=hist)
                if top.merge(rest) != total:
                    problem = "top and rest do not add up to the total"
        elif not samples and (rest.count or total.count):
            problem = "values without samples"
        if problem:
            raise InputError(f"sample extremes {prefix!r} are inconsistent: {problem}")
        return cls(samples=samples, top_max=ranks["max"], top_min=ranks["min"], top_abs=ranks["abs"], top=top,
                   rest=rest)
