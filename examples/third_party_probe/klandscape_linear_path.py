"""Probe `linear_path`: the level function along the straight line between two minima.

max_t E((1 - t) A + t B) is the linear-path upper bound on the saddle level of A and B
(linear mode connectivity, Frankle et al. 2020); its excess over the higher endpoint is the
linear barrier. An example of a third-party keras-landscape probe: it owns its config, its
run, its table for `klandscape show` and its figure for `klandscape plot`, and imports no
framework at module level (listing probes stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.registry import ProbeBase
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import table
from keras_landscape.science.dss import interpolate
from keras_landscape.science.pairs import states_of


def draw_linear_paths(result: dict, run_name: str, ylabel: str):
    """The level along each pair's segment (the stored curves are in the result's pairs)."""
    pairs = [p for p in result.get("pairs") or [] if p.get("levels")]
    if not pairs:
        raise NoFigure("the result holds no curves")
    figure, ax = new_figure()
    for pair in pairs:
        levels = pair["levels"]
        ax.plot(np.linspace(0.0, 1.0, len(levels)), levels, label=f"{pair['a']} - {pair['b']}")
    ax.set_xlabel("t on the segment (1 - t) A + t B")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{run_name}: level along the straight line", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure, f"linear paths of {len(pairs)} pair(s)"


class LinearPathProbe(ProbeBase):
    """The level function at evenly spaced points of the segment between each pair."""

    name = "linear_path"
    summary = "Level function along the straight line between each pair; linear barrier."
    result_fields = {
        "pairs": "per pair: a, b, endpoint_levels, max_level, argmax_t, barrier, levels",
    }
    figures = {"linear_path": draw_linear_paths}

    @dataclass
    class Config:
        """Options of `linear_path`.

        Attributes:
            points: R, the segment is evaluated at R + 1 points t = 0, 1/R, ..., 1.
        """

        points: int = 20

        def validate(self) -> None:  # called before any model or data is loaded
            if self.points < 1:
                raise UserError(f"points must be >= 1, got {self.points}.")

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        if len(models) < 2:
            raise UserError("linear_path needs two or more models.")
        ts = np.linspace(0.0, 1.0, self.config.points + 1)
        pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
        states = states_of(models, landscape)  # each model's own state (BatchNorm statistics)
        task = progress.task("linear_path", total=len(pairs))
        rows = []
        for i, j in pairs:
            # The state goes along the line like the weights; under --bn-stats recompute
            # `levels` re-estimates it at every point.
            levels = landscape.levels(
                interpolate(ts, models[i].theta, models[j].theta),
                interpolate(ts, states[i], states[j]),
            )  # one batched call per data batch
            store.write(f"pair_{i}_{j}/levels", levels)  # streamed into /runs/linear_path
            top = float(np.max(levels))
            rows.append(
                {
                    "a": models[i].name,
                    "b": models[j].name,
                    "endpoint_levels": [float(levels[0]), float(levels[-1])],
                    "max_level": top,
                    "argmax_t": float(ts[int(np.argmax(levels))]),
                    "barrier": top - max(float(levels[0]), float(levels[-1])),
                    "levels": [float(v) for v in levels],
                }
            )
            task.advance()
        task.close()
        return {"level_fn": landscape.level_name, "pairs": rows}

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        rows = [
            [
                f"{p['a']} - {p['b']}",
                max(p["endpoint_levels"]),
                p["max_level"],
                p["argmax_t"],
                p["barrier"],
            ]
            for p in result["pairs"]
        ]
        columns = ["pair", "higher end", "max on the line", "at t", "linear barrier"]
        notes = [f"level function {result.get('level_fn', '?')}"]
        return [table(run_name, columns, rows, notes)]
