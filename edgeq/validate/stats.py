"""Confidence intervals for accuracy figures: closed forms, no random numbers, no SciPy.

- :func:`wilson_interval`: the Wilson score interval for one proportion (a top-1). It is the set of
  proportions p that a score test at the given level does not reject, ``(p̂ - p)² <= z² p (1 - p) / n``,
  solved in closed form; unlike the textbook ``p̂ ± z·se`` it stays inside [0, 1] and does not collapse
  to a point at 0 % or 100 %.
- :func:`paired_difference_interval`: Newcombe's interval for the difference of two proportions measured
  on the *same* samples (Newcombe 1998, Stat Med 17:2635, method 10; "square-and-add" in Fagerland,
  Lydersen & Laake, *Statistical Analysis of Contingency Tables*, ch. 8). FP32 and INT8 top-1 on one
  evaluation set are paired: most samples are right (or wrong) under both, and only the discordant
  samples carry information about the drop. Treating the two top-1 figures as independent would give an
  interval several times too wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95


def z_value(confidence: float = CONFIDENCE) -> float:
    """The two-sided standard normal quantile: 1.959964 for 95 %."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (lo, hi) for ``successes`` out of ``n``; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the exact bounds at 0 and n: rounding must not put them a hair outside [0, 1] or away from p
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of two classifiers on the same n samples (True = right)."""

    both: int  # right under both
    first_only: int  # right under the first (FP32) only
    second_only: int  # right under the second (INT8) only
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither

    @property
    def first(self) -> int:
        return self.both + self.first_only

    @property
    def second(self) -> int:
        return self.both + self.second_only

    @classmethod
    def from_outcomes(cls, first: np.ndarray, second: np.ndarray) -> PairedCounts:
        first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
        if first.shape != second.shape:
            raise ValueError(f"paired outcomes must have one shape, got {first.shape} and {second.shape}")
        return cls(both=int(np.sum(first & second)), first_only=int(np.sum(first & ~second)),
                   second_only=int(np.sum(~first & second)), neither=int(np.sum(~first & ~second)))


def paired_difference_interval(counts: PairedCounts, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's interval (lo, hi) for p_first - p_second on paired samples (proportions, not points).

    Each proportion gets its Wilson interval; their distances from the estimates are combined as for
    correlated variables, with the correlation phi of the paired 2x2 table (shrunk by n/2 towards 0 when
    positive, as Newcombe does, to keep the interval from being too narrow for small tables).
    """
    n = counts.n
    if n == 0:
        return -1.0, 1.0
    p1, p2 = counts.first / n, counts.second / n
    l1, u1 = wilson_interval(counts.first, n, confidence)
    l2, u2 = wilson_interval(counts.second, n, confidence)
    margins = counts.first * (n - counts.first) * counts.second * (n - counts.second)
    phi = 0.0
    if margins > 0:
        cross = counts.both * counts.neither - counts.first_only * counts.second_only
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    d = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    above = math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, d - below), min(1.0, d + above)

