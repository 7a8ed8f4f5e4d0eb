"""Probe `curve`: a Bezier curve or polygonal chain with trained bends between two minima.

For every pair (or a model and its partners, as the other pair probes), the bends of a
curve from A to B are trained with the run's Keras optimizer to minimise the loss averaged
over the curve (Garipov et al. 2018; `science.curves`), then the curve and the straight
segment are evaluated at `points` + 1 evenly spaced t: the loss E and the level function
at each t. The maximum along the curve is a sampled value: the result says at how many
points it was measured and the largest change between neighbouring points, so that a too
coarse grid shows.

Stored per pair under `pair_<i>_<j>/curve`: `ends` (2, P) A and B, `ends_state` (2, S),
`bend` (the trained bends: (P,) or (n, P)), `t`, `loss` and `level` at each t,
`training_loss` (the history), attributes kind and bends; the straight segment's `loss`
and `level` under `pair_<i>_<j>/line`. The curve can be rebuilt from them alone
(`curve_points(kind, *ends, bend, t)`), and `klandscape export --run curve --t T` writes
the model at any t.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.engine.options import ProjectionConfig
from keras_landscape.errors import UserError
from keras_landscape.plugins.pairs import PairOptions, PairProbe
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import fmt, table
from keras_landscape.science.curves import (
    CURVES,
    curve_points,
    line_profile,
    resolution,
    stored_curve,
)
from keras_landscape.science.dss import interpolate
from keras_landscape.seeds import derive_seed
from keras_landscape.store.strings import choose_string, natural_order

#: key of the curves' t draws under the run's seed (with the pair's indices)
_CURVE = 17


def _pairs(result: dict) -> list[dict]:
    return [p for p in result.get("pairs") or [] if isinstance(p, dict)]


def _label(pair: dict) -> str:
    return f"{pair.get('a', 'A')} - {pair.get('b', 'B')}"


def curve_tables(name: str, result: dict) -> list[dict]:
    """One row per pair: the curve's maximum loss, where, the barrier above the higher
    endpoint and above their mean, the straight line's maximum, and how finely the curve
    was sampled; a second table for the level function where it is not the loss."""
    rows, level_rows, notes = [], [], []
    for p in _pairs(result):
        ends = p.get("endpoint_losses") or [None, None]
        rows.append(
            [
                _label(p),
                max(ends) if None not in ends else None,
                p.get("max_loss"),
                p.get("max_loss_t"),
                f"{fmt(p.get('barrier_loss'))} ({fmt(p.get('barrier_loss_mean'))})",
                p.get("line_max_loss"),
                p.get("evaluation_points"),
                p.get("largest_loss_step"),
            ]
        )
        level_ends = p.get("endpoint_levels") or [None, None]
        level_rows.append(
            [
                _label(p),
                max(level_ends) if None not in level_ends else None,
                p.get("max_level"),
                p.get("max_level_t"),
                f"{fmt(p.get('barrier'))} ({fmt(p.get('barrier_mean'))})",
                p.get("line_max_level"),
                p.get("largest_level_step"),
            ]
        )
        step, barrier = p.get("largest_loss_step"), p.get("barrier_loss")
        if step is not None and barrier is not None and step > 0.25 * max(abs(barrier), 1e-12):
            notes.append(
                f"{_label(p)}: the loss changes by up to {fmt(step)} between neighbouring "
                f"points (t in {p.get('largest_loss_step_t')}), a large part of the barrier: "
                "the maximum may lie between them; raise points"
            )
    notes.insert(
        0,
        f"{result.get('kind', '?')} curve, {result.get('bends', '?')} bend(s), "
        f"{result.get('steps', '?')} training steps; loss {result.get('loss_name', '?')} on "
        "the evaluation split, sampled at `points` + 1 evenly spaced t (max: the highest "
        "sampled value); barrier = max - higher endpoint (in brackets: max - the endpoints' "
        "mean); largest step = the largest loss change between neighbouring points",
    )
    tables = [
        table(
            name,
            [
                "pair",
                "higher end",
                "curve max",
                "at t",
                "barrier (above mean)",
                "line max",
                "points",
                "largest step",
            ],
            rows,
            notes,
        )
    ]
    if result.get("level_fn") not in (None, "loss"):
        tables.append(
            table(
                f"{name}: level function {result['level_fn']}",
                [
                    "pair",
                    "higher end",
                    "curve max",
                    "at t",
                    "barrier (above mean)",
                    "line max",
                    "largest step",
                ],
                level_rows,
            )
        )
    return tables


def draw_curve(result: dict, run_name: str, ylabel: str):
    """Loss along t for each pair (solid: the curve, dashed: the straight line), the level
    function beside it where it is not the loss, and the bends' training history."""
    pairs = _pairs(result)
    points = [p for p in result.get("points") or [] if isinstance(p, dict)]
    if not pairs or not points:
        raise NoFigure("the result has no curve pairs")
    same = result.get("level_fn") == "loss"
    panels = [
        ("loss", "line_loss", f"loss E ({result.get('loss_name', 'loss')}), evaluation split")
    ]
    if not same:
        panels.append(("level", "line_level", ylabel))
    history = any(p.get("training_loss") for p in pairs)
    figure, axes = new_figure(5.0 * (len(panels) + history), 4.2, ncols=len(panels) + history)
    axes = list(np.atleast_1d(axes))
    for ax, (key, line_key, label) in zip(axes, panels):
        for k, pair in enumerate(pairs):
            rows = [r for r in points if r.get("prefix") == pair.get("prefix")]
            t = [r["t"] for r in rows]
            ax.plot(t, [r[key] for r in rows], "-", color=f"C{k}", label=f"{_label(pair)} curve")
            ax.plot(
                t,
                [r[line_key] for r in rows],
                "--",
                color=f"C{k}",
                alpha=0.7,
                label=f"{_label(pair)} straight line",
            )
        ax.set_xlabel("t (0 = A, 1 = B)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title(
        f"{run_name}: {result.get('kind')} curve ({result.get('bends')} bend(s)) vs the "
        "straight line",
        fontsize=10,
    )
    if history:
        ax = axes[-1]
        for k, pair in enumerate(pairs):
            values = pair.get("training_loss") or []
            ax.plot(np.arange(1, len(values) + 1), values, color=f"C{k}", label=_label(pair))
        ax.set_xlabel("training step of the bends")
        ax.set_ylabel("mean loss over the step's t samples")
        ax.set_title("training history", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    worst = max(pairs, key=lambda p: p.get("max_loss") or -np.inf)
    caption = (
        f"loss along the trained {result.get('kind')} curve of {len(pairs)} pair(s) at "
        f"{worst.get('evaluation_points')} points; highest max loss {fmt(worst.get('max_loss'))} "
        f"({_label(worst)}), straight line {fmt(worst.get('line_max_loss'))}"
    )
    return figure, caption


class CurveProbe(PairProbe):
    """A curve with trained bends between each pair of minima, and the loss along it."""

    name = "curve"
    summary = "Bezier curve / polygonal chain trained between minima: loss along it, barrier."
    result_fields = {
        "kind": "bezier or polychain",
        "bends": "the number of trained bends (control points between A and B)",
        "steps": "training steps of the bends",
        "max_loss": "the highest sampled loss E along the curve, over all pairs",
        "barrier_loss": "the largest max_loss - max(endpoint losses) over the pairs",
        "max_level": "the highest sampled level function along the curve, over all pairs",
        "barrier": "the largest max_level - max(endpoint levels) over the pairs",
        "pairs": "per pair: a, b, prefix, endpoint_losses, endpoint_levels, max_loss and "
        "max_loss_t, barrier_loss (above the higher endpoint), barrier_loss_mean (above "
        "their mean), max_level, max_level_t, barrier, barrier_mean, line_max_loss, "
        "line_max_level, line_barrier (the straight segment's, at the same t), "
        "evaluation_points, largest_loss_step and largest_level_step (the largest change "
        "between neighbouring points) with largest_loss_step_t, distance (||B - A||), "
        "length (the curve's length over the points / distance), training_loss (the "
        "history: mean loss over each step's t samples)",
        "points": "per pair and t: pair, a, b, prefix, t, loss, level, line_loss, line_level",
        "loss_name": "the loss E",
        "level_fn": "the level function",
    }

    @dataclass
    class Config(ProjectionConfig, PairOptions):
        """The bends' optimizer (the run's optimizer settings: optimizer, learning_rate,
        beta_1, beta_2, epsilon, optimizer_options; max_steps, check_every, batch_size
        train partners), pair options (PairOptions), and:

        Attributes:
            kind: 'bezier' (a Bezier curve of degree bends + 1) or 'polychain' (a polygonal
                chain through the bends).
            bends: trained control points between A and B.
            steps: training steps of the bends (0: the straight line).
            learning_rate: the bends' step size, the run's (as DSS's, and the partners'
                unless partner_learning_rate is set); Adam moves each weight by about this
                much per step, so steps x learning_rate bounds how far a bend can move.
            max_steps: with one model, the step budget of each partner's training (the
                bends train for `steps`).
            check_every: partners' optimiser steps between level checks.
            batch_size: partners' samples per step (the bends' steps use the whole
                training split).
            samples: values of t drawn per training step (their gradients in one call).
            points: R, the curve and the straight line are evaluated at R + 1 evenly
                spaced t = 0, 1/R, ..., 1.
            seed: seeds the t draws and partner initialisations (--seed by default).
        """

        kind: str = "bezier"
        bends: int = 1
        steps: int = 400
        samples: int = 8
        points: int = 40
        seed: int = 0

        def validate(self) -> None:
            super().validate()
            if self.kind not in CURVES:
                raise UserError(f"Unknown curve kind {self.kind!r}: use one of {CURVES}.")
            if self.bends < 1 or self.steps < 0 or self.samples < 1 or self.points < 2:
                raise UserError(
                    "The curve needs bends >= 1, steps >= 0, samples >= 1 and points >= 2 "
                    f"(got {self.bends}, {self.steps}, {self.samples}, {self.points})."
                )

        def projection(self) -> ProjectionConfig:
            """The optimizer settings (the bends' and the partners')."""
            return ProjectionConfig(
                **{f.name: getattr(self, f.name) for f in fields(ProjectionConfig)}
            )

    figures = {"curve": draw_curve}

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return curve_tables(run_name, result)

    @classmethod
    def summaries(cls, result: dict) -> dict[str, float]:
        return {
            key: float(result[key])
            for key in ("max_loss", "barrier_loss", "max_level", "barrier")
            if isinstance(result.get(key), (int, float))
        }

    @classmethod
    def export_point(cls, record, string: str | None, t: float):
        """(theta, state, description) of the point at t on the curve of the pair `string`
        (a prefix such as pair_0_1; None: the run's only pair): the trained curve rebuilt
        from its stored ends and bends, the state interpolated from the ends' (BatchNorm
        statistics as the curve's evaluation starts from)."""
        prefixes = sorted(
            {k.split("/")[0] for k in record.keys() if k.endswith("/curve/level")},
            key=natural_order,
        )
        string = choose_string(record.name, prefixes, string, "finished curve")
        if not 0.0 <= float(t) <= 1.0:
            raise UserError(f"--t must be in [0, 1] (0 = A, 1 = B), got {t}.")
        key = f"{string}/curve"
        attrs = record.get_attrs(key)
        ends = record.read(f"{key}/ends")
        theta = curve_points(attrs["kind"], ends[0], record.read(f"{key}/bend"), ends[1], [t])
        state = None
        if record.has(f"{key}/ends_state"):
            ends_state = record.read(f"{key}/ends_state")
            if ends_state.shape[1]:
                state = interpolate(np.array([float(t)]), *ends_state)[0]
        where = f"{record.name}/{string}"
        return theta[0].astype(np.float32), state, f"the point t = {t:g} of the curve {where}"

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        minima, pairs = self.pairs(landscape, models, store, progress)
        task = progress.task(f"{config.kind} curves", total=len(pairs))
        results, points = [], []
        for i, j in pairs:
            prefix = f"pair_{i}_{j}"
            task.update(status=prefix)
            pair, rows = self._pair(landscape, store, minima[i], minima[j], prefix, (i, j))
            results.append(pair)
            points += rows
            task.advance()
        task.close()

        def worst(key: str):
            values = [p[key] for p in results if p.get(key) is not None]
            return max(values) if values else None

        return {
            "kind": config.kind,
            "bends": config.bends,
            "steps": config.steps,
            "loss_name": landscape.loss_name,
            "level_fn": landscape.level_name,
            **{k: worst(k) for k in ("max_loss", "barrier_loss", "max_level", "barrier")},
            "pairs": results,
            "points": points,
        }

    def _pair(self, landscape: LandscapeLike, store, a, b, prefix: str, index) -> tuple:
        """One pair's curve (fitted, or read back on resume), its straight line at the same
        t, and its record and point rows."""
        config = self.config
        key = f"{prefix}/curve"
        if not store.has(f"{key}/level"):
            ends_state = np.stack([landscape.state_or_own(s) for s in (a.state, b.state)])
            store.write_many(
                {
                    f"{key}/ends": np.stack([a.theta, b.theta]).astype(np.float32),
                    f"{key}/ends_state": ends_state.astype(np.float32),
                }
            )
            store.set_attrs(key, kind=config.kind, bends=config.bends)
        kind = str(store.get_attrs(key).get("kind", config.kind))  # a resumed run's own
        curve = stored_curve(
            landscape,
            store,
            key,
            kind,
            a.theta,
            b.theta,
            state_a=a.state,
            state_b=b.state,
            bends=config.bends,
            steps=config.steps,
            optimizer=config.projection(),
            samples=config.samples,
            grid=config.points,
            seed=derive_seed(config.seed, _CURVE, *index),
        )
        ts = curve["ts"]
        line = f"{prefix}/line"
        if not store.has(f"{line}/level"):
            levels, losses = line_profile(landscape, a.theta, b.theta, ts, a.state, b.state)
            store.write_many({f"{line}/loss": losses, f"{line}/level": levels})  # one commit
        line_loss = np.asarray(store.read(f"{line}/loss"), np.float64)
        line_level = np.asarray(store.read(f"{line}/level"), np.float64)
        loss, level = curve["loss"], curve["levels"]
        along = curve_points(kind, a.theta, curve["bend"], b.theta, ts)
        distance = float(np.linalg.norm(b.theta.astype(np.float64) - a.theta))
        length = float(np.sum(np.linalg.norm(np.diff(along, axis=0), axis=1)))
        steps_loss = resolution(ts, loss)
        pair = {
            "a": a.name,
            "b": b.name,
            "prefix": prefix,
            **_maximum(loss, ts, "endpoint_losses", "max_loss", "barrier_loss"),
            **_maximum(level, ts, "endpoint_levels", "max_level", "barrier"),
            "line_max_loss": _max(line_loss),
            "line_max_level": _max(line_level),
            "line_barrier": _above(_max(line_level), level),
            "evaluation_points": steps_loss["evaluation_points"],
            "largest_loss_step": steps_loss["largest_step"],
            "largest_loss_step_t": steps_loss["at_t"],
            "largest_level_step": resolution(ts, level)["largest_step"],
            "distance": distance,
            "length": length / distance if distance > 0 else None,
            "training_loss": [float(v) for v in curve["losses"]],
        }
        rows = [
            {
                "pair": f"{a.name}-{b.name}",
                "a": a.name,
                "b": b.name,
                "prefix": prefix,
                "t": float(t),
                "loss": float(loss[k]),
                "level": float(level[k]),
                "line_loss": float(line_loss[k]),
                "line_level": float(line_level[k]),
            }
            for k, t in enumerate(ts)
        ]
        return pair, rows


def _max(values) -> float | None:
    values = np.asarray(values, np.float64)
    return float(values.max()) if len(values) and np.all(np.isfinite(values)) else None


def _above(top, values) -> float | None:
    """top - the higher endpoint of `values`."""
    return None if top is None else float(top - max(values[0], values[-1]))


def _maximum(values, ts, ends: str, top_key: str, barrier: str) -> dict:
    """The endpoints' values, the maximum (and its t: <top_key>_t), the barrier above the
    higher endpoint and <barrier>_mean above the endpoints' mean."""
    values = np.asarray(values, np.float64)
    top = _max(values)
    pair = [float(values[0]), float(values[-1])]
    return {
        ends: pair,
        top_key: top,
        f"{top_key}_t": float(ts[int(np.argmax(values))]) if top is not None else None,
        barrier: None if top is None else top - max(pair),
        f"{barrier}_mean": None if top is None else top - float(np.mean(pair)),
    }
