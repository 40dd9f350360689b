"""Statistics the reports share: the exact sign test and percentile bootstrap intervals of a mean (numpy, seeded).

The compare stage's paired bootstrap draws one set of resamples (`resample`) and applies it to every statistic
(`percentile_ci`), so the intervals of two arms and of their difference come from the same resampled tasks; the rl
probe's interval of its paired differences is `bootstrap_ci`, the same draw for a single sample.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bootstrap_ci", "percentile_ci", "quantiles", "resample", "sign_test"]


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each decided task a fair coin). Ties are left out
    before calling; no decided task gives 1.0."""
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses must be >= 0")
    n, k = wins + losses, min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers until the one division


def quantiles(samples: np.ndarray, confidence: float) -> list[float]:
    """[low, high]: the central `confidence` interval of `samples` (percentiles, numpy's linear interpolation)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices into n items drawn with replacement, a row per bootstrap resample. Applied to several
    statistics of the same items, they make a paired bootstrap."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_ci(values, idx: np.ndarray, confidence: float) -> list[float]:
    """Percentile interval of the mean of `values` over the resamples `idx` (from `resample`)."""
    return quantiles(np.asarray(values, dtype=float)[idx].mean(axis=1), confidence)


def bootstrap_ci(
    values, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, list[float]]:
    """(mean, [low, high]): percentile bootstrap interval of the mean of `values`, resampled with replacement."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap of an empty sample")
    return float(x.mean()), percentile_ci(x, resample(x.size, n_boot, seed), confidence)
