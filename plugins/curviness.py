"""Probe `curviness`: normalized geodesic length and beads against the level (the paper's curves)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from keras_landscape.dss import REASONS, DSSConfig
from keras_landscape.pairs import (
    PairOptions,
    PairProbe,
    connect_pair,
    default_level,
    parse_levels,
    seed_for,
    states_of,
    summarize,
)
from keras_landscape.projection import project
from keras_landscape.registry import register_probe

DEFAULT_FRACTIONS = (1.0, 0.75, 0.5)


@register_probe
class CurvinessProbe(PairProbe):
    """DSS over pairs at several levels: mean and spread of normalized length and beads."""

    name = "curviness"
    summary = "Normalized geodesic length and bead count vs level, over pairs (DSS)."
    result_fields = {
        "levels": "the levels, highest first (level-function units)",
        "normalized_length": "mean over connected pairs, per level (None if none connected)",
        "normalized_length_sd": "sample standard deviation over connected pairs, per level",
        "beads": "mean bead count (endpoints included) over connected pairs, per level",
        "beads_sd": "its sample standard deviation",
        "pairs": "connected pairs per level",
        "failed": "pairs not connected per level",
        "reasons": "per level, how many pairs failed for which reason",
        "details": "per level, per pair: the connectivity fields",
    }

    @dataclass
    class Config(DSSConfig, PairOptions):
        """DSS knobs (see DSSConfig), pair options (see PairOptions), and:

        Attributes:
            levels: '0.3,0.2,0.1' or 'start:stop:count'; empty: max endpoint level
                * (1 + margin) times 1, 0.75 and 0.5.
            retrain_endpoints: train endpoints that lie above a level down to alpha * level
                (from their state at the previous, higher level) instead of reporting the
                pair as not connected ('endpoint_above_level').
        """

        levels: str = ""
        retrain_endpoints: bool = False

    def run(self, landscape, models, store, progress) -> dict:
        config = self.config
        minima, pairs = self.pairs(landscape, models, store, progress)
        thetas = np.stack([m.theta for m in minima])
        states = states_of(minima, landscape)
        endpoint_levels = landscape.levels(thetas, states)
        levels = parse_levels(config.levels) if config.levels else [
            default_level(endpoint_levels, config.margin) * f for f in DEFAULT_FRACTIONS
        ]
        levels = sorted(levels, reverse=True)
        task = progress.task("curviness", total=len(levels) * len(pairs))
        per_level = []
        for k, level in enumerate(levels):
            if config.retrain_endpoints:
                thetas, states, endpoint_levels = self._retrain(
                    landscape, thetas, states, endpoint_levels, level, store, k
                )
            results = []
            for index, (i, j) in enumerate(pairs):
                a, b = (
                    dataclasses.replace(minima[n], theta=thetas[n], state=states[n]) for n in (i, j)
                )
                result = connect_pair(
                    landscape, a, b, level, config, store, f"level_{k}/pair_{i}_{j}",
                    seed_for(config.seed, k, index), task,
                )
                if config.retrain_endpoints and result["reason"] == "endpoint_above_level":
                    result = {**result, "reason": "endpoint_not_retrained",
                              "explanation": REASONS["endpoint_not_retrained"]}
                results.append(result)
                task.advance()
            per_level.append(results)
        task.close()
        return self._table(levels, per_level, landscape)

    def _retrain(self, landscape, thetas, states, endpoint_levels, level, store, k):
        """Endpoints above `level` trained down to alpha * level (stored, reused on resume).
        A retrained endpoint's BatchNorm statistics are re-estimated at its new weights."""
        key = f"level_{k}/endpoints"
        if store.has(f"{key}/theta"):
            stored = store.read(f"{key}/theta")
            if store.has(f"{key}/state"):
                states = store.read(f"{key}/state")
            return stored, states, landscape.levels(stored, states)
        above = np.flatnonzero(~(endpoint_levels <= level))
        thetas, states = thetas.copy(), states.copy()
        if len(above):
            result = project(
                landscape, thetas[above], self.config.alpha * level, self.config.projection(),
                seed=seed_for(self.config.seed, 104729, k), states=states[above],
            )
            thetas[above] = result.thetas
            states[above] = result.states
        store.write(f"{key}/theta", thetas)
        if states.shape[1]:
            store.write(f"{key}/state", states)
        return thetas, states, landscape.levels(thetas, states)

    @staticmethod
    def _table(levels, per_level, landscape) -> dict:
        table = {
            "levels": levels, "normalized_length": [], "normalized_length_sd": [],
            "beads": [], "beads_sd": [], "pairs": [], "failed": [], "reasons": [],
        }
        for results in per_level:
            good = [r for r in results if r["connected"]]
            length, length_sd = summarize([r["normalized_length"] for r in good])
            beads, beads_sd = summarize([r["beads"] for r in good])
            table["normalized_length"].append(length)
            table["normalized_length_sd"].append(length_sd)
            table["beads"].append(beads)
            table["beads_sd"].append(beads_sd)
            table["pairs"].append(len(good))
            table["failed"].append(len(results) - len(good))
            reasons = {}
            for r in results:
                if not r["connected"]:
                    reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
            table["reasons"].append(reasons)
        table.update({
            "level_fn": landscape.objective.level_fn,
            "beads_include_endpoints": True,
            "statistics": "mean and sample sd over connected pairs",
            "details": per_level,
        })
        return table
