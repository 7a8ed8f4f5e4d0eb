"""Curves between two minima with trained bends (Garipov et al. 2018).

A Bezier curve of degree n + 1 with control points A, C_1, ..., C_n, B,
phi(t) = sum_k binom(n + 1, k) t^k (1 - t)^(n + 1 - k) P_k (one bend: the quadratic
(1 - t)^2 A + 2 t (1 - t) C + t^2 B), or a polygonal chain A -> C_1 -> ... -> C_n -> B with
its bends at t = k / (n + 1) (one bend: A -> C for t <= 1/2, C -> B after). Both are linear
in the bends: phi(t) = w_0(t) A + sum_k w_k(t) C_k + w_{n+1}(t) B (`control_weights`). The
bends are trained to minimise the loss integrated over the curve, E_t~U[0,1] E(phi(t)). Each
step draws `samples` values of t, evaluates the gradients of E at all those points in one
stacked call (`Landscape.losses_and_grads`) and moves each bend C_k along
mean_j w_k(t_j) grad E(phi(t_j)) with one step of the run's optimizer: Keras's own, named by
the `optimizer` config (a ProjectionConfig: optimizer, learning rate, betas, epsilon,
optimizer_options), stepped by `Landscape.stepper` exactly as projections step beads (one
stepper per bend). The bends start evenly spaced on the straight segment, where both
curves are the straight line. The trained curve is then evaluated like a DSS segment: the
level function (path view) and the loss E at `grid` + 1 evenly spaced t, in batched calls.

Each point's state (BatchNorm statistics) is interpolated from the endpoints' at the same t
and recomputed under bn_stats='recompute', as along DSS segments.

`stored_curve` fits a curve into a store run, or reads it back (resume); `curve_profile`
and `line_profile` evaluate a curve and the straight segment at given t; `resolution`
says how finely a profile was sampled. The `barrier` probe (relax=bezier|polychain) and the
`curve` probe both go through these.
"""

from __future__ import annotations

from math import comb

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.science.dss import interpolate

CURVES = ("bezier", "polychain")


def _bends(c) -> np.ndarray:
    """Bends as (n, P) float64: one (P,) bend or a stack of them."""
    c = np.asarray(c, np.float64)
    return c[None, :] if c.ndim == 1 else c


def control_weights(kind: str, ts, bends: int = 1) -> np.ndarray:
    """(len(ts), bends + 2) the weight w_k(t) of each control point A, C_1..C_n, B: the
    curve is sum_k w_k(t) P_k, and dphi/dC_k = w_k(t) (a scalar: the curve is linear in
    its control points)."""
    ts = np.clip(np.asarray(ts, np.float64), 0.0, 1.0)[:, None]
    degree = int(bends) + 1
    k = np.arange(degree + 1)[None, :]
    if kind == "bezier":
        binomials = np.array([comb(degree, int(i)) for i in range(degree + 1)], np.float64)
        return binomials[None, :] * ts**k * (1 - ts) ** (degree - k)
    # hat functions centred on the knots k / (n + 1)
    return np.maximum(0.0, 1.0 - np.abs(degree * ts - k))


def bend_weights(kind: str, ts) -> np.ndarray:
    """dphi/dC at each t for a curve with one bend (len(ts),)."""
    return control_weights(kind, ts, 1)[:, 1]


def straight_bends(a, b, bends: int) -> np.ndarray:
    """(bends, P) float32 bends evenly spaced on the segment A-B: with them both kinds of
    curve are the straight line (1 - t) A + t B."""
    s = np.arange(1, int(bends) + 1, dtype=np.float64) / (int(bends) + 1)
    return interpolate(s, a, b)


def curve_points(kind: str, a: np.ndarray, c: np.ndarray, b: np.ndarray, ts) -> np.ndarray:
    """(len(ts), P) points of the curve at ts (float64); `c` one bend (P,) or several
    (n, P)."""
    c = _bends(c)
    control = np.concatenate(
        [np.asarray(a, np.float64)[None, :], c, np.asarray(b, np.float64)[None, :]]
    )
    return control_weights(kind, ts, len(c)) @ control


def resolution(ts, values) -> dict:
    """How finely a profile was sampled: {"evaluation_points", "largest_step" (the largest
    |change| of `values` between neighbouring t), "at_t" (the pair of t it lies between)}.
    A largest step that is a sizeable part of a barrier says that the maximum may lie
    between the sampled points: evaluate more points."""
    ts, values = np.asarray(ts, np.float64), np.asarray(values, np.float64)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return {"evaluation_points": int(len(values)), "largest_step": None, "at_t": None}
    steps = np.abs(np.diff(values))
    i = int(np.argmax(steps))
    return {
        "evaluation_points": int(len(values)),
        "largest_step": float(steps[i]),
        "at_t": [float(ts[i]), float(ts[i + 1])],
    }


def _profile(landscape: LandscapeLike, points, states) -> tuple[np.ndarray, np.ndarray]:
    """(levels (K,), losses (K,)) at the points: the level function in the path view (as
    DSS checks it: BatchNorm statistics recomputed under bn_stats='recompute'), and the
    loss E on the evaluation split with the same states."""
    levels, used = landscape.levels_and_states(points, states)
    losses = np.array([e.loss for e in landscape.evaluate_many(points, states=used)], np.float64)
    return np.asarray(levels, np.float64), losses


