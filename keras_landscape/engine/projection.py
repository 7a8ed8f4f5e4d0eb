"""Projecting points onto a sublevel set: train them until E <= target (batched).

A projection trains K parameter vectors at once on the training loss with a Keras optimizer
(`keras.optimizers.Adam` by default, stepped with `stateless_apply` on the (K, P) stack),
inside one compiled loop of `check_every` steps; between loops the level function is
evaluated for every bead in one batched call and beads already at or below the target are
frozen. It stops when every bead is below the target or the step budget is spent. This is
how Dynamic String Sampling moves a new bead into Omega_u, and how fresh partner models are
trained down to a level.

Mini-batch indices are drawn from a generator seeded by the caller, so a projection is
reproducible: the same starts, seed and config give the same result (on the same hardware).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

from keras_landscape.engine.kernels import optimizer_spec, pad_rows
from keras_landscape.engine.options import ProjectionConfig


@dataclass
class ProjectionResult:
    """Where the beads ended.

    Attributes:
        thetas: (K, P) final parameters.
        levels: (K,) level function at the final parameters (true float32).
        steps: (K,) optimiser steps each bead took.
        reached: (K,) whether each bead is at or below the target.
        states: (K, S) the state each level was evaluated with (the starts' states, with
            BatchNorm statistics re-estimated at the final theta for models with BatchNorm).
    """

    thetas: np.ndarray
    levels: np.ndarray
    steps: np.ndarray
    reached: np.ndarray
    states: np.ndarray | None = None

    def rows(self, rows: slice) -> ProjectionResult:
        """The result of some of the beads (a lockstep stack's share of one search)."""
        return ProjectionResult(
            self.thetas[rows],
            self.levels[rows],
            self.steps[rows],
            self.reached[rows],
            None if self.states is None else self.states[rows],
        )

    @staticmethod
    def concatenate(parts: list[ProjectionResult]) -> ProjectionResult:
        return ProjectionResult(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS)
        )


_FIELDS = ("thetas", "levels", "steps", "reached", "states")


def project(
    landscape,
    starts: np.ndarray,
    target: float | np.ndarray,
    config: ProjectionConfig,
    seed: int,
    normals: np.ndarray | None = None,
    on_check=None,
    states: np.ndarray | None = None,
) -> ProjectionResult:
    """Train the rows of `starts` until each one's level is <= target or its budget runs out.

    Args:
        landscape: the Landscape (its training split drives the steps).
        starts: (K, P) starting points.
        target: the level to reach (level-function units), e.g. alpha * u; one for all
            beads or one per bead (K,) (lockstep stacks of strings at different levels).
        config: optimiser and budget (an unknown optimizer raises UserError here, before
            any step).
        seed: seeds the mini-batch draws (ignored for full batch).
        normals: optional (K, P) hyperplane normals (unit or zero rows); see
            `engine.make_projection`.
        on_check: optional callback(levels, steps) after every level check (progress).
        states: optional (K, S) states of the starts (None: the landscape model's). Beads
            keep them, except that a model with BatchNorm trains in train mode (batch
            statistics, as fit) and its beads' statistics are re-estimated at their weights.

    Returns:
        A ProjectionResult.

    A stack wider than `landscape.max_projection_stack` beads is projected in parts of that
    width, one after another, each with the same mini-batch draws: a bead's result does not
    depend on the beads it is stacked with.
    """
    config.validate()
    starts = np.asarray(starts, np.float32)
    k, p = starts.shape
    targets = np.broadcast_to(np.asarray(target, np.float64), (k,))
    normals = np.zeros((k, p), np.float32) if normals is None else np.asarray(normals, np.float32)
    states = landscape.fill_states(states, k)
    full_batch = config.batch_size is None or config.batch_size >= landscape.train_size
    width = landscape.max_projection_stack(
        landscape.train_size if full_batch else config.batch_size
    )
    parts = [
        _project_stack(
            landscape,
            starts[rows],
            targets[rows],
            config,
            seed,
            normals[rows],
            on_check,
            states[rows],
        )
        for rows in (slice(i, i + width) for i in range(0, k, width))
    ]
    return parts[0] if len(parts) == 1 else ProjectionResult.concatenate(parts)


def _project_stack(
    landscape, starts, target, config, seed, normals, on_check, starts_states
) -> ProjectionResult:
    """`project` of one stack that fits memory (arguments as there, already filled)."""
    thetas = np.array(starts, np.float32, copy=True)
    k = len(thetas)
    # Beads train in train mode, as fit trains a model: their BatchNorm statistics are
    # then estimated at their weights (in both bn_stats modes), so a level is always that
    # of the function the bead would be as a saved model.
    recompute = landscape.trains_in_train_mode
    levels, used = landscape.levels_and_states(thetas, starts_states, recompute)
    steps = np.zeros(k, np.int64)
    n = landscape.train_size
    full_batch = config.batch_size is None or config.batch_size >= n
    spec = optimizer_spec(config)
    x, y = landscape.training_tensors()
    rng = np.random.default_rng(seed)
    # Pad the stack to a power of two (per replica) with frozen copies: few shapes, few
    # compilations; each replica projects its share of the rows.
    devices = landscape.devices
    width = devices.width(k)
    kernel = landscape.projection_kernel(full_batch, spec, devices.kernel_width(width))
    # The optimizer's state (step count, moments) lives in these tensors only, carried from
    # one chunk of steps to the next: chunks continue one another as one long loop would.
    slots = kernel.initial_slots(config.learning_rate)
    state, normals_t, states_t = (
        devices.put(ops.convert_to_tensor(pad_rows(rows, width=width)))
        for rows in (thetas, normals, starts_states)
    )
    while True:
        active = ~(levels <= target) & (steps < config.max_steps) & np.isfinite(levels)
        if not active.any():
            break
        chunk = int(min(config.check_every, config.max_steps - steps[active].max()))
        if full_batch:
            indices = np.zeros((chunk, 1), np.int32)
        else:
            indices = rng.integers(0, n, size=(chunk, config.batch_size), dtype=np.int32)
        gate = np.zeros(width, np.float32)
        gate[:k] = active
        state, slots, _ = devices.call(
            kernel,
            (
                state,
                slots,
                devices.put(ops.convert_to_tensor(gate)),
                normals_t,
                states_t,
                landscape.non_trainable,
                x,
                y,
                ops.convert_to_tensor(indices),
                ops.convert_to_tensor(np.int32(steps.max())),
            ),
            k,
        )
        steps[active] += chunk
        thetas = devices.fetch(state)[:k]
        levels, used = levels.copy(), used.copy()
        levels[active], used[active] = landscape.levels_and_states(
            thetas[active], starts_states[active], recompute
        )
        if on_check is not None:
            on_check(levels, steps)
    return ProjectionResult(thetas, levels, steps, levels <= target, used)


__all__ = ["ProjectionConfig", "ProjectionResult", "project"]
