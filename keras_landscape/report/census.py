"""The landscape census read back from its store: one row per grid point, and its figures.

`klandscape census` (keras_landscape.experiment.census) copies each grid point's probe runs
(by default `components` and `curviness`) into one store as `<point>.<probe>`, marked with
the attributes in CENSUS_ATTRS. Everything here reads that store alone (h5py, numpy,
matplotlib; no Keras):

- `read_census(path)`: the points in grid order, with their probes' results;
- `census_rows(path)`: the census table, one row per point: the grid values, replicas and
  parameters, then each probe's columns (`census_columns`, filled by its `census_row`
  hook: levels of the minima, highest merge level, mean barrier, N_u, normalized length,
  ...);
- `census_tables(path)`: the same for `klandscape census` to print (each probe's
  `census_cells` and `census_notes`), then each probe's `census_tables` (N_u by level,
  curviness per level);
- `plot_census(path, directory)`: `census_summary` (highest merge level, barrier and
  normalized length against the grid's first key, from the rows' columns) and each probe's
  `census_figures` (`census_components`: N_u against the level, one curve per point),
  beside the per-point figures of `klandscape plot`.

What a probe contributes is declared on its class (`registry.ProbeBase`), so a probe of a
third party takes part in a census as the built-ins do. The built-ins' hooks are below
(`components_census_row`, `curviness_census_row`, ...), beside the census they feed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keras_landscape import registry
from keras_landscape.errors import UserError
from keras_landscape.levels import at_or_below
from keras_landscape.report.plots import (
    FigureFile,
    NoFigure,
    _safe,
    _save,
    default_directory,
    level_label,
    new_figure,
    plot_store,
    use_log_scale,
)
from keras_landscape.report.tables import fmt, interval, n_u_bounds, n_u_runs_of, table
from keras_landscape.store.hdf5 import Store, reading

#: attributes a census run carries (set by experiment.census; `point` last, marking the copy)
CENSUS_ATTRS = {
    "point": "census_point",
    "grid": "census_grid",
    "index": "census_index",
    "stamp": "census_stamp",
    "models": "census_models",
    "layout": "census_layout",
}


def census_points(store: Store) -> dict[str, dict]:
    """{point: {"name", "index", "grid", "stamp", "parameters", "models", "probes" (the
    probes the point runs, in the sweep's order), "runs": {probe: {"run", "status",
    "config", "result"}}}} for every census run of an open store."""
    points: dict[str, dict] = {}
    for name in store.run_names():
        run = store.run(name)
        attrs = run.get_attrs(None)
        point = attrs.get(CENSUS_ATTRS["point"])
        if not point:
            continue
        entry = points.setdefault(
            point,
            {
                "name": point,
                "index": attrs.get(CENSUS_ATTRS["index"]),
                "grid": attrs.get(CENSUS_ATTRS["grid"]) or {},
                "stamp": attrs.get(CENSUS_ATTRS["stamp"]),
                "parameters": attrs.get("parameters"),
                "models": attrs.get(CENSUS_ATTRS["models"]) or [],
                "runs": {},
            },
        )
        entry["runs"][run.probe] = {
            "run": name,
            "status": run.status,
            "config": run.config,
            "result": run.result,
        }
    for entry in points.values():
        listed = ((entry["stamp"] or {}).get("run") or {}).get("probes") or []
        entry["probes"] = [str(p) for p in listed] or sorted(entry["runs"])
    return points


def read_census(path: str) -> dict:
    """{"store", "data", "points": [point, ...] in grid order} (see `census_points`)."""
    with reading(path), Store.open(path, "r") as store:
        points = sorted(
            census_points(store).values(), key=lambda p: (p["index"] is None, p["index"] or 0)
        )
        data = store.read_data_info()
    if not points:
        raise UserError(
            f"The store {path!r} holds no census points: write one with `klandscape census "
            "SWEEP.yaml` (a store of `klandscape run` or `probe` is read with `klandscape show`)."
        )
    return {"store": str(path), "data": data, "points": points}


def _mean(values) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def _result(point: dict, probe: str) -> dict:
    run = point["runs"].get(probe) or {}
    return run.get("result") if isinstance(run.get("result"), dict) else {}


def n_u_curve(result: dict) -> list[tuple[float, int, int]]:
    """(level, lower, upper) bounds on N_u of a components result, by increasing level."""
    return n_u_bounds(result)


def n_u_runs(curve: list[tuple[float, int, int]]) -> str:
    """'0 at 0.001; 1-2 from 0.0012 to 0.004; 1 from 0.005 to 0.2' (runs of equal bounds)."""
    return "; ".join(
        f"{interval(lo, hi)} at {fmt(a, 3)}"
        if a == b
        else f"{interval(lo, hi)} from {fmt(a, 3)} to {fmt(b, 3)}"
        for a, b, lo, hi in n_u_runs_of(curve)
    )


def _bounds(lower, upper) -> str:
    """An N_u interval for a table cell: 'n/a', '2', '1-2' or '<=2' (no lower bound)."""
    return "n/a" if upper is None else interval(lower, upper)


def _max_known(values) -> int | None:
    """The largest value, None when there is none or one is unknown (None)."""
    values = list(values)
    return None if not values or None in values else max(values)


def components_census_row(components: dict) -> dict:
    """The census columns of a `components` result (ComponentsProbe.census_row)."""
    minimum_levels = [v for v in components.get("minimum_levels") or [] if v is not None]
    pairs = list((components.get("pairs") or {}).values())
    barriers = [p.get("barrier") for p in pairs]
    # a bracket's lower end rises above the higher minimum only where a DSS run failed:
    # the pairs with evidence of a barrier (the other merge levels are upper bounds only)
    separated = sum(
        1
        for p in pairs
        if (p.get("saddle_level") or {}).get("lower") is not None
        and p.get("barrier") is not None
        and p["saddle_level"]["lower"]
        > (p["saddle_level"]["upper"] - p["barrier"]) * (1 + 1e-6) + 1e-12
    )
    curve = n_u_curve(components)
    highest = components.get("highest_merge_level")
    top = max(minimum_levels) if minimum_levels else None
    # at and above the highest minimum every sampled minimum is in Omega_u
    above = [(lo, hi) for u, lo, hi in curve if top is not None and at_or_below(top, u)]
    return {
        "lowest_minimum": min(minimum_levels) if minimum_levels else None,
        "highest_minimum": top,
        "highest_merge_level": highest,
        "merge_gap": None if highest is None or top is None else highest - top,
        "mean_barrier": _mean(barriers),
        "max_barrier": max((b for b in barriers if b is not None), default=None),
        "separated_pairs": separated if pairs else None,
        "all_pairs": len(pairs) or None,
        "lowest_level": curve[0][0] if curve else None,
        "n_u_lowest_level_lower": curve[0][1] if curve else None,
        "n_u_lowest_level": curve[0][2] if curve else None,
        "n_u_max_lower": _max_known(lo for _, lo, _ in curve),
        "n_u_max": max((hi for _, _, hi in curve), default=None),
        "n_u_max_above_minima_lower": _max_known(lo for lo, _ in above),
        "n_u_max_above_minima": max((hi for _, hi in above), default=None),
        "unresolved": components.get("unresolved"),
    }


COMPONENTS_CENSUS_COLUMNS = {
    "lowest_minimum": "the lowest level of the point's minima",
    "highest_minimum": "the highest level of its minima",
    "highest_merge_level": "the level at which every minimum is connected (upper bound)",
    "merge_gap": "highest_merge_level - highest_minimum",
    "mean_barrier": "mean over pairs of the saddle-level upper bound - the higher minimum",
    "max_barrier": "the largest of those barriers",
    "separated_pairs": "pairs DSS failed to connect at some level above the higher minimum",
    "all_pairs": "pairs measured",
    "lowest_level": "the lowest level u N_u was counted at",
    "n_u_lowest_level_lower": "N_u there, lower bound (DSS failures)",
    "n_u_lowest_level": "N_u there, upper bound (paths found)",
    "n_u_max_lower": "the largest N_u lower bound over the levels",
    "n_u_max": "the largest N_u upper bound over the levels",
    "n_u_max_above_minima_lower": "the largest lower bound at or above the highest minimum",
    "n_u_max_above_minima": "the largest upper bound at or above the highest minimum",
    "unresolved": "level bands where the N_u bounds differ",
}


def components_census_cells(row: dict) -> dict:
    """The printed census table's cells of a `components` row."""
    return {
        "minima": f"{fmt(row.get('lowest_minimum'), 3)}-{fmt(row.get('highest_minimum'), 3)}",
        "highest merge": row.get("highest_merge_level"),
        "mean barrier": row.get("mean_barrier"),
        "DSS failed": f"{fmt(row.get('separated_pairs'))}/{fmt(row.get('all_pairs'))}",
        "N_u lowest u": _bounds(row.get("n_u_lowest_level_lower"), row.get("n_u_lowest_level")),
        "max N_u": f"{_bounds(row.get('n_u_max_lower'), row.get('n_u_max'))} "
        f"({_bounds(row.get('n_u_max_above_minima_lower'), row.get('n_u_max_above_minima'))})",
    }


