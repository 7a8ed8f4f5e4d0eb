"""The contract: what the science and the probes may ask of a landscape.

`LandscapeLike` is every operation `keras_landscape.science` and the probes in `plugins/`
use: levels and losses of stacks of points, gradients and Hessian-vector products, the
states (BatchNorm statistics) points are evaluated with, projections onto a sublevel set,
and a few facts about what is measured. The engine's `Landscape` implements it; science and
probes use nothing else of it (tests/test_contract.py reads their source to check). Their
`landscape` parameters are annotated with it.

This module is part of the base layer: it imports the standard library, typing and numpy
only, so the science can be read, type-checked and tested without Keras.

Shapes: P is the number of trainable parameters (`size`), S the length of a point's state
vector (`state_size`: float non-trainable values, BatchNorm statistics; 0 for most models),
K the number of points in a stack. A `thetas` argument is (K, P) and a `theta` (P,), float32
(other floats are converted); `states` is (K, S) float32, or None: the landscape model's own
state for every row. Levels are in the level function's units (loss, error %, perplexity,
a metric), losses in the loss's units. Every value that decides "at or below a level"
(levels, segment checks, projections' level checks, losses and gradients reported) is
computed in true float32 (no TF32-class matrix multiplies), whatever the card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """E and the level function at one theta (per-element means, loss units)."""

    loss: float
    level: float


@dataclass
class ProjectionResult:
    """Where the beads of a projection ended.

    Attributes:
        thetas: (K, P) final parameters.
        levels: (K,) level function at the final parameters (true float32).
        steps: (K,) optimiser steps each bead took.
        reached: (K,) whether each bead is at or below the target.
        states: (K, S) the state each level was evaluated with (the starts' states, with
            BatchNorm statistics re-estimated at the final theta for models with BatchNorm).
    """

    thetas: np.ndarray
    levels: np.ndarray
    steps: np.ndarray
    reached: np.ndarray
    states: np.ndarray | None = None

    def rows(self, rows: slice) -> ProjectionResult:
        """The result of some of the beads (a lockstep stack's share of one search)."""
        return ProjectionResult(
            self.thetas[rows],
            self.levels[rows],
            self.steps[rows],
            self.reached[rows],
            None if self.states is None else self.states[rows],
        )

    @staticmethod
    def concatenate(parts: list[ProjectionResult]) -> ProjectionResult:
        return ProjectionResult(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS)
        )


_FIELDS = ("thetas", "levels", "steps", "reached", "states")


@runtime_checkable
class ParameterLayoutLike(Protocol):
    """Where each trainable variable lives inside theta (`engine.params.ParameterLayout`):
    variable i is theta[offsets[i] : offsets[i] + prod(shapes[i])], C order."""

    paths: tuple[str, ...]  # the variables' paths (`variable.path`), in theta order
    shapes: tuple[tuple[int, ...], ...]  # their shapes
    offsets: tuple[int, ...]  # where each starts inside theta

    def bias_mask(self) -> np.ndarray:
        """(P,) bool: True on the entries of bias variables (a path ending in 'bias')."""
        ...


class OptimizerSettings(Protocol):
    """The optimizer fields of an `engine.options.ProjectionConfig` (which has them all)."""

    optimizer: str  # a Keras optimizer name ('adam', 'sgd', ...)
    learning_rate: float
    beta_1: float
    beta_2: float
    epsilon: float
    optimizer_options: str  # more constructor arguments, 'key=value,...' or JSON


class ProjectionSettings(OptimizerSettings, Protocol):
    """What a projection reads of an `engine.options.ProjectionConfig`."""

    max_steps: int  # step budget per bead
    check_every: int  # optimiser steps between level checks
    batch_size: int | None  # samples per step; None: full batch

    def validate(self) -> None:
        """Raise `errors.UserError` for an unusable setting."""
        ...


@runtime_checkable
class Stepper(Protocol):
    """A Keras optimizer stepping one flat vector; its state (step count, moments) is kept
    from one call to the next."""

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """x (P,) moved one optimizer step along -grad (P,): the new x (P,) float32."""
        ...


