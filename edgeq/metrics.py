"""The fidelity formulas every stage shares (a leaf module: validation, recovery and the harness use one copy)."""

from __future__ import annotations

import math


def sqnr_db(signal: float, noise: float) -> float:
    """10·log10(signal / noise) in dB: +inf when the noise is 0 (identical), -inf when only the signal is 0."""
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf
