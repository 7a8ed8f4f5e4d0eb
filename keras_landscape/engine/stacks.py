"""Stacks of parameter vectors: how many one compiled call takes, and how a stack is cut
into such calls and split across the replicas of the devices.

Evaluation calls take at most `max_stack` vectors: the largest power of two whose
activations (vectors x evaluation batch x every layer's output per sample, from the graph's
shapes) fit STACK_ACTIVATION_BYTES. A projection stack is also bounded by its
parameter-sized tensors (STACK_PARAMETER_BYTES).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_landscape.engine import backend, stacked
from keras_landscape.engine.kernels import pad_rows

# Activation memory one stacked evaluation call may use (thetas x batch x layer outputs);
# more thetas than fit are evaluated in several calls.
STACK_ACTIVATION_BYTES = 1 << 30
# Parameter-sized tensors of one projection stack (beads, moments, gradients).
STACK_PARAMETER_BYTES = 1 << 30


class Stacks:
    """Sizes stacks of parameter vectors and runs stack kernels on the devices.

    Args:
        model: the Keras model (its graph's shapes size the activations).
        devices: where stacks run (`backend.devices_for`).
        size: P, the length of a parameter vector.
        sample_shape: one sample's input shape on the evaluation split (no batch axis).
        eval_batch: the largest evaluation batch (samples per compiled call).
    """

    def __init__(
        self, model, devices: backend.Devices, size: int, sample_shape: tuple, eval_batch: int
    ):
        self.model, self.devices, self.size = model, devices, size
        self.sample_shape, self.eval_batch = tuple(sample_shape), int(eval_batch)
        self._max_stacks: dict[int, int] = {}

    @property
    def max_stack(self) -> int:
        """Most parameter vectors one evaluation call takes: a power of two whose activations
        (vectors x evaluation batch x every layer's output) fit STACK_ACTIVATION_BYTES."""
        return self.max_stack_for(self.eval_batch)

    def max_stack_for(self, batch: int) -> int:
        """Most parameter vectors one call on `batch` samples takes (see max_stack)."""
        if batch not in self._max_stacks:
            per_theta = 4 * batch * stacked.activation_elements(self.model, self.sample_shape)
            fits = max(1, STACK_ACTIVATION_BYTES // max(1, per_theta))
            self._max_stacks[batch] = 1 << (int(fits).bit_length() - 1)
        return self._max_stacks[batch]

    def max_projection_stack(self, batch: int) -> int:
        """Most beads one projection call trains on `batch` samples per step: the evaluation
        budget for activations (see max_stack), and the stack's parameter-sized tensors
        (beads, normals, gradients, optimizer moments: ~8 copies) within
        STACK_PARAMETER_BYTES, per replica. Wider stacks are projected in parts
        (`engine.projection`)."""
        fits = max(1, STACK_PARAMETER_BYTES // max(1, 32 * self.size))
        per_replica = min(self.max_stack_for(batch), 1 << (int(fits).bit_length() - 1))
        return per_replica * self.devices.count

    def chunks(self, thetas: np.ndarray, states: np.ndarray, per_replica: int):
        """(rows, stacked thetas, stacked states) for each chunk of at most `per_replica`
        rows per replica: padded for the devices and split across their replicas (see
        `run`)."""
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

    def run(self, kernel, args, k: int):
        """The first k rows of a stack kernel's result (each output of a tuple), float64,
        each replica on its share."""
        out = self.devices.call(kernel, args, k)
        if isinstance(out, (tuple, list)):
            return tuple(np.asarray(self.devices.fetch(o), np.float64)[:k] for o in out)
        return np.asarray(self.devices.fetch(out), np.float64)[:k]
