"""Probe `curviness`: normalized geodesic length and beads against the level (the paper's
curves)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.plugins.pairs import (
    PairOptions,
    PairProbe,
    parse_levels,
    partner_projection,
)
from keras_landscape.report import census as census_report
from keras_landscape.report.plots import NoFigure, new_figure, values
from keras_landscape.report.tables import fmt, mean_sd, table
from keras_landscape.science.dss import REASONS, DSSConfig
from keras_landscape.science.lockstep import drive
from keras_landscape.science.pairs import default_level, pair_search, states_of, summarize
from keras_landscape.seeds import derive_seed

DEFAULT_FRACTIONS = (1.0, 0.75, 0.5)
ENDPOINTS = ("stopped", "retrain", "fresh")
#: keys of the fresh-endpoint streams under the run's seed (see keras_landscape.seeds)
FRESH_INIT, FRESH_STEPS = 7933, 7937


def curviness_tables(name: str, result: dict) -> list[dict]:
    levels = result.get("levels") or []

    def column(key):
        values = result.get(key) or []
        return [values[i] if i < len(values) else None for i in range(len(levels))]

    length, length_sd = column("normalized_length"), column("normalized_length_sd")
    weights = column("weights_normalized_length")
    weights_sd = column("weights_normalized_length_sd")
    # the weights-only length gets a column where it differs (a model with biases)
    split = any(
        w is not None and m is not None and abs(w - m) > 1e-9 for w, m in zip(weights, length)
    )
    beads, beads_sd = column("beads"), column("beads_sd")
    good, failed, reasons = column("pairs"), column("failed"), column("reasons")
    rows = []
    for i, level in enumerate(levels):
        total = (good[i] or 0) + (failed[i] or 0)
        why = ", ".join(f"{k} {v}" for k, v in (reasons[i] or {}).items()) or "-"
        rows.append(
            [
                level,
                f"{good[i] or 0}/{total}",
                mean_sd(length[i], length_sd[i]),
                *([mean_sd(weights[i], weights_sd[i])] if split else []),
                mean_sd(beads[i], beads_sd[i]),
                why,
            ]
        )
    notes = [
        f"mean ± sample sd over the connected pairs; level function "
        f"{result.get('level_fn', '?')}; beads include both endpoints"
        + (f"; {fmt(result['seconds'], 3)} s" if result.get("seconds") is not None else "")
    ]
    columns = ["level u", "connected", "norm. length"]
    columns += ["(weights only)"] if split else []
    columns += ["beads", "failures"]
    return [table(name, columns, rows, notes)]


def draw_curviness(result: dict, run_name: str, xlabel: str):
    """Normalized length and beads vs level, with error bars over connected pairs."""
    levels = values(result.get("levels"))
    if not levels:
        raise NoFigure("the result has no levels")
    figure, (left, right) = new_figure(10.0, 4.2, ncols=2)
    pairs = list(result.get("pairs") or [0] * len(levels))
    failed = list(result.get("failed") or [0] * len(levels))
    panels = (
        (left, "normalized_length", "normalized geodesic length (1 = straight)"),
        (right, "beads", "beads per string (endpoints included)"),
    )
    for ax, key, ylabel in panels:
        means, sds = values(result.get(key)), values(result.get(f"{key}_sd"))
        keep = [i for i, m in enumerate(means) if m is not None and i < len(levels)]
        if keep:
            ax.errorbar(
                [levels[i] for i in keep],
                [means[i] for i in keep],
                yerr=[(sds[i] if i < len(sds) and sds[i] is not None else 0.0) for i in keep],
                fmt="o-",
                capsize=4,
                color="C0",
                label="mean +- sd over connected pairs",
            )
        for i, level in enumerate(levels):
            total = (pairs[i] if i < len(pairs) else 0) + (failed[i] if i < len(failed) else 0)
            text = f"{pairs[i]}/{total}" if i < len(pairs) else ""
            y = means[i] if i < len(means) and means[i] is not None else None
            if y is None:
                ax.axvline(level, color="C3", linestyle=":", linewidth=1)
                ax.annotate(
                    f"none connected ({text})",
                    (level, 0.05),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=8,
                    color="C3",
                    ha="right",
                )
            else:
                ax.annotate(text, (level, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if key == "normalized_length":
            ax.axhline(1.0, color="0.6", linestyle="--", linewidth=1, label="straight line")
            weights = values(result.get("weights_normalized_length"))
            shown = [i for i in keep if i < len(weights) and weights[i] is not None]
            if shown and any(abs(weights[i] - means[i]) > 1e-3 * means[i] for i in shown):
                ax.plot(
                    [levels[i] for i in shown],
                    [weights[i] for i in shown],
                    "s--",
                    color="C1",
                    markersize=4,
                    label="weights only (biases left out)",
                )
        ax.margins(x=0.08, y=0.15)
        ax.set_xlabel(f"level u: {xlabel}  (right = lower = harder)")
        ax.set_ylabel(ylabel)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    figure.suptitle(
        f"{run_name}: normalized geodesic length and beads vs level (labels: connected/all pairs)",
        fontsize=10,
    )
    connected = sum(pairs) if pairs else 0
    return (
        figure,
        f"normalized length and beads vs {len(levels)} levels ({connected} connected strings)",
    )


class CurvinessProbe(PairProbe):
    """DSS over pairs at several levels: mean and spread of normalized length and beads."""

    name = "curviness"
    summary = "Normalized geodesic length and bead count vs level, over pairs (DSS)."
    result_fields = {
        "levels": "the levels, highest first (level-function units)",
        "normalized_length": "mean over connected pairs, per level (None if none connected)",
        "normalized_length_sd": "sample standard deviation over connected pairs, per level",
        "weights_normalized_length": "the same over the weights only, biases left out (as the "
        "authors' cubic script measured it), per level; its sd in weights_normalized_length_sd",
        "beads": "mean bead count (endpoints included) over connected pairs, per level",
        "beads_sd": "its sample standard deviation",
        "pairs": "connected pairs per level",
        "failed": "pairs not connected per level",
        "reasons": "per level, how many pairs failed for which reason (the connectivity "
        "reasons, and endpoint_not_retrained: with endpoints 'retrain' or 'fresh', an "
        "endpoint's training did not reach the level within its step budget)",
        "details": "per level, per pair: the connectivity fields",
    }
    # what it adds to a `klandscape census` (registry.ProbeBase; report.census)
    census_columns = census_report.CURVINESS_CENSUS_COLUMNS
    census_row = staticmethod(census_report.curviness_census_row)
    census_cells = staticmethod(census_report.curviness_census_cells)
    census_notes = staticmethod(census_report.curviness_census_notes)
    census_tables = staticmethod(census_report.curviness_census_tables)

    @dataclass
    class Config(DSSConfig, PairOptions):
        """DSS knobs (see DSSConfig), pair options (see PairOptions), and:

        Attributes:
            levels: '0.3,0.2,0.1' or 'start:stop:count'; empty: max endpoint level
                * (1 + margin) times 1, 0.75 and 0.5.
            retrain_endpoints: the same as endpoints='retrain' (kept for older configs).
            endpoints: how each level's endpoints are obtained. 'stopped': the models as
                given (a pair with an endpoint above the level fails with
                'endpoint_above_level'). 'retrain': endpoints above a level are trained down
                to endpoint_target x level from their state at the previous, higher level.
                'fresh' (the authors' scripts): at every level each pair gets two new models
                of the same architecture, trained from a random initialisation until they
                reach endpoint_target x level (partner_steps, partner_learning_rate); the
                given models then only fix the architecture and the number of pairs.
                Empty: 'retrain' with retrain_endpoints, else 'stopped'.
            endpoint_target: the fraction of the level that retrained or fresh endpoints
                are trained to (None: alpha; 1: the level itself, as in the authors'
                scripts, so that endpoints sit just below the level).
        """

        levels: str = ""
        retrain_endpoints: bool = False
        endpoints: str = ""
        endpoint_target: float | None = None

        def endpoint_mode(self) -> str:
            """'stopped', 'retrain' or 'fresh' (see `endpoints`)."""
            return self.endpoints or ("retrain" if self.retrain_endpoints else "stopped")

        def endpoint_fraction(self) -> float:
            return self.alpha if self.endpoint_target is None else self.endpoint_target

    figures = {"curviness": draw_curviness}

    def validate_config(self) -> None:
        super().validate_config()
        config = self.config
        if config.endpoints not in ("",) + ENDPOINTS:
            raise UserError(
                f"endpoints must be one of {', '.join(ENDPOINTS)} (or empty), got "
                f"{config.endpoints!r}."
            )
        if config.retrain_endpoints and config.endpoints not in ("", "retrain"):
            raise UserError(
                f"retrain_endpoints=true contradicts endpoints={config.endpoints!r}: set one."
            )
        target = config.endpoint_target
        if target is not None and not 0 < target <= 1:
            raise UserError(f"endpoint_target must be in (0, 1], got {target}.")

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return curviness_tables(run_name, result)

    @staticmethod
    def _levels(text) -> list[float] | None:
        """The `levels` option's levels, highest first (None: empty, the defaults, which are
        known only at run time)."""
        text = str(text or "").strip()
        return sorted(parse_levels(text), reverse=True) if text else None

    @classmethod
    def expected_strings(cls, config: dict, inputs: int) -> list[str] | None:
        names = cls.pair_prefixes(config, inputs)
        if names is None:
            return None
        count = len(cls._levels(config.get("levels")) or DEFAULT_FRACTIONS)
        return [f"level_{k}/{name}" for k in range(count) for name in names]

    @classmethod
    def string_level(cls, config: dict, prefix: str) -> float | None:
        match = re.match(r"^level_(\d+)/", prefix)
        levels = cls._levels(config.get("levels")) or []
        if match is None:
            return None
        k = int(match.group(1))
        return levels[k] if k < len(levels) else None

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        minima, pairs = self.pairs(landscape, models, store, progress)
        thetas = np.stack([m.theta for m in minima])
        states = states_of(minima, landscape)
        endpoint_levels = landscape.levels(thetas, states)
        levels = self._levels(config.levels) or sorted(
            (default_level(endpoint_levels, config.margin) * f for f in DEFAULT_FRACTIONS),
            reverse=True,
        )
        mode = config.endpoint_mode()
        fresh = self._fresh(landscape, levels, pairs, store, progress) if mode == "fresh" else None
        task = progress.task("curviness", total=len(levels) * len(pairs))
        searches = []
        for k, level in enumerate(levels):
            if mode == "retrain":
                # Endpoints at each level start from the previous level's: retrained level
                # by level first, then every string of every level runs in lockstep.
                thetas, states, endpoint_levels = self._retrain(
                    landscape, thetas, states, endpoint_levels, level, store, k
                )
            for p, (i, j) in enumerate(pairs):
                if fresh is None:
                    ends = [
                        dataclasses.replace(minima[n], theta=thetas[n], state=states[n])
                        for n in (i, j)
                    ]
                else:
                    ends = [
                        dataclasses.replace(
                            minima[n],
                            name=f"fresh_{k}_{i}_{j}_{side}",
                            source=f"trained:fresh endpoint {side} of pair {i}-{j} at level {k}",
                            theta=fresh[0][k, p, side],
                            state=fresh[1][k, p, side],
                        )
                        for side, n in enumerate((i, j))
                    ]
                searches.append(
                    pair_search(
                        landscape,
                        *ends,
                        level,
                        config,
                        store,
                        f"level_{k}/pair_{i}_{j}",
                        config.seed,
                        task,
                    )
                )
        results = drive(landscape, searches, on_done=lambda *_: task.advance(), progress=task)
        task.close()
        if mode != "stopped":
            results = [
                {
                    **r,
                    "reason": "endpoint_not_retrained",
                    "explanation": REASONS["endpoint_not_retrained"],
                }
                if r["reason"] == "endpoint_above_level"
                else r
                for r in results
            ]
        per_level = [results[k * len(pairs) : (k + 1) * len(pairs)] for k in range(len(levels))]
        return self._table(levels, per_level, landscape)

    def _retrain(self, landscape: LandscapeLike, thetas, states, endpoint_levels, level, store, k):
        """Endpoints above `level` trained down to alpha * level (stored, reused on resume).
        A retrained endpoint's BatchNorm statistics are re-estimated at its new weights."""
        key = f"level_{k}/endpoints"
        if store.has(f"{key}/theta"):
            stored = store.read(f"{key}/theta")
            if store.has(f"{key}/state"):
                states = store.read(f"{key}/state")
            return stored, states, landscape.levels(stored, states)
        above = np.flatnonzero(~(endpoint_levels <= level))
        thetas, states = thetas.copy(), states.copy()
        if len(above):
            result = landscape.project(
                thetas[above],
                self.config.endpoint_fraction() * level,
                self.config.projection(),
                seed=derive_seed(self.config.seed, 104729, k),
                states=states[above],
            )
            thetas[above] = result.thetas
            states[above] = result.states
        store.write(f"{key}/theta", thetas)
        if states.shape[1]:
            store.write(f"{key}/state", states)
        return thetas, states, landscape.levels(thetas, states)

    def _fresh(self, landscape: LandscapeLike, levels, pairs, store, progress):
        """The authors' endpoints: for every level k and pair p, two models trained from a
        random initialisation until level <= endpoint_target x level, all in one stacked
        projection (stored under fresh_endpoints/, reused on resume).

        Returns (thetas (L, K, 2, P), states (L, K, 2, S)).
        """
        config = self.config
        shape = (len(levels), len(pairs), 2)
        if store.has("fresh_endpoints/theta"):
            thetas = store.read("fresh_endpoints/theta")
            states = (
                store.read("fresh_endpoints/state")
                if store.has("fresh_endpoints/state")
                else np.zeros((len(thetas), landscape.state_size), np.float32)
            )
        else:
            count = int(np.prod(shape))
            task = progress.task(f"training {count} fresh endpoints from random inits", total=None)
            starts = np.stack(
                [
                    landscape.fresh_theta(derive_seed(config.seed, FRESH_INIT, k, i, j, side))
                    for k in range(len(levels))
                    for i, j in pairs
                    for side in (0, 1)
                ]
            )
            targets = np.repeat(
                [config.endpoint_fraction() * level for level in levels], 2 * len(pairs)
            )
            result = landscape.project(
                starts,
                targets,
                partner_projection(config),
                seed=derive_seed(config.seed, FRESH_STEPS),
                on_check=lambda _, steps: task.update(status=f"step {int(np.max(steps))}"),
            )
            task.close()
            missed = int(np.sum(~result.reached))
            if missed:
                progress.note(
                    f"{missed} of {count} fresh endpoints did not reach their level within "
                    f"partner_steps={config.partner_steps}; their pairs fail with "
                    "endpoint_not_retrained (raise partner_steps or partner_learning_rate)"
                )
            thetas, states = result.thetas, result.states
            fresh = {
                "fresh_endpoints/theta": thetas,
                "fresh_endpoints/level": np.asarray(result.levels, np.float64),
                "fresh_endpoints/steps": np.asarray(result.steps, np.int64),
            }
            if states.shape[1]:
                fresh["fresh_endpoints/state"] = states
            store.write_many(fresh)  # one commit: a resumed run finds all of them or none
        return thetas.reshape(shape + (-1,)), states.reshape(shape + (-1,))

    @staticmethod
    def _table(levels, per_level, landscape: LandscapeLike) -> dict:
        table = {
            "levels": levels,
            "normalized_length": [],
            "normalized_length_sd": [],
            "weights_normalized_length": [],
            "weights_normalized_length_sd": [],
            "beads": [],
            "beads_sd": [],
            "pairs": [],
            "failed": [],
            "reasons": [],
        }
        for results in per_level:
            good = [r for r in results if r["connected"]]
            length, length_sd = summarize([r["normalized_length"] for r in good])
            weights, weights_sd = summarize([r.get("weights_normalized_length") for r in good])
            beads, beads_sd = summarize([r["beads"] for r in good])
            table["normalized_length"].append(length)
            table["normalized_length_sd"].append(length_sd)
            table["weights_normalized_length"].append(weights)
            table["weights_normalized_length_sd"].append(weights_sd)
            table["beads"].append(beads)
            table["beads_sd"].append(beads_sd)
            table["pairs"].append(len(good))
            table["failed"].append(len(results) - len(good))
            reasons = {}
            for r in results:
                if not r["connected"]:
                    reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
            table["reasons"].append(reasons)
        table.update(
            {
                "level_fn": landscape.level_name,
                "beads_include_endpoints": True,
                "statistics": "mean and sample sd over connected pairs",
                "details": per_level,
            }
        )
        return table
