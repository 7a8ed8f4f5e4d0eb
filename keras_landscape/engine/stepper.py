"""`Stepper`: Keras's own optimizer stepping one flat parameter vector held on the host.

The science trains a few vectors of its own outside the projection loop (the bend of a
curve between two minima, `science.curves`). It must not write an optimizer by hand, and
it must honour the run's optimizer option, so it asks the landscape for a stepper
(`Landscape.stepper(config)`) and calls `step(x, grad) -> x'` once per step.

The optimizer is the one projections use: `optimizers.optimizer_spec(config)` resolves and
checks the name, `beta_1`, `beta_2`, `epsilon`, `learning_rate` and `optimizer_options`,
and `OptimizerSpec.build` builds it over one (1, P) float32 variable. Each step is
`optimizer.stateless_apply` (on TensorFlow through the same backend-neutral update methods
as the projection loop), and the optimizer's state (step count, moments) is carried here
between steps, so the arithmetic is exactly Keras's: SGD's first step is x - lr * grad in
float32, Adam's is Kingma & Ba's with Keras's epsilon.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_landscape.engine import backend
from keras_landscape.engine.optimizers import optimizer_spec


class Stepper:
    """One Keras optimizer over one flat float32 vector of `size` entries.

    Attributes:
        spec: the resolved optimizer (`optimizers.OptimizerSpec`: name, options, learning rate).
        optimizer: the Keras optimizer instance (built over a (1, size) variable, never
            assigned: its state lives in this object between steps).
        steps: how many steps were taken.
    """

    def __init__(self, config, size: int):
        self.spec = optimizer_spec(config)
        self.size = int(size)
        self.optimizer = self.spec.build(1, self.size)
        self._slots = [ops.convert_to_tensor(v.value) for v in self.optimizer.variables]
        self.steps = 0

        def apply(slots, grad, x):
            (moved,), slots = self.optimizer.stateless_apply(slots, [grad], [x])
            return moved, slots

        # A plain graph (no XLA: one small update, not worth a compilation per stepper).
        self._apply = backend.compile_function(apply, xla=False, label="optimizer step")

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """x after one optimizer step along `grad` (both (size,)); (size,) float32.

        Raises:
            ValueError: x or grad is not a vector of `size` entries.
        """
        x = np.asarray(x, np.float32).reshape(-1)
        grad = np.asarray(grad, np.float32).reshape(-1)
        if x.shape != (self.size,) or grad.shape != (self.size,):
            raise ValueError(
                f"Stepper.step takes two vectors of {self.size} entries, got {x.shape} and "
                f"{grad.shape}."
            )
        moved, self._slots = self._apply(
            self._slots, ops.convert_to_tensor(grad[None, :]), ops.convert_to_tensor(x[None, :])
        )
        self.steps += 1
        return np.asarray(ops.convert_to_numpy(moved), np.float32)[0]


__all__ = ["Stepper"]
