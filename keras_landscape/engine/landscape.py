"""Landscape: a model's architecture + loss + level function + data  ->  E(theta), grad E(theta).

E(theta) is the exact mean training loss over a split (plus the model's regularisers, as
Keras's `evaluate` reports it), streamed in fixed-size padded mini-batches so one compiled
graph serves every batch. The level function (loss, error %, perplexity, a Keras metric) is
evaluated on the evaluation split in the same pass. Many thetas (points along a segment,
beads) are evaluated in one compiled call per batch.

Example:
    >>> landscape = Landscape(model, load_data("digits"), loss="sparse_categorical_crossentropy",
    ...                       level_fn="error")
    >>> theta = landscape.theta_of(model)
    >>> landscape.level(theta)          # test error in percent
    >>> value, grad = landscape.loss_and_grad(theta)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_landscape.data.specs import Dataset, adapt_to_model
from keras_landscape.engine import backend, kernels, stacked
from keras_landscape.engine.kernels import pad_rows
from keras_landscape.engine.objectives import ResolvedObjective, resolve_objective
from keras_landscape.engine.options import (
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    DEFAULT_EVAL_BATCH,
)
from keras_landscape.engine.params import ParameterLayout, non_trainable_state
from keras_landscape.engine.projection import project
from keras_landscape.engine.state import StateLayout, pooled_moments
from keras_landscape.errors import UserError

log = logging.getLogger("keras_landscape")

# Recomputed BatchNorm statistics use a fixed, seeded choice of training samples, the same
# at every point, so that E stays one function of theta.
_BN_SAMPLE_SEED = 20170424
# Activation memory one stacked evaluation call may use (thetas x batch x layer outputs);
# more thetas than fit are evaluated in several calls.
STACK_ACTIVATION_BYTES = 1 << 30
# Parameter-sized tensors of one projection stack (beads, moments, gradients).
STACK_PARAMETER_BYTES = 1 << 30


@dataclass(frozen=True)
class Evaluation:
    """E and the level function at one theta (per-element means, loss units)."""

    loss: float
    level: float


class _Batches:
    """A split cut into equal padded batches (tensors made once), with a 0/1 sample mask."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        n = len(x)
        self.n = n
        self.batch_size = max(1, min(batch_size, n))
        self.batches = []
        for start in range(0, n, self.batch_size):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            pad = self.batch_size - len(xb)
            mask = np.concatenate([np.ones(len(xb), np.float32), np.zeros(pad, np.float32)])
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
                yb = np.concatenate([yb, np.repeat(yb[-1:], pad, axis=0)])
            self.batches.append(
                (ops.convert_to_tensor(xb), ops.convert_to_tensor(yb), ops.convert_to_tensor(mask))
            )


def _model_io_shapes(model, x_sample: np.ndarray) -> tuple[tuple, tuple]:
    """Per-sample input and output shapes (no batch axis) of a model."""
    inputs = getattr(model, "inputs", None)
    try:
        input_shape = tuple(inputs[0].shape[1:]) if inputs else tuple(x_sample.shape[1:])
    except (AttributeError, ValueError):
        input_shape = tuple(x_sample.shape[1:])
    outputs = None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        pass
    if outputs:
        if len(outputs) != 1:
            raise UserError(
                f"The model has {len(outputs)} outputs; keras-landscape probes single-output "
                "models. Wrap the model so that it has one output."
            )
        return input_shape, tuple(outputs[0].shape[1:])
    return input_shape, None


