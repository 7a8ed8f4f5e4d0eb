"""Levels and losses: E(theta) and the level function at one point or a stack of points.

Each split is cut into equal padded batches (`engine.batches`); a batch kernel returns sums
(`kernels.SUMS`: loss sum, level sum, their element counts, regularizer x batch), which the
host adds up in float64 and turns into exact means (`finalize`). Many points go through one
compiled call per batch (`kernels.make_stacked_batch_sums`), in stacks of at most
`Stacks.max_stack`. Everything here runs in true float32 (`backend.exact_float32`).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_landscape.contract import Evaluation
from keras_landscape.engine import backend, kernels
from keras_landscape.engine.batches import Batches
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.stacks import Stacks
from keras_landscape.engine.statistics import PointStates


class Evaluator:
    """E and the level function of points with their states (see `Landscape`).

    Args:
        context: the model, its layouts and objective.
        stacks: sizes and runs stacks of points.
        states: the states points are evaluated with.
        batches: each split's batches, by name ('train', 'test' where the data has it).
        split: the evaluation split (where the level function is evaluated by default).
    """

    def __init__(
        self,
        context: ModelContext,
        stacks: Stacks,
        states: PointStates,
        batches: dict[str, Batches],
        split: str,
    ):
        self.context, self.stacks, self.states = context, stacks, states
        self.batches, self.split = batches, split
        objective = context.objective.objective
        model, layout, state_layout = context.model, context.layout, context.state_layout
        self.sums = context.compile(
            kernels.make_batch_sums(model, layout, state_layout, objective), "evaluation"
        )
        self.stacked_sums = context.compile(
            kernels.make_stacked_batch_sums(model, layout, state_layout, objective),
            "batched evaluation",
        )
        self._elements: dict[str, float] = {}

    def finalize(self, sums: np.ndarray, split: str) -> tuple[float, float]:
        """(E, level) from a split's summed `kernels.SUMS`."""
        n = self.batches[split].n
        loss_sum, level_sum, loss_count, level_count, reg_sum = sums
        regularizer = reg_sum / n
        loss = loss_sum / loss_count + regularizer
        mean_level = level_sum / level_count
        objective = self.context.objective
        if objective.objective.level_includes_regularizer:
            mean_level += regularizer
        return float(loss), objective.finalize_level(mean_level)

    def evaluate(
        self, theta: np.ndarray, split: str | None = None, state=None, recompute: bool = False
    ) -> Evaluation:
        """E(theta) and the level function on `split` (see `Landscape.evaluate`)."""
        split = split or self.split
        theta = np.asarray(theta, np.float32)
        state_t = ops.convert_to_tensor(self.states.state_row(theta, state, recompute))
        theta_t = ops.convert_to_tensor(theta)
        total = np.zeros(len(kernels.SUMS), np.float64)
        non_trainable = self.context.non_trainable
        with backend.exact_float32():
            for x, y, mask in self.batches[split].batches:
                sums = self.sums(theta_t, state_t, non_trainable, x, y, mask)
                total += np.asarray(sums, np.float64)
        return Evaluation(*self.finalize(total, split))

    def evaluate_many(
        self,
        thetas: np.ndarray,
        split: str | None = None,
        states=None,
        recompute: bool = False,
    ) -> list[Evaluation]:
        """E and level for each row of `thetas` (K, P) with its row of `states` (K, S), one
        compiled call per data batch and stack."""
        split = split or self.split
        thetas = np.asarray(thetas, np.float32)
        size = self.context.size
        if thetas.ndim != 2 or thetas.shape[1] != size:
            raise ValueError(f"thetas must have shape (K, {size}), got {thetas.shape}")
        states = self.states.evaluation_states(thetas, states, recompute)
        results = []
        non_trainable = self.context.non_trainable
        for chunk, stacked_thetas, stacked_states in self.stacks.chunks(
            thetas, states, self.stacks.max_stack
        ):
            k = len(thetas[chunk])
            total = np.zeros((k, len(kernels.SUMS)), np.float64)
            with backend.exact_float32():
                for x, y, mask in self.batches[split].batches:
                    args = (stacked_thetas, stacked_states, non_trainable, x, y, mask)
                    total += self.stacks.run(self.stacked_sums, args, k)
            results.extend(Evaluation(*self.finalize(row, split)) for row in total)
        return results

    def levels_and_states(
        self, thetas: np.ndarray, states=None, recompute: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(levels (K,), the states (K, S) they were evaluated with): the path's view of
        points, BatchNorm statistics recomputed when bn_stats='recompute' (or when
        `recompute` says so)."""
        thetas = np.asarray(thetas, np.float32)
        recompute = self.states.recomputes if recompute is None else recompute
        used = self.states.evaluation_states(thetas, states, recompute)
        levels = np.array([e.level for e in self.evaluate_many(thetas, None, used, False)])
        return levels, used

    def sample_levels(
        self, thetas: np.ndarray, split: str | None = None, states=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's share of the level function at every row of `thetas` (see
        `Landscape.sample_levels`)."""
        split = split or self.split
        thetas = np.asarray(thetas, np.float32)
        states = self.states.fill(states, len(thetas))
        batches = self.batches[split]
        kernel = self.context.kernel(kernels.make_stacked_sample_levels, "per-sample levels")
        non_trainable = self.context.non_trainable
        sums, counts, regularizers = [], [], []
        for chunk, thetas_t, states_t in self.stacks.chunks(thetas, states, self.stacks.max_stack):
            k = len(thetas[chunk])
            parts, regularizer = [], None
            with backend.exact_float32():
                for x, y, mask in batches.batches:
                    args = (thetas_t, states_t, non_trainable, x, y, mask)
                    values, regularizer = self.stacks.run(kernel, args, k)
                    parts.append(values[:, : int(np.sum(mask))])
            joined = np.concatenate(parts, axis=1)
            sums.append(joined[..., 0])
            counts.append(joined[..., 1])
            regularizers.append(regularizer)
        offsets = np.concatenate(regularizers)
        if not self.context.objective.objective.level_includes_regularizer:
            offsets = np.zeros_like(offsets)
        return np.concatenate(sums), np.concatenate(counts), offsets

    def finalize_levels(self, means: np.ndarray) -> np.ndarray:
        """Mean level values -> the level function's reported values (e.g. exp for
        perplexity), elementwise."""
        return np.vectorize(self.context.objective.finalize_level, otypes=[np.float64])(means)

    def loss_elements(self, split: str) -> float:
        """Total loss elements on a split (samples x per-sample elements, e.g. timesteps)."""
        if split not in self._elements:
            context = self.context
            x, y, mask = self.batches[split].batches[0]
            theta = ops.convert_to_tensor(context.layout.theta_of(context.model))
            state = ops.convert_to_tensor(self.states.reference_state)
            sums = np.asarray(self.sums(theta, state, context.non_trainable, x, y, mask))
            per_sample = float(sums[2]) / float(np.sum(np.asarray(mask)))
            self._elements[split] = per_sample * self.batches[split].n
        return self._elements[split]
