"""Figures from a store: matplotlib (Agg), reading the HDF5 file with `keras_landscape.store.hdf5`.

No TensorFlow or Keras is imported, so figures can be made anywhere h5py and matplotlib run.
One figure per result kind, named ``<run>_<kind>[_<string>].<fmt>``:

- ``path``: the level function along a DSS string (final path vs the straight line A-B,
  beads marked, the level u drawn), one figure per string (``/`` in its key becomes ``-``);
- ``curviness``: normalized geodesic length and bead count vs level, error bars over pairs;
- ``barrier``: linear, DSS-bisection (bracket as error bar), relaxed and aligned barriers, a
  zero barrier marked and labelled; with bootstrap intervals, a panel of them (error bars
  from the stored lower to upper end);
- ``components``: N_u vs level (step plot);
- ``disconnectivity``: the merge tree of the minima drawn by level (Wales);
- ``slice``: a 1-D slice's training loss and level on two labelled y axes, or a 2-D slice's
  level as contours;
- ``hessian_density``, ``hessian_path``: the spectral density; the top eigenvalue and the
  trace (with its standard error as error bar) along stored strings.

Levels are in level-function units (the store's ``/data`` attribute ``level_fn``).

Example:
    >>> from keras_landscape.report.plots import plot_store
    >>> report = plot_store("runs/ab.h5", "runs/ab_figures", fmt="svg")
    >>> [f.path for f in report.figures]
    ['runs/ab_figures/connectivity_path_pair_0_1.svg']
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_landscape import registry
from keras_landscape.errors import UserError
from keras_landscape.report.tables import string_level
from keras_landscape.store.hdf5 import RunRecord, Store, reading
from keras_landscape.store.strings import (
    RELAXED_SUFFIX,
    has_string,
    natural_order,
    read_string,
    string_prefixes,
    verdict_words,
)

FORMATS = ("png", "svg", "pdf")
PATH_CHOICES = ("best", "all", "none")
_BISECTION = re.compile(r"^(?P<parent>.*?)/?bisect_(?P<k>\d+)$")


@dataclass
class FigureFile:
    """One written figure: its file, the run and kind it shows, and a one-line caption."""

    path: str
    run: str
    kind: str
    string: str | None
    caption: str


@dataclass
class PlotReport:
    """What `plot_store` wrote, and what it skipped (run, reason)."""

    store: str
    directory: str
    format: str
    figures: list[FigureFile] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "store": self.store,
            "directory": self.directory,
            "format": self.format,
            "figures": [vars(f) for f in self.figures],
            "skipped": self.skipped,
        }


def default_directory(store_path: str) -> str:
    """``runs/ab.h5`` -> ``runs/ab_figures``."""
    path = Path(store_path)
    return str(path.with_name(path.stem + "_figures"))


def level_label(data: dict, result: dict | None = None) -> str:
    """Axis label of the level function with its unit, e.g. 'error (%), test split'."""
    name = data.get("level_fn") or (result or {}).get("level_fn") or "level"
    text = {
        "error": "error (%)",
        "loss": f"loss ({data.get('loss')})" if data.get("loss") else "loss",
        "perplexity": "perplexity",
    }.get(name, name)
    return f"{text}, {data['split']} split" if data.get("split") else text


# ------------------------------------------------------------------------ strings (paths)


@dataclass
class PathProfile:
    """The level function along one stored string, ready to draw.

    Distances are Euclidean in parameter space, accumulated along the final path.
    """

    key: str
    distances: np.ndarray  # (n,) cumulative distance of each bead of the final string
    bead_levels: np.ndarray  # (n,)
    path_x: np.ndarray  # checked points of the final path (NaN between unchecked segments)
    path_y: np.ndarray
    line_x: np.ndarray | None  # the straight line A-B (depth-0 curve)
    line_y: np.ndarray | None
    unchecked: int  # segments of the final string without a stored curve
    level: float | None
    verdict: dict | None
    depth_done: int | None
    relaxed: tuple[np.ndarray, np.ndarray] | None = None


def _result_level(result: dict | None, prefix: str) -> float | None:
    """The level of the string `prefix` as recorded in a run result (pairs or details)."""
    if not isinstance(result, dict):
        return None
    rows = list(result.get("pairs") or []) if isinstance(result.get("pairs"), list) else []
    for per_level in result.get("details") or []:
        rows += per_level if isinstance(per_level, list) else []
    for row in rows:
        if isinstance(row, dict) and row.get("prefix") == prefix:
            return row.get("level")
    return None


def read_path(run: RunRecord, prefix: str) -> PathProfile:
    """Read the string at `prefix`: beads, their levels, the checked curves of its final path."""
    stored = read_string(run, prefix)
    rows = stored.rows
    string = stored.beads[rows].astype(np.float64)
    steps = np.linalg.norm(np.diff(string, axis=0), axis=1) if len(rows) > 1 else np.zeros(0)
    distances = np.concatenate([[0.0], np.cumsum(steps)])
    curves = {}
    for left, right, depth, curve in stored.curves:
        curves[(left, right)] = curve  # the last check of a segment wins
        if (left, right, depth) == (0, 1, 0):
            curves[("line",)] = curve
    xs, ys, unchecked = [], [], 0
    for i, (left, right) in enumerate(zip(rows, rows[1:])):
        curve = curves.get((left, right))
        if curve is None:
            unchecked += 1
            xs.append([np.nan])
            ys.append([np.nan])
            continue
        t = np.linspace(0.0, 1.0, len(curve))
        xs.append(distances[i] + t * steps[i])
        ys.append(curve)
    line = curves.get(("line",))
    distance = float(np.linalg.norm(string[-1] - string[0])) if len(rows) > 1 else 0.0
    verdict = stored.verdict
    level = (verdict or {}).get("level")
    if level is None:
        level = _result_level(run.result, prefix)
    if level is None:
        level = string_level(run, prefix)
    relaxed = None
    if prefix and has_string(run, f"{prefix}{RELAXED_SUFFIX}"):
        copy = read_string(run, f"{prefix}{RELAXED_SUFFIX}")
        r_beads = copy.beads.astype(np.float64)
        r_steps = np.linalg.norm(np.diff(r_beads, axis=0), axis=1)
        relaxed = (np.concatenate([[0.0], np.cumsum(r_steps)]), copy.bead_level.astype(np.float64))
    return PathProfile(
        key=prefix,
        distances=distances,
        bead_levels=stored.bead_level[rows].astype(np.float64),
        path_x=np.concatenate(xs) if xs else np.zeros(0),
        path_y=np.concatenate(ys) if ys else np.zeros(0),
        line_x=None if line is None else np.linspace(0.0, distance, len(line)),
        line_y=line,
        unchecked=unchecked,
        level=None if level is None else float(level),
        verdict=verdict,
        depth_done=stored.depth_done,
        relaxed=relaxed,
    )


def select_strings(run: RunRecord, keys: list[str], which: str) -> list[str]:
    """Which strings to draw: 'all', 'none', or 'best' = all, except that of the bisection
    strings of one pair (`.../bisect_<k>`, barrier and components runs) only the connected
    one at the lowest level is kept (the last one if none connected)."""
    if which == "none":
        return []
    if which == "all":
        return keys
    groups: dict[str, list[str]] = {}
    chosen = []
    for key in keys:
        match = _BISECTION.match(key)
        if match:
            groups.setdefault(match.group("parent"), []).append(key)
        else:
            chosen.append(key)
    for members in groups.values():
        connected = []
        for key in members:
            verdict = run.get_attrs(key).get("verdict") or {}
            if verdict.get("connected") and verdict.get("level") is not None:
                connected.append((verdict["level"], key))
        chosen.append(min(connected)[1] if connected else max(members, key=natural_order))
    return sorted(chosen, key=natural_order)


def new_figure(width: float = 7.0, height: float = 4.2, ncols: int = 1):
    """A matplotlib Figure (Agg, constrained layout) and its axes: `ncols` side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols)
    return figure, axes


