"""Curves between two minima with one trained bend (Garipov et al. 2018).

A quadratic Bezier curve  phi(t) = (1 - t)^2 A + 2 t (1 - t) C + t^2 B, or a polygonal chain
through C (A -> C for t <= 1/2, C -> B after), with the bend C trained to minimise the
loss integrated over the curve, E_t~U[0,1] E(phi(t)). Each step draws `samples` values of
t, evaluates the gradients of E at all those points in one stacked call
(`Landscape.losses_and_grads`) and moves C along  mean_j dphi/dC(t_j) grad E(phi(t_j))
with one step of the run's optimizer: Keras's own, named by the `optimizer` config (a
ProjectionConfig: optimizer, learning rate, betas, epsilon, optimizer_options), stepped by
`Landscape.stepper` exactly as projections step beads. C starts at the midpoint, where both
curves are the straight line. The trained curve is then
checked like a DSS segment: its level on `grid` + 1 evenly spaced t, in one batched call.

Each point's state (BatchNorm statistics) is interpolated from the endpoints' at the same t
and recomputed under bn_stats='recompute', as along DSS segments.
"""

from __future__ import annotations

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.science.dss import interpolate

CURVES = ("bezier", "polychain")


def curve_points(kind: str, a: np.ndarray, c: np.ndarray, b: np.ndarray, ts) -> np.ndarray:
    """(len(ts), P) points of the curve at ts (float64)."""
    ts = np.asarray(ts, np.float64)[:, None]
    a, c, b = (np.asarray(v, np.float64)[None, :] for v in (a, c, b))
    if kind == "bezier":
        return (1 - ts) ** 2 * a + 2 * ts * (1 - ts) * c + ts**2 * b
    first = ts <= 0.5
    return np.where(first, a + 2 * ts * (c - a), c + (2 * ts - 1) * (b - c))


def bend_weights(kind: str, ts) -> np.ndarray:
    """dphi/dC at each t (a scalar per point: the curve is linear in C)."""
    ts = np.asarray(ts, np.float64)
    if kind == "bezier":
        return 2 * ts * (1 - ts)
    return np.where(ts <= 0.5, 2 * ts, 2 - 2 * ts)


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
) -> dict:
    """Train the bend and check the curve; {"kind", "bend", "ts", "levels", "max_level",
    "losses" (the mean loss over each step's samples)}.

    `optimizer` is a ProjectionConfig naming the Keras optimizer that steps the bend (its
    learning_rate is the bend's step size).

    Raises:
        UserError: Keras does not know the optimizer or rejects its options.
    """
    a = np.asarray(theta_a, np.float64)
    b = np.asarray(theta_b, np.float64)
    end_states = np.stack([landscape.state_or_own(s) for s in (state_a, state_b)])
    c = (0.5 * (a + b)).astype(np.float32)
    stepper = landscape.stepper(optimizer)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(int(steps)):
        ts = rng.uniform(0.0, 1.0, int(samples))
        points = curve_points(kind, a, c, b, ts).astype(np.float32)
        states = interpolate(ts, end_states[0], end_states[1])
        loss, grads = landscape.losses_and_grads(points, states)
        losses.append(float(np.mean(loss)))
        g = (bend_weights(kind, ts)[:, None] * grads.astype(np.float64)).mean(axis=0)
        c = stepper.step(c, g)
    ts = np.linspace(0.0, 1.0, int(grid) + 1)
    points = curve_points(kind, a, c, b, ts).astype(np.float32)
    levels = landscape.levels(points, interpolate(ts, end_states[0], end_states[1]))
    finite = np.all(np.isfinite(levels))
    return {
        "kind": kind,
        "bend": c.astype(np.float32),
        "ts": ts,
        "levels": levels,
        "max_level": float(np.max(levels)) if finite else float("inf"),
        "losses": np.array(losses),
    }


__all__ = ["CURVES", "bend_weights", "curve_points", "fit_curve"]
