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

import numpy as np
from keras import ops

from keras_landscape import backend, engine, stacked
from keras_landscape.data import Dataset, adapt_to_model
from keras_landscape.errors import UserError
from keras_landscape.objectives import ResolvedObjective, resolve_objective
from keras_landscape.params import ParameterLayout, non_trainable_state

log = logging.getLogger("keras_landscape")

DEFAULT_EVAL_BATCH = 1024
# Activation memory one stacked evaluation call may use (thetas x batch x layer outputs);
# more thetas than fit are evaluated in several calls.
STACK_ACTIVATION_BYTES = 1 << 30


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


def padded_count(k: int) -> int:
    """The next power of two >= k: stacks of beads are padded to it so that a compiled
    function sees few shapes (each new shape is a new trace and, under XLA, a compilation)."""
    return 1 << max(0, int(k) - 1).bit_length()


def pad_rows(rows: np.ndarray, count: int | None = None) -> np.ndarray:
    """rows padded with copies of its first row up to padded_count(count or len(rows))."""
    target = padded_count(count if count is not None else len(rows))
    if len(rows) >= target:
        return rows
    return np.concatenate([rows, np.repeat(rows[:1], target - len(rows), axis=0)])


def resolve_xla(xla: bool | str, model) -> bool:
    """The 'auto' XLA rule (see Landscape); logged so a user can see which was chosen."""
    if xla != "auto":
        return bool(xla)
    if backend.accelerator_present():
        return True
    has_conv = any("Conv" in type(layer).__name__ for layer in _all_layers(model))
    if has_conv:
        log.info("XLA off for %s on CPU: it has convolutions (slower under XLA on CPU).", model.name)
    return not has_conv


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


