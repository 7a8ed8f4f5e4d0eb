"""Landscape: a model's architecture + loss + level function + data  ->  E(theta), grad E(theta).

E(theta) is the exact mean training loss over a split (plus the model's regularisers, as
Keras's `evaluate` reports it), streamed in fixed-size padded mini-batches so one compiled
graph serves every batch. The level function (loss, error %, perplexity, a Keras metric) is
evaluated on the evaluation split in the same pass. Many thetas (points along a segment,
beads) are evaluated in one compiled call per batch.

`Landscape` implements `keras_landscape.contract.LandscapeLike`, the operations the science
and the probes use. It is a facade over parts with one job each, sharing one
`context.ModelContext` (the model, its layouts, the objective, how kernels compile):

    stacks.Stacks            how many points one compiled call takes; stacks cut into calls
                             and split across the devices' replicas
    statistics.PointStates   each point's state; BatchNorm statistics re-estimated at theta
    evaluation.Evaluator     E and the level function (evaluate, levels, per-sample levels)
    gradients.Gradients      grad E at one or many points; Hessian-vector products
    projection.ProjectionKernels  the compiled projection loops (`projection.project`
                             trains beads with them)
    stepper.Stepper          a Keras optimizer stepping one flat vector on the host
    setup                    model shapes, the check that it runs on the data, the XLA
                             decision, fresh copies of the architecture

Example:
    >>> landscape = Landscape(model, load_data("digits"), loss="sparse_categorical_crossentropy",
    ...                       level_fn="error")
    >>> theta = landscape.theta_of(model)
    >>> landscape.level(theta)          # test error in percent
    >>> value, grad = landscape.loss_and_grad(theta)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_landscape.contract import Evaluation, OptimizerSettings, ProjectionResult
from keras_landscape.data.specs import Dataset, adapt_to_model
from keras_landscape.engine import backend, kernels
from keras_landscape.engine.batches import Batches
from keras_landscape.engine.context import ModelContext
from keras_landscape.engine.evaluation import Evaluator
from keras_landscape.engine.gradients import Gradients
from keras_landscape.engine.objectives import (
    ResolvedObjective,
    check_targets,
    resolve_objective,
)
from keras_landscape.engine.optimizers import OptimizerSpec
from keras_landscape.engine.options import (
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    DEFAULT_EVAL_BATCH,
)
from keras_landscape.engine.params import ParameterLayout, non_trainable_state
from keras_landscape.engine.projection import ProjectionKernels, project
from keras_landscape.engine.setup import (
    call_on,
    clone_fresh,
    model_io_shapes,
    probe_output_shape,
    resolve_xla,
)
from keras_landscape.engine.stacks import Stacks
from keras_landscape.engine.state import StateLayout
from keras_landscape.engine.statistics import PointStates
from keras_landscape.engine.stepper import Stepper
from keras_landscape.errors import UserError

log = logging.getLogger("keras_landscape")


class Landscape:
    """E(theta) and its gradient for one architecture, loss, level function and dataset.

    Args:
        model: a built Keras model; its architecture is used, its weights are never changed.
        dataset: a `Dataset` (see `keras_landscape.data.specs.load_data`).
        loss: a Keras loss name (options as 'name:key=val'); None takes the model's compiled
            loss.
        level_fn: 'loss', 'error' (percent), 'perplexity', or a per-sample Keras metric name.
        split: where the level function is evaluated: 'train' or 'test' (default: 'test' when
            the dataset has one, as in the paper, else 'train'). The training loss E used for
            projections and gradients is always on 'train'.
        eval_batch_size: samples per compiled evaluation call (the last batch is padded).
        xla: True, False or 'auto' (default): XLA on a GPU/TPU, and on CPU for models
            without convolutions (XLA's CPU convolutions measured ~30x slower than
            TensorFlow's own kernels on a small CNN; dense and recurrent models ~3x faster).
            Where XLA cannot compile a function, it falls back once and logs it.
        fast_float32: let projections (training steps) use TF32-class matrix multiplies on
            GPUs that have them (faster, ~1e-3 relative precision). Every value that decides
            "below level u" (levels, segment checks, loss and gradient reports) is computed in
            true float32 regardless, so a verdict does not depend on the card. The setting
            is applied around this landscape's projection calls and restored after them;
            the process-wide precision is never changed.
        bn_stats: the BatchNorm statistics of points between models (beads, segment
            checks, interpolations): 'recompute' (default; at every evaluated point the
            statistics are the exact mean and variance of the train-mode activations over
            `bn_batches` x `bn_batch_size` training samples, so E is one function of theta)
            or 'interpolate' (the state is carried along the path like the weights). Models
            without BatchNorm are unaffected.
        bn_batches, bn_batch_size: the training samples statistics are recomputed on
            (the same fixed, seeded samples at every point; all of them when the training
            split is smaller).
        devices: where stacks of beads run (`backend.devices_for(StrategySpec)`: one
            device by default, or the replicas of a strategy, each projecting and
            evaluating its share of every stack).
        lockstep: probes run all their strings together (`science.lockstep`); False runs
            them one after another (same results, for comparison and debugging).

    Every point has a state vector s (see `keras_landscape.engine.state`): evaluation methods take
    `states` (K, S) beside `thetas`; None uses the landscape model's own state.
    `evaluate`, `evaluate_many`, `loss` and `loss_and_grad` evaluate at (theta, s) as given,
    as Keras's evaluate does for a model file (`recompute=True` re-estimates first).
    `levels` and `levels_and_states` are the path view every probe uses for points on or
    between paths: under 'recompute' the BatchNorm entries of s are re-estimated at each
    theta, under 'interpolate' s is used as given.
    """

    def __init__(
        self,
        model,
        dataset: Dataset,
        *,
        loss: str | None = None,
        level_fn: str = "loss",
        split: str | None = None,
        eval_batch_size: int = DEFAULT_EVAL_BATCH,
        xla: bool | str = "auto",
        fast_float32: bool = False,
        bn_stats: str = "recompute",
        bn_batches: int = DEFAULT_BN_BATCHES,
        bn_batch_size: int = DEFAULT_BN_BATCH_SIZE,
        devices: backend.Devices | None = None,
        lockstep: bool = True,
    ):
        if bn_stats not in BN_MODES:
            raise UserError(f"Unknown bn_stats {bn_stats!r}: use one of {', '.join(BN_MODES)}.")
        if int(bn_batches) < 1 or int(bn_batch_size) < 1:
            raise UserError(
                f"bn_batches and bn_batch_size must be >= 1 (got {bn_batches}, {bn_batch_size})."
            )
        self.model = model
        self.devices = devices or backend.devices_for(None)
        self.lockstep = bool(lockstep)
        self.layout = ParameterLayout.from_model(model)
        self.objective: ResolvedObjective = resolve_objective(model, loss, level_fn)
        input_shape, output_shape = model_io_shapes(model, dataset.x_train)
        if output_shape is None:
            output_shape = probe_output_shape(model, dataset)
        self.dataset = adapt_to_model(dataset, input_shape, output_shape, self.objective.loss_name)
        check_targets(self.objective, self.dataset.y_train.shape[1:], output_shape, dataset.spec)
        if self.objective.level_fn == "error" and self.dataset.task == "regression":
            raise UserError(
                f"--level-fn error counts misclassified samples, but {dataset.spec!r} has "
                "real-valued (regression) targets. Use a regression level function such as "
                "mae or loss."
            )
        if split is None:
            split = "test" if self.dataset.has_split("test") else "train"
        if split not in ("train", "test"):
            raise UserError(f"Unknown split {split!r}: use 'train' or 'test'.")
        if not self.dataset.has_split(split):
            raise UserError(
                f"The data {dataset.spec!r} has no {split!r} split; use --split train or give "
                "data with x_test/y_test."
            )
        self.split = split
        self.xla = resolve_xla(xla, model)
        # Applied around each projection call only (see projection_kernel): constructing a
        # landscape must not change the precision of other landscapes or of user code.
        self.fast_float32 = bool(fast_float32)
        self.non_trainable = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
        self.state_layout = StateLayout.from_model(model)
        # A subclassed model whose call() takes no `training` cannot run in train mode.
        train_mode = bool(kernels.mode_kwargs(model, training=True))
        if self.state_layout.has_batch_norm and not train_mode:
            if bn_stats == "recompute":
                raise UserError(
                    f"The model {getattr(model, 'name', '')!r} has BatchNorm layers, but its "
                    "call() takes no `training` argument, so they cannot run in train mode to "
                    "recompute their statistics. Add `training=None` to call() and pass it on "
                    "to the layers, or use --bn-stats interpolate."
                )
            log.warning(
                "%s: call() takes no `training` argument: beads are trained in inference mode "
                "(BatchNorm on the carried statistics).",
                getattr(model, "name", "model"),
            )
        batches = {
            name: Batches(*self.dataset.split(name), eval_batch_size)
            for name in ("train", "test")
            if self.dataset.has_split(name)
        }
        call_on(model, batches["train"].batches[0][0][:1], self.dataset.spec)
        context = ModelContext(
            model,
            self.layout,
            self.state_layout,
            self.objective,
            self.xla,
            self.devices,
            self.non_trainable,
        )
        self._stacks = Stacks(
            model,
            self.devices,
            self.layout.size,
            self.dataset.split(split)[0].shape[1:],
            max(b.batch_size for b in batches.values()),
        )
        x_train, y_train = self.dataset.split("train")
        self._states = PointStates(
            context, self._stacks, x_train, bn_stats, bn_batches, bn_batch_size, train_mode
        )
        self._evaluator = Evaluator(context, self._stacks, self._states, batches, split)
        self._gradients = Gradients(context, self._stacks, self._states, self._evaluator, batches)
        self._projection = ProjectionKernels(
            context, x_train, y_train, self.trains_in_train_mode, self.fast_float32
        )
        if self.has_batch_norm:
            log.info(
                "%s has BatchNorm: statistics of points between models are %s%s; projections "
                "train in train mode.",
                context.label,
                bn_stats,
                f" ({self.bn_batches} batches of {self.bn_batch_size} training samples)"
                if bn_stats == "recompute"
                else "d",
            )

    # ----------------------------------------------------------------- what is measured
    @property
    def size(self) -> int:
        """P, the number of trainable parameters."""
        return self.layout.size

    @property
    def level_name(self) -> str:
        """The level function: 'loss', 'error', 'perplexity' or a Keras metric name."""
        return self.objective.level_fn

    @property
    def loss_name(self) -> str:
        """The training loss E: a Keras loss name (e.g. 'mean_squared_error')."""
        return self.objective.loss_name

    @property
    def splits(self) -> tuple[str, ...]:
        """The dataset's splits: ('train',) or ('train', 'test')."""
        return tuple(s for s in ("train", "test") if self.dataset.has_split(s))

    @property
    def train_size(self) -> int:
        """The number of training samples."""
        return self._evaluator.batches["train"].n

    @property
    def bn_stats(self) -> str:
        """'recompute' or 'interpolate' (see the class)."""
        return self._states.bn_stats

    @property
    def bn_batches(self) -> int:
        return self._states.bn_batches

    @property
    def bn_batch_size(self) -> int:
        return self._states.bn_batch_size

    def describe(self) -> dict[str, Any]:
        """What this landscape measures, for the store and reports."""
        return {
            "spec": self.dataset.spec,
            "description": self.dataset.description,
            "loss": self.objective.loss_name,
            "loss_config": self.objective.loss_config,
            "level_fn": self.objective.level_fn,
            "split": self.split,
            "parameters": self.size,
            "backend": backend.name,
            "state_size": self.state_size,
            "batch_norm": self.has_batch_norm,
            "bn_stats": self.bn_stats if self.has_batch_norm else None,
            "bn_batches": self.bn_batches if self.recomputes else None,
            "bn_batch_size": self.bn_batch_size if self.recomputes else None,
            "bn_samples": self.statistics_samples if self.recomputes else None,
            "projection_mode": "train" if self.trains_in_train_mode else "inference",
        }

    # ----------------------------------------------------------------- parameters
    def theta_of(self, model) -> np.ndarray:
        """theta of `model` (which must share this landscape's parameter layout)."""
        return self.layout.theta_of(model)

    def initial_theta(self) -> np.ndarray:
        """theta of the landscape's own model."""
        return self.theta_of(self.model)

    def fresh_theta(self, seed: int) -> np.ndarray:
        """(P,) the parameters of a fresh random initialisation of this architecture."""
        return self.theta_of(clone_fresh(self.model, seed))

    # ----------------------------------------------------------------- state
    @property
    def reference_state(self) -> np.ndarray:
        """s of the landscape's own model (S,)."""
        return self._states.reference_state

    @property
    def state_size(self) -> int:
        """S, the number of float non-trainable values (BatchNorm statistics, frozen weights)."""
        return self._states.size

    @property
    def has_batch_norm(self) -> bool:
        """The model has BatchNorm layers whose statistics training updates."""
        return self._states.has_batch_norm

    @property
    def recomputes(self) -> bool:
        """Points' BatchNorm statistics are re-estimated at theta (bn_stats='recompute')."""
        return self._states.recomputes

    @property
    def trains_in_train_mode(self) -> bool:
        """Projections run the model in train mode (as Keras's fit) when it has BatchNorm
        (and its call() takes `training`)."""
        return self._states.trains_in_train_mode

    def state_of(self, model) -> np.ndarray:
        """s of `model` (its own non-trainable state, float32 (S,))."""
        return self._states.state_of(model)

    def fill_states(self, states: np.ndarray | None, k: int) -> np.ndarray:
        """(K, S) float32 states; None: the landscape model's own state for every row."""
        return self._states.fill(states, k)

    def state_or_own(self, state: np.ndarray | None) -> np.ndarray:
        """One point's state (S,): `state`, or the landscape model's own where it is None."""
        return self._states.state_or_own(state)

    def recompute_states(self, thetas: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """`states` with every BatchNorm moving mean and variance replaced by the exact mean
        and (biased) variance of that layer's train-mode activations over the fixed
        statistics samples (`bn_batches` batches of `bn_batch_size`), at each theta.

        Per-batch moments are pooled by the law of total variance, so with batches covering
        the training set the result is the population statistics of the whole set.
        """
        return self._states.recompute(thetas, states)

    @property
    def statistics_samples(self) -> int:
        """How many training samples recomputed BatchNorm statistics average over."""
        return self._states.statistics_samples

    # ----------------------------------------------------------------- evaluation
    def evaluate(
        self,
        theta: np.ndarray,
        split: str | None = None,
        state: np.ndarray | None = None,
        recompute: bool = False,
    ) -> Evaluation:
        """E(theta) and the level function on `split` (default: the evaluation split).

        Args:
            state: the point's state s (S,); None: the landscape model's own.
            recompute: re-estimate BatchNorm statistics at theta first; False (default):
                evaluate with `state` as given, as Keras's evaluate does for a model file.
        """
        return self._evaluator.evaluate(theta, split, state, recompute)

    def loss(self, theta: np.ndarray, split: str = "train", state=None) -> float:
        """E(theta): exact mean training loss (+ regularisers) over `split`, loss units."""
        return self.evaluate(theta, split, state).loss

    def level(self, theta: np.ndarray, state=None) -> float:
        """The level function at theta on the evaluation split (its own units)."""
        return self.evaluate(theta, self.split, state).level

    def evaluate_many(
        self,
        thetas: np.ndarray,
        split: str | None = None,
        states: np.ndarray | None = None,
        recompute: bool = False,
    ) -> list[Evaluation]:
        """E and level for each row of `thetas` (K, P) with its row of `states` (K, S), one
        compiled call per data batch (see `evaluate` for `states` and `recompute`)."""
        return self._evaluator.evaluate_many(thetas, split, states, recompute)

    def levels(self, thetas: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """The level function for each row of `thetas` (K, P) on the evaluation split."""
        return self.levels_and_states(thetas, states)[0]

    def levels_and_states(
        self,
        thetas: np.ndarray,
        states: np.ndarray | None = None,
        recompute: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(levels (K,), the states (K, S) they were evaluated with): the path's view of
        points, BatchNorm statistics recomputed when bn_stats='recompute' (or when
        `recompute` says so: projections re-estimate them at every trained bead)."""
        return self._evaluator.levels_and_states(thetas, states, recompute)

    def sample_levels(
        self, thetas: np.ndarray, split: str | None = None, states: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's share of the level function at every row of `thetas` (K, P), with
        `states` as given (use `levels_and_states` first for the path view): (level sums
        (K, n), element counts (K, n), offsets (K,): the regularizer where the level is the
        loss, else 0). Row k's level is finalize_levels(sums[k].sum() / counts[k].sum() +
        offsets[k]); resampling the samples gives a bootstrap (`science.bootstrap`)."""
        return self._evaluator.sample_levels(thetas, split, states)

    def finalize_levels(self, means: np.ndarray) -> np.ndarray:
        """Mean level values -> the level function's reported values (e.g. exp for
        perplexity), elementwise."""
        return self._evaluator.finalize_levels(means)

    # ----------------------------------------------------------------- gradients
    def loss_and_grad(
        self,
        theta: np.ndarray,
        split: str = "train",
        state: np.ndarray | None = None,
        recompute: bool = False,
    ) -> tuple[float, np.ndarray]:
        """E(theta) and grad E(theta) over the whole split (exact, streamed), float32 grad.

        The gradient is taken at fixed state (statistics recomputed first when `recompute`,
        see `evaluate`, and then held constant).
        """
        return self._gradients.loss_and_grad(theta, split, state, recompute)

    def losses_and_grads(
        self, thetas: np.ndarray, states: np.ndarray | None = None, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """E and grad E at every row of `thetas` (K, P) with its row of `states`, held fixed:
        exact over the split, streamed, all rows in one compiled call per batch
        ((K,) float64 losses, (K, P) float32 gradients; `loss_and_grad` for many)."""
        return self._gradients.losses_and_grads(thetas, states, split)

    def hessian_vector(
        self,
        theta: np.ndarray,
        v: np.ndarray,
        split: str = "train",
        state: np.ndarray | None = None,
    ) -> np.ndarray:
        """H v, H the Hessian of E (the training loss of `loss_and_grad`) at theta with the
        state held fixed: exact over the whole split, streamed, float64 (P,)
        (`hessian_operator` for one vector)."""
        return self.hessian_operator(theta, split, state)(np.asarray(v)[None, :])[0]

    def hessian_operator(
        self, theta: np.ndarray, split: str = "train", state: np.ndarray | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """H at theta as an operator: products(vectors (K, P)) -> (K, P) float64, H v for
        every row v, H as in `hessian_vector`. The rows are batched into few compiled calls
        (vectorised where every op has a batched form), so K products cost well under K
        single ones; theta and its state are prepared once for all calls."""
        return self._gradients.hessian_operator(theta, split, state)

    # ----------------------------------------------------------------- stacks
    @property
    def max_stack(self) -> int:
        """Most parameter vectors one evaluation call takes: a power of two whose activations
        (vectors x evaluation batch x every layer's output) fit
        `stacks.STACK_ACTIVATION_BYTES`."""
        return self._stacks.max_stack

    def max_stack_for(self, batch: int) -> int:
        """Most parameter vectors one call on `batch` samples takes (see max_stack)."""
        return self._stacks.max_stack_for(batch)

    def max_projection_stack(self, batch: int) -> int:
        """Most beads one projection call trains on `batch` samples per step (see
        `stacks.Stacks.max_projection_stack`); wider stacks are projected in parts."""
        return self._stacks.max_projection_stack(batch)

    # ----------------------------------------------------------------- moving points
    def project(
        self,
        starts: np.ndarray,
        target: float | np.ndarray,
        config,
        seed: int,
        normals: np.ndarray | None = None,
        on_check: Callable[[np.ndarray, np.ndarray], None] | None = None,
        states: np.ndarray | None = None,
    ) -> ProjectionResult:
        """Train the rows of `starts` until their level is <= target: see
        `keras_landscape.engine.projection.project` (the science calls it through here)."""
        return project(
            self, starts, target, config, seed, normals=normals, on_check=on_check, states=states
        )

    def stepper(self, config: OptimizerSettings) -> Stepper:
        """Keras's optimizer named by `config` (a ProjectionConfig: optimizer, learning_rate,
        beta_1, beta_2, epsilon, optimizer_options), built as projections build theirs, to
        step one flat (P,) vector: `stepper.step(x, grad) -> x` (`engine.stepper`).

        Raises:
            UserError: Keras does not know the optimizer or rejects its options.
        """
        return Stepper(config, self.size)

    def training_tensors(self):
        """The training split as tensors (x, y), converted once (projections gather from it)."""
        return self._projection.training_tensors()

    def projection_kernel(
        self, full_batch: bool, optimizer: OptimizerSpec, width: int
    ) -> kernels.ProjectionKernel:
        """The compiled projection loop (see `kernels.make_projection`) for a batching mode,
        an optimizer and a stack width, with this landscape's projection precision (see
        `projection.ProjectionKernels`)."""
        return self._projection.kernel(full_batch, optimizer, width)


__all__ = ["Evaluation", "Landscape", "clone_fresh", "resolve_xla"]