@runtime_checkable
class LandscapeLike(Protocol):
    """E(theta), the level function and their derivatives for one architecture, loss, level
    function and dataset: every operation the science and the probes use.

    E is the exact mean training loss over a split (plus the model's regularisers, as
    Keras's evaluate reports it); the level function is evaluated on the evaluation split
    (`split`). Evaluation methods take a state beside each theta: `evaluate`,
    `evaluate_many`, `sample_levels` and the gradients use it as given (`recompute=True`
    re-estimates BatchNorm statistics first); `levels` and `levels_and_states` are the path
    view of points on or between paths: BatchNorm statistics re-estimated at each theta
    when `recomputes`, else the state as given.
    """

    # ------------------------------------------------------------ what is measured
    @property
    def size(self) -> int:
        """P, the number of trainable parameters."""
        ...

    @property
    def state_size(self) -> int:
        """S, the length of a point's state vector (0 for models without float state)."""
        ...

    @property
    def train_size(self) -> int:
        """The number of training samples (a projection batch at least this is full)."""
        ...

    @property
    def split(self) -> str:
        """Where the level function is evaluated: 'train' or 'test'."""
        ...

    @property
    def splits(self) -> tuple[str, ...]:
        """The dataset's splits: ('train',) or ('train', 'test')."""
        ...

    @property
    def level_name(self) -> str:
        """The level function: 'loss', 'error', 'perplexity' or a Keras metric name."""
        ...

    @property
    def loss_name(self) -> str:
        """The training loss E: a Keras loss name (e.g. 'mean_squared_error')."""
        ...

    @property
    def recomputes(self) -> bool:
        """Points' BatchNorm statistics are re-estimated at theta (bn_stats='recompute' on a
        model with BatchNorm)."""
        ...

    @property
    def lockstep(self) -> bool:
        """Probes run all their searches together (`science.lockstep.drive`); False: one
        after another (same results)."""
        ...

    @property
    def layout(self) -> ParameterLayoutLike:
        """Where each trainable variable lives inside theta."""
        ...

    def describe(self) -> dict[str, Any]:
        """What this landscape measures, JSON-ready: 'spec' and 'description' (the data),
        'loss', 'loss_config', 'level_fn', 'split', 'parameters' (P), 'backend',
        'state_size' (S), 'batch_norm', 'bn_stats', 'bn_batches', 'bn_batch_size',
        'bn_samples' (None where they do not apply), 'projection_mode'."""
        ...

    # ------------------------------------------------------------ states
    def fill_states(self, states: np.ndarray | None, k: int) -> np.ndarray:
        """(K, S) float32 states: `states` reshaped, or the landscape model's own state in
        every row where it is None."""
        ...

    def state_or_own(self, state: np.ndarray | None) -> np.ndarray:
        """One point's state (S,) float32: `state`, or the landscape model's own where it is
        None."""
        ...

    def recompute_states(self, thetas: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """(K, S) `states` with every BatchNorm moving mean and variance replaced by the exact
        mean and (biased) variance of that layer's train-mode activations over the fixed
        statistics samples, at each row of `thetas` (K, P); unchanged without BatchNorm."""
        ...

    # ------------------------------------------------------------ levels and losses
    def levels(self, thetas: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """(K,) float64 the level function at each row of `thetas` (K, P), path view (see the
        class), true float32."""
        ...

    def levels_and_states(
        self,
        thetas: np.ndarray,
        states: np.ndarray | None = None,
        recompute: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """((K,) levels, (K, S) the states they were evaluated with): `levels`, whose
        BatchNorm statistics are re-estimated when `recompute` (None: when `recomputes`)."""
        ...

    def evaluate(
        self,
        theta: np.ndarray,
        split: str | None = None,
        state: np.ndarray | None = None,
        recompute: bool = False,
    ) -> Evaluation:
        """E and the level function at theta (P,) on `split` (None: `split`), with `state`
        (S,) as given (None: the model's own; `recompute`: re-estimated first)."""
        ...

    def evaluate_many(
        self,
        thetas: np.ndarray,
        split: str | None = None,
        states: np.ndarray | None = None,
        recompute: bool = False,
    ) -> list[Evaluation]:
        """`evaluate` at every row of `thetas` (K, P) with its row of `states` (K, S), as few
        compiled calls as memory allows. Raises ValueError unless thetas is (K, P)."""
        ...

    def sample_levels(
        self, thetas: np.ndarray, split: str | None = None, states: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sample's share of the level function at every row of `thetas` (K, P), with
        `states` as given: (level sums (K, n), element counts (K, n), offsets (K,): the
        regularizer where the level is the loss, else 0), float64. Row k's level is
        finalize_levels(sums[k].sum() / counts[k].sum() + offsets[k])."""
        ...

    def finalize_levels(self, means: np.ndarray) -> np.ndarray:
        """Mean level values -> the level function's reported values (e.g. exp for
        perplexity), elementwise, float64, same shape."""
        ...

    # ------------------------------------------------------------ derivatives
    def loss_and_grad(
        self,
        theta: np.ndarray,
        split: str = "train",
        state: np.ndarray | None = None,
        recompute: bool = False,
    ) -> tuple[float, np.ndarray]:
        """(E(theta), grad E(theta) (P,) float32) over the whole split, the state (S,) held
        fixed (re-estimated first when `recompute`)."""
        ...

    def losses_and_grads(
        self, thetas: np.ndarray, states: np.ndarray | None = None, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """((K,) float64 E, (K, P) float32 grad E) at every row of `thetas` (K, P) with its
        row of `states` held fixed, all rows in one compiled call per data batch."""
        ...

    def hessian_operator(
        self, theta: np.ndarray, split: str = "train", state: np.ndarray | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """H at theta as products(vectors (K, P)) -> (K, P) float64: H v for every row v, H
        the Hessian of E at theta (P,) with the state (S,) held fixed, exact over the whole
        split; the rows batched."""
        ...

    # ------------------------------------------------------------ moving points
    def project(
        self,
        starts: np.ndarray,
        target: float | np.ndarray,
        config: ProjectionSettings,
        seed: int,
        normals: np.ndarray | None = None,
        on_check: Callable[[np.ndarray, np.ndarray], None] | None = None,
        states: np.ndarray | None = None,
    ) -> ProjectionResult:
        """Train the rows of `starts` (K, P) with the training loss until each one's level is
        at or below `target` (one, or (K,)) or its step budget runs out; `normals` (K, P):
        hyperplanes each bead stays on (zero rows: none); `on_check(levels, steps)` after
        every level check; `states` (K, S) the starts' states. Reproducible given `seed`."""
        ...

    def stepper(self, config: OptimizerSettings) -> Stepper:
        """A fresh Keras optimizer (the one `config` names, with its settings; the one
        projections use) stepping one flat (P,) vector on the host. Raises
        `errors.UserError` for an optimizer Keras does not know or whose options it
        rejects."""
        ...

    def fresh_theta(self, seed: int) -> np.ndarray:
        """(P,) float32 the parameters of a fresh random initialisation of the architecture."""
        ...


__all__ = [
    "Evaluation",
    "LandscapeLike",
    "OptimizerSettings",
    "ParameterLayoutLike",
    "ProjectionResult",
    "ProjectionSettings",
    "Stepper",
]
