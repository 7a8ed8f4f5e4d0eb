"""Probe `trajectory`: the optimisation path of a run's checkpoints on its PCA plane, drawn
over the loss surface of that plane (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets", section 7).

The checkpoints are the input models in checkpoint order (`order`): by default the natural
order of their names when every name holds a number (epoch_2 before epoch_10, whatever order
a shell glob gave them in), else the order given. The last one is the final model and the
centre of the plane. With D the (n-1, P) matrix of differences theta_i - theta_final of the
other checkpoints, the directions are D's top two right singular vectors (unit vectors in
parameter space): the plane through the final model that holds the largest share of
sum_i ||theta_i - theta_final||^2. They come from the (n-1, n-1) Gram matrix D D^T
(accumulated in float64 over slices of the parameters, so that no (n, P) float64 copy is
ever made): its eigenvalues are the squared singular values, and a checkpoint's coordinates
are its projections onto the two directions. The explained variance ratios of all n-1
components are stored. (Li et al.'s code hands the differences to scikit-learn's PCA,
which also subtracts their mean; the plane here passes through the final model, where the
path ends.) When the path is a straight line the second direction carries no variance and is
taken orthogonal to the first (`second_axis`: 'orthogonal').

The loss surface is evaluated on a grid x d1 + y d2 around the final model that covers
every checkpoint's projection with a margin on each side, and holds (0, 0), the final model,
as a grid point. It is evaluated exactly as `slices` evaluates its plane (the same function:
`plugins.slices.evaluate_grid`; the final model's BatchNorm state, re-estimated at each point
under --bn-stats recompute), resumable call by call (whole rows). Each checkpoint's own loss
and level are evaluated at its own weights with its own state (Keras's `evaluate` of that file).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.plugins.slices import evaluate_grid, evaluate_points
from keras_landscape.registry import ProbeBase
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import fmt, table

ORDERS = ("auto", "natural", "given")
#: parameters per slice when the Gram matrix and the directions are accumulated
CHUNK = 1 << 20
#: a component whose variance is below this share of the first is taken as none
FLAT = 1e-12


def natural_key(name: str) -> list:
    """Sort key comparing the numbers inside a name as numbers (epoch_2 < epoch_10)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _split(name)]


def _split(name: str) -> list[str]:
    return [part for part in re.split(r"(\d+)", name) if part]


def checkpoint_order(names: list[str], order: str) -> list[int]:
    """Indices of `names` in checkpoint order: 'given', 'natural' (numbers compared as
    numbers), or 'auto' (natural when every name holds a number, else given)."""
    natural = order == "natural" or (
        order == "auto" and all(re.search(r"\d", name) for name in names)
    )
    indices = list(range(len(names)))
    return sorted(indices, key=lambda i: natural_key(names[i])) if natural else indices


def _chunks(size: int, chunk: int = CHUNK):
    for start in range(0, size, chunk):
        yield slice(start, min(start + chunk, size))


def pca_plane(thetas: list[np.ndarray], final: np.ndarray, chunk: int = CHUNK) -> dict:
    """The PCA plane of the differences thetas[i] - final, through `final`.

    Returns a dict: `directions` (2, P) float64 orthonormal, `coordinates` (n, 2) of each
    theta on them, `singular_values` and `explained_variance_ratio` of every component
    (n of them), `squared_norms` (n,) of the differences, `second_axis` ('pca' or
    'orthogonal' when the differences span a line). Memory: the (n, n) Gram matrix, the two
    directions and one float64 (n, chunk) slice of the differences at a time.
    """
    n, size = len(thetas), final.size
    gram = np.zeros((n, n))
    for part in _chunks(size, chunk):
        block = np.stack([t[part] for t in thetas]).astype(np.float64) - final[part]
        gram += block @ block.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    eigenvalues, vectors = np.clip(eigenvalues[::-1], 0.0, None), vectors[:, ::-1]
    total = float(eigenvalues.sum())
    if not total > 0:
        raise UserError(
            "trajectory: every checkpoint has the same weights as the final one; there is "
            "no path to draw. Give checkpoints saved at different points of training."
        )
    singular = np.sqrt(eigenvalues)
    flat = eigenvalues[1] <= FLAT * eigenvalues[0] if n > 1 else True
    directions = np.zeros((2, size))
    for part in _chunks(size, chunk):
        block = np.stack([t[part] for t in thetas]).astype(np.float64) - final[part]
        directions[0, part] = vectors[:, 0] @ block / singular[0]
        if not flat:
            directions[1, part] = vectors[:, 1] @ block / singular[1]
    if flat:  # a straight path: any unit vector orthogonal to the first direction
        j = int(np.argmin(np.abs(directions[0])))
        second = -directions[0, j] * directions[0]
        second[j] += 1.0
        directions[1] = second / np.linalg.norm(second)
    coordinates = np.zeros((n, 2))
    for part in _chunks(size, chunk):
        block = np.stack([t[part] for t in thetas]).astype(np.float64) - final[part]
        coordinates += block @ directions[:, part].T
    return {
        "directions": directions,
        "coordinates": coordinates,
        "singular_values": singular,
        "explained_variance_ratio": eigenvalues / total,
        "squared_norms": np.diag(gram).copy(),
        "second_axis": "orthogonal" if flat else "pca",
    }


