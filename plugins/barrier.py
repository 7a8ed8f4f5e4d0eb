"""Probe `barrier`: linear and DSS-bisection estimates of the energy barrier between minima."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.models.align import aligned_state, weight_matching_on
from keras_landscape.plugins.pairs import PairOptions, PairProbe
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import fmt, table
from keras_landscape.science.barriers import BisectionOptions, bracket_search, relax_path
from keras_landscape.science.bootstrap import (
    minimum_resamples,
    path_intervals,
    resampled_levels,
)
from keras_landscape.science.curves import CURVES, curve_points, stored_curve
from keras_landscape.science.dss import DSSConfig, interpolate
from keras_landscape.science.lockstep import drive
from keras_landscape.seeds import derive_seed
from keras_landscape.store.strings import has_string, read_string

#: keys of the curve's t draws and of the bootstrap's resamples under the run's seed
_CURVE, _BOOTSTRAP = 11, 13

ALIGNMENTS = ("none", "weight-matching")


def _bracket(saddle) -> str:
    if not isinstance(saddle, dict):
        return fmt(saddle)
    return f"[{fmt(saddle.get('lower'))}, {fmt(saddle.get('upper'))}]"


def barrier_tables(name: str, result: dict) -> list[dict]:
    pairs = [p for p in result.get("pairs") or [] if isinstance(p, dict)] or [result]
    rows, aligned_rows, notes = [], [], []
    for p in pairs:
        label = f"{p.get('a', 'A')} - {p.get('b', 'B')}"
        ends = [v for v in p.get("endpoint_levels") or [] if v is not None]
        rows.append(
            [
                label,
                max(ends) if ends else None,
                p.get("linear_max"),
                _bracket(p.get("saddle_level")),
                p.get("barrier"),
                p.get("relaxed_max"),
            ]
        )
        aligned = p.get("aligned")
        if isinstance(aligned, dict):
            aligned_rows.append(
                [
                    label,
                    f"{fmt(p.get('distance'))} -> {fmt(aligned.get('distance'))}",
                    aligned.get("linear_max"),
                    _bracket(aligned.get("saddle_level")),
                    aligned.get("barrier"),
                ]
            )
        estimators = p.get("estimators")
        if isinstance(estimators, dict):
            notes.append(
                f"{label}: upper bound from {estimators.get('upper')}, lower from "
                f"{estimators.get('lower')}"
            )
    notes.insert(
        0,
        "barrier = saddle level (upper) - higher minimum, in level-function units "
        f"({result.get('level_fn', '?')}); the saddle bracket bounds it",
    )
    tables = [
        table(
            name,
            [
                "pair",
                "higher minimum",
                "linear max",
                "saddle [lower, upper]",
                "barrier",
                "relaxed max",
            ],
            rows,
            notes,
        )
    ]
    if aligned_rows:
        tables.append(
            table(
                f"{name}: after weight matching",
                [
                    "pair",
                    "distance raw -> aligned",
                    "linear max",
                    "saddle [lower, upper]",
                    "barrier",
                ],
                aligned_rows,
            )
        )
    interval_rows = [
        [
            _pair_label(p, i),
            split,
            path,
            v["max_level"],
            _span(v["max_interval"]),
            v["barrier"],
            _span(v["barrier_interval"]),
        ]
        for i, p in enumerate(pairs)
        for split in ("train", "test")
        for path, v in ((p.get("intervals") or {}).get(split) or {}).items()
    ]
    if interval_rows:
        first = next(p["intervals"] for p in pairs if p.get("intervals"))
        tables.append(
            table(
                f"{name}: bootstrap intervals",
                ["pair", "split", "path", "max", "max interval", "barrier", "barrier interval"],
                interval_rows,
                [
                    f"{100 * first['confidence']:g}% percentile intervals over "
                    f"{first['resamples']} resamples of the split's samples"
                ],
            )
        )
    return tables


def _span(values) -> str:
    return f"[{fmt(values[0])}, {fmt(values[1])}]"


def _pair_label(pair: dict, index: int) -> str:
    if pair.get("a") is not None and pair.get("b") is not None:
        return f"{pair['a']}-{pair['b']}"
    return str(pair.get("prefix") or f"pair {index}")


def _above(value, floor) -> float | None:
    if value is None or floor is None:
        return None
    return float(value) - float(floor)


#: the colour of each measured path in the bootstrap panel
_PATH_COLORS = {"linear": "C0", "dss": "C1", "neb": "C2", "bezier": "C2", "polychain": "C2"}
_SPLIT_MARKERS = {"train": "o", "test": "s"}


def _bootstrap_series(pairs: list[dict]) -> dict[tuple, list]:
    """(aligned, path, split) -> [(pair index, barrier, lower, upper)] of the stored
    bootstrap intervals of the barrier."""
    series: dict[tuple, list] = {}
    for i, pair in enumerate(pairs):
        for aligned, holder in ((False, pair), (True, pair.get("aligned"))):
            intervals = holder.get("intervals") if isinstance(holder, dict) else None
            if not isinstance(intervals, dict):
                continue
            for split in ("train", "test"):
                for path, v in (intervals.get(split) or {}).items():
                    bounds = v.get("barrier_interval") if isinstance(v, dict) else None
                    if bounds is None or None in bounds or v.get("barrier") is None:
                        continue
                    series.setdefault((aligned, path, split), []).append(
                        (i, float(v["barrier"]), float(bounds[0]), float(bounds[1]))
                    )
    return series


def _without_split(label: str) -> str:
    """'error (%), test split' -> 'error (%)'."""
    head, _, tail = label.rpartition(", ")
    return head if head and tail.endswith(" split") else label


def _mark_flat_bars(ax, xs, heights, color: str, span: float) -> None:
    """A bar of height 0, or too low to see at this scale (2% of it), gets a marker at its
    value and its value written above it ('0': no barrier)."""
    for x, h in zip(xs, heights):
        if np.isfinite(h) and abs(h) <= 0.02 * span:
            ax.plot([x], [h], "D", color=color, markeredgecolor="black", markersize=5, zorder=3)
            ax.annotate(
                "0" if h == 0 else fmt(h, 2),
                (x, h),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )


def draw_barrier(result: dict, run_name: str, ylabel: str):
    """Grouped bars per pair: linear, DSS (bracket as error bar), relaxed, aligned; zero
    barriers marked; beside them the bootstrap intervals of each measured path's barrier,
    where the run has them."""
    pairs = [p for p in (result.get("pairs") or [result]) if isinstance(p, dict)]
    if not pairs or not any("barrier" in p or "linear_max" in p for p in pairs):
        raise NoFigure("the result has no barrier pairs")
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
            put(
                "aligned linear",
                i,
                aligned.get("linear_barrier", _above(aligned.get("linear_max"), a_floor)),
            )
            put("aligned DSS bisection", i, aligned.get("barrier"), aligned.get("barrier_bracket"))
    names = [
        n for n, vals in series.items() if any(v is not None and v[0] is not None for v in vals)
    ]
    boot = _bootstrap_series(pairs)
    width_bars = max(6.0, 1.2 + 1.1 * len(pairs) * max(1, len(names)) * 0.5)
    if boot:
        figure, (ax, right) = new_figure(width_bars + max(5.0, 1.5 * len(pairs)), 4.2, ncols=2)
    else:
        figure, ax = new_figure(width_bars, 4.2)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(pairs))
    drawn = []
    for k, name in enumerate(names):
        heights, lower, upper = [], [], []
        for entry in series[name]:
            value, bracket = entry if entry is not None else (None, None)
            heights.append(np.nan if value is None else float(value))
            lo, hi = (list(bracket) + [None, None])[:2] if bracket else (None, None)
            lower.append(0.0 if value is None or lo is None else max(0.0, float(value) - float(lo)))
            upper.append(0.0 if value is None or hi is None else max(0.0, float(hi) - float(value)))
        has_bracket = any(lower) or any(upper)
        xs = x + (k - (len(names) - 1) / 2) * width
        ax.bar(
            xs,
            heights,
            width,
            label=name,
            color=f"C{k}",
            yerr=np.array([lower, upper]) if has_bracket else None,
            capsize=4 if has_bracket else 0,
        )
        drawn.append((xs, heights, upper, f"C{k}"))
    span = max(
        (abs(h) + u for _, hs, us, _ in drawn for h, u in zip(hs, us) if np.isfinite(h)),
        default=0.0,
    )
    for xs, heights, _, color in drawn:
        _mark_flat_bars(ax, xs, heights, color, span)
    ax.axhline(0.0, color="black", linewidth=0.8)
    labels = [_pair_label(p, i) for i, p in enumerate(pairs)]
    ax.set_xticks(x, labels, rotation=30 if len(pairs) > 4 else 0)
    ax.set_ylabel(f"barrier above the higher minimum\n({ylabel})")
    ax.set_title(
        f"{run_name}: energy barriers (error bar: bisection bracket; 0: no barrier)", fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    caption = f"barriers of {len(pairs)} pair(s): {'; '.join(names)}"
    if boot:
        _draw_bootstrap(right, boot, pairs, labels, _without_split(ylabel))
        caption += "; bootstrap intervals"
    return figure, caption


def _draw_bootstrap(ax, boot: dict, pairs: list[dict], labels: list[str], ylabel: str) -> None:
    """Each measured path's barrier (marker) and its bootstrap interval (error bar from
    the stored lower to the stored upper end), per pair, per split."""
    order = list(_PATH_COLORS)
    keys = sorted(boot, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 99, k))
    step = 0.8 / max(1, len(keys))
    for n, key in enumerate(keys):
        aligned, path, split = key
        points = boot[key]
        xs = np.array([i for i, *_ in points]) + (n - (len(keys) - 1) / 2) * step
        barrier = np.array([b for _, b, _, _ in points])
        lower = np.array([lo for *_, lo, _ in points])
        upper = np.array([hi for *_, hi in points])
        color = _PATH_COLORS.get(path, "C4")
        ax.errorbar(
            xs, (lower + upper) / 2, yerr=(upper - lower) / 2, fmt="none", ecolor=color, capsize=4
        )
        ax.plot(
            xs,
            barrier,
            _SPLIT_MARKERS.get(split, "^"),
            color=color,
            markerfacecolor="white" if aligned else color,
            markeredgecolor="black" if not aligned else color,
            label=f"{'aligned ' if aligned else ''}{path}, {split} split",
        )
    first = next(
        holder["intervals"]
        for pair in pairs
        for holder in (pair, pair.get("aligned"))
        if isinstance(holder, dict) and isinstance(holder.get("intervals"), dict)
    )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(pairs)), labels, rotation=30 if len(pairs) > 4 else 0)
    ax.set_xlim(-0.6, len(pairs) - 0.4)
    ax.set_ylabel(f"barrier above the higher minimum\n({ylabel}, on the split marked)")
    ax.set_title(
        f"bootstrap: {100 * first.get('confidence', 0):g}% intervals over "
        f"{first.get('resamples')} resamples",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")


class BarrierProbe(PairProbe):
    """Saddle level s(A, B) bracketed by bisection on u with DSS, and the barrier above A, B."""

    name = "barrier"
    summary = "Energy barrier between minima: linear maximum, DSS-bisection saddle bracket."
    result_fields = {
        "linear_max": "maximum of the level function on the straight segment (dense grid)",
        "saddle_level": "{lower, upper}: upper = lowest level found connected (an upper bound "
        "on s), lower = the highest bead target of a level found not connected by DSS "
        "(heuristic; a test at u trains beads alpha of the way from the higher minimum to u)",
        "barrier": "saddle_level.upper - max(endpoint_levels)",
        "barrier_bracket": "[lower, upper] - max(endpoint_levels)",
        "endpoint_levels": "level function at A and B",
        "relaxed_max": "maximum of the relaxed path: the nudged elastic band's when relax=neb "
        "lowered it, the trained curve's with relax=bezier or polychain",
        "lowest_path": "per pair: which path gave the lowest maximum (linear, dss, neb, "
        "bezier, polychain) and that maximum",
        "intervals": "per pair (bootstrap > 0): per split (train, test), per measured path "
        "(linear, dss, neb, bezier, polychain): max_level and barrier on that split, with "
        "max_interval and barrier_interval over resamples of its samples; confidence, "
        "resamples",
        "aligned": "with align=weight-matching: the same figures after permuting B's hidden "
        "units to match A (distance, linear_max, saddle_level, barrier), raw ones beside",
        "pairs": "per pair: all of the above, estimators, best_path, bisections",
    }

    @dataclass
    class Config(DSSConfig, PairOptions, BisectionOptions):
        """DSS knobs (DSSConfig), pair options (PairOptions), bisection (BisectionOptions), and:

        Attributes:
            align: 'none' or 'weight-matching' (permute B's hidden units to A before
                measuring; Dense/Conv2D stacks; raw and aligned figures are both reported).
            bootstrap: resamples of the evaluation samples for the intervals of each
                path's maximum and barrier, on the train and the test split (0: none;
                otherwise at least 2 / (1 - confidence) - 1: 39 at 0.95).
            confidence: the intervals' coverage (0.95: the 2.5 and 97.5 percentiles).
        """

        align: str = "none"
        bootstrap: int = 200
        confidence: float = 0.95

        def validate(self) -> None:
            super().validate()
            if self.align not in ALIGNMENTS:
                raise UserError(f"Unknown align {self.align!r}: use one of {ALIGNMENTS}.")
            if self.bootstrap < 0 or not 0 < self.confidence < 1:
                raise UserError(
                    f"bootstrap must be >= 0 and confidence in (0, 1) (got {self.bootstrap}, "
                    f"{self.confidence})."
                )
            fewest = minimum_resamples(self.confidence)
            if 0 < self.bootstrap < fewest:
                raise UserError(
                    f"bootstrap={self.bootstrap} resamples are too few for a "
                    f"{100 * self.confidence:g}% percentile interval: each tail needs at least "
                    f"one resample beyond the interval, so bootstrap >= {fewest} at confidence "
                    f"{self.confidence:g} (2 / (1 - confidence) - 1). Give bootstrap >= {fewest} "
                    "(default 200), a lower confidence, or bootstrap=0 for no intervals."
                )

    figures = {"barrier": draw_barrier}

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return barrier_tables(run_name, result)

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        if config.align not in ALIGNMENTS:
            raise UserError(f"Unknown align {config.align!r}: use one of {ALIGNMENTS}.")
        minima, pairs = self.pairs(landscape, models, store, progress)
        task = progress.task("barrier", total=len(pairs) * (2 if config.align != "none" else 1))
        searches, aligned = [], []
        for i, j in pairs:
            a, b = minima[i], minima[j]
            prefix = f"pair_{i}_{j}"
            searches.append(
                bracket_search(landscape, a, b, config, store, prefix, config.seed, task)
            )
            if config.align == "weight-matching":
                # Align first: an unsupported architecture is reported before any long work.
                alignment = self._align(landscape, a, b)
                b = self._aligned_minimum(landscape, b, alignment)
                prefix = f"{prefix}/aligned"
                searches.append(
                    bracket_search(landscape, a, b, config, store, prefix, config.seed, task)
                )
                aligned.append(alignment)
        brackets = drive(landscape, searches, progress=task)
        results = []
        for index, (i, j) in enumerate(pairs):
            a, b = minima[i], minima[j]
            step = 2 if aligned else 1
            result = self._relaxed(
                landscape, brackets[step * index], store, task, a, b, f"pair_{i}_{j}"
            )
            result["distance"] = float(np.linalg.norm(a.theta.astype(np.float64) - b.theta))
            result["aligned"] = None
            if aligned:
                alignment = aligned[index]
                other = self._relaxed(
                    landscape,
                    brackets[step * index + 1],
                    store,
                    task,
                    a,
                    self._aligned_minimum(landscape, b, alignment),
                    f"pair_{i}_{j}/aligned",
                )
                other["distance"] = alignment.distance_after
                other["distance_raw"] = alignment.distance_before
                other["permutations"] = alignment.permutations
                result["aligned"] = other
            results.append(result)
        task.close()
        first = results[0]
        summary = {
            key: first[key]
            for key in (
                "linear_max",
                "saddle_level",
                "barrier",
                "barrier_bracket",
                "endpoint_levels",
                "relaxed_max",
                "lowest_path",
                "aligned",
            )
        }
        summary.update({"level_fn": landscape.level_name, "pairs": results})
        return summary

    def _relaxed(
        self, landscape: LandscapeLike, result: dict, store, task, a, b, prefix: str
    ) -> dict:
        """A pair's bracket with the relaxed path's maximum (relax='neb' on the best DSS
        path, or a trained Bezier curve / polygonal chain between the minima), and which
        path gave the lowest maximum."""
        config = self.config
        result["relaxed_max"] = None
        if config.relax == "neb" and result["best_path"]:
            relaxed = relax_path(landscape, store, result["best_path"], config)
            if relaxed and relaxed["kept"]:
                result["relaxed_max"] = relaxed["relaxed_max"]
        elif config.relax in CURVES:
            result["relaxed_max"] = self._curve(landscape, store, a, b, prefix)
        if result["relaxed_max"] is not None:
            result["relaxed_barrier"] = result["relaxed_max"] - max(result["endpoint_levels"])
        candidates = {"linear": result["linear_max"]}
        if result["best_path"]:
            candidates["dss"] = result["saddle_level"]["upper"]
        if result["relaxed_max"] is not None:
            candidates[config.relax] = result["relaxed_max"]
        best = min(candidates, key=lambda name: candidates[name])
        result["lowest_path"] = {"path": best, "max_level": candidates[best]}
        if config.bootstrap:
            result["intervals"] = self._intervals(landscape, store, result, a, b, prefix)
        task.advance()
        return result

    def _paths(self, landscape: LandscapeLike, store, result, a, b, prefix) -> dict:
        """Each measured path as its checked points and their states: name -> (K, P),
        (K, S)."""
        config = self.config
        ends = np.stack([landscape.state_or_own(s) for s in (a.state, b.state)])
        ts = store.read(f"{prefix}/linear_t")
        paths = {"linear": (interpolate(ts, a.theta, b.theta), interpolate(ts, *ends))}
        strings = {"dss": result["best_path"]}
        if config.relax == "neb" and result["relaxed_max"] is not None:
            strings["neb"] = f"{result['best_path']}_relaxed"
        for name, string in strings.items():
            if string and has_string(store, string):
                stored = read_string(store, string)
                thetas = stored.beads[stored.order]
                states = (
                    stored.bead_state[stored.order]
                    if stored.bead_state is not None
                    else landscape.fill_states(None, len(thetas))
                )
                grid = np.linspace(0.0, 1.0, config.points + 1)
                paths[name] = (
                    np.concatenate([interpolate(grid, p, q) for p, q in zip(thetas, thetas[1:])]),
                    np.concatenate([interpolate(grid, p, q) for p, q in zip(states, states[1:])]),
                )
        if config.relax in CURVES:
            key = f"{prefix}/curve_{config.relax}"
            ts = store.read(f"{key}/t")
            points = curve_points(config.relax, a.theta, store.read(f"{key}/bend"), b.theta, ts)
            paths[config.relax] = (points.astype(np.float32), interpolate(ts, *ends))
        return paths

    def _intervals(self, landscape: LandscapeLike, store, result, a, b, prefix) -> dict:
        """Bootstrap intervals of every measured path's maximum and barrier, per split (the
        same draws for every path of a split)."""
        config = self.config
        splits = list(landscape.splits)
        out = {"confidence": config.confidence, "resamples": config.bootstrap}
        for index, split in enumerate(splits):
            seed = derive_seed(config.seed, _BOOTSTRAP, index)
            out[split] = {}
            for name, (points, states) in self._paths(
                landscape, store, result, a, b, prefix
            ).items():
                _, used = landscape.levels_and_states(points, states)
                sums, counts, offsets = landscape.sample_levels(points, split, used)
                levels = resampled_levels(
                    sums, counts, offsets, landscape.finalize_levels, config.bootstrap, seed
                )
                point = landscape.finalize_levels(sums.sum(1) / counts.sum(1) + offsets)
                intervals = path_intervals(
                    levels, slice(None), (0, len(points) - 1), config.confidence
                )
                out[split][name] = {
                    "max_level": float(point.max()),
                    "barrier": float(point.max() - max(point[0], point[-1])),
                    "max_interval": intervals["max"],
                    "barrier_interval": intervals["barrier"],
                }
        return out

    def _curve(self, landscape: LandscapeLike, store, a, b, prefix: str) -> float:
        """The maximum of the trained curve (stored under <prefix>/curve_*, reused on
        resume)."""
        config = self.config
        curve = stored_curve(
            landscape,
            store,
            f"{prefix}/curve_{config.relax}",
            config.relax,
            a.theta,
            b.theta,
            state_a=a.state,
            state_b=b.state,
            steps=config.relax_steps,
            # the run's optimizer (optimizer, betas, epsilon, optimizer_options) at the
            # bend's own step size
            optimizer=dataclasses.replace(
                config.projection(), learning_rate=config.relax_learning_rate
            ),
            samples=config.curve_samples,
            grid=config.grid,
            seed=derive_seed(config.seed, _CURVE),
        )
        return curve["max_level"]

    def _align(self, landscape: LandscapeLike, a, b):
        return weight_matching_on(landscape, a.theta, b.theta, seed=self.config.seed)

    @staticmethod
    def _aligned_minimum(landscape: LandscapeLike, b, alignment):
        """B with its hidden units permuted onto A (parameters and BatchNorm state)."""
        return dataclasses.replace(
            b,
            name=f"{b.name}_aligned",
            theta=alignment.theta.astype(np.float32),
            state=aligned_state(landscape, b.state, alignment.permutations),
        )
