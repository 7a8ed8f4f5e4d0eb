"""Pairs of minima: the resumable DSS connection of two minima, and what pair results share.

A connection streams its string into a store record as it grows and records its verdict;
asked again (a resumed run), it returns the stored verdict instead of recomputing.
"""

from __future__ import annotations

import math

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.science.dss import Connection, DSSConfig, search
from keras_landscape.science.lockstep import Search, run_one
from keras_landscape.store.strings import StringRecord


def states_of(minima: list, landscape: LandscapeLike) -> np.ndarray:
    """(K, S) the minima's own states (the landscape model's where a minimum has none)."""
    return np.stack([landscape.state_or_own(getattr(m, "state", None)) for m in minima])


def default_level(endpoint_levels, margin: float) -> float:
    finite = [float(v) for v in endpoint_levels if math.isfinite(v)]
    top = max(finite) if finite else math.inf  # a NaN endpoint gets the verdict non_finite
    return top * (1.0 + margin) if top > 0 else top + margin


def connect_pair(
    landscape: LandscapeLike,
    a,
    b,
    level,
    config: DSSConfig,
    run,
    prefix: str,
    seed: int,
    progress,
    target=None,
) -> dict:
    """DSS between minima a and b at `level`, streamed under `prefix`; a finished one is reused."""
    return run_one(
        landscape,
        pair_search(landscape, a, b, level, config, run, prefix, seed, progress, target),
    )


def pair_search(
    landscape: LandscapeLike,
    a,
    b,
    level,
    config: DSSConfig,
    run,
    prefix: str,
    seed: int,
    progress,
    target=None,
) -> Search:
    """`connect_pair` as a lockstep search (`keras_landscape.science.lockstep.drive` runs
    many together); returns the pair's result dict. `target`: the beads' level (None:
    alpha * level; see `keras_landscape.science.dss.search`)."""
    record = StringRecord(run, prefix)
    verdict = record.verdict()
    if verdict is not None:
        return verdict
    connection: Connection = yield from search(
        landscape,
        a.theta,
        b.theta,
        level,
        config,
        seed=seed,
        record=record,
        progress=progress,
        state_a=getattr(a, "state", None),
        state_b=getattr(b, "state", None),
        target=target,
    )
    result = connection.to_dict()
    result.update({"a": a.name, "b": b.name, "prefix": prefix})
    record.finish(result)
    return result


def summarize(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when empty; sd 0 for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


__all__ = ["connect_pair", "default_level", "pair_search", "states_of", "summarize"]
