"""Each point's state s (see `engine.state`) and its BatchNorm statistics.

Every point a landscape evaluates carries a state vector beside its theta: the model's own
where none is given, interpolated along paths, and, for models with BatchNorm under
bn_stats='recompute', with the moving statistics re-estimated at theta: the exact mean and
(biased) variance of each layer's train-mode activations over fixed, seeded training
samples, the same at every point, so that E stays one function of theta.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_landscape.engine import backend, kernels
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.stacks import Stacks
from keras_landscape.engine.state import StateLayout, pooled_moments
from keras_landscape.errors import UserError

# Recomputed BatchNorm statistics use a fixed, seeded choice of training samples, the same
# at every point, so that E stays one function of theta.
_BN_SAMPLE_SEED = 20170424


class PointStates:
    """The states points are evaluated with, and BatchNorm statistics re-estimated at theta.

    Args:
        context: the model and its layouts.
        stacks: sizes and runs stacks of points.
        x_train: the training inputs (statistics are estimated on a fixed sample of them).
        bn_stats: 'recompute' or 'interpolate' (see `Landscape`).
        bn_batches, bn_batch_size: the statistics samples.
        train_mode: the model's call() takes `training` (it can run in train mode).
    """

    def __init__(
        self,
        context: ModelContext,
        stacks: Stacks,
        x_train: np.ndarray,
        bn_stats: str,
        bn_batches: int,
        bn_batch_size: int,
        train_mode: bool,
    ):
        self.context, self.stacks, self.x_train = context, stacks, x_train
        self.layout: StateLayout = context.state_layout
        self.reference_state = self.layout.state_of(context.model)
        self.bn_stats = bn_stats
        self.bn_batches, self.bn_batch_size = int(bn_batches), int(bn_batch_size)
        self.train_mode = bool(train_mode)

    @property
    def size(self) -> int:
        """S, the number of float non-trainable values (BatchNorm statistics, frozen weights)."""
        return self.layout.size

    @property
    def has_batch_norm(self) -> bool:
        """The model has BatchNorm layers whose statistics training updates."""
        return self.layout.has_batch_norm

    @property
    def recomputes(self) -> bool:
        """Points' BatchNorm statistics are re-estimated at theta (bn_stats='recompute')."""
        return self.has_batch_norm and self.bn_stats == "recompute"

    @property
    def trains_in_train_mode(self) -> bool:
        """Projections run the model in train mode (as Keras's fit) when it has BatchNorm
        (and its call() takes `training`)."""
        return self.has_batch_norm and self.train_mode

    def state_of(self, model) -> np.ndarray:
        """s of `model` (its own non-trainable state, float32 (S,))."""
        other = StateLayout.from_model(model)
        if other.shapes != self.layout.shapes:
            raise UserError(
                f"Model {getattr(model, 'name', '')!r} has non-trainable variables of shapes "
                f"{list(other.shapes)}, the landscape's model {list(self.layout.shapes)}: "
                "the models do not share an architecture (BatchNorm layers or frozen layers "
                "differ)."
            )
        return other.state_of(model)

    def fill(self, states, k: int) -> np.ndarray:
        """(K, S) float32 states; None: the landscape model's own state for every row."""
        if states is None:
            return np.repeat(self.reference_state[None, :], k, axis=0)
        return np.asarray(states, np.float32).reshape(k, self.size)

    def state_or_own(self, state) -> np.ndarray:
        """One point's state (S,): `state`, or the landscape model's own where it is None."""
        return self.fill(None if state is None else np.asarray(state)[None, :], 1)[0]

    def recompute(self, thetas: np.ndarray, states=None) -> np.ndarray:
        """`states` with every BatchNorm moving mean and variance replaced by the exact mean
        and (biased) variance of that layer's train-mode activations over the fixed
        statistics samples (`bn_batches` batches of `bn_batch_size`), at each theta.

        Per-batch moments are pooled by the law of total variance, so with batches covering
        the training set the result is the population statistics of the whole set.
        """
        thetas = np.asarray(thetas, np.float32)
        states = np.array(self.fill(states, len(thetas)), copy=True)
        if not self.has_batch_norm or len(thetas) == 0:
            return states
        kernel = self._moments_kernel()
        mean_index, var_index = self.layout.bn_mean, self.layout.bn_var
        stacks = self.stacks.chunks(thetas, states, self.stacks.max_stack_for(self.bn_batch_size))
        non_trainable = self.context.non_trainable
        for chunk, stacked_thetas, stacked_states in stacks:
            k = len(thetas[chunk])
            with backend.exact_float32():  # statistics decide levels: no TF32
                moments = np.stack(
                    [
                        self.stacks.run(
                            kernel, (stacked_thetas, stacked_states, non_trainable, x), k
                        )
                        for x in self._statistics_batches()
                    ]
                )
            mean, variance = pooled_moments(moments[..., mean_index], moments[..., var_index])
            states[chunk, mean_index] = mean
            states[chunk, var_index] = np.maximum(variance, 0.0)
        return states

    def _moments_kernel(self):
        if not hasattr(self, "_moments"):
            context = self.context
            self._moments = context.compile(
                kernels.make_batch_moments(context.model, context.layout, context.state_layout),
                "BatchNorm statistics",
            )
        return self._moments

    def _statistics_batches(self) -> list:
        """The fixed training batches statistics are recomputed on (x only, equal sizes)."""
        if not hasattr(self, "_bn_inputs"):
            x = self.x_train
            n = len(x)
            size = min(self.bn_batch_size, n)
            count = max(1, min(self.bn_batches, n // size))
            order = np.random.default_rng(_BN_SAMPLE_SEED).permutation(n)[: count * size]
            self._bn_inputs = [
                ops.convert_to_tensor(x[order[i * size : (i + 1) * size]]) for i in range(count)
            ]
        return self._bn_inputs

    @property
    def statistics_samples(self) -> int:
        """How many training samples recomputed BatchNorm statistics average over."""
        batches = self._statistics_batches()
        return len(batches) * int(batches[0].shape[0])

    def evaluation_states(self, thetas, states, recompute: bool) -> np.ndarray:
        """(K, S) the states rows of `thetas` are evaluated with: `states` filled, and
        re-estimated first when `recompute`."""
        states = self.fill(states, len(thetas))
        return self.recompute(thetas, states) if recompute else states

    def state_row(self, theta, state, recompute) -> np.ndarray:
        """The (S,) state one theta is evaluated with (see `Landscape.evaluate`)."""
        row = None if state is None else np.asarray(state, np.float32)[None, :]
        return self.evaluation_states(theta[None, :], row, recompute)[0]