def curve_profile(
    landscape: LandscapeLike, kind: str, a, bends, b, ts, state_a=None, state_b=None
) -> tuple[np.ndarray, np.ndarray]:
    """(levels, losses) along the curve at ts (states interpolated from the endpoints')."""
    ends = [landscape.state_or_own(s) for s in (state_a, state_b)]
    ts = np.asarray(ts, np.float64)
    points = curve_points(kind, a, bends, b, ts).astype(np.float32)
    return _profile(landscape, points, interpolate(ts, *ends))


def line_profile(
    landscape: LandscapeLike, a, b, ts, state_a=None, state_b=None
) -> tuple[np.ndarray, np.ndarray]:
    """(levels, losses) along the straight segment A-B at ts."""
    ends = [landscape.state_or_own(s) for s in (state_a, state_b)]
    ts = np.asarray(ts, np.float64)
    return _profile(landscape, interpolate(ts, a, b), interpolate(ts, *ends))


def fit_curve(
    landscape: LandscapeLike,
    kind: str,
    theta_a,
    theta_b,
    *,
    steps: int,
    optimizer,
    samples: int,
    grid: int,
    seed: int,
    state_a=None,
    state_b=None,
    bends: int = 1,
) -> dict:
    """Train the bends and evaluate the curve; {"kind", "bend" ((P,) for one bend, else
    (n, P)), "ts", "levels", "loss" (E at each of ts), "max_level", "losses" (the mean loss
    over each step's samples: the training history)}.

    `optimizer` is a ProjectionConfig naming the Keras optimizer that steps the bends (its
    learning_rate is the bends' step size).

    Raises:
        UserError: Keras does not know the optimizer or rejects its options.
    """
    a = np.asarray(theta_a, np.float64)
    b = np.asarray(theta_b, np.float64)
    end_states = np.stack([landscape.state_or_own(s) for s in (state_a, state_b)])
    c = straight_bends(a, b, bends)
    steps_of = []  # each bend's own optimizer step
    for _ in range(int(bends)):
        stepper = landscape.stepper(optimizer)
        steps_of.append(stepper.step)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(int(steps)):
        ts = rng.uniform(0.0, 1.0, int(samples))
        points = curve_points(kind, a, c, b, ts).astype(np.float32)
        states = interpolate(ts, end_states[0], end_states[1])
        loss, grads = landscape.losses_and_grads(points, states)
        losses.append(float(np.mean(loss)))
        weights = control_weights(kind, ts, int(bends))[:, 1:-1]  # (samples, n)
        grads = grads.astype(np.float64)
        c = np.stack(
            [
                step(c[k], (weights[:, k, None] * grads).mean(axis=0))
                for k, step in enumerate(steps_of)
            ]
        )
    ts = np.linspace(0.0, 1.0, int(grid) + 1)
    levels, path_loss = curve_profile(landscape, kind, a, c, b, ts, *end_states)
    finite = np.all(np.isfinite(levels))
    return {
        "kind": kind,
        "bend": c[0] if int(bends) == 1 else c,
        "ts": ts,
        "levels": levels,
        "loss": path_loss,
        "max_level": float(np.max(levels)) if finite else float("inf"),
        "losses": np.array(losses),
    }


def stored_curve(
    landscape: LandscapeLike, run, key: str, kind: str, a, b, *, state_a=None, state_b=None, **fit
) -> dict:
    """The curve stored in `run` under `key`, fitted first (`fit_curve(**fit)`) unless the
    run already holds it (resume). Datasets: `bend` (as fit_curve returns it), `t`,
    `training_loss`, `loss` (E at each t) and `level`, written last: it marks the curve
    done. Returns {"kind", "bend", "ts", "levels", "loss" (None in stores written before
    it was kept), "losses" (training history), "max_level"}."""
    if not run.has(f"{key}/level"):
        curve = fit_curve(landscape, kind, a, b, state_a=state_a, state_b=state_b, **fit)
        run.write(f"{key}/bend", curve["bend"])
        run.write(f"{key}/t", curve["ts"])
        run.write(f"{key}/training_loss", curve["losses"])
        run.write(f"{key}/loss", curve["loss"])
        run.write(f"{key}/level", curve["levels"])  # last: marks it done
    levels = np.asarray(run.read(f"{key}/level"), np.float64)
    return {
        "kind": kind,
        "bend": run.read(f"{key}/bend"),
        "ts": np.asarray(run.read(f"{key}/t"), np.float64),
        "levels": levels,
        "loss": np.asarray(run.read(f"{key}/loss"), np.float64) if run.has(f"{key}/loss") else None,
        "losses": run.read(f"{key}/training_loss"),
        "max_level": float(np.max(levels)) if np.all(np.isfinite(levels)) else float("inf"),
    }


__all__ = [
    "CURVES",
    "bend_weights",
    "control_weights",
    "curve_points",
    "curve_profile",
    "fit_curve",
    "line_profile",
    "resolution",
    "stored_curve",
    "straight_bends",
]
