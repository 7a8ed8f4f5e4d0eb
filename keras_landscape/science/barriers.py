"""Energy barriers between two minima: linear bound, DSS bisection on the level, relaxation.

For minima A and B the saddle (minimax) level is s(A, B) = inf over paths of max_t E(gamma(t))
and the barrier is s - max(E(A), E(B)). Every estimator here is an upper bound on s:

- linear: max over a dense grid of E((1 - t) A + t B) (linear mode connectivity);
- DSS bisection: bisection on u between the floor f = max(E(A), E(B)) and an upper bound,
  with Dynamic String Sampling deciding each u. `upper` is the lowest u found connected (a
  path at or below it exists, checked); `lower` is the highest bead target of a u found
  *not* connected (a failure at u speaks only for the level its beads were trained to) -- a
  heuristic bracket end, since DSS failing is not a proof. The beads of a run at u are
  trained to f + alpha (u - f), alpha of the way from the higher minimum up to u, not to
  DSS's usual alpha * u: near the floor alpha * u lies below both minima, where beads cannot
  go, and every run would fail, so the bracket could not close below about
  f (1 - alpha) / (2 alpha - 1). With the target relative to the gap, brackets close to the
  tolerance asked;
- relaxation: a nudged elastic band on the best path's interior beads lowers its maximum;
  the relaxed path is re-checked at the same resolution and kept only if its maximum is lower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.science.dss import Checks, DSSConfig, beads_of, check_segments
from keras_landscape.science.lockstep import Search, run_one
from keras_landscape.science.pairs import pair_search
from keras_landscape.store.strings import StringRecord

RELAXATIONS = ("none", "neb", "bezier", "polychain")


@dataclass
class BisectionOptions:
    """How the saddle level is bracketed.

    Attributes:
        grid: points of the dense grid for the linear-interpolation maximum.
        tolerance: stop bisecting when upper - lower <= tolerance * max(|upper|, 1e-12)
            (relative, level-function units).
        max_bisections: at most this many DSS runs per pair.
        relax: 'none', 'neb' (a climbing-image nudged elastic band on the best DSS path),
            'bezier' or 'polychain' (a quadratic Bezier curve or a chain with one bend
            between the two minima, its bend trained on the loss integrated over the
            curve: Garipov et al. 2018).
        relax_steps: gradient steps of the elastic band, or of the bend's training.
        relax_learning_rate: their step size (the band: parameter units per unit
            gradient; the bend: the learning rate of the run's `optimizer`, which steps it
            with its `optimizer_options`, betas and epsilon).
        spring: the elastic band's spring constant along the path.
        curve_samples: values of t drawn per step of the bend's training.
    """

    grid: int = 100
    tolerance: float = 0.02
    max_bisections: int = 8
    relax: str = "none"
    relax_steps: int = 200
    relax_learning_rate: float = 1e-2
    spring: float = 1.0
    curve_samples: int = 8

    def validate_bisection(self) -> None:
        if self.grid < 2 or self.max_bisections < 0 or not self.tolerance > 0:
            raise UserError(
                f"Barrier options need grid >= 2, max_bisections >= 0 and tolerance > 0 "
                f"(got {self.grid}, {self.max_bisections}, {self.tolerance})."
            )
        if self.relax not in RELAXATIONS:
            raise UserError(f"Unknown relax {self.relax!r}: use one of {RELAXATIONS}.")
        if self.curve_samples < 1:
            raise UserError(f"curve_samples must be >= 1, got {self.curve_samples}.")
        if self.relax_steps < 0 or not self.relax_learning_rate > 0 or not self.spring >= 0:
            raise UserError(
                "The elastic band needs relax_steps >= 0, relax_learning_rate > 0 and spring "
                f">= 0 (got {self.relax_steps}, {self.relax_learning_rate}, {self.spring})."
            )


def bead_target(floor: float, level: float, alpha: float) -> float:
    """The level beads of a bisection run at `level` are trained to: alpha of the way from
    the higher minimum's level `floor` up to `level` (never below the floor)."""
    return floor + alpha * (level - floor)


