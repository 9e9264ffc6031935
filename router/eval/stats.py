"""Bootstrap confidence intervals (percentile method, seeded) and latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_CHUNK = 2_000  # resamples per batch: bounds memory at n * _CHUNK indices


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float
    high: float


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = values[idx].mean(axis=1)
    return out


def mean_ci(
    values: ArrayLike, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> Interval | None:
    """Mean of ``values`` with a bootstrap percentile interval; None for an empty sample."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    means = _resampled_means(arr, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(int(arr.size), float(arr.mean()), float(low), float(high))


def paired_bootstrap(
    a: ArrayLike, b: ArrayLike, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> Interval | None:
    """Mean of a - b over the same items, with an interval from resampling items (pairs stay together).

    Resampling pairs rather than each side on its own keeps the item difficulty shared by both
    configurations out of the interval, which is why a paired interval is narrower than two
    separate ones would suggest."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: {x.size} values against {y.size}; pairs must line up")
    return mean_ci(x - y, resamples=resamples, seed=seed, level=level)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None