def clone_fresh(model, seed: int):
    """The same architecture with a fresh random initialisation (the model is not touched).

    Sequential and Functional models are cloned from their config; subclassed models are
    rebuilt from `get_config`/`from_config` and built on the original input shape.
    """
    keras.utils.set_random_seed(seed)
    try:
        clone = keras.models.clone_model(model)
    except Exception:
        try:
            clone = model.__class__.from_config(model.get_config())
        except Exception as error:
            raise UserError(
                f"Cannot create a fresh copy of {model.name!r} to train a partner: "
                f"{type(error).__name__}: {error}. Give two or more trained models instead, "
                "or implement get_config/from_config on the model class."
            ) from None
    if not clone.built:
        shape = getattr(model, "_build_shapes_dict", None) or {}
        input_shape = next(iter(shape.values()), None)
        if input_shape is None:
            raise UserError(f"Cannot build a fresh copy of {model.name!r}: unknown input shape.")
        clone.build(input_shape)
    fresh = ParameterLayout.from_model(clone)
    ParameterLayout.from_model(model).check_compatible(fresh, ("original", "clone"))
    return clone


def resolve_xla(xla: bool | str, model) -> bool:
    """The 'auto' XLA rule (see Landscape); logged so a user can see which was chosen."""
    if xla != "auto":
        return bool(xla)
    if backend.accelerator_present():
        return True
    has_conv = any("Conv" in type(layer).__name__ for layer in _all_layers(model))
    if has_conv:
        log.info(
            "XLA off for %s on CPU: it has convolutions (slower under XLA on CPU).", model.name
        )
    return not has_conv


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


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
        input_shape, output_shape = _model_io_shapes(model, dataset.x_train)
        if output_shape is None:
            output_shape = self._probe_output_shape(dataset, input_shape)
        self.dataset = adapt_to_model(dataset, input_shape, output_shape, self.objective.loss_name)
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
        self.reference_state = self.state_layout.state_of(model)
        # A subclassed model whose call() takes no `training` cannot run in train mode.
        self._train_mode = bool(kernels.mode_kwargs(model, training=True))
        if self.state_layout.has_batch_norm and not self._train_mode:
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
        self.bn_stats = bn_stats
        self.bn_batches, self.bn_batch_size = int(bn_batches), int(bn_batch_size)
        self._batches = {
            name: _Batches(*self.dataset.split(name), eval_batch_size)
            for name in ("train", "test")
            if self.dataset.has_split(name)
        }
        self._check_runs()
        label = getattr(model, "name", "model")
        objective = self.objective.objective
        self._sums = backend.compile_function(
            kernels.make_batch_sums(model, self.layout, self.state_layout, objective),
            xla=self.xla,
            label=f"{label} evaluation",
        )
        self._stacked_sums = backend.compile_function(
            kernels.make_stacked_batch_sums(model, self.layout, self.state_layout, objective),
            xla=self.xla,
            label=f"{label} batched evaluation",
        )
        self._gradient_sums = backend.compile_function(
            kernels.make_gradient_sums(model, self.layout, self.state_layout, objective),
            xla=self.xla,
            label=f"{label} gradient",
        )
        if self.has_batch_norm:
            log.info(
                "%s has BatchNorm: statistics of points between models are %s%s; projections "
                "train in train mode.",
                label,
                bn_stats,
                f" ({self.bn_batches} batches of {self.bn_batch_size} training samples)"
                if bn_stats == "recompute"
                else "d",
            )

    # ----------------------------------------------------------------- set-up checks
    def _probe_output_shape(self, dataset: Dataset, input_shape: tuple) -> tuple:
        """Output shape of a model without symbolic outputs (subclassed), by one real call."""
        del input_shape
        y = self._call_on(ops.convert_to_tensor(dataset.x_train[:1]), dataset.spec)
        return tuple(y.shape[1:])

    def _call_on(self, x, spec: str):
        try:
            y, _ = self.model.stateless_call(
                [v.value for v in self.model.trainable_variables],
                [v.value for v in self.model.non_trainable_variables],
                x,
                **kernels.inference_kwargs(self.model),
            )
            return y
        except Exception as error:  # the model's own message says what it expected
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise UserError(
                f"The model cannot run on the data {spec!r} (samples of shape "
                f"{tuple(x.shape[1:])}): {first[:300]}. Check that the data matches the "
                "model's input."
            ) from None

    def _check_runs(self) -> None:
        x, _, _ = self._batches["train"].batches[0]
        self._call_on(x[:1], self.dataset.spec)

    # ----------------------------------------------------------------- parameters
    @property
    def size(self) -> int:
        """P, the number of trainable parameters."""
        return self.layout.size

    def theta_of(self, model) -> np.ndarray:
        """theta of `model` (which must share this landscape's parameter layout)."""
        return self.layout.theta_of(model)

    def fresh_theta(self, seed: int) -> np.ndarray:
        """(P,) the parameters of a fresh random initialisation of this architecture."""
        return self.theta_of(clone_fresh(self.model, seed))

    def project(
        self,
        starts: np.ndarray,
        target: float | np.ndarray,
        config,
        seed: int,
        normals=None,
        on_check=None,
        states=None,
    ):
        """Train the rows of `starts` until their level is <= target: see
        `keras_landscape.engine.projection.project` (the science calls it through here)."""
        return project(
            self, starts, target, config, seed, normals=normals, on_check=on_check, states=states
        )

    def initial_theta(self) -> np.ndarray:
        """theta of the landscape's own model."""
        return self.theta_of(self.model)

    # ----------------------------------------------------------------- state
    @property
    def state_size(self) -> int:
        """S, the number of float non-trainable values (BatchNorm statistics, frozen weights)."""
        return self.state_layout.size

    @property
    def has_batch_norm(self) -> bool:
        """The model has BatchNorm layers whose statistics training updates."""
        return self.state_layout.has_batch_norm

    @property
    def recomputes(self) -> bool:
        """Points' BatchNorm statistics are re-estimated at theta (bn_stats='recompute')."""
        return self.has_batch_norm and self.bn_stats == "recompute"

    @property
    def trains_in_train_mode(self) -> bool:
        """Projections run the model in train mode (as Keras's fit) when it has BatchNorm
        (and its call() takes `training`)."""
        return self.has_batch_norm and self._train_mode

    def state_of(self, model) -> np.ndarray:
        """s of `model` (its own non-trainable state, float32 (S,))."""
        other = StateLayout.from_model(model)
        if other.shapes != self.state_layout.shapes:
            raise UserError(
                f"Model {getattr(model, 'name', '')!r} has non-trainable variables of shapes "
                f"{list(other.shapes)}, the landscape's model {list(self.state_layout.shapes)}: "
                "the models do not share an architecture (BatchNorm layers or frozen layers "
                "differ)."
            )
        return other.state_of(model)

    def fill_states(self, states, k: int) -> np.ndarray:
        """(K, S) float32 states; None: the landscape model's own state for every row."""
        if states is None:
            return np.repeat(self.reference_state[None, :], k, axis=0)
        return np.asarray(states, np.float32).reshape(k, self.state_size)

    def state_or_own(self, state) -> np.ndarray:
        """One point's state (S,): `state`, or the landscape model's own where it is None."""
        return self.fill_states(None if state is None else np.asarray(state)[None, :], 1)[0]

    def recompute_states(self, thetas: np.ndarray, states=None) -> np.ndarray:
        """`states` with every BatchNorm moving mean and variance replaced by the exact mean
        and (biased) variance of that layer's train-mode activations over the fixed
        statistics samples (`bn_batches` batches of `bn_batch_size`), at each theta.

        Per-batch moments are pooled by the law of total variance, so with batches covering
        the training set the result is the population statistics of the whole set.
        """
        thetas = np.asarray(thetas, np.float32)
        states = np.array(self.fill_states(states, len(thetas)), copy=True)
        if not self.has_batch_norm or len(thetas) == 0:
            return states
        kernel = self._moments_kernel()
        mean_index, var_index = self.state_layout.bn_mean, self.state_layout.bn_var
        stacks = self._stack_chunks(thetas, states, self.max_stack_for(self.bn_batch_size))
        for chunk, stacked_thetas, stacked_states in stacks:
            k = len(thetas[chunk])
            with backend.exact_float32():  # statistics decide levels: no TF32
                moments = np.stack(
                    [
                        self._run_stack(
                            kernel, (stacked_thetas, stacked_states, self.non_trainable, x), k
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
            self._moments = backend.compile_function(
                kernels.make_batch_moments(self.model, self.layout, self.state_layout),
                xla=self.xla,
                label=f"{getattr(self.model, 'name', 'model')} BatchNorm statistics",
            )
        return self._moments

    def _statistics_batches(self) -> list:
        """The fixed training batches statistics are recomputed on (x only, equal sizes)."""
        if not hasattr(self, "_bn_inputs"):
            x = self.dataset.split("train")[0]
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

    def _evaluation_states(self, thetas, states, recompute: bool) -> np.ndarray:
        states = self.fill_states(states, len(thetas))
        return self.recompute_states(thetas, states) if recompute else states

    # ----------------------------------------------------------------- evaluation
    def _finalize(self, sums: np.ndarray, split: str) -> tuple[float, float]:
        n = self._batches[split].n
        loss_sum, level_sum, loss_count, level_count, reg_sum = sums
        regularizer = reg_sum / n
        loss = loss_sum / loss_count + regularizer
        mean_level = level_sum / level_count
        if self.objective.objective.level_includes_regularizer:
            mean_level += regularizer
        return float(loss), self.objective.finalize_level(mean_level)

    def evaluate(
        self, theta: np.ndarray, split: str | None = None, state=None, recompute: bool = False
    ) -> Evaluation:
        """E(theta) and the level function on `split` (default: the evaluation split).

        Args:
            state: the point's state s (S,); None: the landscape model's own.
            recompute: re-estimate BatchNorm statistics at theta first; False (default):
                evaluate with `state` as given, as Keras's evaluate does for a model file.
        """
        split = split or self.split
        theta = np.asarray(theta, np.float32)
        state_t = ops.convert_to_tensor(self._state_row(theta, state, recompute))
        theta_t = ops.convert_to_tensor(theta)
        total = np.zeros(len(kernels.SUMS), np.float64)
        with backend.exact_float32():
            for x, y, mask in self._batches[split].batches:
                sums = self._sums(theta_t, state_t, self.non_trainable, x, y, mask)
                total += np.asarray(sums, np.float64)
        return Evaluation(*self._finalize(total, split))

    def _state_row(self, theta, state, recompute) -> np.ndarray:
        """The (S,) state one theta is evaluated with (see `evaluate`)."""
        row = None if state is None else np.asarray(state, np.float32)[None, :]
        return self._evaluation_states(theta[None, :], row, recompute)[0]

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
        states=None,
        recompute: bool = False,
    ) -> list[Evaluation]:
        """E and level for each row of `thetas` (K, P) with its row of `states` (K, S), one
        compiled call per data batch (see `evaluate` for `states` and `recompute`)."""
        split = split or self.split
        thetas = np.asarray(thetas, np.float32)
        if thetas.ndim != 2 or thetas.shape[1] != self.size:
            raise ValueError(f"thetas must have shape (K, {self.size}), got {thetas.shape}")
        states = self._evaluation_states(thetas, states, recompute)
        results = []
        for chunk, stacked_thetas, stacked_states in self._stack_chunks(
            thetas, states, self.max_stack
        ):
            k = len(thetas[chunk])
            total = np.zeros((k, len(kernels.SUMS)), np.float64)
            with backend.exact_float32():
                for x, y, mask in self._batches[split].batches:
                    args = (stacked_thetas, stacked_states, self.non_trainable, x, y, mask)
                    total += self._run_stack(self._stacked_sums, args, k)
            results.extend(Evaluation(*self._finalize(row, split)) for row in total)
        return results

    def _stack_chunks(self, thetas: np.ndarray, states: np.ndarray, per_replica: int):
        """(rows, stacked thetas, stacked states) for each chunk of at most `per_replica`
        rows per replica: padded for the devices and split across their replicas (see
        `_run_stack`)."""
        step = per_replica * self.devices.count
        for start in range(0, len(thetas), step):
            rows = slice(start, start + step)
            width = self.devices.width(len(thetas[rows]))
            yield (
                rows,
                *(
                    self.devices.put(ops.convert_to_tensor(pad_rows(a[rows], width=width)))
                    for a in (thetas, states)
                ),
            )

    def _run_stack(self, kernel, args, k: int):
        """The first k rows of a stack kernel's result (each output of a tuple), float64,
        each replica on its share."""
        out = self.devices.call(kernel, args, k)
        if isinstance(out, (tuple, list)):
            return tuple(np.asarray(self.devices.fetch(o), np.float64)[:k] for o in out)
        return np.asarray(self.devices.fetch(out), np.float64)[:k]

    @property
    def max_stack(self) -> int:
        """Most parameter vectors one evaluation call takes: a power of two whose activations
        (vectors x evaluation batch x every layer's output) fit STACK_ACTIVATION_BYTES."""
        return self.max_stack_for(max(b.batch_size for b in self._batches.values()))

    def max_stack_for(self, batch: int) -> int:
        """Most parameter vectors one call on `batch` samples takes (see max_stack)."""
        cache = self.__dict__.setdefault("_max_stacks", {})
        if batch not in cache:
            x = self.dataset.split(self.split)[0]
            per_theta = 4 * batch * stacked.activation_elements(self.model, tuple(x.shape[1:]))
            fits = max(1, STACK_ACTIVATION_BYTES // max(1, per_theta))
            cache[batch] = 1 << (int(fits).bit_length() - 1)
        return cache[batch]

    def max_projection_stack(self, batch: int) -> int:
        """Most beads one projection call trains on `batch` samples per step: the evaluation
        budget for activations (see max_stack), and the stack's parameter-sized tensors
        (beads, normals, gradients, optimizer moments: ~8 copies) within
        STACK_PARAMETER_BYTES, per replica. Wider stacks are projected in parts
        (`engine.projection`)."""
        fits = max(1, STACK_PARAMETER_BYTES // max(1, 32 * self.size))
        per_replica = min(self.max_stack_for(batch), 1 << (int(fits).bit_length() - 1))
        return per_replica * self.devices.count

    def levels(self, thetas: np.ndarray, states=None) -> np.ndarray:
        """The level function for each row of `thetas` (K, P) on the evaluation split."""
        return self.levels_and_states(thetas, states)[0]

    def levels_and_states(
        self, thetas: np.ndarray, states=None, recompute: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(levels (K,), the states (K, S) they were evaluated with): the path's view of
        points, BatchNorm statistics recomputed when bn_stats='recompute' (or when
        `recompute` says so: projections re-estimate them at every trained bead)."""
        thetas = np.asarray(thetas, np.float32)
        recompute = self.recomputes if recompute is None else recompute
        used = self._evaluation_states(thetas, states, recompute)
        levels = np.array([e.level for e in self.evaluate_many(thetas, None, used, False)])
        return levels, used

    def loss_and_grad(
        self, theta: np.ndarray, split: str = "train", state=None, recompute: bool = False
    ) -> tuple[float, np.ndarray]:
        """E(theta) and grad E(theta) over the whole split (exact, streamed), float32 grad.

        The gradient is taken at fixed state (statistics recomputed first when `recompute`,
        see `evaluate`, and then held constant).
        """
        batches = self._batches[split]
        theta = np.asarray(theta, np.float32)
        state_t = ops.convert_to_tensor(self._state_row(theta, state, recompute))
        theta_t = ops.convert_to_tensor(theta)
        sums = np.zeros(len(kernels.SUMS), np.float64)
        grad = np.zeros(self.size, np.float64)
        loss_weight = ops.convert_to_tensor(np.float32(1.0 / self._loss_elements(split)))
        reg_weight = ops.convert_to_tensor(np.float32(1.0 / batches.n))
        with backend.exact_float32():
            for x, y, mask in batches.batches:
                s, g = self._gradient_sums(
                    theta_t, state_t, self.non_trainable, x, y, mask, loss_weight, reg_weight
                )
                sums += np.asarray(s, np.float64)
                grad += np.asarray(g, np.float64)
        return self._finalize(sums, split)[0], grad.astype(np.float32)

    def _lazy_kernel(self, make, what: str):
        """The compiled kernel `make(model, layout, state_layout, objective)`, made on first
        use (kernels only some probes need)."""
        cache = self.__dict__.setdefault("_lazy_kernels", {})
        if make not in cache:
            cache[make] = backend.compile_function(
                make(self.model, self.layout, self.state_layout, self.objective.objective),
                xla=self.xla,
                label=f"{getattr(self.model, 'name', 'model')} {what}",
            )
        return cache[make]

    def sample_levels(
        self, thetas: np.ndarray, split: str | None = None, states=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's share of the level function at every row of `thetas` (K, P), with
        `states` as given (use `levels_and_states` first for the path view): (level sums
        (K, n), element counts (K, n), offsets (K,): the regularizer where the level is the
        loss, else 0). Row k's level is finalize_levels(sums[k].sum() / counts[k].sum() +
        offsets[k]); resampling the samples gives a bootstrap (`science.bootstrap`)."""
        split = split or self.split
        thetas = np.asarray(thetas, np.float32)
        states = self.fill_states(states, len(thetas))
        batches = self._batches[split]
        kernel = self._lazy_kernel(kernels.make_stacked_sample_levels, "per-sample levels")
        sums, counts, regularizers = [], [], []
        for chunk, thetas_t, states_t in self._stack_chunks(thetas, states, self.max_stack):
            k = len(thetas[chunk])
            parts, regularizer = [], None
            with backend.exact_float32():
                for x, y, mask in batches.batches:
                    args = (thetas_t, states_t, self.non_trainable, x, y, mask)
                    values, regularizer = self._run_stack(kernel, args, k)
                    parts.append(values[:, : int(np.sum(mask))])
            joined = np.concatenate(parts, axis=1)
            sums.append(joined[..., 0])
            counts.append(joined[..., 1])
            regularizers.append(regularizer)
        offsets = np.concatenate(regularizers)
        if not self.objective.objective.level_includes_regularizer:
            offsets = np.zeros_like(offsets)
        return np.concatenate(sums), np.concatenate(counts), offsets

    def finalize_levels(self, means: np.ndarray) -> np.ndarray:
        """Mean level values -> the level function's reported values (e.g. exp for
        perplexity), elementwise."""
        return np.vectorize(self.objective.finalize_level, otypes=[np.float64])(means)

    def losses_and_grads(
        self, thetas: np.ndarray, states=None, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """E and grad E at every row of `thetas` (K, P) with its row of `states`, held fixed:
        exact over the split, streamed, all rows in one compiled call per batch
        ((K,) float64 losses, (K, P) float32 gradients; `loss_and_grad` for many)."""
        thetas = np.asarray(thetas, np.float32)
        states = self.fill_states(states, len(thetas))
        batches = self._batches[split]
        kernel = self._lazy_kernel(kernels.make_stacked_gradient_sums, "batched gradient")
        weights = (
            ops.convert_to_tensor(np.float32(1.0 / self._loss_elements(split))),
            ops.convert_to_tensor(np.float32(1.0 / batches.n)),
        )
        losses, grads = [], []
        for chunk, thetas_t, states_t in self._stack_chunks(thetas, states, self.max_stack):
            k = len(thetas[chunk])
            sums = np.zeros((k, len(kernels.SUMS)), np.float64)
            grad = np.zeros((k, self.size), np.float64)
            with backend.exact_float32():
                for x, y, mask in batches.batches:
                    args = (thetas_t, states_t, self.non_trainable, x, y, mask, *weights)
                    s, g = self._run_stack(kernel, args, k)
                    sums += s
                    grad += g
            losses.extend(self._finalize(row, split)[0] for row in sums)
            grads.append(grad.astype(np.float32))
        return np.array(losses), np.concatenate(grads)

    def hessian_vector(
        self, theta: np.ndarray, v: np.ndarray, split: str = "train", state=None
    ) -> np.ndarray:
        """H v, H the Hessian of E (the training loss of `loss_and_grad`) at theta with the
        state held fixed: exact over the whole split, streamed, float64 (P,)."""
        batches = self._batches[split]
        theta_t = ops.convert_to_tensor(np.asarray(theta, np.float32))
        v_t = ops.convert_to_tensor(np.asarray(v, np.float32))
        state_t = ops.convert_to_tensor(self._state_row(np.asarray(theta), state, False))
        loss_weight = ops.convert_to_tensor(np.float32(1.0 / self._loss_elements(split)))
        reg_weight = ops.convert_to_tensor(np.float32(1.0 / batches.n))
        kernel = self._lazy_kernel(kernels.make_hessian_vector_sums, "Hessian-vector product")
        total = np.zeros(self.size, np.float64)
        with backend.exact_float32():
            for x, y, mask in batches.batches:
                args = (state_t, self.non_trainable, x, y, mask, loss_weight, reg_weight)
                total += np.asarray(kernel(theta_t, v_t, *args), np.float64)
        return total

    def _loss_elements(self, split: str) -> float:
        """Total loss elements on a split (samples x per-sample elements, e.g. timesteps)."""
        key = f"_elements_{split}"
        if not hasattr(self, key):
            x, y, mask = self._batches[split].batches[0]
            theta = ops.convert_to_tensor(self.initial_theta())
            state = ops.convert_to_tensor(self.reference_state)
            sums = np.asarray(self._sums(theta, state, self.non_trainable, x, y, mask))
            per_sample = float(sums[2]) / float(np.sum(np.asarray(mask)))
            setattr(self, key, per_sample * self._batches[split].n)
        return getattr(self, key)

    # ----------------------------------------------------------------- projection kernels
    def training_tensors(self):
        """The training split as tensors (x, y), converted once (projections gather from it)."""
        if not hasattr(self, "_train_tensors"):
            x, y = self.dataset.split("train")
            self._train_tensors = (ops.convert_to_tensor(x), ops.convert_to_tensor(y))
        return self._train_tensors

    @property
    def train_size(self) -> int:
        return self._batches["train"].n

    def projection_kernel(
        self, full_batch: bool, optimizer: kernels.OptimizerSpec, width: int
    ) -> kernels.ProjectionKernel:
        """The compiled projection loop (see `kernels.make_projection`) for a batching mode,
        an optimizer and a stack width, with this landscape's projection precision.

        One per width: the optimizer is built over one (width, P) variable, and a function
        traced for one width keeps static shapes (a tf.function relaxing them to (None, P)
        after seeing two widths could not match them to the optimizer's variables).
        """
        cache = self.__dict__.setdefault("_projection_kernels", {})
        key = (full_batch, optimizer.key, width)
        if key not in cache:
            with self.devices.scope():  # under a strategy: one copy per replica
                keras_optimizer = optimizer.build(width, self.size)
            compiled = backend.compile_function(
                kernels.make_projection(
                    self.model,
                    self.layout,
                    self.state_layout,
                    self.objective.objective,
                    full_batch=full_batch,
                    optimizer=keras_optimizer,
                    width=width,
                    training=self.trains_in_train_mode,
                ),
                xla=self.xla,
                label=f"{getattr(self.model, 'name', 'model')} projection",
            )

            def run(*args):
                # TF32 only inside this call and only when asked for; the previous setting
                # (other landscapes', the user's) is restored after it.
                with backend.float32_precision(fast=self.fast_float32):
                    return compiled(*args)

            cache[key] = kernels.ProjectionKernel(run, keras_optimizer, width)
        return cache[key]

    def describe(self) -> dict:
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
