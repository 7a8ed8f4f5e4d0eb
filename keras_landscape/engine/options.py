"""The projection's settings as plain data (no Keras import: probes' configs inherit them,
and listing probes must not load a framework)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from keras_landscape.engine.optimizer_names import MIXES_BEADS, NOT_STEPPERS, OPTIMIZERS
from keras_landscape.errors import UserError

# The run settings (and where stacks run) are declared once, in keras_landscape.settings.
from keras_landscape.settings import (  # noqa: F401  (re-exported)
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    DEFAULT_EVAL_BATCH,
    STRATEGIES,
    StrategySpec,
    parse_strategy,
)
from keras_landscape.values import parse_pairs, text_value

# Constructor arguments the config has fields for (or that name the optimizer itself).
_OWN_FIELDS = ("learning_rate", "beta_1", "beta_2", "epsilon", "name")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def parse_optimizer_options(text: str | dict | None) -> dict[str, Any]:
    """Extra optimizer constructor arguments from 'key=value,key=value' or a JSON object.

    Raises:
        UserError: malformed text, a key the config sets with its own field, or a setting
            that would make beads depend on each other.
    """
    if isinstance(text, dict):
        options = dict(text)
    elif text is None or not str(text).strip():
        return {}
    elif str(text).strip().startswith("{"):
        try:
            options = json.loads(text)
        except ValueError as error:
            raise UserError(f"optimizer_options {text!r} is not valid JSON: {error}.") from None
        if not isinstance(options, dict):
            raise UserError(f"optimizer_options {text!r} must be a JSON object.")
    else:
        pairs = parse_pairs(
            str(text), "optimizer_options", example="'momentum=0.9,nesterov=true'", within=text
        )
        for key, value in pairs.items():
            if not value:
                raise UserError(f"optimizer_options {text!r}: {key}= has no value.")
        options = {k: text_value(v) for k, v in pairs.items()}
    for key in options:
        if not isinstance(key, str) or not _IDENTIFIER.match(key):
            raise UserError(f"optimizer_options: {key!r} is not an argument name.")
        if key in _OWN_FIELDS:
            raise UserError(
                f"optimizer_options sets {key!r}; "
                + (
                    "the optimizer's name is `optimizer`."
                    if key == "name"
                    else f"set it with the `{key}` option instead."
                )
            )
        if key in MIXES_BEADS and options[key] is not None:
            raise UserError(
                f"optimizer_options {key!r} cannot be used for projections: beads are "
                f"trained together and {MIXES_BEADS[key]}, so beads would move each other. "
                "Use clipvalue (per parameter) instead."
            )
    return options


@dataclass
class ProjectionConfig:
    """How beads are trained into the sublevel set.

    Attributes:
        optimizer: a Keras optimizer name, stepped as keras.optimizers.get(name) steps:
            'adam' (default, as in the authors' code), 'sgd', 'rmsprop', 'adamw', 'nadam',
            'adamax', 'adagrad', 'adadelta', 'ftrl', 'lion', or a registered custom one.
        learning_rate: step size (parameter units per step).
        max_steps: step budget per bead; a bead that misses the target within it fails.
        check_every: optimiser steps per compiled loop between level checks.
        batch_size: samples per step; None or >= the training set size means full batch.
        beta_1: Adam's first-moment decay (Keras default; any optimizer taking beta_1).
        beta_2: Adam's second-moment decay (Keras default; any optimizer taking beta_2).
        epsilon: Adam's denominator constant (Keras default; any optimizer taking epsilon).
        optimizer_options: more optimizer arguments, 'key=value,...' (e.g. 'momentum=0.9'
            for sgd, 'weight_decay=0.01' for adamw) or a JSON object.
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    max_steps: int = 2000
    check_every: int = 50
    batch_size: int | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    optimizer_options: str = ""

    @property
    def optimizer_name(self) -> str:
        """The optimizer's Keras identifier: built-in names in lower case, others as given."""
        name = str(self.optimizer).strip()
        return name.lower() if name.lower() in (*OPTIMIZERS, *MIXES_BEADS) else name

    def optimizer_arguments(self) -> dict[str, Any]:
        """`optimizer_options` as constructor arguments (`parse_optimizer_options`)."""
        return parse_optimizer_options(self.optimizer_options)

    def validate(self) -> None:
        """Check the settings; a name Keras must resolve is looked up here, before any work.

        Raises:
            UserError: an unknown or unsuitable optimizer or a value out of range.
        """
        name = self.optimizer_name
        if name.lower() in MIXES_BEADS or name.lower() in NOT_STEPPERS:
            reason = MIXES_BEADS.get(name.lower(), "it is not an optimizer of its own")
            raise UserError(
                f"Optimizer {self.optimizer!r} cannot train beads: {reason}. Use one of "
                f"{', '.join(OPTIMIZERS)}."
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
        options = parse_optimizer_options(self.optimizer_options)
        if name not in OPTIMIZERS or options:
            # Keras only for what cannot be checked here: another name, or arguments the
            # optimizer's constructor has to accept. The common case stays framework-free.
            from keras_landscape.engine.optimizers import optimizer_spec

            optimizer_spec(self)


__all__ = [
    "STRATEGIES",
    "StrategySpec",
    "parse_strategy",
    "BN_MODES",
    "DEFAULT_BN_BATCHES",
    "DEFAULT_BN_BATCH_SIZE",
    "DEFAULT_EVAL_BATCH",
    "OPTIMIZERS",
    "ProjectionConfig",
    "parse_optimizer_options",
]
