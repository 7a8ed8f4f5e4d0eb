"""Probe `components`: N_u over many minima, the merge tree and the highest merge level."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_landscape.barriers import BisectionOptions, linear_profile, saddle_bracket
from keras_landscape.components import bottleneck_levels, count_components, merge_tree
from keras_landscape.dss import DSSConfig
from keras_landscape.pairs import PairOptions, PairProbe, parse_levels, seed_for, states_of
from keras_landscape.registry import register_probe

DEFAULT_GRID = 25


@register_probe
class ComponentsProbe(PairProbe):
    """Pairwise saddle levels over K minima, single linkage, N_u on a level grid."""

    name = "components"
    level_targets = False  # `levels` is the grid N_u is counted on, any finite values
    summary = "Connected components N_u of sublevel sets over many minima; merge tree (DSS)."
    result_fields = {
        "minima": "names of the K minima (files, or a model and its trained replicas)",
        "minimum_levels": "level function at each minimum",
        "levels": "the level grid u",
        "n_components": "N_u per level: components of Omega_u holding a sampled minimum",
        "merge_levels": "the K-1 single-linkage merge levels (null: never merged)",
        "merge_tree": "[level, cluster_a, cluster_b, new_cluster]; leaves 0..K-1",
        "highest_merge_level": "above it every sampled minimum lies in one component "
        "(the energy-barrier level estimate)",
        "pairs": "per pair 'i-j': linear_max, saddle_level {lower, upper}, decided_by "
        "(dss-bisection, or union-find when a chain through other minima already decided it)",
    }

    @dataclass
    class Config(DSSConfig, PairOptions, BisectionOptions):
        """DSS knobs (DSSConfig), pair options (PairOptions), bisection (BisectionOptions), and:

        Attributes:
            partners: with one model, how many replicas of its architecture to train from
                fresh initialisations (random init, Adam) down to its level.
            levels: the level grid, '0.3,0.2' or 'start:stop:count'; empty: 25 levels from
                the lowest minimum to 10% above the highest merge.
        """

        partners: int = 4
        levels: str = ""

    def run(self, landscape, models, store, progress) -> dict:
        config = self.config
        minima, _ = self.pairs(landscape, models, store, progress)
        k = len(minima)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        linear = {}
        for i, j in pairs:
            key = f"pair_{i}_{j}"
            if not store.has(f"{key}/linear_level"):
                ts, levels = linear_profile(
                    landscape, minima[i].theta, minima[j].theta, config.grid,
                    minima[i].state, minima[j].state,
                )
                store.write(f"{key}/linear_t", ts)
                store.write(f"{key}/linear_level", levels)
            levels = store.read(f"{key}/linear_level")
            linear[(i, j)] = float(np.max(levels)) if np.all(np.isfinite(levels)) else math.inf
        minimum_levels = [
            float(v)
            for v in landscape.levels(
                np.stack([m.theta for m in minima]), states_of(minima, landscape)
            )
        ]
        saddle = np.full((k, k), math.inf)
        np.fill_diagonal(saddle, minimum_levels)
        task = progress.task("components", total=len(pairs))
        records = {}
        # Cheapest pairs first, so chains through other minima bound (or settle) later pairs.
        for index, (i, j) in enumerate(sorted(pairs, key=lambda p: linear[p])):
            chain = bottleneck_levels(saddle)[i, j]
            bound = chain if math.isfinite(chain) else None
            result = saddle_bracket(
                landscape, minima[i], minima[j], config, store, f"pair_{i}_{j}",
                seed_for(config.seed, i, j), task, upper_bound=bound,
            )
            decided_by = "dss-bisection" if result["bisections"] else (
                "union-find" if bound is not None and bound < linear[(i, j)] else "linear"
            )
            saddle[i, j] = saddle[j, i] = result["saddle_level"]["upper"]
            records[f"{i}-{j}"] = {
                "linear_max": result["linear_max"],
                "saddle_level": result["saddle_level"],
                "barrier": result["barrier"],
                "decided_by": decided_by,
                "bisections": len(result["bisections"]),
            }
            task.advance()
        task.close()
        merges = merge_tree(minimum_levels, saddle)
        merge_levels = [m[0] for m in merges] + [None] * (k - 1 - len(merges))
        finite = [m[0] for m in merges]
        top = max(finite) if finite else max(minimum_levels)
        grid = parse_levels(config.levels, targets=False) if config.levels else [
            float(v) for v in np.linspace(min(minimum_levels), top + 0.1 * max(abs(top), 1e-12), DEFAULT_GRID)
        ]
        return {
            "minima": [m.name for m in minima],
            "minimum_levels": minimum_levels,
            "levels": grid,
            "n_components": count_components(minimum_levels, merges, grid),
            "merge_levels": merge_levels,
            "merge_tree": merges,
            "highest_merge_level": top if len(merges) == k - 1 else None,
            "level_fn": landscape.objective.level_fn,
            "pairs": records,
        }
