"""The flat view s of a model's non-trainable state (BatchNorm statistics, frozen weights).

theta holds the trainable weights; the network function also depends on the model's
floating-point non-trainable variables: BatchNormalization moving mean and variance, the
weights of frozen layers, and the like. Every point the probes evaluate carries its own state
vector s in R^S (the float non-trainable variables, flattened in `model.non_trainable_variables`
order). Integer state (random-seed counters) is not part of s: it does not change what a model
computes at inference and is taken from the landscape's model.

`StateLayout` records where each variable lives inside s and which slots are BatchNorm
statistics, so that those can be re-estimated at any theta (`--bn-stats recompute`) or
interpolated like the weights (`--bn-stats interpolate`). See docs/science.md, "BatchNorm
along paths".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.flat import FlatLayout


def _is_float(variable) -> bool:
    return "float" in str(variable.dtype)


def batch_norm_layers(model) -> list:
    """The trainable BatchNormalization layers of `model` (nested ones too): those whose
    moving statistics Keras's fit updates from batch statistics."""
    import keras

    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


@dataclass(frozen=True)
class StateLayout(FlatLayout):
    """Where each float non-trainable variable lives inside a state vector s (its `size`
    is S, the number of float non-trainable values).

    Attributes:
        paths: variable paths, in s order (a subsequence of `model.non_trainable_variables`).
        shapes: their shapes.
        offsets: start index of each inside s.
        positions: each variable's index in `model.non_trainable_variables`.
        bn_mean: (M,) indices into s of every BatchNorm moving-mean entry.
        bn_var: (M,) the matching moving-variance entries (same order).
        bn_momentum: (M,) each entry's layer momentum (Keras convention:
            moving = momentum * moving + (1 - momentum) * batch).
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    positions: tuple[int, ...]
    bn_mean: np.ndarray
    bn_var: np.ndarray
    bn_momentum: np.ndarray

    @classmethod
    def from_model(cls, model) -> StateLayout:
        variables = list(model.non_trainable_variables)
        positions = [i for i, v in enumerate(variables) if _is_float(v)]
        shapes = tuple(tuple(int(d) for d in variables[i].shape) for i in positions)
        offsets, sizes = cls.offsets_of(shapes), [int(np.prod(s, dtype=np.int64)) for s in shapes]
        slot = {id(variables[i]): (o, n) for i, o, n in zip(positions, offsets, sizes)}
        means, variances, momenta = [], [], []
        for layer in batch_norm_layers(model):
            # (A frozen BatchNorm runs on its moving statistics in train mode too: its
            # statistics are state to carry, not to re-estimate.)
            if id(layer.moving_mean) not in slot or id(layer.moving_variance) not in slot:
                continue
            (om, n), (ov, _) = slot[id(layer.moving_mean)], slot[id(layer.moving_variance)]
            means.extend(range(om, om + n))
            variances.extend(range(ov, ov + n))
            momenta.extend([float(layer.momentum)] * n)
        return cls(
            paths=tuple(variables[i].path for i in positions),
            shapes=shapes,
            offsets=offsets,
            positions=tuple(positions),
            bn_mean=np.asarray(means, np.int64),
            bn_var=np.asarray(variances, np.int64),
            bn_momentum=np.asarray(momenta, np.float64),
        )

    @property
    def has_batch_norm(self) -> bool:
        return len(self.bn_mean) > 0

    def entries(self):
        """(position in non_trainable_variables, offset, size, shape) of every variable."""
        return zip(self.positions, self.offsets, self.sizes, self.shapes)

    def state_of_values(self, non_trainable_values) -> np.ndarray:
        """s from arrays in `model.non_trainable_variables` order (float32, (S,))."""
        values = list(non_trainable_values)
        parts = [np.asarray(values[i], np.float32).ravel() for i in self.positions]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def state_of(self, model) -> np.ndarray:
        """s of a model with this layout (float32, (S,))."""
        return self.state_of_values(v.numpy() for v in model.non_trainable_variables)

    def non_trainable_values(self, state: np.ndarray, template) -> list[np.ndarray]:
        """Arrays in `model.non_trainable_variables` order: float ones from `state`, the rest
        (seed counters) from `template` (a model's own values, same order)."""
        values = [np.array(v) for v in template]
        for position, array in zip(self.positions, self.split(np.asarray(state, np.float32))):
            values[position] = array.astype(values[position].dtype)
        return values

    def to_dict(self) -> dict:
        return {
            "paths": list(self.paths),
            "shapes": [list(s) for s in self.shapes],
            "offsets": list(self.offsets),
            "size": self.size,
            "batch_norm_entries": int(len(self.bn_mean)),
        }


def pooled_moments(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and variance over all samples of several equal-sized batches.

    Args:
        means, variances: (batches, ...) per-batch means and (biased) variances.

    Returns:
        (mean, variance): the exact population statistics of the union of the batches (law of
        total variance), not an exponential moving average.
    """
    means = np.asarray(means, np.float64)
    mean = means.mean(axis=0)
    variance = np.asarray(variances, np.float64).mean(axis=0) + ((means - mean) ** 2).mean(axis=0)
    return mean, variance


__all__ = ["StateLayout", "batch_norm_layers", "pooled_moments"]