def components_census_notes() -> list[str]:
    return [
        "minima: lowest-highest level; barrier: saddle-level upper bound - higher endpoint "
        "level, mean over pairs",
        "DSS failed: pairs not connected by DSS at some level above the higher minimum "
        "(their bracket's lower end rose above it; no proof of a barrier); the other "
        "pairs' merge levels are upper bounds only",
        "N_u as lower-upper bounds (one number where they agree): upper from the paths "
        "found, lower from DSS failures (heuristic); N_u lowest u: at the lowest measured "
        "level; max N_u: over the measured levels, (in brackets) over those at or above "
        "the highest minimum, where every sampled minimum is in the sublevel set",
    ]


def components_census_tables(points: list[tuple[str, dict]]) -> list[dict]:
    """N_u by level, one row per point."""
    return [
        table(
            "census: N_u by level",
            ["point", "N_u (components holding a sampled minimum; lower-upper bounds)"],
            [[name, n_u_runs(n_u_curve(result)) or "n/a"] for name, result in points],
        )
    ]


def curviness_census_row(curviness: dict) -> dict:
    """The census columns of a `curviness` result (CurvinessProbe.census_row): the values
    at its lowest level, and the normalized length at every level."""
    levels = curviness.get("levels") or []
    lowest = min(range(len(levels)), key=lambda i: levels[i]) if levels else None

    def at(key, i):
        values = curviness.get(key) or []
        return values[i] if i is not None and i < len(values) else None

    connected, failed = at("pairs", lowest), at("failed", lowest)
    return {
        "curviness_level": levels[lowest] if lowest is not None else None,
        "normalized_length": at("normalized_length", lowest),
        "normalized_length_sd": at("normalized_length_sd", lowest),
        "mean_normalized_length": _mean(curviness.get("normalized_length") or []),
        "connected": connected,
        "pairs": None if connected is None else connected + (failed or 0),
        "lengths_by_level": [
            [u, at("normalized_length", i), at("normalized_length_sd", i)]
            for i, u in sorted(enumerate(levels), key=lambda iu: -iu[1])
        ],
    }