def linear_profile(
    landscape: LandscapeLike, theta_a, theta_b, grid: int, state_a=None, state_b=None
) -> tuple[np.ndarray, np.ndarray]:
    """(t, level) on `grid` + 1 evenly spaced points of the straight segment A-B (states
    interpolated alongside, BatchNorm statistics recomputed under bn_stats='recompute')."""
    segment = (np.asarray(theta_a), np.asarray(theta_b), state_a, state_b)
    check = check_segments(landscape, [segment], grid)[0]
    return check.ts, check.levels


def saddle_bracket(
    landscape: LandscapeLike,
    a,
    b,
    config: DSSConfig,
    run,
    prefix: str,
    seed: int,
    progress,
    upper_bound: float | None = None,
) -> dict:
    """Linear maximum and the DSS-bisection bracket of s(A, B) for one pair (resumable):
    `bracket_search` run alone (see there)."""
    return run_one(
        landscape,
        bracket_search(landscape, a, b, config, run, prefix, seed, progress, upper_bound),
    )


def bracket_search(
    landscape: LandscapeLike,
    a,
    b,
    config: DSSConfig,
    run,
    prefix: str,
    seed: int,
    progress,
    upper_bound: float | None = None,
) -> Search:
    """Linear maximum and the DSS-bisection bracket of s(A, B) for one pair (resumable), as
    a lockstep search (`keras_landscape.science.lockstep`: the bisections of many pairs
    advance together).

    Args:
        landscape: the Landscape.
        a, b: minima (`.name`, `.theta`).
        config: DSSConfig + BisectionOptions fields (the barrier/components probe configs).
        run: the store run; DSS strings go under `<prefix>/bisect_<k>`, the linear profile
            under `<prefix>/linear_t` and `<prefix>/linear_level`.
        seed: seeds the DSS strings' mini-batch draws (with their depth).
        upper_bound: a known upper bound on s (e.g. through other minima); bisection then
            searches below min(linear maximum, upper_bound).

    Returns:
        {"a", "b", "endpoint_levels", "linear_max", "saddle_level": {"lower", "upper"},
         "barrier", "barrier_bracket", "estimators", "best_path", "bisections"}.
    """
    if run.has(f"{prefix}/linear_level"):
        ts, levels = run.read(f"{prefix}/linear_t"), run.read(f"{prefix}/linear_level")
    else:
        segment = (a.theta, b.theta, getattr(a, "state", None), getattr(b, "state", None))
        (check,) = yield Checks([segment], config.grid)
        ts, levels = check.ts, check.levels
        run.write(f"{prefix}/linear_t", ts)
        run.write(f"{prefix}/linear_level", levels)
    ends = [float(levels[0]), float(levels[-1])]
    floor = max(ends)
    linear_max = float(np.max(levels)) if np.all(np.isfinite(levels)) else float("inf")
    upper, estimator, best_path = linear_max, "linear", None
    if upper_bound is not None and upper_bound < upper:
        upper, estimator = float(upper_bound), "through other minima"
    lower = floor
    bisections = []
    k = 0
    while (
        k < config.max_bisections
        and np.isfinite(upper)
        and upper - lower > config.tolerance * max(abs(upper), 1e-12)
    ):
        # Beads at level u are trained to f + alpha (u - f): aim them at the middle m.
        middle = 0.5 * (lower + upper)
        level = floor + (middle - floor) / config.alpha
        if level >= upper:
            level = middle
        target = bead_target(floor, level, config.alpha)
        verdict = yield from pair_search(
            landscape, a, b, level, config, run, f"{prefix}/bisect_{k}", seed, progress, target
        )
        # A verdict a resumed run finds finished speaks for the level and target it was run
        # at, which an earlier version's rule may have set otherwise.
        level = float(verdict.get("level", level))
        stored_target = verdict.get("bead_target")
        target = float(config.alpha * level if stored_target is None else stored_target)
        bisections.append(
            {
                "level": level,
                "bead_target": target,
                "connected": verdict["connected"],
                "reason": verdict["reason"],
                "beads": verdict["beads"],
                "max_level": verdict["max_level"],
            }
        )
        before = (lower, upper)
        if verdict["connected"]:
            # the path's checked maximum may sit below the level: a tighter upper bound
            upper = min(upper, level, verdict["max_level"])
            estimator, best_path = "dss-bisection", f"{prefix}/bisect_{k}"
        else:
            # A failure at u speaks only for levels below its beads' target.
            lower = max(lower, target)
        k += 1
        if (lower, upper) == before:
            break  # no progress: the bracket is as tight as DSS can make it here
    # a path found below a failed run's target outweighs that failure (DSS failing is no proof)
    lower = min(lower, upper)
    return {
        "a": a.name,
        "b": b.name,
        "endpoint_levels": ends,
        "linear_max": linear_max,
        "linear_barrier": linear_max - floor,
        "saddle_level": {"lower": lower, "upper": upper},
        "barrier": upper - floor,
        "barrier_bracket": [lower - floor, upper - floor],
        "estimators": {
            "upper": estimator,
            "lower": "dss-bisection (heuristic)" if k else "max endpoint level",
        },
        "best_path": best_path,
        "bisections": bisections,
    }


