"""Probe `connectivity`: are two minima joined by a path below level u? (DSS)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.dss import DSSConfig
from keras_landscape.pairs import (
    PairOptions,
    PairProbe,
    connect_pair,
    default_level,
    seed_for,
    states_of,
)
from keras_landscape.registry import register_probe


@register_probe
class ConnectivityProbe(PairProbe):
    """Dynamic String Sampling between each pair of models at one level."""

    name = "connectivity"
    summary = "Are two minima connected below level u? Beads, normalized geodesic length (DSS)."
    result_fields = {
        "connected": "every segment's checked maximum is <= level * (1 + slack) (all pairs)",
        "level": "u, in level-function units",
        "beads": "beads on the final string, both endpoints included (2 = straight line)",
        "normalized_length": "path length / ||B - A|| (1 on convex problems)",
        "path_length": "sum of bead-to-bead distances (parameter units)",
        "distance": "||B - A||",
        "max_loss": "the true maximum of the level function over all checked points",
        "depth": "refinement depths used",
        "projection_steps": "optimiser steps spent on beads",
        "reason": "connected, endpoint_above_level, depth_limit, bead_not_reached, non_finite",
        "pairs": "per pair: the fields above plus worst_segment, endpoint_levels, a, b, prefix",
        "seconds": "wall time of the probe",
    }

    @dataclass
    class Config(DSSConfig, PairOptions):
        """DSS knobs (see DSSConfig), pair options (see PairOptions), and:

        Attributes:
            level: u in level-function units; None: max(endpoint levels) * (1 + margin).
        """

        level: float | None = None

    def run(self, landscape, models, store, progress) -> dict:
        config = self.config
        minima, pairs = self.pairs(landscape, models, store, progress)
        task = progress.task("connectivity", total=len(pairs))
        results = []
        for index, (i, j) in enumerate(pairs):
            a, b = minima[i], minima[j]
            level = config.level
            if level is None:
                ends = landscape.levels(np.stack([a.theta, b.theta]), states_of([a, b], landscape))
                level = default_level(ends, config.margin)
            results.append(
                connect_pair(
                    landscape, a, b, level, config, store, f"pair_{i}_{j}",
                    seed_for(config.seed, index), task,
                )
            )
            task.advance()
        task.close()
        return {**aggregate(results), **{
            "level_fn": landscape.objective.level_fn,
            "pairs": results,
            "connected_pairs": sum(r["connected"] for r in results),
            "beads_include_endpoints": True,
            "measured_on": "all trainable weights",
        }}


def aggregate(results: list[dict]) -> dict:
    """One pair: its fields. Several: all connected?, means of sizes, max of maxima, sums."""
    if len(results) == 1:
        keys = ("connected", "level", "beads", "normalized_length", "path_length", "distance",
                "max_loss", "depth", "projection_steps", "reason")
        return {key: results[0][key] for key in keys}
    mean = lambda key: float(np.mean([r[key] for r in results]))  # noqa: E731
    return {
        "connected": all(r["connected"] for r in results),
        "level": results[0]["level"] if len({r["level"] for r in results}) == 1 else None,
        "beads": mean("beads"),
        "normalized_length": mean("normalized_length"),
        "path_length": mean("path_length"),
        "distance": mean("distance"),
        "max_loss": max(r["max_loss"] for r in results),
        "depth": max(r["depth"] for r in results),
        "projection_steps": int(sum(r["projection_steps"] for r in results)),
        "reason": "connected" if all(r["connected"] for r in results) else "see pairs",
        "aggregated_over_pairs": len(results),
    }
