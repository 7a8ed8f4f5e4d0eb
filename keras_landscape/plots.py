"""Figures from a store: matplotlib (Agg), reading the HDF5 file with `keras_landscape.store`.

No TensorFlow or Keras is imported, so figures can be made anywhere h5py and matplotlib run.
One figure per result kind, named ``<run>_<kind>[_<string>].<fmt>``:

- ``path``: the level function along a DSS string (final path vs the straight line A-B,
  beads marked, the level u drawn), one figure per string (``/`` in its key becomes ``-``);
- ``curviness``: normalized geodesic length and bead count vs level, error bars over pairs;
- ``barrier``: linear, DSS-bisection (bracket as error bar), relaxed and aligned barriers;
- ``components``: N_u vs level (step plot);
- ``disconnectivity``: the merge tree of the minima drawn by level (Wales).

Levels are in level-function units (the store's ``/data`` attribute ``level_fn``).

Example:
    >>> from keras_landscape.plots import plot_store
    >>> report = plot_store("runs/ab.h5", "runs/ab_figures", fmt="svg")
    >>> [f.path for f in report.figures]
    ['runs/ab_figures/connectivity_path_pair_0_1.svg']
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from keras_landscape.errors import UserError
from keras_landscape.store import Run, Store, reading

FORMATS = ("png", "svg", "pdf")
PATH_CHOICES = ("best", "all", "none")
STRING_KEYS = ("order", "beads", "bead_level")
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


def string_keys(run: Run) -> list[str]:
    """Prefixes (relative to the run, '' for the run itself) that hold a DSS string."""
    datasets = set(run.keys())
    prefixes = set()
    for key in datasets:
        if key == "order" or key.endswith("/order"):
            prefix = key[: -len("order")].rstrip("/")
            if all((f"{prefix}/{k}" if prefix else k) in datasets for k in STRING_KEYS):
                prefixes.add(prefix)
    # a relaxed copy of a string (barriers.relax_path) is drawn over its string, not alone
    relaxed = {p for p in prefixes if p.endswith("_relaxed") and p[: -len("_relaxed")] in prefixes}
    return sorted(prefixes - relaxed, key=_natural)


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


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


def read_path(run: Run, prefix: str) -> PathProfile:
    """Read the string at `prefix`: beads, their levels, the checked curves of its final path."""
    order = [int(r) for r in run.read(_key(prefix, "order"))]
    beads = run.read(_key(prefix, "beads")).astype(np.float64)
    levels = run.read(_key(prefix, "bead_level")).astype(np.float64)
    rows = [r for r in order if r < len(beads)]  # a bead row cut by an interrupted write
    string = beads[rows]
    steps = np.linalg.norm(np.diff(string, axis=0), axis=1) if len(rows) > 1 else np.zeros(0)
    distances = np.concatenate([[0.0], np.cumsum(steps)])
    curves = {}
    if run.has(_key(prefix, "curves")) and run.has(_key(prefix, "curve_segments")):
        rows_curves = run.read(_key(prefix, "curves"))
        segments = run.read(_key(prefix, "curve_segments"))
        for (left, right, depth), curve in zip(segments, rows_curves):
            curves[(int(left), int(right))] = np.asarray(curve, np.float64)  # last one wins
            if (int(left), int(right), int(depth)) == (0, 1, 0):
                curves[("line",)] = np.asarray(curve, np.float64)
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
    attrs = run.get_attrs(prefix or None)
    verdict = attrs.get("verdict") if isinstance(attrs.get("verdict"), dict) else None
    level = (verdict or {}).get("level")
    if level is None:
        level = _result_level(run.result, prefix)
    if level is None:
        from keras_landscape.report import configured_level

        level = configured_level(run.config, prefix)
    relaxed = None
    relaxed_key = f"{prefix}_relaxed"
    if prefix and run.has(f"{relaxed_key}/beads") and run.has(f"{relaxed_key}/bead_level"):
        r_beads = run.read(f"{relaxed_key}/beads").astype(np.float64)
        r_steps = np.linalg.norm(np.diff(r_beads, axis=0), axis=1)
        relaxed = (np.concatenate([[0.0], np.cumsum(r_steps)]),
                   run.read(f"{relaxed_key}/bead_level").astype(np.float64))
    return PathProfile(
        key=prefix,
        distances=distances,
        bead_levels=levels[rows],
        path_x=np.concatenate(xs) if xs else np.zeros(0),
        path_y=np.concatenate(ys) if ys else np.zeros(0),
        line_x=None if line is None else np.linspace(0.0, distance, len(line)),
        line_y=line,
        unchecked=unchecked,
        level=None if level is None else float(level),
        verdict=verdict,
        depth_done=attrs.get("depth_done"),
        relaxed=relaxed,
    )


def select_strings(run: Run, keys: list[str], which: str) -> list[str]:
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
        chosen.append(min(connected)[1] if connected else max(members, key=_natural))
    return sorted(chosen, key=_natural)


def _figure(width: float = 7.0, height: float = 4.2, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols)
    return figure, axes


def _use_log_scale(values: list[float]) -> bool:
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
    figure, ax = _figure()
    verdict = profile.verdict or {}
    names = (verdict.get("a") or "A", verdict.get("b") or "B")
    if profile.line_y is not None:
        ax.plot(profile.line_x, profile.line_y, color="0.55", linestyle="--", linewidth=1.2,
                label=f"straight line {names[0]}-{names[1]}")
    n = len(profile.distances)
    ax.plot(profile.path_x, profile.path_y, color="C0", linewidth=1.6,
            label=f"DSS path ({n} beads)")
    ax.plot(profile.distances, profile.bead_levels, "o", color="C1", markersize=5,
            markeredgecolor="black", markeredgewidth=0.5, label="beads", zorder=3)
    if profile.relaxed is not None:
        ax.plot(*profile.relaxed, "s-", color="C2", markersize=3, linewidth=1.0,
                label="relaxed path (beads)")
    if profile.level is not None:
        ax.axhline(profile.level, color="C3", linestyle=":", linewidth=1.5,
                   label=f"level u = {profile.level:.4g}")
    for x, y, name in ((0.0, profile.bead_levels[0], names[0]),
                       (profile.distances[-1], profile.bead_levels[-1], names[1])):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, -14), ha="center",
                    fontsize=8)
    values = [*profile.path_y, *profile.bead_levels,
              *([] if profile.line_y is None else profile.line_y),
              *([] if profile.level is None else [profile.level])]
    log = _use_log_scale(values)
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("distance along the path (Euclidean, parameter space)")
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    if verdict:
        state = "connected" if verdict.get("connected") else f"not connected ({verdict.get('reason')})"
        length = verdict.get("normalized_length")
        detail = f"{state}, normalized length {length:.3f}" if length is not None else state
    else:
        detail = f"unfinished (depth {profile.depth_done} done)"
    if verdict.get("reason") == "endpoint_above_level":
        ax.text(0.5, 0.5, "an endpoint is above the level: no path was searched",
                transform=ax.transAxes, ha="center", va="center", color="C3")
    elif profile.unchecked:
        detail += f", {profile.unchecked} segment(s) not checked{'' if verdict else ' yet'}"
    ax.set_title(f"{run_name} {profile.key or ''}".strip() + f"\n{detail}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return figure, detail


# --------------------------------------------------------------------------- summaries


def _values(seq) -> list:
    return [None if v is None else float(v) for v in (seq or [])]


def draw_curviness(result: dict, run_name: str, xlabel: str):
    """Normalized length and beads vs level, with error bars over connected pairs."""
    levels = _values(result.get("levels"))
    if not levels:
        raise _Skip("the result has no levels")
    figure, (left, right) = _figure(10.0, 4.2, ncols=2)
    pairs = list(result.get("pairs") or [0] * len(levels))
    failed = list(result.get("failed") or [0] * len(levels))
    panels = (
        (left, "normalized_length", "normalized geodesic length (1 = straight)"),
        (right, "beads", "beads per string (endpoints included)"),
    )
    for ax, key, ylabel in panels:
        means, sds = _values(result.get(key)), _values(result.get(f"{key}_sd"))
        keep = [i for i, m in enumerate(means) if m is not None and i < len(levels)]
        if keep:
            ax.errorbar([levels[i] for i in keep], [means[i] for i in keep],
                        yerr=[(sds[i] if i < len(sds) and sds[i] is not None else 0.0) for i in keep],
                        fmt="o-", capsize=4, color="C0", label="mean +- sd over connected pairs")
        for i, level in enumerate(levels):
            total = (pairs[i] if i < len(pairs) else 0) + (failed[i] if i < len(failed) else 0)
            text = f"{pairs[i]}/{total}" if i < len(pairs) else ""
            y = means[i] if i < len(means) and means[i] is not None else None
            if y is None:
                ax.axvline(level, color="C3", linestyle=":", linewidth=1)
                ax.annotate(f"none connected ({text})", (level, 0.05), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=8, color="C3", ha="right")
            else:
                ax.annotate(text, (level, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if key == "normalized_length":
            ax.axhline(1.0, color="0.6", linestyle="--", linewidth=1, label="straight line")
        ax.margins(x=0.08, y=0.15)
        ax.set_xlabel(f"level u: {xlabel}  (right = lower = harder)")
        ax.set_ylabel(ylabel)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    figure.suptitle(f"{run_name}: normalized geodesic length and beads vs level "
                    "(labels: connected/all pairs)", fontsize=10)
    connected = sum(pairs) if pairs else 0
    return figure, f"normalized length and beads vs {len(levels)} levels ({connected} connected strings)"


def _pair_label(pair: dict, index: int) -> str:
    if pair.get("a") is not None and pair.get("b") is not None:
        return f"{pair['a']}-{pair['b']}"
    return str(pair.get("prefix") or f"pair {index}")


def _above(value, floor) -> float | None:
    if value is None or floor is None:
        return None
    return float(value) - float(floor)


def draw_barrier(result: dict, run_name: str, ylabel: str):
    """Grouped bars per pair: linear, DSS (bracket as error bar), relaxed, aligned."""
    pairs = [p for p in (result.get("pairs") or [result]) if isinstance(p, dict)]
    if not pairs or not any("barrier" in p or "linear_max" in p for p in pairs):
        raise _Skip("the result has no barrier pairs")
    series: dict[str, list] = {}

    def put(name: str, index: int, value, bracket=None):
        series.setdefault(name, [None] * len(pairs))[index] = (value, bracket)

    for i, pair in enumerate(pairs):
        ends = [v for v in (pair.get("endpoint_levels") or []) if v is not None]
        floor = max(ends) if ends else None
        linear = pair.get("linear_barrier", _above(pair.get("linear_max"), floor))
        put("linear (straight line)", i, linear)
        put("DSS bisection (bracket)", i, pair.get("barrier"), pair.get("barrier_bracket"))
        if pair.get("relaxed_max") is not None:
            put("relaxed path", i, _above(pair["relaxed_max"], floor))
        aligned = pair.get("aligned")
        if isinstance(aligned, dict):
            a_ends = [v for v in (aligned.get("endpoint_levels") or []) if v is not None]
            a_floor = max(a_ends) if a_ends else floor
            put("aligned linear", i, aligned.get("linear_barrier",
                                                   _above(aligned.get("linear_max"), a_floor)))
            put("aligned DSS bisection", i, aligned.get("barrier"), aligned.get("barrier_bracket"))
    names = [n for n, vals in series.items() if any(v is not None and v[0] is not None for v in vals)]
    figure, ax = _figure(max(6.0, 1.2 + 1.1 * len(pairs) * max(1, len(names)) * 0.5), 4.2)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(pairs))
    for k, name in enumerate(names):
        heights, lower, upper = [], [], []
        for entry in series[name]:
            value, bracket = entry if entry is not None else (None, None)
            heights.append(np.nan if value is None else float(value))
            lo, hi = (list(bracket) + [None, None])[:2] if bracket else (None, None)
            lower.append(0.0 if value is None or lo is None else max(0.0, float(value) - float(lo)))
            upper.append(0.0 if value is None or hi is None else max(0.0, float(hi) - float(value)))
        has_bracket = any(lower) or any(upper)
        ax.bar(x + (k - (len(names) - 1) / 2) * width, heights, width, label=name, color=f"C{k}",
               yerr=np.array([lower, upper]) if has_bracket else None, capsize=4 if has_bracket else 0)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [_pair_label(p, i) for i, p in enumerate(pairs)],
                  rotation=30 if len(pairs) > 4 else 0)
    ax.set_ylabel(f"barrier above the higher minimum\n({ylabel})")
    ax.set_title(f"{run_name}: energy barriers (error bar: bisection bracket)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure, f"barriers of {len(pairs)} pair(s): {'; '.join(names)}"


def draw_components(result: dict, run_name: str, xlabel: str):
    """N_u vs level as a step plot, merge levels marked."""
    levels, counts = _values(result.get("levels")), result.get("n_components") or []
    points = sorted((u, int(n)) for u, n in zip(levels, counts) if u is not None and n is not None)
    if not points:
        raise _Skip("the result has no levels / n_components")
    from matplotlib.ticker import MaxNLocator

    figure, ax = _figure()
    us, ns = zip(*points)
    ax.step(us, ns, where="post", color="C0", linewidth=1.8, label="N_u (measured levels)")
    ax.plot(us, ns, "o", color="C0", markersize=3)
    merges = [m for m in _values(result.get("merge_levels")) if m is not None]
    for k, m in enumerate(merges):
        ax.axvline(m, color="0.6", linestyle=":", linewidth=1,
                   label="merge levels" if k == 0 else None)
    top = result.get("highest_merge_level")
    if top is not None:
        ax.axvline(top, color="C3", linestyle="--", linewidth=1.2,
                   label=f"highest merge level {top:.4g}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(ns) + 0.5)
    ax.set_xlabel(f"level u: {xlabel}")
    ax.set_ylabel("N_u: components holding a sampled minimum")
    k = len(result.get("minima") or [])
    ax.set_title(f"{run_name}: connected components of the sublevel set ({k} minima)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure, f"N_u at {len(points)} levels"


def tree_layout(minimum_levels: list, merge_tree: list) -> dict:
    """Positions for a disconnectivity graph.

    Returns {"x": {node: x}, "y": {node: level}, "parent": {node: parent}, "roots": [...],
    "leaves": [leaf order]}: leaves 0..K-1 at their minimum levels, merged clusters K, K+1,
    ... at their merge levels, x chosen so that no branches cross.
    """
    k = len(minimum_levels)
    children, y, parent = {}, {}, {}
    for i, level in enumerate(minimum_levels):
        y[i] = np.nan if level is None else float(level)
    for level, a, b, new in merge_tree:
        if level is None:
            continue
        a, b, new = int(a), int(b), int(new)
        children[new] = (a, b)
        y[new] = float(level)
        parent[a] = parent[b] = new
    roots = sorted((n for n in y if n not in parent), key=lambda n: (-_height(n, children), n))
    x, leaves = {}, []

    def place(node: int) -> float:
        if node in children:
            a, b = children[node]
            x[node] = 0.5 * (place(a) + place(b))
        else:
            x[node] = float(len(leaves))
            leaves.append(node)
        return x[node]

    for root in roots:
        place(root)
    return {"x": x, "y": y, "parent": parent, "roots": roots, "leaves": leaves, "k": k}


def _height(node: int, children: dict) -> int:
    return 0 if node not in children else 1 + max(_height(c, children) for c in children[node])


def draw_disconnectivity(result: dict, run_name: str, ylabel: str):
    """The merge tree: leaves at their minimum levels, branches joined at merge levels."""
    minimum_levels = _values(result.get("minimum_levels"))
    if not minimum_levels:
        raise _Skip("the result has no minimum_levels")
    names = list(result.get("minima") or [str(i) for i in range(len(minimum_levels))])
    layout = tree_layout(minimum_levels, result.get("merge_tree") or [])
    x, y, parent = layout["x"], layout["y"], layout["parent"]
    known = [v for v in y.values() if np.isfinite(v)]
    span = (max(known) - min(known)) if known else 1.0
    top = (max(known) if known else 1.0) + 0.15 * (span or 1.0)
    figure, ax = _figure(max(5.0, 1.5 + 0.6 * len(minimum_levels)), 4.8)
    for node, yn in y.items():
        if not np.isfinite(yn):
            continue
        up = y[parent[node]] if node in parent else top
        style = "-" if node in parent or len(layout["roots"]) == 1 else "--"
        ax.plot([x[node], x[node]], [yn, up], style, color="C0", linewidth=1.6)
    for node, (level, a, b, new) in ((int(m[3]), m) for m in result.get("merge_tree") or []
                                     if m[0] is not None):
        ax.plot([x[int(a)], x[int(b)]], [level, level], "-", color="C0", linewidth=1.6)
        ax.plot([x[node]], [level], "o", color="C0", markersize=3)
    leaf_x = [x[i] for i in range(len(minimum_levels)) if i in x]
    leaf_y = [y[i] for i in range(len(minimum_levels)) if i in x]
    ax.plot(leaf_x, leaf_y, "v", color="C1", markersize=7, markeredgecolor="black",
            markeredgewidth=0.5, label="minima (at their levels)", zorder=3)
    highest = result.get("highest_merge_level")
    if highest is not None:
        ax.axhline(highest, color="C3", linestyle=":", linewidth=1.2,
                   label=f"highest merge level {highest:.4g}")
    if len(layout["roots"]) > 1:
        ax.plot([], [], "--", color="C0", label="not merged at any measured level")
    order = layout["leaves"]
    ax.set_xticks([x[i] for i in order], [names[i] if i < len(names) else str(i) for i in order],
                  rotation=45 if len(order) > 6 else 0, ha="right" if len(order) > 6 else "center")
    ax.set_xlim(-0.7, max(len(order) - 0.3, 0.7))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("minima (branches join at the saddle level that connects them)")
    ax.set_title(f"{run_name}: disconnectivity graph", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return figure, f"merge tree of {len(minimum_levels)} minima"


class _Skip(Exception):
    """A result that cannot be drawn; the reason becomes a note."""


#: probe name -> [(kind, draw function)]: the summary figures of its result.
SUMMARY_PLOTS: dict[str, list[tuple[str, Callable]]] = {
    "curviness": [("curviness", draw_curviness)],
    "barrier": [("barrier", draw_barrier)],
    "components": [("components", draw_components), ("disconnectivity", draw_disconnectivity)],
}
_NO_FIGURE = {"evaluate": "a table of models (see klandscape show)"}


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
            raise UserError(f"The store {store_path!r} has no run {unknown[0]!r}; runs in it: "
                            f"{', '.join(names) or 'none'}.")
        out = Path(directory)
        if not names:
            report.skipped.append({"run": None, "reason": "the store has no runs yet"})
        for name in runs or names:
            _plot_run(store.run(name), data, out, fmt, paths, report)
    return report


def _plot_run(run: Run, data: dict, out: Path, fmt: str, paths: str, report: PlotReport) -> None:
    result = run.result if isinstance(run.result, dict) else None
    label = level_label(data, result)
    drew = False
    keys = string_keys(run)
    for key in select_strings(run, keys, paths):
        try:
            profile = read_path(run, key)
        except (KeyError, ValueError, IndexError) as error:
            report.skipped.append({"run": run.name, "kind": "path", "string": key,
                                   "reason": f"cannot read the string: {error}"})
            continue
        if len(profile.distances) < 2:
            report.skipped.append({"run": run.name, "kind": "path", "string": key,
                                   "reason": "fewer than two beads stored"})
            continue
        figure, caption = draw_path(profile, run.name, label)
        stem = f"{_safe(run.name)}_path_{_safe(key)}" if key else f"{_safe(run.name)}_path"
        report.figures.append(FigureFile(_save(figure, out, stem, fmt), run.name, "path", key or None,
                                         f"level along the path: {caption}"))
        drew = True
    plots = SUMMARY_PLOTS.get(run.probe)
    if plots is None:
        if not drew:
            why = _NO_FIGURE.get(run.probe, f"no figure is defined for probe {run.probe!r} results")
            report.skipped.append({"run": run.name, "reason": why})
        return
    if result is None:
        report.skipped.append({"run": run.name, "reason": f"status {run.status}: no result yet"
                               + (", only its paths are drawn" if drew else "")})
        return
    for kind, draw in plots:
        try:
            figure, caption = draw(result, run.name, label)
        except _Skip as why:
            report.skipped.append({"run": run.name, "kind": kind, "reason": str(why)})
            continue
        report.figures.append(FigureFile(_save(figure, out, f"{_safe(run.name)}_{kind}", fmt),
                                         run.name, kind, None, caption))


def is_png(path: str | os.PathLike) -> bool:
    """True if the file starts with the PNG signature."""
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


__all__ = ["FORMATS", "FigureFile", "PlotReport", "default_directory", "level_label",
           "plot_store", "read_path", "string_keys", "tree_layout", "is_png"]
