"""Probe `connectivity`: are two minima joined by a path below level u? (DSS)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.plugins.pairs import PairOptions, PairProbe
from keras_landscape.report.tables import fmt, table
from keras_landscape.science.dss import DSSConfig
from keras_landscape.science.lockstep import drive
from keras_landscape.science.pairs import default_level, pair_search, states_of
from keras_landscape.store.strings import verdict_words


def connectivity_tables(name: str, result: dict) -> list[dict]:
    pairs = [p for p in result.get("pairs") or [] if isinstance(p, dict)] or [result]
    rows, notes = [], []
    for p in pairs:
        verdict = verdict_words(p.get("connected"), p.get("reason"))
        rows.append(
            [
                f"{p.get('a', 'A')} - {p.get('b', 'B')}",
                p.get("level"),
                verdict,
                p.get("beads"),
                p.get("normalized_length"),
                p.get("max_level", p.get("max_loss")),  # max_loss: older stores
                p.get("depth"),
                p.get("projection_steps"),
            ]
        )
        if not p.get("connected") and p.get("reason"):
            worst = p.get("worst_segment") or {}
            detail = f"{p.get('a', 'A')} - {p.get('b', 'B')}: {p.get('explanation') or p['reason']}"
            if worst.get("index") is not None:
                detail += (
                    f"; worst segment {worst['index']} reaches {fmt(worst.get('max_level'))}"
                    f" at t = {fmt(worst.get('t'), 2)}"
                )
            if worst.get("bead_level") is not None:
                detail += (
                    f"; its bead stopped at {fmt(worst['bead_level'])} "
                    f"(target {fmt(worst.get('target'))})"
                )
            notes.append(detail)
    connected = sum(bool(p.get("connected")) for p in pairs)
    notes.insert(
        0,
        f"{connected} of {len(pairs)} pair(s) connected; level function "
        f"{result.get('level_fn', '?')}; beads include both endpoints"
        + (f"; {fmt(result['seconds'], 3)} s" if result.get("seconds") is not None else ""),
    )
    return [
        table(
            name,
            ["pair", "level u", "verdict", "beads", "norm. length", "max level", "depth", "steps"],
            rows,
            notes,
        )
    ]


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
        "max_level": "the true maximum of the level function over all checked points",
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

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return connectivity_tables(run_name, result)

    @classmethod
    def expected_strings(cls, config: dict, inputs: int) -> list[str] | None:
        return cls.pair_prefixes(config, inputs)

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        minima, pairs = self.pairs(landscape, models, store, progress)
        task = progress.task("connectivity", total=len(pairs))
        ends = landscape.levels(np.stack([m.theta for m in minima]), states_of(minima, landscape))
        searches = [
            pair_search(
                landscape,
                minima[i],
                minima[j],
                config.level
                if config.level is not None
                else default_level([ends[i], ends[j]], config.margin),
                config,
                store,
                f"pair_{i}_{j}",
                config.seed,
                task,
            )
            for i, j in pairs
        ]
        results = drive(landscape, searches, on_done=lambda *_: task.advance(), progress=task)
        task.close()
        return {
            **aggregate(results),
            **{
                "level_fn": landscape.level_name,
                "pairs": results,
                "connected_pairs": sum(r["connected"] for r in results),
                "beads_include_endpoints": True,
                "measured_on": "all trainable weights",
            },
        }


def aggregate(results: list[dict]) -> dict:
    """One pair: its fields. Several: all connected?, means of sizes, max of maxima, sums."""
    if len(results) == 1:
        keys = (
            "connected",
            "level",
            "beads",
            "normalized_length",
            "path_length",
            "distance",
            "max_level",
            "depth",
            "projection_steps",
            "reason",
        )
        return {key: results[0][key] for key in keys}
    mean = lambda key: float(np.mean([r[key] for r in results]))  # noqa: E731
    return {
        "connected": all(r["connected"] for r in results),
        "level": results[0]["level"] if len({r["level"] for r in results}) == 1 else None,
        "beads": mean("beads"),
        "normalized_length": mean("normalized_length"),
        "path_length": mean("path_length"),
        "distance": mean("distance"),
        "max_level": max(r["max_level"] for r in results),
        "depth": max(r["depth"] for r in results),
        "projection_steps": int(sum(r["projection_steps"] for r in results)),
        "reason": "connected" if all(r["connected"] for r in results) else "see pairs",
        "aggregated_over_pairs": len(results),
    }
