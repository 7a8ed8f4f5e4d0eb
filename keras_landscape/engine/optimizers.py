"""Keras optimizers for bead stacks: the optimizer a `ProjectionConfig` names, resolved and
checked by constructing it (`optimizer_spec`), and built over a stack of beads
(`OptimizerSpec.build`) for the projection loop (`kernels.make_projection`) and the
host-side `stepper.Stepper`.

`engine.options` checks what it can without Keras and imports this module only for a name
or arguments Keras must resolve. This module reads a config through its fields and does not
import `engine.options`, so the imports run one way; the optimizer names both need are
plain data in `engine.optimizer_names`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, fields

import keras

from keras_landscape.engine import backend
from keras_landscape.engine.optimizer_names import MIXES_BEADS, OPTIMIZERS
from keras_landscape.errors import UserError
from keras_landscape.values import conform

log = logging.getLogger("keras_landscape")


@dataclass(frozen=True)
class OptimizerSpec:
    """A Keras optimizer for bead stacks: what `keras.optimizers.get` resolves, and how.

    Attributes:
        name: the optimizer's Keras identifier ('adam', 'sgd', a registered custom name).
        options: its constructor arguments other than the learning rate, as sorted
            (key, value) pairs: with the name, they decide the compiled update.
        learning_rate: the step size; an optimizer variable, so an input of the compiled
            loop rather than part of it.
    """

    name: str
    options: tuple
    learning_rate: float

    @property
    def key(self) -> tuple:
        """What a compiled projection depends on (not the learning rate); a string, as
        option values from a JSON object need not be hashable."""
        return (self.name, repr(self.options))

    def build(self, width: int, size: int):
        """A Keras optimizer built over one (width, size) float32 variable: the bead stack.

        Its variables are never assigned: `stateless_apply` reads their values from the
        projection loop's inputs and returns the new ones.
        """
        cls = type(keras.optimizers.get(self.name))
        if backend.name == "tensorflow":
            cls = _stateless_on_tensorflow(cls)
        optimizer = cls(learning_rate=self.learning_rate, **dict(self.options))
        beads = keras.Variable(
            initializer="zeros", shape=(width, size), dtype="float32", name="beads"
        )
        optimizer.build([beads])
        return optimizer


def optimizer_spec(config) -> OptimizerSpec:
    """The Keras optimizer a `ProjectionConfig` names, checked by constructing it.

    beta_1, beta_2 and epsilon are passed to every optimizer whose constructor takes them
    (Adam, AdamW, Nadam, Adamax, Lion; epsilon also RMSprop, Adagrad, Adadelta), so they
    keep Keras's defaults unless set; `optimizer_options` adds any other argument.

    Built and checked once per setting: every projection of a run asks for the same one.

    Args:
        config: a `ProjectionConfig` (or a subclass), read through its fields,
            `optimizer_name` and `optimizer_arguments()`.

    Raises:
        UserError: Keras does not know the name, or the optimizer rejects the arguments.
    """
    key = (type(config), *(getattr(config, k) for k in _SPEC_KEYS))
    spec = _SPECS.get(key)
    if spec is None:
        if len(_SPECS) >= 64:
            _SPECS.clear()
        spec = _SPECS[key] = _resolve(config)
    return spec


_SPEC_KEYS = ("optimizer", "optimizer_options", "beta_1", "beta_2", "epsilon", "learning_rate")
_SPECS: dict[tuple, OptimizerSpec] = {}


def _resolve(config) -> OptimizerSpec:
    """`optimizer_spec`, uncached."""
    options = config.optimizer_arguments()
    name = config.optimizer_name
    try:
        cls = type(keras.optimizers.get(name))
    except (ValueError, TypeError):
        raise UserError(
            f"Unknown optimizer {config.optimizer!r} for projections: Keras does not know it. "
            f"Use one of {', '.join(OPTIMIZERS)}, or a custom optimizer registered with "
            "keras.saving.register_keras_serializable."
        ) from None
    if cls.__name__.lower() in MIXES_BEADS:  # the same class under another name
        raise UserError(
            f"Optimizer {config.optimizer!r} ({cls.__name__}) cannot train beads: "
            f"{MIXES_BEADS[cls.__name__.lower()]}."
        )
    takes = inspect.signature(cls.__init__).parameters
    # the one boolean rule for boolean arguments (nesterov=maybe is refused, not true)
    options = conform(options, cls.__init__, f"optimizer {cls.__name__}")
    defaults = {f.name: f.default for f in fields(config)}
    for key in ("beta_1", "beta_2", "epsilon"):
        value = float(getattr(config, key))
        if key in takes:
            options[key] = value
        elif value != defaults[key]:
            log.warning("%s=%s has no effect: %s takes no %s.", key, value, cls.__name__, key)
    try:
        cls(learning_rate=float(config.learning_rate), **options)
    except (TypeError, ValueError) as error:
        raise UserError(
            f"keras.optimizers.{cls.__name__} does not accept optimizer_options "
            f"{config.optimizer_options!r}: {error}"
        ) from None
    return OptimizerSpec(name, tuple(sorted(options.items())), float(config.learning_rate))


@functools.cache
def _stateless_on_tensorflow(cls):
    """`cls` with Keras's backend-neutral update methods in place of its TensorFlow ones.

    On TensorFlow, Keras's optimizers write their variables through tf.distribute, which
    needs real tf.Variables, so `stateless_apply` refuses to run. The backend-neutral
    methods (those the JAX backend runs) write through `keras.StatelessScope` and compute
    the same update. They go in a layer just above the TensorFlow one in the method order,
    so that `cls`'s own overrides still run and their `super()` calls reach the neutral
    versions (Nadam's `_backend_update_step` does). The methods are found by introspection
    rather than listed, so a new Keras release cannot add one silently.
    """
    bases = keras.optimizers.Optimizer.__bases__  # (the backend's layer, BaseOptimizer)
    if len(bases) != 2 or not hasattr(bases[1], "stateless_apply"):
        raise RuntimeError(f"Unexpected Keras optimizer classes {bases}: cannot step beads.")
    tensorflow_layer, neutral = bases
    replaced = {
        name: vars(neutral)[name]
        for name in vars(tensorflow_layer)
        if name in vars(neutral) and not name.startswith("__")
    }
    shim = type("StatelessLayer", (tensorflow_layer,), replaced)
    return type(f"Stateless{cls.__name__}", (cls, shim), {})


__all__ = ["OptimizerSpec", "optimizer_spec"]