def _path_maximum(
    landscape: LandscapeLike, thetas: np.ndarray, states: np.ndarray, points: int
) -> float:
    thetas = thetas.astype(np.float32)
    pairs = list(zip(thetas[:-1], thetas[1:], states[:-1], states[1:]))
    return max(c.maximum for c in check_segments(landscape, pairs, points))


def relax_path(landscape: LandscapeLike, run, path_prefix: str, config) -> dict | None:
    """Climbing-image nudged elastic band on a stored string's interior beads; the new
    maximum if lower.

    At each step the gradients of the training loss at all interior beads come from one
    stacked call (`Landscape.losses_and_grads`, the beads' states held fixed, BatchNorm
    statistics recomputed first under 'recompute'). Each bead moves along minus its
    gradient with the part along the path tangent removed, plus a spring force along the
    tangent that keeps beads spread; the highest bead instead climbs: its gradient's
    tangent part is reversed and it feels no spring, so it converges to the saddle between
    its neighbours (Henkelman, Uberuaga & Jonsson 2000). The relaxed string is re-checked
    with `config.points` points per segment and stored under `<path_prefix>_relaxed` only
    if its maximum is lower.
    """
    record = StringRecord(run, path_prefix)
    loaded = record.load()
    if loaded is None or len(loaded.order) < 3:
        return None
    string = beads_of(loaded)[0]
    thetas = np.stack([b.theta for b in string]).astype(np.float64)
    states = np.stack([landscape.state_or_own(b.state) for b in string])
    before = _path_maximum(landscape, thetas, states, config.points)
    rate = config.relax_learning_rate
    for _ in range(config.relax_steps):
        inner = thetas[1:-1].astype(np.float32)
        used = landscape.recompute_states(inner, states[1:-1]) if landscape.recomputes else None
        losses, grads = landscape.losses_and_grads(inner, states[1:-1] if used is None else used)
        tangents = thetas[2:] - thetas[:-2]
        tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
        grads = grads.astype(np.float64)
        along = np.sum(grads * tangents, axis=1, keepdims=True)
        stretch = np.linalg.norm(thetas[2:] - thetas[1:-1], axis=1) - np.linalg.norm(
            thetas[1:-1] - thetas[:-2], axis=1
        )
        spring = config.spring * stretch[:, None] * tangents
        moves = -rate * (grads - along * tangents) + rate * spring
        top = int(np.argmax(losses))
        moves[top] = -rate * (grads[top] - 2.0 * along[top] * tangents[top])
        thetas[1:-1] += moves
    after = _path_maximum(landscape, thetas, states, config.points)
    if not after < before:
        return {"relaxed_max": None, "path_max_before": before, "kept": False}
    levels, used = landscape.levels_and_states(thetas.astype(np.float32), states)
    record.write_relaxed(thetas, levels, used)
    return {"relaxed_max": float(after), "path_max_before": float(before), "kept": True}