CURVINESS_CENSUS_COLUMNS = {
    "curviness_level": "the lowest level the paths were measured at",
    "normalized_length": "mean normalized length of the connected pairs' paths there",
    "normalized_length_sd": "its standard deviation over pairs",
    "mean_normalized_length": "the mean of the normalized lengths over the levels",
    "connected": "pairs connected at the lowest level",
    "pairs": "pairs tried there",
    "lengths_by_level": "[level, normalized length, sd] per level, highest level first",
}


def curviness_census_cells(row: dict) -> dict:
    """The printed census table's cells of a `curviness` row."""
    pairs = row.get("pairs")
    return {
        "norm. length": row.get("normalized_length"),
        "connected": "n/a" if pairs is None else f"{row.get('connected')}/{pairs}",
    }


def curviness_census_notes() -> list[str]:
    return [
        "norm. length (mean over connected pairs) and connected pairs at the lowest curviness level"
    ]


def curviness_census_tables(points: list[tuple[str, dict]]) -> list[dict]:
    """Curviness per level, one row per (point, level)."""
    rows = []
    for name, result in points:
        for i, level in enumerate(result.get("levels") or []):

            def item(key, i=i, result=result):
                values = result.get(key) or []
                return values[i] if i < len(values) else None

            good, bad = item("pairs") or 0, item("failed") or 0
            rows.append(
                [
                    name,
                    level,
                    item("normalized_length"),
                    item("normalized_length_sd"),
                    item("beads"),
                    f"{good}/{good + bad}",
                ]
            )
    return [
        table(
            "census: curviness",
            ["point", "level u", "norm. length", "sd", "beads", "connected"],
            rows,
        )
    ]


