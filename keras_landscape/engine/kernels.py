"""Backend-neutral kernels: the energy of a parameter vector on one batch of data.

Written once with `keras.ops` and `model.stateless_call`; `keras_landscape.engine.backend` supplies
compilation, gradients and mapping over beads; `keras_landscape.engine.stacked` evaluates a model at
many parameter vectors at once. The user's model is never mutated: weights go in as tensors.

Per batch a kernel returns *sums*, not means, so that the exact mean over a whole evaluation
set can be assembled from mini-batches of any size (the last one padded and masked):

    [loss_sum, level_sum, loss_count, level_count, regularizer * batch_size]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
from keras import ops

from keras_landscape.engine import backend, stacked
from keras_landscape.engine.backend.devices import padded_count
from keras_landscape.engine.objectives import Objective
from keras_landscape.engine.optimizers import OptimizerSpec, optimizer_spec
from keras_landscape.engine.params import ParameterLayout
from keras_landscape.engine.state import StateLayout, batch_norm_layers

SUMS = ("loss_sum", "level_sum", "loss_count", "level_count", "regularizer_sum")


def pad_rows(rows: np.ndarray, count: int | None = None, width: int | None = None) -> np.ndarray:
    """rows padded with copies of its first row up to `width` rows (default:
    padded_count(count or len(rows)))."""
    target = width or padded_count(count if count is not None else len(rows))
    if len(rows) >= target:
        return rows
    return np.concatenate([rows, np.repeat(rows[:1], target - len(rows), axis=0)])


def split_theta(layout: ParameterLayout, theta):
    """theta (P,) tensor -> list of variable-shaped tensors, in layout order."""
    return layout.split(theta, ops.reshape)


def _broadcast_mask(mask, values):
    mask = ops.cast(mask, values.dtype)
    extra = len(values.shape) - 1
    return ops.reshape(mask, (-1,) + (1,) * extra) if extra else mask


def _masked_sum_and_count(values, mask):
    values = ops.cast(values, "float32")
    m = ops.broadcast_to(_broadcast_mask(mask, values), ops.shape(values))
    # where() rather than multiply: a padded row with inf/NaN loss must not poison the sum.
    return ops.sum(ops.where(m > 0, values, 0.0)), ops.sum(m)


def mode_kwargs(model, training: bool = False) -> dict:
    """{'training': training} when the model's call takes it (subclassed calls may not)."""
    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": bool(training)} if takes else {}


def inference_kwargs(model) -> dict:
    """{'training': False} when the model's call takes it."""
    return mode_kwargs(model, training=False)


def seed_positions(model) -> list[int]:
    """Positions in `model.non_trainable_variables` of the random-seed generators' states
    (Dropout, GaussianNoise, ...)."""
    states = {
        id(generator.state)
        for layer in model._flatten_layers(include_self=True)
        for generator in getattr(layer, "_seed_generators", [])
    }
    return [i for i, v in enumerate(model.non_trainable_variables) if id(v) in states]


def merge_state(state_layout: StateLayout, state, non_trainable) -> list:
    """The full non-trainable list: float entries sliced from `state` (S,) or (K, S), the
    others (seed counters) from `non_trainable` (the landscape model's own values)."""
    values = list(non_trainable)
    lead = tuple(state.shape[:-1])
    for position, offset, size, shape in state_layout.entries():
        values[position] = ops.reshape(state[..., offset : offset + size], lead + tuple(shape))
    return values


def _sums_of_predictions(objective: Objective, y, y_pred, mask, regularizer):
    """The five sums of one batch, given the model's predictions and its summed losses."""
    per_element = objective.loss(y, y_pred)
    loss_sum, loss_count = _masked_sum_and_count(per_element, mask)
    level_sum, level_count = _masked_sum_and_count(objective.level(y, y_pred, per_element), mask)
    return ops.stack([loss_sum, level_sum, loss_count, level_count, regularizer * ops.sum(mask)])


def _regularizer(losses):
    return ops.cast(sum(losses) if losses else 0.0, "float32")


