"""Dynamic String Sampling (Freeman & Bruna, ICLR 2017): are A and B connected at level u?

Greedy breadth-first refinement of a piecewise-linear string [A, ..., B]:

1. Check every unchecked segment (p, q) at R+1 evenly spaced points (all new segments of a
   depth in one batched evaluation). A segment fails when its maximum level exceeds
   u * (1 + slack) (or is not finite).
2. No failing segment: connected. Depth limit reached: not connected ("depth_limit").
3. Otherwise insert one bead per failing segment, at its midpoint or at the argmax of its
   curve, and *project* all of them together (`keras_landscape.engine.projection`): train until
   level <= alpha * u. In "hyperplane" mode a bead stays in the hyperplane through its
   insertion point orthogonal to q - p (the talk's refinement). A bead that misses the target
   within its budget ends the search: not connected ("bead_not_reached").

`connect` runs one string; `search` is the same walk as a lockstep search, so a probe runs
all its strings together (`keras_landscape.science.lockstep`): their checks and their
projections are served in shared stacks, and a string's `seconds` is then the wall time
from its start to its verdict, shared with the strings it ran beside.

The verdict is heuristic and says why: a failure means "not connected by DSS" (the beads
could not find a path, not a proof that none exists). Where the two ends share exact
values (a unit zeroed in both), new beads start a small seeded step off them
(`perturbation`), so that they are not held in the subspace those values span when it is a
symmetry's fixed point. Bead
counts include both endpoints, so the first refinement gives 3, as in the authors' code.
The normalised geodesic length is  sum_i ||b_{i+1} - b_i|| / ||B - A||  (1 on convex
problems; it grows as level sets curve).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.engine.options import ProjectionConfig
from keras_landscape.errors import UserError
from keras_landscape.science.lockstep import (
    Levels,
    Projection,
    Request,
    Search,
    run_one,
    split_rows,
)
from keras_landscape.seeds import derive_seed
from keras_landscape.store.strings import StringRecord

INSERTIONS = ("midpoint", "argmax")
PROJECTION_MODES = ("plain", "hyperplane")
REASONS = {
    "connected": "every segment's checked maximum is within the level",
    "endpoint_above_level": "an endpoint is above the level (retrain it or raise the level)",
    "endpoint_not_retrained": "retraining could not bring an endpoint below the level within "
    "max_steps (raise max_steps or the level)",
    "depth_limit": "segments still failed after max_depth refinements",
    "bead_not_reached": "a bead could not be trained down to its target (alpha * level) within "
    "max_steps",
    "non_finite": "the loss was NaN or infinite on the path",
}
# Bytes of parameter vectors evaluated in one batched call when checking segments.
_SEGMENT_BATCH_BYTES = 256 << 20


@dataclass
class DSSConfig(ProjectionConfig):
    """Knobs of Dynamic String Sampling (projection knobs inherited from ProjectionConfig).

    Attributes:
        alpha: beads are trained until level <= alpha * u (the paper uses 0.95-0.98); in
            barrier bisection (barrier, components) alpha of the way from the higher
            minimum up to u instead (`keras_landscape.science.barriers.bead_target`).
        slack: a segment passes when its maximum is <= u * (1 + slack) (0 = strict).
        points: R, segments are checked at R + 1 points t = 0, 1/R, ..., 1.
        max_depth: d_max, the number of breadth-first refinements.
        insertion: where a new bead starts: 'midpoint' (stable, default) or 'argmax' of the
            segment's curve (fewer beads, less stable).
        projection_mode: 'plain' (train from the insertion point, as in the paper) or
            'hyperplane' (the bead stays in the hyperplane through the insertion point
            orthogonal to the segment; keeps beads evenly spread).
        first_bead: always insert and train a bead at the midpoint first, even where the
            straight line already passes (the authors' scripts do: their bead counts start
            at 3). Off: a passing straight line is the answer (2 beads).
        perturbation: where the segment's two ends agree exactly in some coordinates (a
            unit zeroed in both, any weight the two share), a new bead starts off its
            insertion point by a seeded Gaussian step in those coordinates, of this norm
            relative to the segment's length (0: exactly on the segment). Every point of
            the segment shares those values, and where they are a fixed point of a
            symmetry (a zeroed unit of a quadratic or tanh net has zero gradient), gradient
            steps never leave them: a bead started there may fail where a path exists
            just outside. Other coordinates are not touched: there a start on the segment
            is no trap, and Adam would turn a tiny asymmetry into full-size steps.
        seed: seeds mini-batch draws, bead perturbations and partner initialisations
            (--seed by default).
    """

    alpha: float = 0.97
    slack: float = 0.0
    points: int = 20
    max_depth: int = 10
    insertion: str = "midpoint"
    projection_mode: str = "plain"
    first_bead: bool = False
    perturbation: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not 0 < self.alpha <= 1:
            raise UserError(f"alpha must be in (0, 1], got {self.alpha}.")
        if not self.slack >= 0:
            raise UserError(f"slack must be >= 0, got {self.slack}.")
        if not 0 <= self.perturbation < 1:
            raise UserError(f"perturbation must be in [0, 1), got {self.perturbation}.")
        if self.points < 2 or self.max_depth < 0:
            raise UserError(
                f"points must be >= 2 and max_depth >= 0 (got {self.points}, {self.max_depth})."
            )
        if self.insertion not in INSERTIONS:
            raise UserError(f"Unknown insertion {self.insertion!r}: use one of {INSERTIONS}.")
        if self.projection_mode not in PROJECTION_MODES:
            raise UserError(
                f"Unknown projection_mode {self.projection_mode!r}: use one of {PROJECTION_MODES}."
            )

    def projection(self) -> ProjectionConfig:
        """The ProjectionConfig part of these settings."""
        names = {f.name for f in fields(ProjectionConfig)}
        return ProjectionConfig(**{n: getattr(self, n) for n in names})


@dataclass
class Bead:
    """A point of the string: its row in the store, parameters, level, and the state (S,)
    (BatchNorm statistics, see `keras_landscape.engine.state`) its level was evaluated with."""

    row: int
    theta: np.ndarray
    level: float
    depth: int = 0
    steps: int = 0
    state: np.ndarray | None = None


@dataclass
class SegmentCheck:
    """The level along one segment at t = 0, 1/R, ..., 1."""

    ts: np.ndarray
    levels: np.ndarray

    @property
    def maximum(self) -> float:
        return float(np.max(self.levels)) if np.all(np.isfinite(self.levels)) else math.inf

    @property
    def argmax_t(self) -> float:
        finite = np.where(np.isfinite(self.levels), self.levels, np.inf)
        return float(self.ts[int(np.argmax(finite))])


@dataclass
class Connection:
    """The outcome of DSS between two models at one level (all levels in level-fn units)."""

    connected: bool
    level: float
    reason: str
    beads: int
    normalized_length: float
    path_length: float
    distance: float
    max_level: float
    depth: int
    projection_steps: int
    seconds: float
    endpoint_levels: list[float]
    bead_target: float | None = None
    worst_segment: dict | None = None
    weights_normalized_length: float | None = None
    string: list[np.ndarray] = field(default_factory=list, repr=False)
    string_states: list[np.ndarray] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("string", "string_states")
        }
        d["explanation"] = REASONS[self.reason]
        return d


def beads_of(stored) -> tuple[list[Bead], int, dict[tuple[int, int], SegmentCheck]]:
    """A committed `store.strings.StoredString` as the DSS sees it: the string of Beads,
    the depth done, and the segment checks already stored (by (left row, right row))."""
    string = [
        Bead(
            int(r),
            stored.beads[r],
            float(stored.bead_level[r]),
            int(stored.bead_depth[r]),
            int(stored.bead_steps[r]),
            stored.state_of(r),
        )
        for r in stored.order
    ]
    checked = {
        (left, right): SegmentCheck(np.linspace(0.0, 1.0, len(levels)), levels)
        for left, right, _, levels in stored.curves
    }
    return string, int(stored.depth_done or 0), checked


_PERTURB_KEY = 7919  # names the bead-perturbation draws among a string's seeded work


def _off_symmetry(noise: np.random.Generator, config: DSSConfig, a, b, normal):
    """A seeded Gaussian step for a bead started on segment a-b: in the coordinates where a
    and b agree exactly, of norm `config.perturbation` x |b - a|, orthogonal to the unit
    `normal` (zeros: any direction, so that a hyperplane bead starts in its hyperplane);
    zeros where the two ends share no coordinate (float32)."""
    shared = np.asarray(a) == np.asarray(b)
    if config.perturbation == 0 or not shared.any():
        return np.zeros(np.shape(a), np.float32)
    length = float(np.linalg.norm(np.asarray(b, np.float64) - a))
    step = np.zeros(np.shape(a))
    step[shared] = noise.standard_normal(int(shared.sum()))
    step -= (step @ normal) * normal
    size = np.linalg.norm(step)
    if size == 0 or not length > 0:
        return np.zeros(np.shape(a), np.float32)
    return (step * (config.perturbation * length / size)).astype(np.float32)


def interpolate(ts: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(len(ts), D) points (1 - t) p + t q (float32)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return ((1.0 - ts)[:, None] * p[None, :] + ts[:, None] * q[None, :]).astype(np.float32)


def check_segments(landscape: LandscapeLike, pairs: list[tuple], points: int):
    """Level curves of many segments, evaluated in as few batched calls as memory allows.

    `pairs` holds (theta_p, theta_q) or (theta_p, theta_q, state_p, state_q): the state of a
    point between p and q is interpolated like its weights (then BatchNorm statistics are
    recomputed at each point when the landscape's bn_stats is 'recompute').
    """
    ts = np.linspace(0.0, 1.0, points + 1, dtype=np.float64)
    per_call = max(points + 1, _SEGMENT_BATCH_BYTES // max(1, 4 * landscape.size))
    segments_per_call = max(1, per_call // (points + 1))
    checks = []
    for start in range(0, len(pairs), segments_per_call):
        chunk = pairs[start : start + segments_per_call]
        thetas = np.concatenate([interpolate(ts, pair[0], pair[1]) for pair in chunk])
        states = np.concatenate(
            [
                interpolate(ts, pair[2], pair[3])
                if len(pair) > 2 and pair[2] is not None
                else landscape.fill_states(None, points + 1)
                for pair in chunk
            ]
        )
        levels = landscape.levels(thetas, states).reshape(len(chunk), points + 1)
        checks.extend(SegmentCheck(ts, row) for row in levels)
    return checks


@dataclass
class Checks(Request):
    """Segments whose curves a search needs (`check_segments`): answers their checks."""

    segments: list
    points: int

    def group(self, landscape: LandscapeLike) -> tuple:
        del landscape
        return ("Checks", self.points)

    @classmethod
    def serve(cls, landscape: LandscapeLike, requests: list[Checks]) -> list:
        checks = check_segments(
            landscape, [s for r in requests for s in r.segments], requests[0].points
        )
        return split_rows(checks, [len(r.segments) for r in requests])


def _lengths(string: list[Bead], keep=slice(None)) -> tuple[float, float, float]:
    """(path length, endpoint distance, their ratio) over the entries `keep` of theta."""

    def gap(a, b):
        return float(np.linalg.norm(b.theta[keep].astype(np.float64) - a.theta[keep]))

    path = sum(gap(a, b) for a, b in zip(string, string[1:]))
    distance = gap(string[0], string[-1])
    normalized = path / distance if distance > 0 else 1.0
    return path, distance, normalized


def _weights_only(landscape: LandscapeLike):
    """The entries of theta that are not biases (None: no biases, or nothing else)."""
    biases = landscape.layout.bias_mask()
    return ~biases if biases.any() and not biases.all() else None


def connect(
    landscape: LandscapeLike,
    theta_a: np.ndarray,
    theta_b: np.ndarray,
    level: float,
    config: DSSConfig | None = None,
    *,
    seed: int | None = None,
    record: StringRecord | None = None,
    progress=None,
    state_a: np.ndarray | None = None,
    state_b: np.ndarray | None = None,
    target: float | None = None,
) -> Connection:
    """Dynamic String Sampling between A and B at level u (one string; `search` is the
    same walk as a lockstep search, for running many strings together).

    Args:
        landscape: the Landscape (level function on its evaluation split).
        theta_a, theta_b: the endpoints' parameters.
        level: u, in level-function units.
        config: DSSConfig (defaults documented there).
        seed: seeds mini-batch draws (combined with the depth, so a resumed run repeats them);
            None uses config.seed.
        record: where beads and curves are streamed; an existing record resumes.
        progress: a TaskHandle (advance/update) or None.
        state_a, state_b: the endpoints' states (S,) (None: the landscape model's own). A
            new bead starts with the state interpolated at its insertion point and keeps it
            while it is trained (re-estimated at every point under bn_stats='recompute').
        target: the level beads are trained to (None: alpha * level). Barrier bisection
            sets it between the higher endpoint and the level, so that it never asks for
            beads below both minima (`keras_landscape.science.barriers`).

    Returns:
        A Connection with the verdict, bead count (endpoints included), lengths and levels.
    """
    return run_one(
        landscape,
        search(
            landscape,
            theta_a,
            theta_b,
            level,
            config,
            seed=seed,
            record=record,
            progress=progress,
            state_a=state_a,
            state_b=state_b,
            target=target,
        ),
    )


def search(
    landscape: LandscapeLike,
    theta_a: np.ndarray,
    theta_b: np.ndarray,
    level: float,
    config: DSSConfig | None = None,
    *,
    seed: int | None = None,
    record: StringRecord | None = None,
    progress=None,
    state_a: np.ndarray | None = None,
    state_b: np.ndarray | None = None,
    target: float | None = None,
) -> Search:
    """`connect` as a lockstep search (see `keras_landscape.science.lockstep`): yields
    its evaluations, segment checks and projections, returns the Connection."""
    config = config or DSSConfig()
    config.validate()
    seed = config.seed if seed is None else seed
    started = time.perf_counter()
    threshold = level * (1.0 + config.slack)
    target = config.alpha * level if target is None else float(target)
    if not target <= level:
        raise UserError(f"A bead target ({target}) must not be above the level ({level}).")
    projection = config.projection()
    loaded = record.load() if record is not None else None
    checked: dict[tuple[int, int], SegmentCheck] = {}
    if loaded is not None:
        string, depth, checked = beads_of(loaded)
        checked = {k: c for k, c in checked.items() if len(c.levels) == config.points + 1}
        for bead in string:  # stores without bead states: models without float state
            bead.state = landscape.state_or_own(bead.state)
    else:
        end_states = np.stack([landscape.state_or_own(s) for s in (state_a, state_b)])
        ends, used = yield Levels(np.stack([theta_a, theta_b]).astype(np.float32), end_states)
        string = [
            Bead(0, np.asarray(theta_a, np.float32), float(ends[0]), state=used[0]),
            Bead(1, np.asarray(theta_b, np.float32), float(ends[1]), state=used[1]),
        ]
        if record is not None:
            for bead in string:
                bead.row = record.add_bead(bead.theta, bead.level, 0, 0, bead.state)
            record.commit_depth([b.row for b in string], 0)
        depth = 0
    endpoint_levels = [string[0].level, string[-1].level]
    worst = None
    failed_steps = 0  # steps spent on beads that missed the target (not on the string)

    def finish(connected: bool, why: str) -> Connection:
        path, distance, normalized = _lengths(string)
        weights = _weights_only(landscape)
        weights_length = normalized if weights is None else _lengths(string, weights)[2]
        maxima = [
            checked[(a.row, b.row)].maximum
            for a, b in zip(string, string[1:])
            if (a.row, b.row) in checked
        ]
        connection = Connection(
            connected=connected,
            level=float(level),
            reason=why,
            beads=len(string),
            normalized_length=normalized,
            path_length=path,
            distance=distance,
            max_level=float(max(maxima)) if maxima else float(max(endpoint_levels)),
            depth=depth,
            projection_steps=int(sum(b.steps for b in string)) + failed_steps,
            seconds=time.perf_counter() - started,
            endpoint_levels=endpoint_levels,
            bead_target=float(target),
            worst_segment=worst,
            weights_normalized_length=weights_length,
            string=[b.theta for b in string],
            string_states=[b.state for b in string],
        )
        if record is not None:
            record.finish(connection.to_dict())
        return connection

    if not all(math.isfinite(v) for v in endpoint_levels):
        return finish(False, "non_finite")
    if max(endpoint_levels) > threshold:
        worst = {"index": None, "max_level": max(endpoint_levels), "t": None}
        return finish(False, "endpoint_above_level")

    while True:
        todo = [(a, b) for a, b in zip(string, string[1:]) if (a.row, b.row) not in checked]
        segment_ends = [(a.theta, b.theta, a.state, b.state) for a, b in todo]
        checks = (yield Checks(segment_ends, config.points)) if todo else []
        for (a, b), check in zip(todo, checks):
            checked[(a.row, b.row)] = check
            if record is not None:
                record.add_curve(a.row, b.row, depth, check.levels)
        segments = list(zip(string, string[1:]))
        failing = [
            i
            for i, (a, b) in enumerate(segments)
            if not checked[(a.row, b.row)].maximum <= threshold
        ]
        # the authors' first bead: trained at the midpoint whatever the line's maximum
        first = config.first_bead and len(segments) == 1 and config.max_depth > 0
        if first:
            failing = [0]
        worst_index = max(
            range(len(segments)),
            key=lambda i: checked[(segments[i][0].row, segments[i][1].row)].maximum,
        )
        worst_check = checked[(segments[worst_index][0].row, segments[worst_index][1].row)]
        worst = {"index": worst_index, "max_level": worst_check.maximum, "t": worst_check.argmax_t}
        if progress is not None:
            progress.update(
                status=f"depth {depth}, {len(string)} beads, {len(failing)} failing, "
                f"worst {worst_check.maximum:.4g} vs {threshold:.4g}"
            )
        if not failing:
            return finish(True, "connected")
        if any(
            not math.isfinite(checked[(segments[i][0].row, segments[i][1].row)].maximum)
            for i in failing
        ):
            return finish(False, "non_finite")
        if depth >= config.max_depth:
            return finish(False, "depth_limit")
        depth += 1
        starts, start_states, normals = [], [], []
        noise = np.random.default_rng(derive_seed(seed, depth, _PERTURB_KEY))
        for i in failing:
            a, b = segments[i]
            midpoint = config.insertion == "midpoint" or first
            t = 0.5 if midpoint else checked[(a.row, b.row)].argmax_t
            t = min(max(t, 1.0 / config.points), 1.0 - 1.0 / config.points)
            direction = (b.theta - a.theta).astype(np.float64)
            norm = np.linalg.norm(direction)
            normals.append(
                direction / norm
                if config.projection_mode == "hyperplane" and norm > 0
                else np.zeros_like(direction)
            )
            step = _off_symmetry(noise, config, a.theta, b.theta, normals[-1])
            starts.append((1.0 - t) * a.theta + t * b.theta + step)
            start_states.append(interpolate(np.array([t]), a.state, b.state)[0])
        result = yield Projection(
            np.stack(starts),
            target,
            projection,
            derive_seed(seed, depth),
            np.stack(normals).astype(np.float32),
            np.stack(start_states),
        )
        new_string = list(string)
        for offset, (i, theta, bead_level, steps, state) in enumerate(
            zip(failing, result.thetas, result.levels, result.steps, result.states)
        ):
            row = (
                record.add_bead(theta, bead_level, depth, steps, state)
                if record is not None
                else max(b.row for b in new_string) + 1
            )
            new_string.insert(
                i + 1 + offset, Bead(row, theta, float(bead_level), depth, int(steps), state)
            )
        if not result.reached.all():
            failed_steps = int(result.steps.sum())
            missed = int(np.argmin(result.reached))
            i = failing[missed]
            a, b = segments[i]
            worst = {
                "index": i,
                "max_level": checked[(a.row, b.row)].maximum,
                "t": checked[(a.row, b.row)].argmax_t,
                "bead_level": float(result.levels[missed]),
                "target": float(target),
            }
            return finish(False, "bead_not_reached")
        string = new_string
        if record is not None:
            record.commit_depth([b.row for b in string], depth)
