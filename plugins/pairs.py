"""What the pair probes share (`connectivity`, `curviness`, `barrier`, `components`):
pair options, partners trained for a single model, the pair list, level parsing.

Public helpers for third-party probes too: subclass `PairProbe`, mix `PairOptions` (and
`DSSConfig`) into the probe's Config, and call `self.pairs(...)` in `run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.engine.options import ProjectionConfig
from keras_landscape.errors import UserError
from keras_landscape.models.minimum import Minimum
from keras_landscape.registry import ProbeBase
from keras_landscape.science.pairs import states_of
from keras_landscape.seeds import derive_seed

#: keys of the partner streams under the run's seed (see keras_landscape.seeds)
PARTNER_INIT, PARTNER_STEPS = 7919, 7907


@dataclass
class PairOptions:
    """Options every pair-based probe shares (mixed into its Config).

    Attributes:
        partners: with one model, how many fresh models of the same architecture to train
            (random init, Adam) down to its level and connect it to.
        partner_steps: step budget for training each partner.
        partner_learning_rate: learning rate for partners (None: the projection's).
        margin: the default level is max(endpoint levels) * (1 + margin).
    """

    partners: int = 1
    partner_steps: int = 20000
    partner_learning_rate: float | None = None
    margin: float = 0.05

    def validate_pairs(self) -> None:
        if self.partners < 0 or self.partner_steps < 1:
            raise UserError(
                f"partners must be >= 0 and partner_steps >= 1 (got {self.partners}, "
                f"{self.partner_steps})."
            )
        if self.partner_learning_rate is not None and not self.partner_learning_rate > 0:
            raise UserError(
                f"partner_learning_rate must be positive, got {self.partner_learning_rate}."
            )
        if not self.margin >= 0:
            raise UserError(f"margin must be >= 0, got {self.margin}.")


def partner_projection(config) -> ProjectionConfig:
    """The projection settings for models trained from a random initialisation (partners,
    fresh endpoints): the DSS ones with `partner_steps` and `partner_learning_rate`."""
    return ProjectionConfig(
        **{
            **vars(config.projection()),
            "max_steps": config.partner_steps,
            "learning_rate": config.partner_learning_rate or config.learning_rate,
        }
    )


def with_partners(
    landscape: LandscapeLike, minima: list, config, run, progress
) -> tuple[list, list[tuple[int, int]]]:
    """The minima to connect and the index pairs to measure.

    Two or more models: every pair (i < j). One model: `config.partners` fresh models are
    trained to the model's level (stored in the run under partners/, reused on resume) and
    the model is paired with each.
    """
    if len(minima) >= 2:
        return minima, [(i, j) for i in range(len(minima)) for j in range(i + 1, len(minima))]
    if config.partners < 1:
        raise UserError("One model and partners=0: give two models or set partners >= 1.")
    model = minima[0]
    target = float(landscape.levels(model.theta[None, :], states_of([model], landscape))[0])
    stored = run.length("partners/theta") if run.has("partners/theta") else 0
    thetas = [run.read("partners/theta")[i] for i in range(stored)]
    stored_states = run.read("partners/state") if run.has("partners/state") else None
    partner_states = [None if stored_states is None else stored_states[i] for i in range(stored)]
    missing = config.partners - stored
    if missing > 0:
        task = progress.task(f"training {missing} partner(s) to level {target:.4g}", total=missing)
        starts = np.stack(
            [
                landscape.fresh_theta(derive_seed(config.seed, PARTNER_INIT, stored + i))
                for i in range(missing)
            ]
        )
        result = landscape.project(
            starts, target, partner_projection(config), seed=derive_seed(config.seed, PARTNER_STEPS)
        )
        states = result.states  # BatchNorm statistics estimated at the partner's weights
        for i in np.flatnonzero(~result.reached):
            progress.note(
                f"partner {stored + i} reached level {result.levels[i]:.4g}, not the model's "
                f"{target:.4g}, within partner_steps={config.partner_steps}; it is used as it "
                "is (raise partner_steps or partner_learning_rate)"
            )
        for i, theta in enumerate(result.thetas):
            if states.shape[1]:
                run.append("partners/state", states[i])
            run.append("partners/theta", theta)
            run.append("partners/level", np.float64(result.levels[i]))
            run.append("partners/steps", np.int64(result.steps[i]))
            thetas.append(theta)
            partner_states.append(states[i] if states.shape[1] else None)
            task.advance()
        task.close()
    partners = [
        Minimum(
            f"{model.name}_partner{i}",
            np.asarray(t, np.float32),
            f"trained:partner {i} of {model.name}",
            state=s,
        )
        for i, (t, s) in enumerate(zip(thetas[: config.partners], partner_states))
    ]
    return [model] + partners, [(0, k) for k in range(1, len(partners) + 1)]


def check_level(value, what: str = "level") -> float:
    """A level u as a float; UserError unless it is finite and positive (DSS trains beads to
    alpha * u and checks segments against u: both need u > 0)."""
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{what} must be a number in level-function units, got {value!r}."
        ) from None
    if not (math.isfinite(level) and level > 0):
        raise UserError(
            f"{what} must be a positive, finite number in level-function units, got {value!r}: "
            "beads are trained to alpha x level and segments checked against it."
        )
    return level


def parse_levels(text: str, targets: bool = True) -> list[float]:
    """'0.3,0.2,0.1' (a list) or '0.3:0.05:6' (6 evenly spaced levels from 0.3 to 0.05).

    Every level must be finite, and positive where the levels are DSS targets (`targets`;
    a grid of levels to count components at may hold any finite value); empty items and
    empty ranges are refused.
    """
    text = str(text).strip()
    usage = "give a list '0.3,0.2,0.1' or a range 'start:stop:count' (count >= 1)"
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            count = int(count)
            if count < 1:
                raise UserError(f"Bad levels {text!r}: the range has {count} levels; {usage}.")
            levels = [float(v) for v in np.linspace(float(start), float(stop), count)]
        else:
            items = text.split(",")
            if any(not item.strip() for item in items):
                raise UserError(f"Bad levels {text!r}: an item is empty; {usage}.")
            levels = [float(v) for v in items]
    except ValueError:
        raise UserError(f"Bad levels {text!r}: {usage}.") from None
    if not targets:
        if not all(math.isfinite(v) for v in levels):
            raise UserError(f"Bad levels {text!r}: every level must be a finite number.")
        return levels
    return [check_level(v, f"Every level in {text!r}") for v in levels]


def check_pair_config(config, level_targets: bool = True) -> None:
    """Every check a pair probe's config mixes in: DSS and projection knobs, pair options,
    bisection options, and the `level` / `levels` fields where the config has them
    (`level_targets`: its levels are DSS targets, see `parse_levels`)."""
    config.validate()
    config.validate_pairs()
    if hasattr(config, "validate_bisection"):
        config.validate_bisection()
    if getattr(config, "level", None) is not None:
        check_level(config.level)
    if getattr(config, "levels", ""):
        parse_levels(config.levels, level_targets)


class PairProbe(ProbeBase):
    """Base of probes that measure pairs of minima: config handling and the pair list."""

    Config = PairOptions
    takes_pairs = True

    #: whether the config's `levels` are DSS targets (positive) or a grid to count at
    level_targets = True

    def validate_config(self) -> None:
        """Every option checked (called before any model or data is loaded)."""
        check_pair_config(self.config, self.level_targets)

    def validate_inputs(self, models: list[str]) -> None:
        """A single model is paired with trained partners: partners=0 leaves no pair."""
        if len(models) == 1 and getattr(self.config, "partners", 1) < 1:
            raise UserError(
                f"The {self.name} probe measures pairs of models, but it was given one model "
                f"({models[0]}) and partners=0, so there is no pair: give two or more models, "
                "or set partners >= 1 to train partners for the one model."
            )

    @classmethod
    def pair_prefixes(cls, config: dict, inputs: int) -> list[str] | None:
        """The store prefixes of the pairs a run measures: every i < j of the input models,
        or the model and each of its partners (None: no input models)."""
        if inputs >= 2:
            pairs = [(i, j) for i in range(inputs) for j in range(i + 1, inputs)]
        elif inputs == 1:
            pairs = [(0, k) for k in range(1, int(config.get("partners") or 1) + 1)]
        else:
            return None
        return [f"pair_{i}_{j}" for i, j in pairs]

    @classmethod
    def expected_partners(cls, config: dict, inputs: int) -> int:
        return int(config.get("partners") or 0) if inputs == 1 else 0

    def pairs(self, landscape: LandscapeLike, models, store, progress):
        """Validate the config, train partners if needed; (minima, index pairs)."""
        self.validate_config()
        return with_partners(landscape, models, self.config, store, progress)