class Landscape:
    """E(theta) and its gradient for one architecture, loss, level function and dataset.

    Args:
        model: a built Keras model; its architecture is used, its weights are never changed.
        dataset: a `Dataset` (see `keras_landscape.data.load_data`).
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
            true float32 regardless, so a verdict does not depend on the card.
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
    ):
        self.model = model
        self.layout = ParameterLayout.from_model(model)
        self.objective: ResolvedObjective = resolve_objective(model, loss, level_fn)
        input_shape, output_shape = _model_io_shapes(model, dataset.x_train)
        if output_shape is None:
            output_shape = self._probe_output_shape(dataset, input_shape)
        self.dataset = adapt_to_model(dataset, input_shape, output_shape, self.objective.loss_name)
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
        self.fast_float32 = bool(fast_float32)
        backend.set_fast_float32(self.fast_float32)
        self.non_trainable = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
        self._batches = {
            name: _Batches(*self.dataset.split(name), eval_batch_size)
            for name in ("train", "test")
            if self.dataset.has_split(name)
        }
        self._check_runs()
        label = getattr(model, "name", "model")
        self._sums = backend.compile_function(
            engine.make_batch_sums(model, self.layout, self.objective.objective),
            xla=self.xla,
            label=f"{label} evaluation",
        )
        self._stacked_sums = backend.compile_function(
            engine.make_stacked_batch_sums(model, self.layout, self.objective.objective),
            xla=self.xla,
            label=f"{label} batched evaluation",
        )
        self._gradient_sums = backend.compile_function(
            engine.make_gradient_sums(model, self.layout, self.objective.objective),
            xla=self.xla,
            label=f"{label} gradient",
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
                **engine.inference_kwargs(self.model),
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

    def initial_theta(self) -> np.ndarray:
        """theta of the landscape's own model."""
        return self.theta_of(self.model)

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

    def _split_sums(self, theta: np.ndarray, split: str) -> np.ndarray:
        theta_t = ops.convert_to_tensor(np.asarray(theta, np.float32))
        total = np.zeros(len(engine.SUMS), np.float64)
        with backend.exact_float32():
            for x, y, mask in self._batches[split].batches:
                total += np.asarray(self._sums(theta_t, self.non_trainable, x, y, mask), np.float64)
        return total

    def evaluate(self, theta: np.ndarray, split: str | None = None) -> Evaluation:
        """E(theta) and the level function on `split` (default: the evaluation split)."""
        split = split or self.split
        return Evaluation(*self._finalize(self._split_sums(theta, split), split))

    def loss(self, theta: np.ndarray, split: str = "train") -> float:
        """E(theta): exact mean training loss (+ regularisers) over `split`, loss units."""
        return self.evaluate(theta, split).loss

    def level(self, theta: np.ndarray) -> float:
        """The level function at theta on the evaluation split (its own units)."""
        return self.evaluate(theta, self.split).level

    def evaluate_many(self, thetas: np.ndarray, split: str | None = None) -> list[Evaluation]:
        """E and level for each row of `thetas` (K, P), one compiled call per data batch."""
        split = split or self.split
        thetas = np.asarray(thetas, np.float32)
        if thetas.ndim != 2 or thetas.shape[1] != self.size:
            raise ValueError(f"thetas must have shape (K, {self.size}), got {thetas.shape}")
        results = []
        for start in range(0, len(thetas), self.max_stack):
            chunk = thetas[start : start + self.max_stack]
            stacked = ops.convert_to_tensor(pad_rows(chunk))
            total = np.zeros((padded_count(len(chunk)), len(engine.SUMS)), np.float64)
            with backend.exact_float32():
                for x, y, mask in self._batches[split].batches:
                    total += np.asarray(
                        self._stacked_sums(stacked, self.non_trainable, x, y, mask), np.float64
                    )
            results.extend(Evaluation(*self._finalize(row, split)) for row in total[: len(chunk)])
        return results

    @property
    def max_stack(self) -> int:
        """Most parameter vectors one evaluation call takes: a power of two whose activations
        (vectors x evaluation batch x every layer's output) fit STACK_ACTIVATION_BYTES."""
        if not hasattr(self, "_max_stack"):
            x = self.dataset.split(self.split)[0]
            batch = max(b.batch_size for b in self._batches.values())
            per_theta = 4 * batch * stacked.activation_elements(
                self.model, tuple(x.shape[1:])
            )
            fits = max(1, STACK_ACTIVATION_BYTES // max(1, per_theta))
            self._max_stack = 1 << (int(fits).bit_length() - 1)
        return self._max_stack

    def levels(self, thetas: np.ndarray) -> np.ndarray:
        """The level function for each row of `thetas` (K, P) on the evaluation split."""
        return np.array([e.level for e in self.evaluate_many(thetas)])

    def loss_and_grad(self, theta: np.ndarray, split: str = "train") -> tuple[float, np.ndarray]:
        """E(theta) and grad E(theta) over the whole split (exact, streamed), float32 grad."""
        batches = self._batches[split]
        theta_t = ops.convert_to_tensor(np.asarray(theta, np.float32))
        sums = np.zeros(len(engine.SUMS), np.float64)
        grad = np.zeros(self.size, np.float64)
        loss_weight = ops.convert_to_tensor(np.float32(1.0 / self._loss_elements(split)))
        reg_weight = ops.convert_to_tensor(np.float32(1.0 / batches.n))
        with backend.exact_float32():
            for x, y, mask in batches.batches:
                s, g = self._gradient_sums(
                    theta_t, self.non_trainable, x, y, mask, loss_weight, reg_weight
                )
                sums += np.asarray(s, np.float64)
                grad += np.asarray(g, np.float64)
        return self._finalize(sums, split)[0], grad.astype(np.float32)

    def _loss_elements(self, split: str) -> float:
        """Total loss elements on a split (samples x per-sample elements, e.g. timesteps)."""
        key = f"_elements_{split}"
        if not hasattr(self, key):
            x, y, mask = self._batches[split].batches[0]
            theta = ops.convert_to_tensor(self.initial_theta())
            sums = np.asarray(self._sums(theta, self.non_trainable, x, y, mask))
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

    def projection_kernel(self, full_batch: bool):
        """The compiled projection loop (see `engine.make_projection`), one per batching mode."""
        cache = self.__dict__.setdefault("_projection_kernels", {})
        if full_batch not in cache:
            cache[full_batch] = backend.compile_function(
                engine.make_projection(
                    self.model, self.layout, self.objective.objective, full_batch=full_batch
                ),
                xla=self.xla,
                label=f"{getattr(self.model, 'name', 'model')} projection",
            )
        return cache[full_batch]

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
        }