def make_batch_sums(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(theta, state, non_trainable, x, y, mask) -> the five sums of one batch (float32)."""
    call_kwargs = inference_kwargs(model)

    def batch_sums(theta, state, non_trainable, x, y, mask):
        y_pred, _, losses = model.stateless_call(
            split_theta(layout, theta),
            merge_state(state_layout, state, non_trainable),
            x,
            return_losses=True,
            **call_kwargs,
        )
        return _sums_of_predictions(objective, y, y_pred, mask, _regularizer(losses))

    return batch_sums


def _training_values(sums, mask):
    """(..., 5) batch sums -> what a Keras train step minimises: mean loss + regularizer."""
    return sums[..., 0] / ops.maximum(sums[..., 2], 1.0) + sums[..., 4] / ops.maximum(
        ops.sum(mask), 1.0
    )


def make_gradient_sums(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(theta, state, nt, x, y, mask, loss_weight, reg_weight) -> (sums, d(weighted)/dtheta).

    The weights turn batch sums into a share of the full-set mean: loss_weight = 1 / total
    loss elements, reg_weight = 1 / total samples. The state is held fixed.
    """
    batch_sums = make_batch_sums(model, layout, state_layout, objective)

    def weighted(theta, state, non_trainable, x, y, mask, loss_weight, reg_weight):
        sums = batch_sums(theta, state, non_trainable, x, y, mask)
        return sums[0] * loss_weight + sums[4] * reg_weight, sums

    vg = backend.value_and_grad(weighted)

    def gradient_sums(theta, state, non_trainable, x, y, mask, loss_weight, reg_weight):
        _, sums, grad = vg(theta, state, non_trainable, x, y, mask, loss_weight, reg_weight)
        return sums, grad

    gradient_sums.weighted = weighted  # make_hessian_vector_sums differentiates it twice
    return gradient_sums


def make_stacked_gradient_sums(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(thetas (K, P), states, nt, x, y, mask, loss_weight, reg_weight) -> (sums (K, 5),
    grads (K, P)): each bead's batch sums and its share of the gradient of E (weighted as in
    `make_gradient_sums`, states held fixed), for all beads in one call."""
    stacked_sums = make_stacked_batch_sums(model, layout, state_layout, objective)

    def weighted(thetas, states, non_trainable, x, y, mask, loss_weight, reg_weight):
        sums = stacked_sums(thetas, states, non_trainable, x, y, mask)
        # beads are independent: d(sum over beads)/d(theta_k) is bead k's gradient
        return ops.sum(sums[:, 0] * loss_weight + sums[:, 4] * reg_weight), sums

    vg = backend.value_and_grad(weighted)

    def gradient_sums(thetas, states, non_trainable, x, y, mask, loss_weight, reg_weight):
        _, sums, grads = vg(thetas, states, non_trainable, x, y, mask, loss_weight, reg_weight)
        return sums, grads

    return gradient_sums


def make_hessian_vector_sums(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(theta, v, state, nt, x, y, mask, loss_weight, reg_weight) -> this batch's share of
    H v, H the Hessian of the training loss E (weighted as in `make_gradient_sums`; the
    state is held fixed)."""
    weighted = make_gradient_sums(model, layout, state_layout, objective).weighted
    return backend.hessian_vector_product(weighted)


def make_hessian_vectors_sums(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(theta, vectors (K, P), state, nt, x, y, mask, loss_weight, reg_weight) -> (K, P):
    this batch's share of H v for every row v of `vectors` (`make_hessian_vector_sums`, all
    rows in one call)."""
    weighted = make_gradient_sums(model, layout, state_layout, objective).weighted
    return backend.hessian_vector_products(weighted)


def _map_model(model, layout: ParameterLayout, state_layout: StateLayout, call_kwargs, fn):
    """fn(y_pred, new non-trainable values, losses) of the whole model, mapped over the beads:
    (thetas, states, nt, x) -> fn's outputs with a leading K axis."""

    def mapped(thetas, states, non_trainable, x):
        def one_bead(elems):
            theta, state = elems
            y_pred, new_values, losses = model.stateless_call(
                split_theta(layout, theta),
                merge_state(state_layout, state, non_trainable),
                x,
                return_losses=True,
                **call_kwargs,
            )
            return fn(y_pred, new_values, losses)

        return backend.map_beads(one_bead, (thetas, states))

    return mapped


def make_stacked_forward(
    model, layout: ParameterLayout, state_layout: StateLayout, training: bool = False
):
    """fn(thetas (K, P), states (K, S), nt, x) -> (predictions (K, ...), regularizer (K,)).

    Layer by layer where the model's graph can be walked (`keras_landscape.engine.stacked`: one
    batched kernel per Dense/Conv layer for all beads), else the whole model mapped over
    the beads. `training` runs the layers in train mode (BatchNorm on batch statistics).
    """
    call_kwargs = mode_kwargs(model, training)
    forward = stacked.build_stacked_forward(model, layout, state_layout, call_kwargs)
    if forward is not None:
        return forward
    return _map_model(
        model,
        layout,
        state_layout,
        call_kwargs,
        lambda y_pred, _, losses: (y_pred, _regularizer(losses)),
    )


def make_batch_moments(model, layout: ParameterLayout, state_layout: StateLayout):
    """fn(thetas (K, P), states (K, S), nt, x) -> (K, S): every BatchNorm layer's batch mean
    and (biased) batch variance on x in train mode, in the slots of its moving statistics
    (`state_layout.bn_mean` / `bn_var`); other slots are zero.

    The stacked walk records the moments where it normalises with batch statistics itself;
    otherwise (BatchNorm nested in layers the walk maps, subclassed models) the whole model
    runs in train mode with zero moving statistics, which Keras's update leaves as
    (1 - momentum) * batch moment.
    """
    call_kwargs = mode_kwargs(model, training=True)
    forward = stacked.build_stacked_forward(model, layout, state_layout, call_kwargs)
    expected = {id(layer) for layer in batch_norm_layers(model)}
    mean_index, var_index = state_layout.bn_mean, state_layout.bn_var
    zeroed = np.ones(state_layout.size, np.float32)
    zeroed[mean_index] = 0.0
    zeroed[var_index] = 0.0
    scale = np.zeros(state_layout.size, np.float32)
    scale[mean_index] = 1.0 / (1.0 - state_layout.bn_momentum)
    scale[var_index] = 1.0 / (1.0 - state_layout.bn_momentum)

    def from_update(_, new_values, __):
        updated = [new_values[p] for p in state_layout.positions]
        return ops.concatenate([ops.reshape(v, (-1,)) for v in updated]) * scale

    mapped = _map_model(model, layout, state_layout, call_kwargs, from_update)

    def moments(thetas, states, non_trainable, x):
        if forward is not None:
            forward.moments.clear()
            forward(thetas, states, non_trainable, x)
            if set(forward.moments) == expected:
                return ops.stop_gradient(forward.moments_as_state(ops.shape(thetas)[0]))
            stacked.log_once(model, "BatchNorm statistics: the whole model maps over the beads.")
        return ops.stop_gradient(mapped(thetas, states * zeroed, non_trainable, x))

    return moments


def make_stacked_batch_sums(
    model,
    layout: ParameterLayout,
    state_layout: StateLayout,
    objective: Objective,
    training: bool = False,
):
    """fn(thetas (K, P), states (K, S), nt, x, y, mask) -> (K, 5) batch sums, one call."""
    forward = make_stacked_forward(model, layout, state_layout, training)

    def stacked_sums(thetas, states, non_trainable, x, y, mask):
        predictions, regularizers = forward(thetas, states, non_trainable, x)
        # Data carries no gradient (see stacked._no_gradient: no backward pass into it).
        y, mask = ops.stop_gradient(y), ops.stop_gradient(mask)
        return backend.map_beads(
            lambda bead: _sums_of_predictions(objective, y, bead[0], mask, bead[1]),
            (predictions, regularizers),
        )

    return stacked_sums


def _per_sample_levels(objective: Objective, y, y_pred, mask):
    """(B, 2): each sample's level sum and element count (masked), the level's own
    elements (timesteps, outputs) summed within the sample."""
    values = ops.cast(objective.level(y, y_pred, objective.loss(y, y_pred)), "float32")
    weight = ops.broadcast_to(_broadcast_mask(mask, values), ops.shape(values))
    values = ops.where(weight > 0, values, 0.0)
    axes = tuple(range(1, len(values.shape)))
    if axes:
        values, weight = ops.sum(values, axis=axes), ops.sum(weight, axis=axes)
    return ops.stack([values, weight], axis=-1)


def make_stacked_sample_levels(
    model, layout: ParameterLayout, state_layout: StateLayout, objective: Objective
):
    """fn(thetas (K, P), states (K, S), nt, x, y, mask) -> ((K, B, 2) per-sample level sums
    and counts, (K,) regularizers): what a bootstrap over samples resamples."""
    forward = make_stacked_forward(model, layout, state_layout)

    def sample_levels(thetas, states, non_trainable, x, y, mask):
        predictions, regularizers = forward(thetas, states, non_trainable, x)
        y, mask = ops.stop_gradient(y), ops.stop_gradient(mask)
        per_sample = backend.map_beads(
            lambda prediction: _per_sample_levels(objective, y, prediction, mask), predictions
        )
        return per_sample, regularizers

    return sample_levels


__all__ = [
    "pad_rows",
    "padded_count",
    "SUMS",
    "split_theta",
    "make_batch_sums",
    "make_gradient_sums",
    "make_hessian_vector_sums",
    "make_hessian_vectors_sums",
    "make_stacked_gradient_sums",
    "make_stacked_sample_levels",
    "make_stacked_forward",
    "make_stacked_batch_sums",
    "make_batch_moments",
    "make_projection",
    "merge_state",
    "OptimizerSpec",
    "optimizer_spec",
    "ProjectionKernel",
]


class ProjectionKernel:
    """A compiled projection loop for one stack width and one optimizer.

    Calling it runs `make_projection`'s loop; `initial_slots` gives the optimizer state a
    projection starts from (step 0, zero moments, the learning rate).
    """

    def __init__(self, run: Callable, optimizer, width: int):
        self.run = run
        self.optimizer = optimizer
        self.width = width

    @property
    def per_bead(self) -> list[bool]:
        """For each optimizer variable (slot): whether it has one row per bead (moments),
        rather than being shared (step count, learning rate)."""
        shapes = [tuple(v.shape) for v in self.optimizer.variables]
        return [len(shape) == 2 and int(shape[0]) == self.width for shape in shapes]

    def __call__(self, *args):
        return self.run(*args)

    def initial_slots(self, learning_rate: float) -> list:
        """The optimizer's variables as tensors: their initial values, `learning_rate` for
        the learning rate's variable (the loop is shared by specs that differ in it)."""
        rate = self.optimizer.learning_rate
        return [
            ops.convert_to_tensor(np.float32(learning_rate))
            if v is rate
            else ops.convert_to_tensor(v.value)
            for v in self.optimizer.variables
        ]


def make_projection(
    model,
    layout: ParameterLayout,
    state_layout: StateLayout,
    objective: Objective,
    *,
    full_batch: bool,
    optimizer,
    width: int,
    training: bool = False,
):
    """A compiled-ready projection of a (width, P) stack of beads: `steps` optimiser steps
    inside one loop, each one `optimizer.stateless_apply` on the whole stack.

    fn(thetas, slots, active, normals, states, nt, x, y, indices, first_step)
        -> (thetas, slots, loss)

    With `training` the model runs in train mode, as Keras's fit trains it (BatchNorm on
    batch statistics); the states (K, S) then matter only for state other than BatchNorm's.

    Args:
        optimizer: a Keras optimizer built over one (width, P) variable
            (`OptimizerSpec.build`); it is only traced, never assigned.
        width: the stack's row count (padded bead count).

    Args (tensors):
        thetas: (width, P) starting points.
        slots: the optimizer's variables, in `optimizer.variables` order (iteration count,
            learning rate, moments...): `ProjectionKernel.initial_slots`, then what the
            previous call returned, so that chunks of steps continue one another exactly.
        active: (width,) 1.0 for beads still projecting, 0.0 for beads already below target
            (frozen: their parameters and their rows of every (width, P) optimizer variable
            do not move).
        normals: (width, P) unit normals of the hyperplanes (zero rows: unconstrained). The
            update's component along the normal is removed, so a bead started in the
            hyperplane through the insertion point stays in it exactly.
        x, y: the training split; indices: (S, B) int sample indices per step (ignored with
            full_batch, where every step uses all of x, y).
        first_step: int32 scalar, steps taken before this call (advances dropout seeds).
    """
    stacked_sums = make_stacked_batch_sums(model, layout, state_layout, objective, training)
    seeds = seed_positions(model) if training else []
    # Variables with one row per bead (moments, accumulators) are gated like the beads;
    # scalars (iteration count, learning rate) are shared, and all active beads have taken
    # the same number of steps (a frozen bead never resumes).
    per_bead = [tuple(v.shape) == (width, layout.size) for v in optimizer.variables]

    def with_step_seeds(non_trainable, step):
        """Seed-generator states advanced by the step, so that dropout draws new masks at
        every step, as in fit (a stateless call never advances them itself)."""
        values = list(non_trainable)
        for position in seeds:
            values[position] = values[position] + ops.cast(step, values[position].dtype)
        return values

    def total_training_loss(thetas, states, non_trainable, x, y, mask):
        values = _training_values(stacked_sums(thetas, states, non_trainable, x, y, mask), mask)
        return ops.sum(values), values  # beads are independent: d(sum)/d(theta_k) is bead k's

    vg = backend.value_and_grad(total_training_loss)

    def project(thetas, slots, active, normals, states, non_trainable, x, y, indices, first_step):
        steps = ops.shape(indices)[0]
        moving = ops.expand_dims(active, 1) > 0.5

        def body(i, carry):
            thetas, slots, _ = carry
            if full_batch:
                xb, yb = x, y
            else:
                xb, yb = ops.take(x, indices[i], axis=0), ops.take(y, indices[i], axis=0)
            mask = ops.ones((ops.shape(xb)[0],), "float32")
            nt = with_step_seeds(non_trainable, i + first_step) if seeds else non_trainable
            _, values, grads = vg(thetas, states, nt, xb, yb, mask)
            (stepped,), new_slots = optimizer.stateless_apply(list(slots), [grads], [thetas])
            # The step's component along the normal is taken off the new point (not added
            # to the old one), so an unconstrained bead lands exactly where Keras put it.
            along = ops.sum((stepped - thetas) * normals, axis=1, keepdims=True)
            stepped = stepped - along * normals
            slots = [
                ops.where(moving, new, old) if row else new
                for new, old, row in zip(new_slots, slots, per_bead)
            ]
            return ops.where(moving, stepped, thetas), slots, values

        zero = ops.zeros((ops.shape(thetas)[0],), "float32")
        return ops.fori_loop(0, steps, body, (thetas, list(slots), zero))

    return project
