"""Error bars by resampling the evaluation samples (the bootstrap, Efron 1979).

A path's maximum and a barrier (the path's maximum above the higher endpoint) are functions
of the mean level over a finite set of samples. Resampling the samples with replacement,
with the same draw for every point of the path and for its endpoints, and taking the
percentiles of the recomputed maxima gives an interval for each. The points are evaluated
once (`Landscape.sample_levels`: each sample's share of the level function at each point);
the resampling is a matrix product with the draws' sample counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def minimum_resamples(confidence: float) -> int:
    """The fewest resamples B for a two-sided percentile interval at `confidence`: each tail
    of (1 - confidence) / 2 must hold at least one of the B + 1 ranks, (B + 1) (1 -
    confidence) / 2 >= 1, i.e. B >= 2 / (1 - confidence) - 1 (39 at 0.95, 19 at 0.9, 199 at
    0.99: the classic minimum of Monte Carlo tests and intervals). With fewer, the interval's
    ends are the extreme resamples (or interpolated between them) and do not have the stated
    coverage; with B = 1 the interval is a single point."""
    return max(2, math.ceil(round(2.0 / (1.0 - confidence) - 1.0, 9)))


def resampled_levels(
    sums: np.ndarray,
    counts: np.ndarray,
    offsets: np.ndarray,
    finalize: Callable[[np.ndarray], np.ndarray],
    resamples: int,
    seed: int,
) -> np.ndarray:
    """(resamples, K) levels of K points under `resamples` draws of the n samples.

    Args:
        sums, counts: (K, n) each sample's level sum and element count at each point.
        offsets: (K,) added to each point's mean (the regularizer where the level is the
            loss; zeros otherwise).
        finalize: the level function's map from mean to reported value (vectorised).
        resamples: how many draws.
        seed: seeds the draws (the same draws for every call with this seed and n).
    """
    n = sums.shape[1]
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    means = (weights @ sums.T) / np.maximum(weights @ counts.T, 1e-300) + offsets[None, :]
    return finalize(means)


def path_intervals(
    levels: np.ndarray, path: slice | np.ndarray, ends: tuple[int, int], confidence: float
) -> dict:
    """Intervals of a path's maximum and of its barrier from resampled levels.

    Args:
        levels: (resamples, K) from `resampled_levels`.
        path: which of the K points are the path's.
        ends: the columns of the two endpoints.
        confidence: e.g. 0.95 for the 2.5 and 97.5 percentiles.
    """
    maxima = levels[:, path].max(axis=1)
    barriers = maxima - np.maximum(levels[:, ends[0]], levels[:, ends[1]])
    tail = 100 * (1 - confidence) / 2
    return {
        "max": [float(v) for v in np.percentile(maxima, [tail, 100 - tail])],
        "barrier": [float(v) for v in np.percentile(barriers, [tail, 100 - tail])],
    }


__all__ = ["minimum_resamples", "path_intervals", "resampled_levels"]