def point_row(point: dict) -> dict:
    """One census row: the point, its grid values, replicas and parameters, then each of
    its probes' columns (the probe's `census_row` hook on its result; None where missing)."""
    row = {
        "point": point["name"],
        **point["grid"],
        "replicas": len(point.get("models") or []) or None,
        "parameters": point.get("parameters"),
    }
    for probe in point["probes"]:
        columns = registry.output_hook(probe, "census_columns")
        values = registry.output_hook(probe, "census_row")(_result(point, probe))
        row.update({key: values.get(key) for key in columns} if columns else values)
    row["complete"] = all(r["status"] == "complete" for r in point["runs"].values()) and set(
        point["runs"]
    ) == set(point["probes"])
    return row


def census_rows(path: str) -> list[dict]:
    """The census table: one row per grid point (see `point_row`)."""
    return [point_row(p) for p in read_census(path)["points"]]


def census_tables(path: str) -> list[dict]:
    """Tables for `klandscape census` to print: the census (each probe's cells), then
    each probe's own census tables (N_u per point, curviness per level)."""
    census = read_census(path)
    points = census["points"]
    keys = list(points[0]["grid"])
    probes = list(dict.fromkeys(p for point in points for p in point["probes"]))
    rows = [point_row(p) for p in points]
    cells = [
        {
            h: v
            for probe in probes
            for h, v in registry.output_hook(probe, "census_cells")(r).items()
        }
        for r in rows
    ]
    headers = list(dict.fromkeys(h for c in cells for h in c))
    notes = [f"level function {level_label(census['data'])}"]
    for probe in probes:
        notes.extend(registry.output_hook(probe, "census_notes")())
    first = table(
        "census",
        [*keys, "reps", "params", *headers],
        [
            [
                *[r.get(k) for k in keys],
                r["replicas"],
                r["parameters"],
                *[c.get(h) for h in headers],
            ]
            for r, c in zip(rows, cells)
        ],
        notes,
    )
    tables = [first]
    for probe in probes:
        results = [(p["name"], _result(p, probe)) for p in points if probe in p["runs"]]
        tables.extend(registry.output_hook(probe, "census_tables")(results))
    return tables


# ------------------------------------------------------------------------------- figures


def _axis(points: list[dict]) -> tuple[str | None, list[str]]:
    """The x key (width if the grid has it, else its first key) and the series keys."""
    keys = list(points[0]["grid"]) if points else []
    if not keys:
        return None, []
    x = "width" if "width" in keys else keys[0]
    return x, [k for k in keys if k != x]


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


#: the row columns the summary figure draws (from the built-in census probes' rows)
SUMMARY_COLUMNS = (
    "highest_merge_level",
    "highest_minimum",
    "lowest_minimum",
    "mean_barrier",
    "max_barrier",
    "lengths_by_level",
)