def grid_axis(low: float, high: float, points: int) -> np.ndarray:
    """`points` equally spaced values covering [low, high] (low <= 0 <= high) with 0 one of
    them: the step is (high - low) / (points - 2), the first value a whole number of steps
    below zero."""
    step = (high - low) / (points - 2)
    first = math.floor(low / step)
    return step * (np.arange(points) + first)


def _path_length(thetas: list[np.ndarray], chunk: int = CHUNK) -> np.ndarray:
    """(n-1,) Euclidean lengths of the steps between consecutive thetas."""
    squared = np.zeros(max(len(thetas) - 1, 0))
    for part in _chunks(thetas[0].size, chunk):
        block = np.stack([t[part] for t in thetas]).astype(np.float64)
        squared += (np.diff(block, axis=0) ** 2).sum(axis=1)
    return np.sqrt(squared)


# ---------------------------------------------------------------------------- output


def _ratios(result: dict) -> list[float]:
    """Every component's explained variance ratio, largest first."""
    return [v["explained_variance_ratio"] for v in result.get("variance") or []]


def _axis_label(result: dict, k: int) -> str:
    ratios = _ratios(result)
    share = f" ({100 * ratios[k]:.1f}% of the variance)" if len(ratios) > k else ""
    return f"PC{k + 1}{share}"


def trajectory_tables(name: str, result: dict) -> list[dict]:
    path = result.get("path") or []
    ratios = _ratios(result)
    top = ratios[:2] + [None] * (2 - len(ratios[:2]))
    summary = table(
        name,
        [
            "checkpoints",
            "PC1 %",
            "PC2 %",
            "PC1+PC2 %",
            "path length",
            "start to end",
            "loss at start",
            "loss at end",
        ],
        [
            [
                len(path),
                None if top[0] is None else 100 * top[0],
                None if top[1] is None else 100 * top[1],
                100 * sum(r for r in top if r is not None) if ratios else None,
                result.get("path_length"),
                result.get("start_to_end"),
                path[0]["loss"] if path else None,
                path[-1]["loss"] if path else None,
            ]
        ],
        [
            "PCn %: the share of sum ||theta_i - theta_final||^2 along principal component n; "
            "path length: the sum of the Euclidean steps between consecutive checkpoints "
            "(parameter space); start to end: ||theta_start - theta_final||"
            + (
                "; the path is a straight line: the second axis is orthogonal to it"
                if result.get("second_axis") == "orthogonal"
                else ""
            )
        ],
    )
    rows = [[p["model"], p["x"], p["y"], p["off_plane"], p["loss"], p["level"]] for p in path]
    loss = np.array([s["loss"] for s in result.get("surface") or []], dtype=float)
    finite = loss[np.isfinite(loss)]
    notes = ["x, y: the checkpoint's projection on PC1, PC2; off plane: its distance from it"]
    if finite.size:
        notes.append(
            f"loss on the {len(result.get('x') or [])} x {len(result.get('y') or [])} grid "
            f"from {fmt(float(finite.min()))} to {fmt(float(finite.max()))}"
        )
    checkpoints = table(
        f"{name}: checkpoints", ["checkpoint", "x", "y", "off plane", "loss", "level"], rows, notes
    )
    return [summary, checkpoints]


