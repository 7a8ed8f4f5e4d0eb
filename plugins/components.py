"""Probe `components`: N_u over many minima, the merge tree and the highest merge level."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.plugins.pairs import PairOptions, PairProbe, parse_levels
from keras_landscape.report import census as census_report
from keras_landscape.report.plots import NoFigure, new_figure, values
from keras_landscape.report.tables import fmt, interval, n_u_bounds, n_u_runs_of, table
from keras_landscape.science.barriers import BisectionOptions, linear_profile, saddle_bracket
from keras_landscape.science.dss import DSSConfig
from keras_landscape.science.pairs import states_of

DEFAULT_GRID = 25


def components_tables(name: str, result: dict) -> list[dict]:
    minima = result.get("minima") or []
    levels = result.get("minimum_levels") or []
    tables = [
        table(
            f"{name}: minima",
            ["minimum", "level"],
            [[m, levels[i] if i < len(levels) else None] for i, m in enumerate(minima)],
        )
    ]
    grid = n_u_bounds(result)
    bounded = "n_components_lower" in result  # stores before the bounds: upper only
    notes = [
        f"{len(grid)} measured levels; N_u counts components holding a sampled minimum",
        "N_u as lower-upper: upper from the paths found (pairs joined at the lowest level "
        "DSS, the line or a chain connected them), lower from DSS failures (pairs kept apart "
        "only below a failed run's bead target; heuristic)"
        if bounded
        else "N_u: upper bounds only (a store from before N_u intervals)",
    ]
    bands = result.get("unresolved") or []
    if bands:
        notes.append(
            "unresolved (bounds differ): "
            + "; ".join(f"{fmt(a, 3)} to {fmt(b, 3)}" for a, b in bands)
            + " -- more bisections (max_bisections, tolerance) narrow them"
        )
    tables.append(
        table(
            f"{name}: N_u",
            ["levels from", "to", "N_u"],
            # consecutive levels with the same bounds share a row
            [[a, b, interval(lo, hi)] for a, b, lo, hi in n_u_runs_of(grid)],
            notes,
        )
    )
    members = {i: [m] for i, m in enumerate(minima)}
    merges = []
    for level, a, b, new in result.get("merge_tree") or []:
        left, right = members.get(int(a), [str(a)]), members.get(int(b), [str(b)])
        members[int(new)] = left + right
        merges.append([level, " ".join(left), " ".join(right)])
    unmerged = sum(1 for m in result.get("merge_levels") or [] if m is None)
    notes = [
        f"highest merge level {fmt(result.get('highest_merge_level'))} (above it all "
        "sampled minima are in one component)"
    ]
    if unmerged:
        notes.append(f"{unmerged} merge(s) not found at any measured level")
    decided = {}
    for record in (
        (result.get("pairs") or {}).values() if isinstance(result.get("pairs"), dict) else []
    ):
        decided[record.get("decided_by")] = decided.get(record.get("decided_by"), 0) + 1
    if decided:
        notes.append("pairs decided by " + ", ".join(f"{k} {v}" for k, v in decided.items()))
    tables.append(table(f"{name}: merges", ["level", "joins", "with"], merges, notes))
    return tables


def draw_components(result: dict, run_name: str, xlabel: str):
    """N_u vs level as a step plot (upper and lower bounds, the band between shaded),
    merge levels marked."""
    points = n_u_bounds(result)
    if not points:
        raise NoFigure("the result has no levels / n_components")
    from matplotlib.ticker import MaxNLocator

    figure, ax = new_figure()
    us, lows, ns = zip(*points)
    bounded = "n_components_lower" in result  # stores before the bounds: upper only
    ax.step(us, ns, where="post", color="C0", linewidth=1.8, label="N_u upper bound (paths found)")
    ax.plot(us, ns, "o", color="C0", markersize=3)
    if bounded:
        ax.step(
            us,
            lows,
            where="post",
            color="C2",
            linewidth=1.4,
            linestyle="--",
            label="N_u lower bound (DSS failures)",
        )
        ax.fill_between(
            us, lows, ns, step="post", color="C0", alpha=0.15, label="unresolved", linewidth=0
        )
    merges = [m for m in values(result.get("merge_levels")) if m is not None]
    for k, m in enumerate(merges):
        ax.axvline(
            m, color="0.6", linestyle=":", linewidth=1, label="merge levels" if k == 0 else None
        )
    top = result.get("highest_merge_level")
    if top is not None:
        ax.axvline(
            top, color="C3", linestyle="--", linewidth=1.2, label=f"highest merge level {top:.4g}"
        )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.3, max(ns) + 0.5)  # N_u = 0 (below every minimum) stays in view
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
    minimum_levels = values(result.get("minimum_levels"))
    if not minimum_levels:
        raise NoFigure("the result has no minimum_levels")
    names = list(result.get("minima") or [str(i) for i in range(len(minimum_levels))])
    layout = tree_layout(minimum_levels, result.get("merge_tree") or [])
    x, y, parent = layout["x"], layout["y"], layout["parent"]
    known = [v for v in y.values() if np.isfinite(v)]
    span = (max(known) - min(known)) if known else 1.0
    top = (max(known) if known else 1.0) + 0.15 * (span or 1.0)
    figure, ax = new_figure(max(5.0, 1.5 + 0.6 * len(minimum_levels)), 4.8)
    for node, yn in y.items():
        if not np.isfinite(yn):
            continue
        up = y[parent[node]] if node in parent else top
        style = "-" if node in parent or len(layout["roots"]) == 1 else "--"
        ax.plot([x[node], x[node]], [yn, up], style, color="C0", linewidth=1.6)
    for node, (level, a, b, _) in (
        (int(m[3]), m) for m in result.get("merge_tree") or [] if m[0] is not None
    ):
        ax.plot([x[int(a)], x[int(b)]], [level, level], "-", color="C0", linewidth=1.6)
        ax.plot([x[node]], [level], "o", color="C0", markersize=3)
    leaf_x = [x[i] for i in range(len(minimum_levels)) if i in x]
    leaf_y = [y[i] for i in range(len(minimum_levels)) if i in x]
    ax.plot(
        leaf_x,
        leaf_y,
        "v",
        color="C1",
        markersize=7,
        markeredgecolor="black",
        markeredgewidth=0.5,
        label="minima (at their levels)",
        zorder=3,
    )
    highest = result.get("highest_merge_level")
    if highest is not None:
        ax.axhline(
            highest,
            color="C3",
            linestyle=":",
            linewidth=1.2,
            label=f"highest merge level {highest:.4g}",
        )
    if len(layout["roots"]) > 1:
        ax.plot([], [], "--", color="C0", label="not merged at any measured level")
    order = layout["leaves"]
    ax.set_xticks(
        [x[i] for i in order],
        [names[i] if i < len(names) else str(i) for i in order],
        rotation=45 if len(order) > 6 else 0,
        ha="right" if len(order) > 6 else "center",
    )
    ax.set_xlim(-0.7, max(len(order) - 0.3, 0.7))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("minima (branches join at the saddle level that connects them)")
    ax.set_title(f"{run_name}: disconnectivity graph", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return figure, f"merge tree of {len(minimum_levels)} minima"


class ComponentsProbe(PairProbe):
    """Pairwise saddle levels over K minima, single linkage, N_u on a level grid."""

    name = "components"
    level_targets = False  # `levels` is the grid N_u is counted on, any finite values
    summary = "Connected components N_u of sublevel sets over many minima; merge tree (DSS)."
    result_fields = {
        "minima": "names of the K minima (files, or a model and its trained replicas)",
        "minimum_levels": "level function at each minimum",
        "levels": "the level grid u",
        "n_components": "N_u per level, the upper bound (= n_components_upper; stores "
        "before intervals hold only this)",
        "n_components_lower": "N_u per level, lower bound: pairs kept apart only where a DSS "
        "run failed (below its bead target); heuristic, as DSS failing is no proof",
        "n_components_upper": "N_u per level, upper bound: pairs joined where DSS (or the "
        "straight line, or a chain through other minima) found a path",
        "unresolved": "[from, to] level bands where the bounds differ: more bisection "
        "(max_bisections, tolerance) narrows them",
        "merge_levels": "the K-1 single-linkage merge levels (null: never merged)",
        "merge_tree": "[level, cluster_a, cluster_b, new_cluster]; leaves 0..K-1",
        "highest_merge_level": "above it every sampled minimum lies in one component "
        "(the energy-barrier level estimate)",
        "pairs": "per pair 'i-j': linear_max, saddle_level {lower, upper}, decided_by "
        "(dss-bisection, or union-find when a chain through other minima already decided it)",
    }
    # what it adds to a `klandscape census` (registry.ProbeBase; report.census)
    census_columns = census_report.COMPONENTS_CENSUS_COLUMNS
    census_row = staticmethod(census_report.components_census_row)
    census_cells = staticmethod(census_report.components_census_cells)
    census_notes = staticmethod(census_report.components_census_notes)
    census_tables = staticmethod(census_report.components_census_tables)
    census_figures = {"census_components": census_report.draw_components}

    @dataclass
    class Config(DSSConfig, PairOptions, BisectionOptions):
        """DSS knobs (DSSConfig), pair options (PairOptions), bisection (BisectionOptions), and:

        Attributes:
            partners: with one model, how many replicas of its architecture to train from
                fresh initialisations (random init, Adam) down to its level.
            levels: the level grid, '0.3,0.2' or 'start:stop:count'; empty: 25 levels from
                the lowest minimum to 10% above the highest merge.
        """

        partners: int = 4
        levels: str = ""

    figures = {"components": draw_components, "disconnectivity": draw_disconnectivity}

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return components_tables(run_name, result)

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        # scipy's clustering takes 0.4 s to import: not when probes are only listed
        from keras_landscape.science.merge_tree import (
            bottleneck_levels,
            count_components,
            merge_tree,
            unresolved_bands,
        )

        config = self.config
        minima, _ = self.pairs(landscape, models, store, progress)
        k = len(minima)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        linear = {}
        for i, j in pairs:
            key = f"pair_{i}_{j}"
            if not store.has(f"{key}/linear_level"):
                ts, levels = linear_profile(
                    landscape,
                    minima[i].theta,
                    minima[j].theta,
                    config.grid,
                    minima[i].state,
                    minima[j].state,
                )
                store.write(f"{key}/linear_t", ts)
                store.write(f"{key}/linear_level", levels)
            levels = store.read(f"{key}/linear_level")
            linear[(i, j)] = float(np.max(levels)) if np.all(np.isfinite(levels)) else math.inf
        minimum_levels = [
            float(v)
            for v in landscape.levels(
                np.stack([m.theta for m in minima]), states_of(minima, landscape)
            )
        ]
        saddle = np.full((k, k), math.inf)
        np.fill_diagonal(saddle, minimum_levels)
        # the brackets' lower ends: a pair is kept apart only below the bead target of a
        # failed DSS run (a pair never bisected joins at its higher minimum's level)
        saddle_lower = np.full((k, k), math.inf)
        np.fill_diagonal(saddle_lower, minimum_levels)
        task = progress.task("components", total=len(pairs))
        records = {}
        # Cheapest pairs first, so chains through other minima bound (or settle) later pairs.
        for i, j in sorted(pairs, key=lambda p: linear[p]):
            chain = bottleneck_levels(saddle)[i, j]
            bound = chain if math.isfinite(chain) else None
            result = saddle_bracket(
                landscape,
                minima[i],
                minima[j],
                config,
                store,
                f"pair_{i}_{j}",
                config.seed,
                task,
                upper_bound=bound,
            )
            decided_by = (
                "dss-bisection"
                if result["bisections"]
                else ("union-find" if bound is not None and bound < linear[(i, j)] else "linear")
            )
            saddle[i, j] = saddle[j, i] = result["saddle_level"]["upper"]
            saddle_lower[i, j] = saddle_lower[j, i] = result["saddle_level"]["lower"]
            records[f"{i}-{j}"] = {
                "linear_max": result["linear_max"],
                "saddle_level": result["saddle_level"],
                "barrier": result["barrier"],
                "decided_by": decided_by,
                "bisections": len(result["bisections"]),
            }
            task.advance()
        task.close()
        merges = merge_tree(minimum_levels, saddle)
        merge_levels = [m[0] for m in merges] + [None] * (k - 1 - len(merges))
        finite = [m[0] for m in merges]
        top = max(finite) if finite else max(minimum_levels)
        grid = (
            parse_levels(config.levels, targets=False)
            if config.levels
            else [
                float(v)
                for v in np.linspace(
                    min(minimum_levels), top + 0.1 * max(abs(top), 1e-12), DEFAULT_GRID
                )
            ]
        )
        upper = count_components(minimum_levels, merges, grid)
        lower = count_components(minimum_levels, merge_tree(minimum_levels, saddle_lower), grid)
        return {
            "minima": [m.name for m in minima],
            "minimum_levels": minimum_levels,
            "levels": grid,
            "n_components": upper,
            "n_components_lower": lower,
            "n_components_upper": upper,
            "unresolved": unresolved_bands(grid, lower, upper),
            "merge_levels": merge_levels,
            "merge_tree": merges,
            "highest_merge_level": top if len(merges) == k - 1 else None,
            "level_fn": landscape.level_name,
            "pairs": records,
        }