def draw_summary(census: dict):
    """Highest merge level (with the minima's levels), barrier and normalized length
    against the grid's first key, one line per value of the other keys: the rows' columns
    of those names, whichever probe gave them (NoFigure where no row has any)."""
    points = census["points"]
    x_key, series_keys = _axis(points)
    rows = [point_row(p) for p in points]
    if not any(r.get(k) for r in rows for k in SUMMARY_COLUMNS):
        raise NoFigure(f"no census probe gave any of the columns {', '.join(SUMMARY_COLUMNS)}")
    xs_all = [r.get(x_key) for r in rows]
    numeric = _numeric(xs_all)
    ticks = sorted(set(xs_all)) if numeric else list(dict.fromkeys(map(str, xs_all)))

    def position(value):
        return value if numeric else ticks.index(str(value))

    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for point, row in zip(points, rows):
        groups.setdefault(tuple(row.get(k) for k in series_keys), []).append((point, row))
    figure, axes = new_figure(14.0, 4.4, ncols=3)
    label = level_label(census["data"])
    for g, (key, members) in enumerate(groups.items()):
        members.sort(key=lambda m: position(m[1].get(x_key)))
        name = ", ".join(f"{k} {v}" for k, v in zip(series_keys, key))
        suffix = f" ({name})" if name else ""
        color = f"C{g % 10}"
        xs = [position(r.get(x_key)) for _, r in members]

        def line(ax, values, style, text, xs=xs, color=color, suffix=suffix):
            keep = [(x, v) for x, v in zip(xs, values) if v is not None]
            if keep:
                ax.plot(*zip(*keep), style, color=color, label=text + suffix)

        line(axes[0], [r.get("highest_merge_level") for _, r in members], "o-", "highest merge")
        line(axes[0], [r.get("highest_minimum") for _, r in members], "v--", "highest minimum")
        line(axes[0], [r.get("lowest_minimum") for _, r in members], "^:", "lowest minimum")
        line(axes[1], [r.get("mean_barrier") for _, r in members], "o-", "mean barrier")
        line(axes[1], [r.get("max_barrier") for _, r in members], "x:", "max barrier")
        levels = max((len(r.get("lengths_by_level") or []) for _, r in members), default=0)
        for k in range(levels):

            def at(row, k=k):
                """[level, normalized length, sd] at the row's k-th highest level."""
                values = row.get("lengths_by_level") or []
                return values[k] if k < len(values) else (None, None, None)

            us = {at(r)[0] for _, r in members if at(r)[0] is not None}
            which = f"u = {fmt(us.pop(), 3)}" if len(us) == 1 else f"level {k + 1} (highest 1)"
            shown = [(x, r) for x, (_, r) in zip(xs, members) if at(r)[1] is not None]
            sds = [at(r)[2] for _, r in shown]
            axes[2].errorbar(
                [x for x, _ in shown],
                [at(r)[1] for _, r in shown],
                yerr=[0.0 if sd is None else sd for sd in sds],
                fmt="o-",
                capsize=3,
                color=color,
                alpha=1.0 - 0.6 * k / max(levels, 1),
                label=f"{which}{suffix}",
            )
    for ax in axes[:2]:  # levels and barriers often span decades
        if use_log_scale([y for line in ax.get_lines() for y in line.get_ydata()]):
            ax.set_yscale("log")
    axes[0].set_ylabel(label)
    axes[0].set_title("highest merge level and the minima", fontsize=10)
    axes[1].set_ylabel(f"barrier ({label})")
    axes[1].set_title("barrier above the higher endpoint (over pairs)", fontsize=10)
    axes[2].axhline(1.0, color="0.6", linestyle="--", linewidth=1)
    axes[2].set_ylabel("normalized geodesic length (1 = straight)")
    axes[2].set_title("normalized length (mean ± sd over connected pairs)", fontsize=10)
    for ax in axes:
        ax.set_xlabel(x_key or "grid point")
        if not numeric:
            ax.set_xticks(range(len(ticks)), ticks)
        elif all(v > 0 for v in ticks) and len(ticks) > 2 and max(ticks) / min(ticks) >= 8:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    figure.suptitle(f"landscape census: {len(points)} grid points", fontsize=11)
    return figure, f"highest merge level, barrier and normalized length against {x_key}"


