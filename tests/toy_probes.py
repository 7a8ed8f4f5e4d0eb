"""A toy third-party pair probe for the tests: `endpoint_gap`, the difference of the level
function between the two ends of each pair of models.

It is what a third party would write: a `ProbeBase` subclass declaring `takes_pairs` and
its census columns, registered in-process (`registered_toy` below), so that
`LandscapeCallback` and `klandscape census` take it without any list of probe names being
edited. Known answers: its levels are the landscape's levels at the models, and its gap
is their largest difference.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from keras_landscape import registry
from keras_landscape.errors import UserError
from keras_landscape.registry import ProbeBase
from keras_landscape.science.pairs import states_of


class EndpointGapProbe(ProbeBase):
    """The level at each model and the largest difference between two of them."""

    name = "endpoint_gap"
    summary = "Level difference between the models of each pair (a test probe)."
    result_fields = {
        "models": "the names of the models, in order",
        "levels": "the level function at each model",
        "pairs": "per pair: a, b, gap = |level(a) - level(b)|",
        "max_gap": "the largest gap over the pairs",
    }
    takes_pairs = True
    census_columns = {
        "max_gap": "the largest level difference between two of the point's models",
        "gap_models": "how many models the probe saw",
    }

    @dataclass
    class Config:
        """Options of `endpoint_gap`.

        Attributes:
            scale: the gap is multiplied by it.
        """

        scale: float = 1.0

    @classmethod
    def census_row(cls, result: dict) -> dict:
        return {"max_gap": result.get("max_gap"), "gap_models": len(result.get("models") or [])}

    @classmethod
    def census_cells(cls, row: dict) -> dict:
        return {"largest gap": row.get("max_gap")}

    def run(self, landscape, models, store, progress) -> dict:
        if len(models) < 2:
            raise UserError("endpoint_gap needs two or more models.")
        thetas = np.stack([m.theta for m in models])
        levels = landscape.levels(thetas, states_of(models, landscape))
        pairs = [
            {
                "a": models[i].name,
                "b": models[j].name,
                "gap": self.config.scale * abs(float(levels[i]) - float(levels[j])),
            }
            for i in range(len(models))
            for j in range(i + 1, len(models))
        ]
        store.write("levels", np.asarray(levels, np.float64))
        return {
            "models": [m.name for m in models],
            "levels": [float(v) for v in levels],
            "pairs": pairs,
            "max_gap": max(p["gap"] for p in pairs),
        }


@contextlib.contextmanager
def registered_toy():
    """`endpoint_gap` registered for the duration (as its entry point would register it)."""
    registry.discover()
    saved = dict(registry._REGISTRY.probes)
    registry.register_probe(EndpointGapProbe, origin="plugin (toy)")
    try:
        yield EndpointGapProbe
    finally:
        registry._REGISTRY.probes.clear()
        registry._REGISTRY.probes.update(saved)
