"""Probe `barrier`: linear and DSS-bisection estimates of the energy barrier between minima."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from keras_landscape.align import aligned_state, weight_matching
from keras_landscape.barriers import BisectionOptions, relax_path, saddle_bracket
from keras_landscape.dss import DSSConfig
from keras_landscape.errors import UserError
from keras_landscape.pairs import PairOptions, PairProbe, seed_for
from keras_landscape.registry import register_probe

ALIGNMENTS = ("none", "weight-matching")


@register_probe
class BarrierProbe(PairProbe):
    """Saddle level s(A, B) bracketed by bisection on u with DSS, and the barrier above A, B."""

    name = "barrier"
    summary = "Energy barrier between minima: linear maximum, DSS-bisection saddle bracket."
    result_fields = {
        "linear_max": "maximum of the level function on the straight segment (dense grid)",
        "saddle_level": "{lower, upper}: upper = lowest level found connected (an upper bound "
        "on s), lower = alpha x the highest level found not connected (heuristic)",
        "barrier": "saddle_level.upper - max(endpoint_levels)",
        "barrier_bracket": "[lower, upper] - max(endpoint_levels)",
        "endpoint_levels": "level function at A and B",
        "relaxed_max": "maximum of the nudged-elastic-band path, when relax=neb lowered it",
        "aligned": "with align=weight-matching: the same figures after permuting B's hidden "
        "units to match A (distance, linear_max, saddle_level, barrier), raw ones beside",
        "pairs": "per pair: all of the above, estimators, best_path, bisections",
    }

    @dataclass
    class Config(DSSConfig, PairOptions, BisectionOptions):
        """DSS knobs (DSSConfig), pair options (PairOptions), bisection (BisectionOptions), and:

        Attributes:
            align: 'none' or 'weight-matching' (permute B's hidden units to A before
                measuring; Dense/Conv2D stacks; raw and aligned figures are both reported).
        """

        align: str = "none"

    def run(self, landscape, models, store, progress) -> dict:
        config = self.config
        if config.align not in ALIGNMENTS:
            raise UserError(f"Unknown align {config.align!r}: use one of {ALIGNMENTS}.")
        minima, pairs = self.pairs(landscape, models, store, progress)
        task = progress.task("barrier", total=len(pairs) * (2 if config.align != "none" else 1))
        results = []
        for index, (i, j) in enumerate(pairs):
            a, b = minima[i], minima[j]
            prefix = f"pair_{i}_{j}"
            # Align first: an unsupported architecture is reported before any long work.
            alignment = self._align(landscape, a, b) if config.align == "weight-matching" else None
            result = self._estimate(landscape, a, b, store, prefix, seed_for(config.seed, index), task)
            result["distance"] = float(np.linalg.norm(a.theta.astype(np.float64) - b.theta))
            result["aligned"] = (
                self._aligned(landscape, a, b, alignment, store, prefix, index, task)
                if alignment is not None
                else None
            )
            results.append(result)
        task.close()
        first = results[0]
        summary = {key: first[key] for key in (
            "linear_max", "saddle_level", "barrier", "barrier_bracket", "endpoint_levels",
            "relaxed_max", "aligned",
        )}
        summary.update({"level_fn": landscape.objective.level_fn, "pairs": results})
        return summary

    def _estimate(self, landscape, a, b, store, prefix, seed, task) -> dict:
        result = saddle_bracket(landscape, a, b, self.config, store, prefix, seed, task)
        result["relaxed_max"] = None
        if self.config.relax == "neb" and result["best_path"]:
            relaxed = relax_path(landscape, store, result["best_path"], self.config)
            if relaxed and relaxed["kept"]:
                result["relaxed_max"] = relaxed["relaxed_max"]
                result["relaxed_barrier"] = relaxed["relaxed_max"] - max(result["endpoint_levels"])
        task.advance()
        return result

    def _align(self, landscape, a, b):
        return weight_matching(landscape.model, a.theta, b.theta, seed=self.config.seed)

    def _aligned(self, landscape, a, b, alignment, store, prefix, index, task) -> dict:
        aligned_b = dataclasses.replace(
            b,
            name=f"{b.name}_aligned",
            theta=alignment.theta.astype(np.float32),
            state=aligned_state(landscape, b.state, alignment.permutations),
        )
        result = self._estimate(
            landscape, a, aligned_b, store, f"{prefix}/aligned", seed_for(self.config.seed, index, 1), task
        )
        result["distance"] = alignment.distance_after
        result["distance_raw"] = alignment.distance_before
        result["permutations"] = alignment.permutations
        return result
