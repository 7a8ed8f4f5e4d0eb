"""Backend-neutral kernels: the energy of a parameter vector on one batch of data.

Written once with `keras.ops` and `model.stateless_call`; `keras_landscape.backend` supplies
compilation, gradients and mapping over beads; `keras_landscape.stacked` evaluates a model at
many parameter vectors at once. The user's model is never mutated: weights go in as tensors.

Per batch a kernel returns *sums*, not means, so that the exact mean over a whole evaluation
set can be assembled from mini-batches of any size (the last one padded and masked):

    [loss_sum, level_sum, loss_count, level_count, regularizer * batch_size]
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from keras import ops

from keras_landscape import backend, stacked
from keras_landscape.params import ParameterLayout

SUMS = ("loss_sum", "level_sum", "loss_count", "level_count", "regularizer_sum")


@dataclass(frozen=True)
class Objective:
    """A per-element loss and a per-element level function.

    Attributes:
        loss: Keras Loss with reduction "none": (y_true, y_pred) -> per-element losses.
        level: (y_true, y_pred, per_element_loss) -> per-element level values.
        level_includes_regularizer: the level is the loss itself (E includes model.losses).
        level_transform: host-side map from the mean level to the reported value
            (e.g. exp for perplexity); identity when None.
    """

    loss: Callable
    level: Callable
    level_includes_regularizer: bool
    level_transform: Callable | None = None


def split_theta(layout: ParameterLayout, theta):
    """theta (P,) tensor -> list of variable-shaped tensors, in layout order."""
    return [
        ops.reshape(theta[o : o + n], s)
        for o, n, s in zip(layout.offsets, layout.sizes, layout.shapes)
    ]


def _broadcast_mask(mask, values):
    mask = ops.cast(mask, values.dtype)
    extra = len(values.shape) - 1
    return ops.reshape(mask, (-1,) + (1,) * extra) if extra else mask


def _masked_sum_and_count(values, mask):
    values = ops.cast(values, "float32")
    m = ops.broadcast_to(_broadcast_mask(mask, values), ops.shape(values))
    # where() rather than multiply: a padded row with inf/NaN loss must not poison the sum.
    return ops.sum(ops.where(m > 0, values, 0.0)), ops.sum(m)


def inference_kwargs(model) -> dict:
    """{'training': False} when the model's call takes it (subclassed calls may not)."""
    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": False} if takes else {}


def _sums_of_predictions(objective: Objective, y, y_pred, mask, regularizer):
    """The five sums of one batch, given the model's predictions and its summed losses."""
    per_element = objective.loss(y, y_pred)
    loss_sum, loss_count = _masked_sum_and_count(per_element, mask)
    level_sum, level_count = _masked_sum_and_count(objective.level(y, y_pred, per_element), mask)
    return ops.stack([loss_sum, level_sum, loss_count, level_count, regularizer * ops.sum(mask)])


def _regularizer(losses):
    return ops.cast(sum(losses) if losses else 0.0, "float32")


def make_batch_sums(model, layout: ParameterLayout, objective: Objective):
    """fn(theta, non_trainable, x, y, mask) -> the five sums of one batch (float32)."""
    call_kwargs = inference_kwargs(model)

    def batch_sums(theta, non_trainable, x, y, mask):
        y_pred, _, losses = model.stateless_call(
            split_theta(layout, theta), non_trainable, x, return_losses=True, **call_kwargs
        )
        return _sums_of_predictions(objective, y, y_pred, mask, _regularizer(losses))

    return batch_sums


def _training_values(sums, mask):
    """(..., 5) batch sums -> what a Keras train step minimises: mean loss + regularizer."""
    return sums[..., 0] / ops.maximum(sums[..., 2], 1.0) + sums[..., 4] / ops.maximum(
        ops.sum(mask), 1.0
    )


def make_gradient_sums(model, layout: ParameterLayout, objective: Objective):
    """fn(theta, nt, x, y, mask, loss_weight, reg_weight) -> (sums, d(weighted sums)/dtheta).

    The weights turn batch sums into a share of the full-set mean: loss_weight = 1 / total
    loss elements, reg_weight = 1 / total samples.
    """
    batch_sums = make_batch_sums(model, layout, objective)

    def weighted(theta, non_trainable, x, y, mask, loss_weight, reg_weight):
        sums = batch_sums(theta, non_trainable, x, y, mask)
        return sums[0] * loss_weight + sums[4] * reg_weight, sums

    vg = backend.value_and_grad(weighted)

    def gradient_sums(theta, non_trainable, x, y, mask, loss_weight, reg_weight):
        _, sums, grad = vg(theta, non_trainable, x, y, mask, loss_weight, reg_weight)
        return sums, grad

    return gradient_sums


