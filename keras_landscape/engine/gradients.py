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
from keras_landscape.engine.backend.devices import power_of_two_parts
from keras_landscape.engine.batches import Batches
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.evaluation import Evaluator
from keras_landscape.engine.stacks import Stacks
from keras_landscape.engine.statistics import PointStates


class Gradients:
    """grad E and H v (see `Landscape.loss_and_grad`, `losses_and_grads`,
    `hessian_operator`)."""

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

    def hessian_operator(self, theta: np.ndarray, split: str = "train", state=None):
        """products(vectors (K, P)) -> (K, P) float64: H v for every row v, H the Hessian of
        E at theta with the state held fixed, exact over the whole split (streamed).

        Theta, its state and the split's weights are made tensors once, here, for every call
        of the operator. The rows go in parts of a power of two each (`power_of_two_parts`;
        at most a quarter of `Stacks.max_stack`, as a product holds about four sets of
        activations per row), one compiled call per part and batch; a part of one row uses
        the single-vector kernel."""
        size = self.context.size
        theta = np.asarray(theta, np.float32)
        theta_t = ops.convert_to_tensor(theta)
        state_t = ops.convert_to_tensor(self.states.state_row(theta, state, False))
        weights = self._weights(split)
        single = self.context.kernel(kernels.make_hessian_vector_sums, "Hessian-vector product")
        # XLA compiles each width of the vectorised products anew, a second or more on a CPU
        # for no faster run there (measured: docs/performance.md); a plain graph is traced
        # once for every width. Accelerators keep XLA.
        many = self.context.kernel(
            kernels.make_hessian_vectors_sums,
            "Hessian-vector products",
            xla=backend.accelerator_present(),
        )
        cap = max(1, self.stacks.max_stack // 4)
        data = [
            (state_t, self.context.non_trainable, x, y, mask, *weights)
            for x, y, mask in self.batches[split].batches
        ]

        def products(vectors: np.ndarray) -> np.ndarray:
            vectors = np.asarray(vectors, np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != size:
                raise ValueError(f"H takes (K, {size}) vectors, got shape {vectors.shape}")
            total = np.zeros(vectors.shape, np.float64)
            with backend.exact_float32():
                for rows in power_of_two_parts(len(vectors), cap):
                    part = vectors[rows]
                    kernel = single if len(part) == 1 else many
                    part_t = ops.convert_to_tensor(part[0] if len(part) == 1 else part)
                    for args in data:
                        total[rows] += np.asarray(kernel(theta_t, part_t, *args), np.float64)
            return total

        return products
