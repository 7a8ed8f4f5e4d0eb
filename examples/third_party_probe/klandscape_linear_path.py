"""Probe `linear_path`: the level function along the straight line between two minima.

max_t E((1 - t) A + t B) is the linear-path upper bound on the saddle level of A and B
(linear mode connectivity, Frankle et al. 2020); its excess over the higher endpoint is the
linear barrier. An example of a third-party keras-landscape probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.errors import UserError
from keras_landscape.registry import register_probe


@register_probe
class LinearPathProbe:
    """The level function at evenly spaced points of the segment between each pair."""

    name = "linear_path"
    summary = "Level function along the straight line between each pair; linear barrier."
    result_fields = {
        "pairs": "per pair: a, b, endpoint_levels, max_level, argmax_t, barrier",
    }

    @dataclass
    class Config:
        """Options of `linear_path`.

        Attributes:
            points: R, the segment is evaluated at R + 1 points t = 0, 1/R, ..., 1.
        """

        points: int = 20

    def __init__(self, config: "LinearPathProbe.Config | None" = None):
        self.config = config or self.Config()

    def run(self, landscape, models, store, progress) -> dict:
        if len(models) < 2:
            raise UserError("linear_path needs two or more models.")
        if self.config.points < 1:
            raise UserError(f"points must be >= 1, got {self.config.points}.")
        ts = np.linspace(0.0, 1.0, self.config.points + 1)
        pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
        task = progress.task("linear_path", total=len(pairs))
        rows = []
        for i, j in pairs:
            a, b = models[i].theta, models[j].theta
            thetas = ((1.0 - ts)[:, None] * a[None, :] + ts[:, None] * b[None, :]).astype(np.float32)
            # Each model's own state (BatchNorm statistics; empty for most models) goes along
            # the line like its weights; under --bn-stats recompute `levels` re-estimates it.
            sa, sb = models[i].state, models[j].state
            states = ((1.0 - ts)[:, None] * sa[None, :] + ts[:, None] * sb[None, :]).astype(np.float32)
            levels = landscape.levels(thetas, states)  # one batched call per data batch
            store.write(f"pair_{i}_{j}/levels", levels)  # streamed into /runs/linear_path
            top = float(np.max(levels))
            rows.append({
                "a": models[i].name,
                "b": models[j].name,
                "endpoint_levels": [float(levels[0]), float(levels[-1])],
                "max_level": top,
                "argmax_t": float(ts[int(np.argmax(levels))]),
                "barrier": top - max(float(levels[0]), float(levels[-1])),
            })
            task.advance()
        task.close()
        return {"level_fn": landscape.objective.level_fn, "pairs": rows}
