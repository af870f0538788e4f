"""Bootstrap intervals and histograms, the statistics joint's reports need (NumPy only).

Percentile bootstrap: resample the values with replacement ``resamples`` times
(``numpy.random.default_rng(seed)``), compute the statistic on each resample, and take the
``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of what came out. Non-finite values are
dropped first. Nothing here raises on small data: no value gives NaN everywhere, one value gives
its mean with a NaN interval (one value says nothing about spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, List, Tuple

import numpy as np

#: at most this many drawn indices are held at once (resamples are drawn in blocks): 32 MB of int64
MAX_BLOCK = 1 << 22


def finite(values: Any) -> np.ndarray:
    """``values`` as a float64 vector without NaN and infinities (``None`` counts as NaN)."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    return level


def resample_indices(n: int, resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks ``[b, n]`` of indices drawn with replacement, ``resamples`` rows in all, so that a
    bootstrap over many values never holds more than :data:`MAX_BLOCK` indices at once."""
    if n < 1 or resamples < 1:
        return
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, MAX_BLOCK // n))
    for start in range(0, resamples, block):
        yield rng.integers(0, n, size=(min(block, resamples - start), n))


def percentile_interval(samples: Any, level: float = 0.95) -> Tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (non-finite ones dropped);
    ``(nan, nan)`` when none is left."""
    level = check_level(level)
    s = finite(samples)
    if not s.size:
        return math.nan, math.nan
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class MeanInterval:
    """A mean with its percentile-bootstrap interval: ``n`` finite values, ``level`` e.g. 0.95."""

    n: int
    mean: float
    low: float
    high: float
    level: float


def bootstrap_mean(values: Any, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> MeanInterval:
    """The mean of the finite ``values`` and its percentile-bootstrap interval at ``level``."""
    level = check_level(level)
    if int(resamples) < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples!r}")
    x = finite(values)
    if not x.size:
        return MeanInterval(0, math.nan, math.nan, math.nan, level)
    mean = float(x.mean())
    if x.size == 1:
        return MeanInterval(1, mean, math.nan, math.nan, level)
    means = np.concatenate([x[idx].mean(axis=1) for idx in resample_indices(x.size, int(resamples), seed)])
    low, high = percentile_interval(means, level)
    return MeanInterval(int(x.size), mean, low, high, level)


def histogram(values: Any, bins: int = 20, lo: float = math.nan, hi: float = math.nan
              ) -> Tuple[List[int], List[float]]:
    """Counts of the finite ``values`` in ``bins`` equal bins from ``lo`` to ``hi`` (default: the
    values' range; values outside it count in the first or last bin) and the ``bins + 1`` edges."""
    x = finite(values)
    lo = float(x.min()) if math.isnan(lo) and x.size else (0.0 if math.isnan(lo) else lo)
    hi = float(x.max()) if math.isnan(hi) and x.size else (lo + 1.0 if math.isnan(hi) else hi)
    if not hi > lo:
        hi = lo + max(1.0, abs(lo) * 1e-9)   # (lo + 1.0 == lo for |lo| > 2**53)
    counts, edges = np.histogram(np.clip(x, lo, hi), bins=int(bins), range=(lo, hi))
    return [int(c) for c in counts], [float(e) for e in edges]