def draw_components(census: dict):
    """N_u against the level, one step curve per grid point: absolute levels (left), and
    the level's excess over the point's lowest minimum, in percent (right)."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    points = census["points"]
    if not any(n_u_curve(_result(point, "components")) for point in points):
        raise NoFigure("no grid point has an N_u curve (components)")
    figure, axes = new_figure(12.0, 4.6, ncols=2)
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, max(len(points), 1)))
    top, absolute = 1, []
    for k, (color, point) in enumerate(zip(colors, points)):
        result = _result(point, "components")
        curve = n_u_curve(result)
        if not curve:
            continue
        us, lows, ns = zip(*curve)
        top = max(top, *ns)
        absolute += us
        lowest = min(result.get("minimum_levels") or [None], default=None)
        for bound, style, label in ((ns, "-", point["name"]), (lows, "--", None)):
            if bound is lows and "n_components_lower" not in result:
                continue
            lifted = [n + 0.04 * k for n in bound]  # offset so that equal curves stay apart
            axes[0].step(us, lifted, style, where="post", color=color, lw=1.6, label=label)
            if lowest:
                excess = [(100.0 * (u / lowest - 1.0), n) for u, n in zip(us, lifted)]
                excess = [(e, n) for e, n in excess if e > 0]
                if excess:
                    axes[1].step(*zip(*excess), style, where="post", color=color, lw=1.6)
    axes[1].plot([], [], "-", color="0.3", label="upper bound (paths found)")
    axes[1].plot([], [], "--", color="0.3", label="lower bound (DSS failures)")
    axes[1].legend(fontsize=7)
    if use_log_scale(absolute):
        axes[0].set_xscale("log")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.2, top + 0.8)
        ax.set_ylabel("N_u: components holding a sampled minimum")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel(f"level u: {level_label(census['data'])}")
    axes[1].set_xlabel("level above the point's lowest minimum: 100 (u / lowest - 1), %")
    axes[0].legend(fontsize=7, ncols=2 if len(points) > 8 else 1)
    figure.suptitle(
        "N_u per grid point, upper (solid) and lower (dashed) bounds (curves offset slightly "
        "upwards to stay apart)",
        fontsize=10,
    )
    return figure, f"N_u against the level for {len(points)} grid points"


def plot_census(
    path: str, directory: str | None = None, *, fmt: str = "png", paths: str = "none"
) -> object:
    """The census figures and every point's probe figures (`plot_store`), in `directory`
    (default `<store stem>_figures` beside the store). Returns plot_store's PlotReport with
    the census figures first."""
    directory = directory or default_directory(path)
    census = read_census(path)
    report = plot_store(path, directory, fmt=fmt, paths=paths)
    out = Path(directory)
    made = []
    draws = [("census_summary", draw_summary)]
    probes = dict.fromkeys(p for point in census["points"] for p in point["probes"])
    for probe in probes:
        draws.extend(registry.output_hook(probe, "census_figures").items())
    for kind, draw in draws:
        try:
            figure, caption = draw(census)
        except NoFigure as reason:
            report.skipped.append({"run": "census", "kind": kind, "reason": str(reason)})
            continue
        made.append(FigureFile(_save(figure, out, _safe(kind), fmt), "census", kind, None, caption))
    report.figures[:0] = made
    return report


__all__ = [
    "CENSUS_ATTRS",
    "COMPONENTS_CENSUS_COLUMNS",
    "CURVINESS_CENSUS_COLUMNS",
    "components_census_cells",
    "components_census_notes",
    "components_census_row",
    "components_census_tables",
    "curviness_census_cells",
    "curviness_census_notes",
    "curviness_census_row",
    "curviness_census_tables",
    "draw_components",
    "draw_summary",
    "census_points",
    "census_rows",
    "census_tables",
    "n_u_curve",
    "plot_census",
    "point_row",
    "read_census",
]
