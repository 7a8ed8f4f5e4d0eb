"""The projection's settings as plain data (no Keras import: probes' configs inherit them,
and listing probes must not load a framework)."""

from __future__ import annotations

from dataclasses import dataclass

from keras_landscape.errors import UserError

#: samples per evaluation batch (--eval-batch-size)
DEFAULT_EVAL_BATCH = 1024
#: how BatchNorm statistics are set at points between models (--bn-stats)
BN_MODES = ("recompute", "interpolate")
# Recomputed statistics: 32 batches of 128 training samples in train mode (4,096 samples:
# the standard error of a recomputed mean is ~1.6% of the activation's standard deviation).
DEFAULT_BN_BATCHES = 32
DEFAULT_BN_BATCH_SIZE = 128

OPTIMIZERS = ("adam", "sgd")


@dataclass
class ProjectionConfig:
    """How beads are trained into the sublevel set.

    Attributes:
        optimizer: 'adam' (default, as in the authors' code) or 'sgd'.
        learning_rate: step size (parameter units per step).
        max_steps: step budget per bead; a bead that misses the target within it fails.
        check_every: optimiser steps per compiled loop between level checks.
        batch_size: samples per step; None or >= the training set size means full batch.
        beta_1: Adam's first-moment decay (Keras default).
        beta_2: Adam's second-moment decay (Keras default).
        epsilon: Adam's denominator constant (Keras default).
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    max_steps: int = 2000
    check_every: int = 50
    batch_size: int | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(
                f"Unknown optimizer {self.optimizer!r} for projections: use one of {OPTIMIZERS}."
            )
        finite_rate = 0 < self.learning_rate < float("inf")
        if not finite_rate or self.max_steps < 1 or self.check_every < 1:
            raise UserError(
                "Projection needs learning_rate > 0, max_steps >= 1 and check_every >= 1 "
                f"(got {self.learning_rate}, {self.max_steps}, {self.check_every})."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch_size must be positive or None, got {self.batch_size}.")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.epsilon > 0):
            raise UserError(
                "Adam needs 0 <= beta_1, beta_2 < 1 and epsilon > 0 (got "
                f"{self.beta_1}, {self.beta_2}, {self.epsilon})."
            )


__all__ = [
    "BN_MODES",
    "DEFAULT_BN_BATCHES",
    "DEFAULT_BN_BATCH_SIZE",
    "DEFAULT_EVAL_BATCH",
    "OPTIMIZERS",
    "ProjectionConfig",
]
