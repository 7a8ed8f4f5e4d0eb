"""Derivatives of E: its gradient at one point or a stack of points, and Hessian-vector
products, exact over a whole split (streamed batch by batch, summed in float64 on the host),
each point's state held fixed, in true float32.

Each batch's contribution is weighted inside the kernel (1 / the split's loss elements for
the loss, 1 / its samples for the regularizers), so the sums are the gradient of the mean.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_landscape.engine import backend, kernels
from keras_landscape.engine.batches import Batches
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.evaluation import Evaluator
from keras_landscape.engine.stacks import Stacks
from keras_landscape.engine.statistics import PointStates


class Gradients:
    """grad E and H v (see `Landscape.loss_and_grad`, `losses_and_grads`,
    `hessian_vector`)."""

    def __init__(
        self,
        context: ModelContext,
        stacks: Stacks,
        states: PointStates,
        evaluator: Evaluator,
        batches: dict[str, Batches],
    ):
        self.context, self.stacks, self.states = context, stacks, states
        self.evaluator, self.batches = evaluator, batches
        self.gradient_sums = context.compile(
            kernels.make_gradient_sums(
                context.model, context.layout, context.state_layout, context.objective.objective
            ),
            "gradient",
        )

    def _weights(self, split: str) -> tuple:
        """(loss weight, regularizer weight) tensors of a split: 1 / its loss elements and
        1 / its samples."""
        return (
            ops.convert_to_tensor(np.float32(1.0 / self.evaluator.loss_elements(split))),
            ops.convert_to_tensor(np.float32(1.0 / self.batches[split].n)),
        )

    def loss_and_grad(
        self, theta: np.ndarray, split: str = "train", state=None, recompute: bool = False
    ) -> tuple[float, np.ndarray]:
        """E(theta) and grad E(theta) over the whole split (exact, streamed), float32 grad,
        at fixed state (statistics recomputed first when `recompute`)."""
        batches = self.batches[split]
        theta = np.asarray(theta, np.float32)
        state_t = ops.convert_to_tensor(self.states.state_row(theta, state, recompute))
        theta_t = ops.convert_to_tensor(theta)
        sums = np.zeros(len(kernels.SUMS), np.float64)
        grad = np.zeros(self.context.size, np.float64)
        loss_weight, reg_weight = self._weights(split)
        non_trainable = self.context.non_trainable
        with backend.exact_float32():
            for x, y, mask in batches.batches:
                s, g = self.gradient_sums(
                    theta_t, state_t, non_trainable, x, y, mask, loss_weight, reg_weight
                )
                sums += np.asarray(s, np.float64)
                grad += np.asarray(g, np.float64)
        return self.evaluator.finalize(sums, split)[0], grad.astype(np.float32)

    def losses_and_grads(
        self, thetas: np.ndarray, states=None, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """E and grad E at every row of `thetas` (K, P) with its row of `states`, held fixed
        ((K,) float64 losses, (K, P) float32 gradients)."""
        thetas = np.asarray(thetas, np.float32)
        states = self.states.fill(states, len(thetas))
        batches = self.batches[split]
        kernel = self.context.kernel(kernels.make_stacked_gradient_sums, "batched gradient")
        weights = self._weights(split)
        non_trainable = self.context.non_trainable
        losses, grads = [], []
        for chunk, thetas_t, states_t in self.stacks.chunks(thetas, states, self.stacks.max_stack):
            k = len(thetas[chunk])
            sums = np.zeros((k, len(kernels.SUMS)), np.float64)
            grad = np.zeros((k, self.context.size), np.float64)
            with backend.exact_float32():
                for x, y, mask in batches.batches:
                    args = (thetas_t, states_t, non_trainable, x, y, mask, *weights)
                    s, g = self.stacks.run(kernel, args, k)
                    sums += s
                    grad += g
            losses.extend(self.evaluator.finalize(row, split)[0] for row in sums)
            grads.append(grad.astype(np.float32))
        return np.array(losses), np.concatenate(grads)

    def hessian_vector(
        self, theta: np.ndarray, v: np.ndarray, split: str = "train", state=None
    ) -> np.ndarray:
        """H v, H the Hessian of E at theta with the state held fixed: exact over the whole
        split, streamed, float64 (P,)."""
        batches = self.batches[split]
        theta_t = ops.convert_to_tensor(np.asarray(theta, np.float32))
        v_t = ops.convert_to_tensor(np.asarray(v, np.float32))
        state_t = ops.convert_to_tensor(self.states.state_row(np.asarray(theta), state, False))
        loss_weight, reg_weight = self._weights(split)
        kernel = self.context.kernel(kernels.make_hessian_vector_sums, "Hessian-vector product")
        total = np.zeros(self.context.size, np.float64)
        non_trainable = self.context.non_trainable
        with backend.exact_float32():
            for x, y, mask in batches.batches:
                args = (state_t, non_trainable, x, y, mask, loss_weight, reg_weight)
                total += np.asarray(kernel(theta_t, v_t, *args), np.float64)
        return total
