"""Probe `slices`: the loss and the level function on a line or a plane of parameter space.

Three ways to choose the slice (`mode`):

- `random`: around the first model, along one or two random directions with filter
  normalisation (Li et al. 2018): each filter of a direction (a slice of a kernel along its
  last axis: a Dense unit, a convolution's output channel) is scaled to the norm of the
  model's filter; 1-D parameters (biases, BatchNorm scales and shifts) are left out of the
  direction (`ignore_biases`, default) or normalised as a whole;
- `models`: the line through two models (t = 0 at A, 1 at B), or the plane through three
  (Garipov et al. 2018): A at the origin, x along B - A, y along the part of C - A
  orthogonal to it, both in parameter units, so the three models sit at known points;
- `hessian`: along the top one or two Hessian eigenvectors at the first model (unit
  vectors: the axes are in parameter units).

The grid (any number of points per axis) is evaluated as stacks of parameter vectors on
the batched engine, whole rows per call (up to 256 points); the store holds explicit axes
(`x`, `y`), the `loss` and `level` grids and a `done` mask, so an interrupted slice
resumes where it stopped (no sentinel values: a point not yet evaluated is masked, a NaN
is a NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.registry import ProbeBase
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import table
from keras_landscape.science.hessian import top_eigenpairs
from keras_landscape.seeds import derive_seed

MODES = ("random", "models", "hessian")
NORMALIZATIONS = ("filter", "layer", "none")


def _axis(text: str, points: int, where: str) -> np.ndarray:
    try:
        low, high = (float(v) for v in str(text).split(":"))
    except ValueError:
        raise UserError(f"{where} {text!r}: give 'low:high', e.g. -1:1.") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise UserError(f"{where} {text!r}: low must be below high, both finite.")
    return np.linspace(low, high, points)


def normalized_direction(
    direction: np.ndarray, theta: np.ndarray, layout, how: str, ignore_biases: bool
) -> np.ndarray:
    """A direction scaled filter by filter (or layer by layer) to the norms of theta's."""
    out = np.zeros_like(direction, np.float64)
    for offset, shape in zip(layout.offsets, layout.shapes):
        size = int(np.prod(shape)) if shape else 1
        d = direction[offset : offset + size].astype(np.float64).reshape(shape or (1,))
        w = theta[offset : offset + size].astype(np.float64).reshape(shape or (1,))
        if len(shape) <= 1:
            if ignore_biases:
                continue
            d = d * np.linalg.norm(w) / max(np.linalg.norm(d), 1e-12) if how != "none" else d
        elif how == "filter":
            axes = tuple(range(len(shape) - 1))
            d_norm = np.sqrt((d**2).sum(axis=axes, keepdims=True))
            w_norm = np.sqrt((w**2).sum(axis=axes, keepdims=True))
            d = d * w_norm / np.maximum(d_norm, 1e-12)
        elif how == "layer":
            d = d * np.linalg.norm(w) / max(np.linalg.norm(d), 1e-12)
        out[offset : offset + size] = d.reshape(-1)
    return out


