"""What every part of a Landscape computes with: the model, its layouts, the objective, and
where and how its kernels compile.

A `Landscape` (engine/landscape.py) is a facade over parts with one job each: `stacks`
(sizing and running stacks of points), `statistics` (each point's state and BatchNorm
statistics), `evaluation` (levels and losses), `gradients` (gradients and Hessian-vector
products) and `projection` (training beads). They share one `ModelContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keras_landscape.engine import backend
from keras_landscape.engine.objectives import ResolvedObjective
from keras_landscape.engine.params import ParameterLayout
from keras_landscape.engine.state import StateLayout


@dataclass
class ModelContext:
    """The model a landscape's parts evaluate (never mutated) and how they compile.

    Attributes:
        model: the Keras model (its architecture; its weights are never changed).
        layout: where each trainable variable lives inside theta.
        state_layout: where each float non-trainable variable lives inside a state s.
        objective: the loss and level function.
        xla: compile with XLA (see `setup.resolve_xla`).
        devices: where stacks of points run (`backend.devices_for`).
        non_trainable: the model's non-trainable variables as tensors (integer ones, seed
            counters, are merged into every point's state by the kernels).
    """

    model: object
    layout: ParameterLayout
    state_layout: StateLayout
    objective: ResolvedObjective
    xla: bool
    devices: backend.Devices
    non_trainable: list
    _kernels: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        """P, the number of trainable parameters."""
        return self.layout.size

    @property
    def label(self) -> str:
        """The model's name, for log messages about its compiled functions."""
        return getattr(self.model, "name", "model")

    def compile(self, function, what: str, xla: bool | None = None):
        """`function` compiled with this landscape's XLA setting (see
        `backend.compile_function`; `xla` False keeps it off for this function), logged
        as '<model> <what>'."""
        use = self.xla if xla is None else self.xla and xla
        return backend.compile_function(function, xla=use, label=f"{self.label} {what}")

    def kernel(self, make, what: str, xla: bool | None = None):
        """The compiled kernel `make(model, layout, state_layout, objective)`, made once
        (`xla` as in `compile`)."""
        if make not in self._kernels:
            self._kernels[make] = self.compile(
                make(self.model, self.layout, self.state_layout, self.objective.objective),
                what,
                xla,
            )
        return self._kernels[make]