def draw_trajectory(result: dict, run_name: str, level_label: str):
    """The training loss on the PCA plane (filled contours; log-spaced where the loss spans
    more than two decades), the path through the checkpoints' projections, the start and
    the final model marked."""
    x = np.asarray(result.get("x") or [], float)
    y = np.asarray(result.get("y") or [], float)
    path = result.get("path") or []
    if not x.size or not y.size or not path:
        raise NoFigure("the result has no surface")
    loss = np.array([s["loss"] for s in result["surface"]], float).reshape(len(y), len(x))
    finite = loss[np.isfinite(loss)]
    if not finite.size:
        raise NoFigure("no finite loss on the grid")
    figure, ax = new_figure(6.6, 5.4)
    low, high = float(finite.min()), float(finite.max())
    ticks = None
    if low > 0 and high / low > 100:
        from matplotlib.colors import LogNorm

        levels = np.geomspace(low, high, 21)
        contour = ax.contourf(x, y, loss, levels=levels, norm=LogNorm(), cmap="viridis")
        ax.contour(x, y, loss, levels=levels[::2], colors="white", linewidths=0.5)
        ticks = levels[::4]
    else:
        contour = ax.contourf(x, y, loss, levels=20, cmap="viridis")
        ax.contour(x, y, loss, levels=10, colors="white", linewidths=0.5)
    loss_name = result.get("loss_fn")
    label = f"training loss ({loss_name})" if loss_name else "training loss"
    figure.colorbar(contour, ax=ax, label=label, ticks=ticks, format="%.3g")
    px, py = [p["x"] for p in path], [p["y"] for p in path]
    ax.plot(px, py, "-o", color="red", markersize=4, linewidth=1.2, label="checkpoints")
    ax.plot(px[:1], py[:1], "s", color="white", markeredgecolor="black", label="start")
    ax.plot(px[-1:], py[-1:], "*", color="red", markeredgecolor="black", markersize=14)
    labelled = range(len(path)) if len(path) <= 8 else (0, len(path) - 1)
    for i in labelled:
        ax.annotate(path[i]["model"], (px[i], py[i]), xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(_axis_label(result, 0))
    ax.set_ylabel(_axis_label(result, 1))
    ax.legend(fontsize=8, loc="best")
    figure.suptitle(f"{run_name}: trajectory of {len(path)} checkpoints", fontsize=10)
    return figure, f"trajectory on the PCA plane, {len(x)} x {len(y)} grid"


class TrajectoryProbe(ProbeBase):
    """The path of a run's checkpoints on its PCA plane, over the loss surface of the plane
    (Li et al. 2018): PCA of the checkpoints' differences from the final model."""

    name = "trajectory"
    takes_history = True  # LandscapeCallback: every checkpoint of the fit, when it ends
    summary = "Checkpoints' path on its PCA plane (Li et al.) over the loss surface there."
    result_fields = {
        "checkpoints": "the models in checkpoint order (the last is the final model, the centre)",
        "second_axis": "'pca', or 'orthogonal' when the path is a straight line",
        "path": "per checkpoint: model, x, y (its projection on PC1, PC2), off_plane (its "
        "distance from the plane), step (distance from the previous checkpoint), loss "
        "(training loss on the train split) and level, at its own weights and state",
        "path_length": "sum of the Euclidean steps between consecutive checkpoints",
        "start_to_end": "||theta_start - theta_final||",
        "x, y": "the grid's axes (PC1, PC2 coordinates; 0 is a grid point: the final model)",
        "surface": "one record per grid point, y outer, x inner: x, y, loss (training loss "
        "on the train split), level (on the evaluation split; BatchNorm statistics "
        "re-estimated under bn_stats=recompute)",
        "variance": "one record per principal component, largest first (the axes are the "
        "first two): component, explained_variance_ratio (its share of sum_i "
        "||theta_i - theta_final||^2; all of them sum to 1), singular_value",
        "loss_fn": "the training loss's name",
    }

    @dataclass
    class Config:
        """Options of `trajectory`.

        Attributes:
            grid: grid points per axis of the loss surface (>= 3).
            margin: space added on each side of the path's extent along each axis, as a
                fraction of that extent (the shorter axis extends at least 5% of the longer).
            order: checkpoint order: 'auto' (natural order of the names, epoch_2 before
                epoch_10, when every name holds a number; else as given), 'natural' or
                'given'.
        """

        grid: int = 21
        margin: float = 0.2
        order: str = "auto"

        def validate(self) -> None:
            if self.grid < 3:
                raise UserError(f"trajectory grid must be >= 3 points per axis, got {self.grid}.")
            if not (math.isfinite(self.margin) and self.margin >= 0):
                raise UserError(f"trajectory margin must be >= 0 and finite, got {self.margin}.")
            if self.order not in ORDERS:
                raise UserError(f"Unknown order {self.order!r}: use one of {ORDERS}.")

    figures = {"trajectory": draw_trajectory}

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return trajectory_tables(run_name, result)

    @classmethod
    def summaries(cls, result: dict) -> dict[str, float]:
        """The numbers to follow (TensorBoard scalars): PC1 and PC2's shares of the
        variance, the path length, the final loss."""
        ratios = _ratios(result)
        path = result.get("path") or []
        found = {f"explained_variance_{k + 1}": ratios[k] for k in range(min(2, len(ratios)))}
        if result.get("path_length") is not None:
            found["path_length"] = result["path_length"]
        if path:
            found["final_loss"] = path[-1]["loss"]
        return found

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        config.validate()
        if len(models) < 3:
            raise UserError(
                f"trajectory needs at least 3 checkpoints (a path and its plane), got "
                f"{len(models)}. Give the model files saved during training, e.g. "
                "ckpt/epoch_*.keras."
            )
        sizes = {m.theta.size for m in models}
        if len(sizes) > 1:
            raise UserError(
                "trajectory: the checkpoints have different numbers of parameters "
                f"({', '.join(f'{m.name}: {m.theta.size}' for m in models)}); they must be "
                "checkpoints of one architecture."
            )
        if landscape.size < 2:
            raise UserError("trajectory needs a model with at least 2 parameters (a plane).")
        ordered = [models[i] for i in checkpoint_order([m.name for m in models], config.order)]
        final = ordered[-1].theta.astype(np.float64)
        thetas = [m.theta for m in ordered[:-1]]
        plane = pca_plane(thetas, final)
        directions = plane["directions"]
        coordinates = np.vstack([plane["coordinates"], np.zeros((1, 2))])
        first = coordinates[0]  # signs: the start in the positive quadrant
        signs = np.where(first < 0, -1.0, 1.0)
        directions, coordinates = directions * signs[:, None], coordinates * signs + 0.0
        squared = np.append(plane["squared_norms"], 0.0)
        off_plane = np.sqrt(np.clip(squared - (coordinates**2).sum(axis=1), 0.0, None))
        steps = _path_length([m.theta for m in ordered])

        x, y = self._axes(coordinates)
        frame = {
            "directions": directions.astype(np.float32),
            "coordinates": coordinates,
            "x": x,
            "y": y,
        }
        state = landscape.state_or_own(getattr(ordered[-1], "state", None))
        loss, level = evaluate_grid(
            landscape,
            store,
            final,
            list(directions),
            x,
            y,
            state,
            progress,
            "trajectory",
            frame=frame,
        )
        own = np.stack([landscape.state_or_own(getattr(m, "state", None)) for m in ordered])
        thetas_all = np.stack([m.theta for m in ordered]).astype(np.float32)
        path_loss, path_level = evaluate_points(landscape, thetas_all, own, recompute=False)

        ratios = plane["explained_variance_ratio"]
        singular = plane["singular_values"]
        path = [
            {
                "model": m.name,
                "x": float(coordinates[i, 0]),
                "y": float(coordinates[i, 1]),
                "off_plane": float(off_plane[i]),
                "step": float(steps[i - 1]) if i else 0.0,
                "loss": float(path_loss[i]),
                "level": float(path_level[i]),
            }
            for i, m in enumerate(ordered)
        ]
        xx, yy = np.meshgrid(x, y)
        return {
            "checkpoints": [m.name for m in ordered],
            "second_axis": plane["second_axis"],
            "path": path,
            "path_length": float(steps.sum()),
            "start_to_end": float(math.sqrt(squared[0])),
            "x": [float(v) for v in x],
            "y": [float(v) for v in y],
            "surface": [
                {"x": float(a), "y": float(b), "loss": float(c), "level": float(d)}
                for a, b, c, d in zip(xx.ravel(), yy.ravel(), loss.ravel(), level.ravel())
            ],
            "variance": [
                {
                    "component": k + 1,
                    "explained_variance_ratio": float(r),
                    "singular_value": float(s),
                }
                for k, (r, s) in enumerate(zip(ratios, singular))
            ],
            "loss_fn": landscape.loss_name,
        }

    def _axes(self, coordinates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid axes covering every checkpoint's projection (and the final model at 0),
        widened by `margin` of the extent on each side."""
        low, high = coordinates.min(axis=0), coordinates.max(axis=0)
        extent = high - low
        extent = np.maximum(extent, 0.05 * extent.max())
        low, high = low - self.config.margin * extent, high + self.config.margin * extent
        points = self.config.grid
        return grid_axis(low[0], high[0], points), grid_axis(low[1], high[1], points)