def plane_points(origin, directions, coords) -> np.ndarray:
    """(K, P) float32: origin + sum_j coords[k, j] * directions[j] for each row k of
    `coords` (K, m), summed in float64 in that order, a block of rows at a time."""
    coords = np.atleast_2d(np.asarray(coords, np.float64))
    origin = np.asarray(origin, np.float64)
    used = [np.asarray(d, np.float64) for d in directions[: coords.shape[1]]]  # once, not per block
    out = np.empty((len(coords), origin.size), np.float32)
    step = max(1, (1 << 19) // (8 * max(1, origin.size)))  # 512 KiB of float64: in cache
    for first in range(0, len(coords), step):
        block = coords[first : first + step]
        theta = np.broadcast_to(origin, (len(block), origin.size))
        for j, d in enumerate(used):
            theta = theta + block[:, j : j + 1] * d
        out[first : first + step] = theta
    return out


def plane_point(origin, directions, coords) -> np.ndarray:
    """origin + sum_k coords[k] * directions[k], summed in float64, as float32."""
    return plane_points(origin, directions, [list(coords)])[0]


def evaluate_points(
    landscape: LandscapeLike, thetas, state, recompute: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(training loss on the train split, level) at each of `thetas` (K, P), starting from
    `state` (one (S,) state for every point, or (K, S), one per point); the loss is evaluated
    with the states the level used (BatchNorm statistics re-estimated at each point when
    `recompute`; None: under bn_stats=recompute)."""
    state = np.asarray(state)
    states = state if state.ndim == 2 else np.repeat(state[None, :], len(thetas), axis=0)
    if landscape.split == "train":
        # the level's own pass already holds the training loss: one pass, not two
        again = landscape.recomputes if recompute is None else recompute
        found = landscape.evaluate_many(thetas, "train", states, recompute=again)
        return np.array([e.loss for e in found]), np.array([e.level for e in found])
    levels, used = landscape.levels_and_states(thetas, states, recompute=recompute)
    losses = np.array([e.loss for e in landscape.evaluate_many(thetas, "train", used)])
    return losses, levels


#: points one grid evaluation call takes (whole rows, at least one): the run is written
#: after every call, so a resumed run repeats at most one call's rows. The calls cover the
#: same rows whether or not the run was resumed, so the numbers do not depend on it.
GRID_CALL_POINTS = 256


def evaluate_grid(
    landscape: LandscapeLike,
    store,
    origin,
    directions,
    x,
    y,
    state,
    progress,
    task="slices",
    extra=None,
    frame=None,
) -> tuple:
    """The (len(y), len(x)) grids of the training loss and the level at the points
    origin + x d1 (+ y d2) (`evaluate_points`, every point from `state`), as many whole
    rows per call as GRID_CALL_POINTS allows. `loss`, `level` and a `done` mask are written
    to the run after every call, so that a resumed run starts at the first call not done
    (shared by `slices` and `trajectory`).

    `extra` = (thetas (E, P), states (E, S)): more points, evaluated in the first call
    (alone when that call was done before a resume); then (loss, level, (extra losses,
    extra levels)) is returned, else (loss, level). `frame`: more datasets (the slice's
    directions and axes), written in the first write, under its commit (written alone
    when every row was done before a resume)."""
    shape = (len(y), len(x))
    loss = store.read("loss") if store.has("loss") else np.full(shape, np.nan)
    level = store.read("level") if store.has("level") else np.full(shape, np.nan)
    done = store.read("done").astype(bool) if store.has("done") else np.zeros(shape, bool)
    handle = progress.task(task, total=len(y))
    per_call = max(1, GRID_CALL_POINTS // max(1, len(x)))
    extra_values = None
    for first in range(0, len(y), per_call):
        rows = [r for r in range(first, min(first + per_call, len(y))) if not done[r].all()]
        if rows:
            thetas = plane_points(origin, directions, [(a, y[row]) for row in rows for a in x])
            states = np.repeat(np.asarray(state)[None, :], len(thetas), axis=0)
            with_extra = extra is not None and first == 0
            if with_extra:
                thetas = np.concatenate([thetas, np.asarray(extra[0], np.float32)])
                states = np.concatenate([states, np.asarray(extra[1], np.float32)])
            losses, levels = evaluate_points(landscape, thetas, states)
            count = len(rows) * len(x)
            if with_extra:
                extra_values = (losses[count:], levels[count:])
            loss[rows] = losses[:count].reshape(len(rows), len(x))
            level[rows] = levels[:count].reshape(len(rows), len(x))
            done[rows] = True
            grid = {"loss": loss, "level": level, "done": done.astype(np.int8)}
            store.write_many({**(frame or {}), **grid})
            frame = None
        handle.advance(min(first + per_call, len(y)) - first)
    handle.close()
    if frame:
        store.write_many(frame)
    if extra is None:
        return loss, level
    if extra_values is None:  # the first call was done before a resume
        extra_values = evaluate_points(landscape, np.asarray(extra[0], np.float32), extra[1])
    return loss, level, extra_values


#: three models whose plane is thinner than this fraction of their spread are collinear
COLLINEAR_TOLERANCE = 1e-5


def model_frame(thetas, names) -> tuple[np.ndarray, np.ndarray | None]:
    """The line through two models (u = B - A) or the plane through three: u and v, the
    part of C - A orthogonal to u (None for two models), in float64.

    Raises:
        UserError: two of the models coincide, or three lie on one line: the part of C - A
            off the line through A and B is at most COLLINEAR_TOLERANCE times the largest
            distance between the models (or within float32 rounding of their weights), so
            the plane is undefined (or set by rounding noise).
    """
    points = [np.asarray(t, np.float64) for t in thetas]
    spread = max(np.linalg.norm(p - q) for i, p in enumerate(points) for q in points[i + 1 :])
    # Weights are stored in float32: differences below their rounding are noise.
    rounding = 4 * float(np.finfo(np.float32).eps) * max(np.linalg.norm(p) for p in points)
    tolerance = max(COLLINEAR_TOLERANCE * spread, rounding)
    for i, p in enumerate(points):
        for j in range(i + 1, len(points)):
            if np.linalg.norm(points[j] - p) <= tolerance:
                raise UserError(
                    f"mode models: models {names[i]!r} and {names[j]!r} coincide (distance "
                    f"{np.linalg.norm(points[j] - p):.3g}), so they span no "
                    f"{'line' if len(points) == 2 else 'plane'}; give distinct models."
                )
    u = points[1] - points[0]
    if len(points) == 2:
        return u, None
    c = points[2] - points[0]
    e1 = u / np.linalg.norm(u)
    v = c - (c @ e1) * e1
    off = float(np.linalg.norm(v))
    if off <= tolerance:
        raise UserError(
            f"mode models: models {names[0]!r}, {names[1]!r} and {names[2]!r} lie on one line "
            f"({names[2]!r} is {off:.3g} off the line through the other two; the tolerance is "
            f"{tolerance:.3g}: {COLLINEAR_TOLERANCE:g} of the largest distance between them, "
            f"{spread:.3g}, or the float32 rounding of their weights), so the plane through "
            "them is undefined. Give three models not on one line, or two models for the line."
        )
    return u, v


def slices_tables(name: str, result: dict) -> list[dict]:
    marks = result.get("marks") or []
    rows = [[m["model"], m["x"], m.get("y"), m["loss"], m["level"]] for m in marks]
    loss = np.array(result.get("loss") or [], dtype=float)
    finite = loss[np.isfinite(loss)] if loss.size else loss
    notes = [
        f"mode {result.get('mode')}, {result.get('dims')}-D, grid "
        f"{len(result.get('x') or [])} x {len(result.get('y') or [1])}"
        + (
            f"; loss on the grid from {finite.min():.4g} to {finite.max():.4g}"
            if finite.size
            else ""
        )
    ]
    return [table(name, ["model", "x", "y", "loss", "level"], rows, notes)]


def draw_slice(result: dict, run_name: str, xlabel: str):
    """1-D: the training loss (left axis) and the level (right axis) along the line, each
    axis labelled and coloured as its curve, the models marked on both. 2-D: the level as
    filled contours, the models marked."""
    x = np.asarray(result.get("x") or [], float)
    if not x.size:
        raise NoFigure("the result has no grid")
    level = np.asarray(result["level"], float)
    loss = np.asarray(result["loss"], float)
    marks = result.get("marks") or []
    if result.get("dims") == 1:
        figure, ax = new_figure(7.0, 4.2)
        right = ax.twinx()
        loss_name = result.get("loss_fn")
        loss_label = f"training loss ({loss_name})" if loss_name else "training loss"
        loss_label += ", train split"
        level_text = f"level: {xlabel}"
        handles = ax.plot(x, loss[0], "-", color="C0", label=loss_label)
        handles += right.plot(x, level[0], "--", color="C1", label=level_text)
        for m in marks:
            ax.plot([m["x"]], [m["loss"]], "o", color="C0", markeredgecolor="black")
            right.plot([m["x"]], [m["level"]], "s", color="C1", markeredgecolor="black")
            ax.annotate(m["model"], (m["x"], m["loss"]), xytext=(4, 4), textcoords="offset points")
        if marks:
            handles += ax.plot([], [], "o", color="0.5", markeredgecolor="black", label="models")
        for axis, label, color in ((ax, loss_label, "C0"), (right, level_text, "C1")):
            axis.set_ylabel(label, color=color)
            axis.tick_params(axis="y", colors=color)
        ax.set_xlabel(result.get("x_label") or "x")
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    else:
        y = np.asarray(result["y"], float)
        figure, ax = new_figure(6.4, 5.2)
        finite = level[np.isfinite(level)]
        if not finite.size:
            raise NoFigure("no finite level on the grid")
        contour = ax.contourf(x, y, level, levels=20, cmap="viridis")
        ax.contour(x, y, level, levels=10, colors="white", linewidths=0.5)
        figure.colorbar(contour, ax=ax, label=f"level: {xlabel}")
        for m in marks:
            ax.plot([m["x"]], [m["y"]], "r*", markersize=10)
            ax.annotate(m["model"], (m["x"], m["y"]), xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(result.get("x_label") or "x")
        ax.set_ylabel(result.get("y_label") or "y")
    figure.suptitle(f"{run_name}: {result.get('mode')} slice", fontsize=10)
    return figure, f"{result.get('dims')}-D {result.get('mode')} slice"


class SlicesProbe(ProbeBase):
    """Loss and level on a 1-D or 2-D slice: random (filter-normalised), through models, or
    along Hessian eigenvectors."""

    name = "slices"
    summary = "1-D/2-D loss and level slices: random filter-normalised, through models, Hessian."
    result_fields = {
        "mode": "random, models or hessian",
        "dims": "1 or 2",
        "x, y": "the axes (y is [0.0] for a 1-D slice)",
        "x_label, y_label": "what the axes measure",
        "loss": "(len(y), len(x)) training loss on the training split at each grid point",
        "level": "(len(y), len(x)) level function on the evaluation split (the path view: "
        "BatchNorm statistics recomputed under bn_stats=recompute)",
        "marks": "the input models on the slice: model, x, y, loss, level",
        "loss_fn": "the training loss's name (the loss axis of the figure)",
    }

    @dataclass
    class Config:
        """Options of `slices`.

        Attributes:
            mode: 'random' (around the first model), 'models' (the line through two models
                or the plane through three) or 'hessian' (top eigenvectors at the first model).
            dims: 1 or 2 (mode 'models': 1 with two models, 2 with three).
            x_range: 'low:high' of the x axis (direction units: 1 = one filter-normalised
                step; mode models: fractions of |B - A| on the line, and on the plane the
                margins around the three models in parameter units; hessian: parameter
                units).
            y_range: 'low:high' of the y axis (2-D), in the same units.
            x_points: grid points on the x axis.
            y_points: grid points on the y axis (2-D; any size: non-square grids work).
            normalization: 'filter' (Li et al.), 'layer' or 'none' (mode random).
            ignore_biases: leave 1-D parameters (biases, BatchNorm) out of random directions.
            seed: seeds the random directions (--seed by default).
        """

        mode: str = "random"
        dims: int = 1
        x_range: str = "-1:1"
        y_range: str = "-1:1"
        x_points: int = 21
        y_points: int = 21
        normalization: str = "filter"
        ignore_biases: bool = True
        seed: int = 0

        def validate(self) -> None:
            if self.mode not in MODES:
                raise UserError(f"Unknown mode {self.mode!r}: use one of {MODES}.")
            if self.dims not in (1, 2):
                raise UserError(f"dims must be 1 or 2, got {self.dims}.")
            if self.normalization not in NORMALIZATIONS:
                raise UserError(
                    f"Unknown normalization {self.normalization!r}: use one of {NORMALIZATIONS}."
                )
            if self.x_points < 2 or (self.dims == 2 and self.y_points < 2):
                raise UserError("x_points (and y_points for 2-D) must be >= 2.")
            _axis(self.x_range, 2, "x_range")
            _axis(self.y_range, 2, "y_range")

    figures = {"slice": draw_slice}

    def validate_inputs(self, models: list[str]) -> None:
        """mode models needs the two models of a line or the three of a plane."""
        if self.config.mode == "models" and len(models) not in (2, 3):
            raise UserError(
                f"mode models takes two models (a line) or three (a plane), got "
                f"{len(models)} ({', '.join(models)}): give two or three model files, or "
                "use mode random or hessian."
            )

    def validate_loaded(self, landscape: LandscapeLike, models: list) -> None:
        """mode models: the models span a line (two) or a plane (three), before the store
        is created (`model_frame`: not equal, not on one line)."""
        if self.config.mode == "models" and len(models) in (2, 3):
            model_frame([m.theta for m in models], [m.name for m in models])

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return slices_tables(run_name, result)

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        config.validate()
        origin, directions, labels = self._frame(landscape, models)
        x = _axis(config.x_range, config.x_points, "x_range")
        y = (
            _axis(config.y_range, config.y_points, "y_range")
            if len(directions) == 2
            else np.zeros(1)
        )
        if self._placed(models) is not None:  # the plane's axes cover the three models
            x, y = self._covering(models, origin, directions, x, y)
        frame = {"directions": np.stack(directions).astype(np.float32), "x": x, "y": y}
        state = landscape.state_or_own(getattr(models[0], "state", None))
        shown, places, extra = self._marked(landscape, models, origin, directions)
        loss, level, (mark_losses, mark_levels) = evaluate_grid(
            landscape, store, origin, directions, x, y, state, progress, extra=extra, frame=frame
        )
        marks = [
            {"model": m.name, "x": x, "y": y, "loss": float(loss), "level": float(level)}
            for m, (x, y), loss, level in zip(shown, places, mark_losses, mark_levels)
        ]
        return {
            "mode": config.mode,
            "dims": len(directions),
            "x": [float(v) for v in x],
            "y": [float(v) for v in y],
            "x_label": labels[0],
            "y_label": labels[1] if len(labels) > 1 else None,
            "loss": loss.tolist(),
            "level": level.tolist(),
            "marks": marks,
            "normalization": config.normalization if config.mode == "random" else None,
            "loss_fn": landscape.loss_name,
        }

    # ------------------------------------------------------------------ the frame
    def _frame(self, landscape: LandscapeLike, models):
        """(origin, unit-or-normalised directions, axis labels)."""
        config = self.config
        origin = models[0].theta.astype(np.float64)
        if config.mode == "models":
            if len(models) not in (2, 3):
                raise UserError(
                    f"mode models takes two models (a line) or three (a plane), got {len(models)}."
                )
            u, v = model_frame([m.theta for m in models], [m.name for m in models])
            if len(models) == 2:
                return origin, [u], ["t (0 = A, 1 = B)"]
            e1 = u / np.linalg.norm(u)
            return origin, [e1, v / np.linalg.norm(v)], ["along B - A", "towards C"]
        if config.mode == "hessian":
            state = getattr(models[0], "state", None)
            top = top_eigenpairs(
                landscape.hessian_operator(origin, state=state),
                landscape.size,
                config.dims,
                seed=derive_seed(config.seed, 1),
            )
            if not top.converged:
                raise UserError(
                    f"mode hessian: ARPACK did not converge to the top {config.dims} Hessian "
                    f"eigenvector(s) within {top.maxiter} restarts ({top.hvps} Hessian-vector "
                    "products); use mode random or models."
                )
            vectors = top.vectors
            labels = ["top Hessian eigenvector", "second Hessian eigenvector"]
            return origin, list(vectors[: config.dims]), labels[: config.dims]
        rng = np.random.default_rng(derive_seed(config.seed, 2))
        directions = [
            normalized_direction(
                rng.standard_normal(landscape.size),
                origin,
                landscape.layout,
                config.normalization,
                config.ignore_biases,
            )
            for _ in range(config.dims)
        ]
        labels = [
            f"random direction {i + 1} ({config.normalization}-normalised)"
            for i in range(config.dims)
        ]
        return origin, directions, labels

    def _placed(self, models):
        return models if self.config.mode == "models" and len(models) == 3 else None

    @staticmethod
    def _coordinates(theta, origin, directions) -> tuple[float, float]:
        offset = theta.astype(np.float64) - origin
        coords = [float(offset @ d / (d @ d)) for d in directions]
        return coords[0], coords[1] if len(coords) > 1 else 0.0

    def _covering(self, models, origin, directions, x, y):
        """Axes of the plane through three models spanning them, widened by the ranges."""
        points = np.array([self._coordinates(m.theta, origin, directions) for m in models])
        (x_low, y_low), (x_high, y_high) = points.min(axis=0), points.max(axis=0)
        return (
            np.linspace(x_low + x[0], x_high + x[-1], len(x)),
            np.linspace(y_low + y[0], y_high + y[-1], len(y)),
        )

    _point = staticmethod(plane_point)

    def _marked(self, landscape: LandscapeLike, models, origin, directions):
        """The input models shown on the slice, at their own coordinates: (models, their
        (x, y), (points, states) to evaluate there: the projected point, the model itself
        when it lies in the slice), evaluated in the grid's first call."""
        shown = models if self.config.mode == "models" else models[:1]
        places = [self._coordinates(m.theta, origin, directions) for m in shown]
        thetas = np.stack([self._point(origin, directions, p[: len(directions)]) for p in places])
        states = np.stack([landscape.state_or_own(getattr(m, "state", None)) for m in shown])
        return shown, places, (thetas, states)