def use_log_scale(values: list[float]) -> bool:
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    return finite.size > 1 and bool(np.all(finite > 0)) and finite.max() / finite.min() > 10


def _minor_log_label(value: float, _position=None) -> str:
    """Label the minor ticks 2 and 5 of each decade (plain decimals, not 2x10^-2)."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** np.floor(np.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 5) else ""


def draw_path(profile: PathProfile, run_name: str, ylabel: str):
    """The level along the final path vs the straight line, beads marked, level u drawn."""
    figure, ax = new_figure()
    verdict = profile.verdict or {}
    names = (verdict.get("a") or "A", verdict.get("b") or "B")
    if profile.line_y is not None:
        ax.plot(
            profile.line_x,
            profile.line_y,
            color="0.55",
            linestyle="--",
            linewidth=1.2,
            label=f"straight line {names[0]}-{names[1]}",
        )
    n = len(profile.distances)
    ax.plot(
        profile.path_x, profile.path_y, color="C0", linewidth=1.6, label=f"DSS path ({n} beads)"
    )
    ax.plot(
        profile.distances,
        profile.bead_levels,
        "o",
        color="C1",
        markersize=5,
        markeredgecolor="black",
        markeredgewidth=0.5,
        label="beads",
        zorder=3,
    )
    if profile.relaxed is not None:
        ax.plot(
            *profile.relaxed,
            "s-",
            color="C2",
            markersize=3,
            linewidth=1.0,
            label="relaxed path (beads)",
        )
    if profile.level is not None:
        ax.axhline(
            profile.level,
            color="C3",
            linestyle=":",
            linewidth=1.5,
            label=f"level u = {profile.level:.4g}",
        )
    for x, y, name in (
        (0.0, profile.bead_levels[0], names[0]),
        (profile.distances[-1], profile.bead_levels[-1], names[1]),
    ):
        ax.annotate(
            name, (x, y), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8
        )
    values = [
        *profile.path_y,
        *profile.bead_levels,
        *([] if profile.line_y is None else profile.line_y),
        *([] if profile.level is None else [profile.level]),
    ]
    log = use_log_scale(values)
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("distance along the path (Euclidean, parameter space)")
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    if verdict:
        state = verdict_words(verdict.get("connected"), verdict.get("reason"))
        length = verdict.get("normalized_length")
        detail = f"{state}, normalized length {length:.3f}" if length is not None else state
    else:
        detail = f"unfinished (depth {profile.depth_done} done)"
    if verdict.get("reason") == "endpoint_above_level":
        ax.text(
            0.5,
            0.5,
            "an endpoint is above the level: no path was searched",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="C3",
        )
    elif profile.unchecked:
        detail += f", {profile.unchecked} segment(s) not checked{'' if verdict else ' yet'}"
    ax.set_title(f"{run_name} {profile.key or ''}".strip() + f"\n{detail}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return figure, detail


# --------------------------------------------------------------------------- summaries


class NoFigure(Exception):
    """Raised by a draw function whose result cannot be drawn; the reason becomes a note."""


def values(seq) -> list:
    """A result's list as floats (None stays None)."""
    return [None if v is None else float(v) for v in (seq or [])]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.replace("/", "-")).strip("_") or "run"