def make_stacked_forward(model, layout: ParameterLayout):
    """fn(thetas (K, P), nt, x) -> (predictions with a leading K axis, regularizer (K,)).

    Layer by layer where the model's graph can be walked (`keras_landscape.stacked`: one
    batched kernel per Dense/Conv layer for all beads), else the whole model mapped over
    the beads.
    """
    call_kwargs = inference_kwargs(model)
    forward = stacked.build_stacked_forward(model, layout, call_kwargs)
    if forward is not None:
        return forward

    def mapped(thetas, non_trainable, x):
        def one_bead(theta):
            y_pred, _, losses = model.stateless_call(
                split_theta(layout, theta), non_trainable, x, return_losses=True, **call_kwargs
            )
            return y_pred, _regularizer(losses)

        return backend.map_beads(one_bead, thetas)

    return mapped


def make_stacked_batch_sums(model, layout: ParameterLayout, objective: Objective):
    """fn(thetas (K, P), nt, x, y, mask) -> (K, 5) batch sums, one compiled call."""
    forward = make_stacked_forward(model, layout)

    def stacked_sums(thetas, non_trainable, x, y, mask):
        predictions, regularizers = forward(thetas, non_trainable, x)
        # Data carries no gradient (see stacked._no_gradient: no backward pass into it).
        y, mask = ops.stop_gradient(y), ops.stop_gradient(mask)
        return backend.map_beads(
            lambda bead: _sums_of_predictions(objective, y, bead[0], mask, bead[1]),
            (predictions, regularizers),
        )

    return stacked_sums


__all__ = [
    "Objective",
    "SUMS",
    "split_theta",
    "make_batch_sums",
    "make_gradient_sums",
    "make_stacked_forward",
    "make_stacked_batch_sums",
    "make_projection",
]


def make_projection(model, layout: ParameterLayout, objective: Objective, *, full_batch: bool):
    """A compiled-ready projection of K beads: `steps` optimiser steps inside one loop.

    fn(thetas, m, v, t, active, normals, nt, x, y, indices, hyper) -> (thetas, m, v, t, loss)

    Args (tensors):
        thetas: (K, P) starting points; m, v: (K, P) Adam moments; t: (K,) step counters.
        active: (K,) 1.0 for beads still projecting, 0.0 for beads already below target
            (frozen: their parameters and optimiser state do not move).
        normals: (K, P) unit normals of the hyperplanes (zero rows: unconstrained). The
            update's component along the normal is removed, so a bead started in the
            hyperplane through the insertion point stays in it exactly.
        x, y: the training split; indices: (S, B) int sample indices per step (ignored with
            full_batch, where every step uses all of x, y).
        hyper: [learning_rate, beta_1, beta_2, epsilon, use_adam (1.0) or plain SGD (0.0)].
    """
    stacked_sums = make_stacked_batch_sums(model, layout, objective)

    def total_training_loss(thetas, non_trainable, x, y, mask):
        values = _training_values(stacked_sums(thetas, non_trainable, x, y, mask), mask)
        return ops.sum(values), values  # beads are independent: d(sum)/d(theta_k) is bead k's

    vg = backend.value_and_grad(total_training_loss)

    def project(thetas, m, v, t, active, normals, non_trainable, x, y, indices, hyper):
        lr, beta_1, beta_2, epsilon, use_adam = (hyper[i] for i in range(5))
        steps = ops.shape(indices)[0]
        gate = ops.expand_dims(active, 1)

        def body(i, state):
            thetas, m, v, t, _ = state
            if full_batch:
                xb, yb = x, y
            else:
                xb, yb = ops.take(x, indices[i], axis=0), ops.take(y, indices[i], axis=0)
            mask = ops.ones((ops.shape(xb)[0],), "float32")
            _, values, grads = vg(thetas, non_trainable, xb, yb, mask)
            t_new = t + active
            m_new = beta_1 * m + (1.0 - beta_1) * grads
            v_new = beta_2 * v + (1.0 - beta_2) * ops.square(grads)
            tt = ops.expand_dims(ops.maximum(t_new, 1.0), 1)
            m_hat = m_new / (1.0 - ops.power(beta_1, tt))
            v_hat = v_new / (1.0 - ops.power(beta_2, tt))
            adam = m_hat / (ops.sqrt(v_hat) + epsilon)
            update = lr * (use_adam * adam + (1.0 - use_adam) * grads)
            update = update - ops.sum(update * normals, axis=1, keepdims=True) * normals
            return (
                thetas - gate * update,
                gate * m_new + (1.0 - gate) * m,
                gate * v_new + (1.0 - gate) * v,
                t_new,
                values,
            )

        zero = ops.zeros((ops.shape(thetas)[0],), "float32")
        return ops.fori_loop(0, steps, body, (thetas, m, v, t, zero))

    return project
