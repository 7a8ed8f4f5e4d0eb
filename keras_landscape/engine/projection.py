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

import numpy as np
from keras import ops

from keras_landscape.contract import ProjectionResult
from keras_landscape.engine import backend, kernels
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.kernels import pad_rows
from keras_landscape.engine.optimizers import OptimizerSpec, optimizer_spec
from keras_landscape.engine.options import ProjectionConfig


class ProjectionKernels:
    """The compiled projection loops of a landscape (see `kernels.make_projection`), one per
    batching mode, optimizer and stack width, and the training split as tensors.

    Args:
        context: the model, its layouts and objective.
        x_train, y_train: the training split.
        training: run the model in train mode (as fit; models with BatchNorm).
        fast_float32: TF32-class matrix multiplies inside projection calls (see
            `Landscape`).
    """

    def __init__(
        self,
        context: ModelContext,
        x_train: np.ndarray,
        y_train: np.ndarray,
        training: bool,
        fast_float32: bool,
    ):
        self.context, self.training, self.fast_float32 = context, training, fast_float32
        self._train = (x_train, y_train)
        self._kernels: dict = {}

    def training_tensors(self):
        """The training split as tensors (x, y), converted once (projections gather from it)."""
        if not hasattr(self, "_train_tensors"):
            x, y = self._train
            self._train_tensors = (ops.convert_to_tensor(x), ops.convert_to_tensor(y))
        return self._train_tensors

    def kernel(
        self, full_batch: bool, optimizer: OptimizerSpec, width: int
    ) -> kernels.ProjectionKernel:
        """The compiled projection loop for a batching mode, an optimizer and a stack width,
        with this landscape's projection precision.

        One per width: the optimizer is built over one (width, P) variable, and a function
        traced for one width keeps static shapes (a tf.function relaxing them to (None, P)
        after seeing two widths could not match them to the optimizer's variables).
        """
        key = (full_batch, optimizer.key, width)
        if key not in self._kernels:
            context = self.context
            with context.devices.scope():  # under a strategy: one copy per replica
                keras_optimizer = optimizer.build(width, context.size)
            compiled = context.compile(
                kernels.make_projection(
                    context.model,
                    context.layout,
                    context.state_layout,
                    context.objective.objective,
                    full_batch=full_batch,
                    optimizer=keras_optimizer,
                    width=width,
                    training=self.training,
                ),
                "projection",
            )

            def run(*args):
                # TF32 only inside this call and only when asked for; the previous setting
                # (other landscapes', the user's) is restored after it.
                with backend.float32_precision(fast=self.fast_float32):
                    return compiled(*args)

            self._kernels[key] = kernels.ProjectionKernel(run, keras_optimizer, width)
        return self._kernels[key]


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
            full_batch,
            seed,
            normals[rows],
            on_check,
            states[rows],
        )
        for rows in (slice(i, i + width) for i in range(0, k, width))
    ]
    return parts[0] if len(parts) == 1 else ProjectionResult.concatenate(parts)


class _Stack:
    """The beads being trained, as device tensors: the rows of `rows` (bead indices) first,
    padded to a width that is a power of two per replica with frozen copies (few shapes,
    few compilations). As beads reach their targets the stack is compacted to a narrower
    one, optimizer state included, so frozen beads stop costing steps (a lockstep stack's
    slowest beads then run alone, as they would one string at a time)."""

    def __init__(self, landscape, full_batch: bool, spec, learning_rate: float):
        self.landscape, self.devices = landscape, landscape.devices
        self.full_batch, self.spec, self.learning_rate = full_batch, spec, learning_rate
        self.width = 0
        self.slots = None

    def load(self, rows, thetas, normals, states, slots=None) -> None:
        """Bead rows `rows` of the host arrays on the devices (fresh optimizer state, or
        `slots`: per-bead rows already taken for these beads)."""
        devices = self.devices
        self.rows = np.asarray(rows)
        self.width = devices.width(len(self.rows))
        self.kernel = self.landscape.projection_kernel(
            self.full_batch, self.spec, devices.kernel_width(self.width)
        )
        self.state, self.normals, self.states = (
            devices.put(ops.convert_to_tensor(pad_rows(a[self.rows], width=self.width)))
            for a in (thetas, normals, states)
        )
        # The optimizer's state (step count, moments) lives in these tensors only, carried
        # from one chunk of steps to the next: chunks continue one another as one long loop.
        fresh = self.kernel.initial_slots(self.learning_rate)
        if slots is not None:
            fresh = [
                devices.put(ops.convert_to_tensor(pad_rows(given, width=self.width)))
                if row
                else ops.convert_to_tensor(given)
                for given, row in zip(slots, self.kernel.per_bead)
            ]
        self.slots = fresh

    def compact(self, active, thetas, normals, states) -> None:
        """Keep only the active beads (with their optimizer rows) in a narrower stack."""
        keep = np.flatnonzero(active[self.rows])
        slots = [
            self.devices.fetch(slot)[keep] if row else self.devices.shared(slot)
            for slot, row in zip(self.slots, self.kernel.per_bead)
        ]
        self.load(self.rows[keep], thetas, normals, states, slots)

    def step(self, active, landscape, x, y, indices, first_step: int) -> None:
        """`len(indices)` optimizer steps of the active beads (the others stay frozen)."""
        gate = np.zeros(self.width, np.float32)
        gate[: len(self.rows)] = active[self.rows]
        devices = self.devices
        self.state, self.slots, _ = devices.call(
            self.kernel,
            (
                self.state,
                self.slots,
                devices.put(ops.convert_to_tensor(gate)),
                self.normals,
                self.states,
                landscape.non_trainable,
                x,
                y,
                ops.convert_to_tensor(indices),
                ops.convert_to_tensor(np.int32(first_step)),
            ),
            len(self.rows),
        )

    def thetas(self) -> np.ndarray:
        """The stack's beads (rows `rows`) on the host."""
        return self.devices.fetch(self.state)[: len(self.rows)]


def _project_stack(
    landscape, starts, target, config, full_batch, seed, normals, on_check, starts_states
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
    spec = optimizer_spec(config)
    x, y = landscape.training_tensors()
    rng = np.random.default_rng(seed)
    devices = landscape.devices
    stack = _Stack(landscape, full_batch, spec, config.learning_rate)
    stack.load(np.arange(k), thetas, normals, starts_states)
    while True:
        active = ~(levels <= target) & (steps < config.max_steps) & np.isfinite(levels)
        if not active.any():
            break
        if devices.width(int(active.sum())) < stack.width:
            stack.compact(active, thetas, normals, starts_states)
        chunk = int(min(config.check_every, config.max_steps - steps[active].max()))
        if full_batch:
            indices = np.zeros((chunk, 1), np.int32)
        else:
            indices = rng.integers(0, n, size=(chunk, config.batch_size), dtype=np.int32)
        stack.step(active, landscape, x, y, indices, int(steps.max()))
        steps[active] += chunk
        thetas[stack.rows] = stack.thetas()
        levels, used = levels.copy(), used.copy()
        levels[active], used[active] = landscape.levels_and_states(
            thetas[active], starts_states[active], recompute
        )
        if on_check is not None:
            on_check(levels, steps)
    return ProjectionResult(thetas, levels, steps, levels <= target, used)


__all__ = ["ProjectionConfig", "ProjectionKernels", "ProjectionResult", "project"]