def _save(figure, directory: Path, stem: str, fmt: str) -> str:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the figure folder {str(directory)!r}: {error}.") from None
    path = directory / f"{stem}.{fmt}"
    try:
        figure.savefig(path, format=fmt, dpi=120)
    except OSError as error:
        raise UserError(f"Cannot write the figure {str(path)!r}: {error}.") from None
    return str(path)


def plot_store(
    store_path: str,
    directory: str | None = None,
    *,
    fmt: str = "png",
    runs: list[str] | None = None,
    paths: str = "best",
) -> PlotReport:
    """Write every figure a store supports.

    Args:
        store_path: the HDF5 store.
        directory: where figures go (created); default ``<store stem>_figures`` beside it.
        fmt: png, svg or pdf.
        runs: only these runs (default all).
        paths: which DSS strings get a path figure: 'best' (all, but only the lowest
            connected bisection string per pair), 'all' or 'none'.

    Returns:
        A PlotReport listing the files written and the runs or kinds skipped, with reasons.
    """
    if fmt not in FORMATS:
        raise UserError(f"Unknown figure format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if paths not in PATH_CHOICES:
        raise UserError(f"Unknown paths choice {paths!r}: use one of {', '.join(PATH_CHOICES)}.")
    directory = directory or default_directory(store_path)
    report = PlotReport(store=str(store_path), directory=str(directory), format=fmt)
    with reading(store_path), Store.open(store_path, "r") as store:
        data = store.read_data_info()
        names = store.run_names()
        unknown = [r for r in runs or [] if r not in names]
        if unknown:
            raise UserError(
                f"The store {store_path!r} has no run {unknown[0]!r}; runs in it: "
                f"{', '.join(names) or 'none'}."
            )
        out = Path(directory)
        if not names:
            report.skipped.append({"run": None, "reason": "the store has no runs yet"})
        for name in runs or names:
            _plot_run(store.run(name), data, out, fmt, paths, report)
    return report


def _plot_run(
    run: RunRecord, data: dict, out: Path, fmt: str, paths: str, report: PlotReport
) -> None:
    result = run.result if isinstance(run.result, dict) else None
    label = level_label(data, result)
    drew = False
    keys = string_prefixes(run)
    for key in select_strings(run, keys, paths):
        try:
            profile = read_path(run, key)
        except (KeyError, ValueError, IndexError) as error:
            report.skipped.append(
                {
                    "run": run.name,
                    "kind": "path",
                    "string": key,
                    "reason": f"cannot read the string: {error}",
                }
            )
            continue
        if len(profile.distances) < 2:
            report.skipped.append(
                {
                    "run": run.name,
                    "kind": "path",
                    "string": key,
                    "reason": "fewer than two beads stored",
                }
            )
            continue
        figure, caption = draw_path(profile, run.name, label)
        stem = f"{_safe(run.name)}_path_{_safe(key)}" if key else f"{_safe(run.name)}_path"
        report.figures.append(
            FigureFile(
                _save(figure, out, stem, fmt),
                run.name,
                "path",
                key or None,
                f"level along the path: {caption}",
            )
        )
        drew = True
    plots = registry.output_hook(run.probe, "figures")
    if not plots:
        if not drew:
            why = registry.output_hook(run.probe, "no_figure") or (
                f"no figure is defined for probe {run.probe!r} results"
            )
            report.skipped.append({"run": run.name, "reason": why})
        return
    if result is None:
        report.skipped.append(
            {
                "run": run.name,
                "reason": f"status {run.status}: no result yet"
                + (", only its paths are drawn" if drew else ""),
            }
        )
        return
    for kind, draw in plots.items():
        try:
            figure, caption = draw(result, run.name, label)
        except NoFigure as why:
            report.skipped.append({"run": run.name, "kind": kind, "reason": str(why)})
            continue
        report.figures.append(
            FigureFile(
                _save(figure, out, f"{_safe(run.name)}_{kind}", fmt), run.name, kind, None, caption
            )
        )


def is_png(path: str | os.PathLike) -> bool:
    """True if the file starts with the PNG signature."""
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


__all__ = [
    "FORMATS",
    "PATH_CHOICES",
    "FigureFile",
    "NoFigure",
    "PlotReport",
    "default_directory",
    "is_png",
    "level_label",
    "new_figure",
    "plot_store",
    "read_path",
    "use_log_scale",
    "values",
]
