"""The flat parameter view theta of a Keras model.

theta in R^P is the concatenation of the model's trainable variables, each flattened in C
order, in the order of `model.trainable_variables`. The order, paths, shapes and offsets are
recorded in a `ParameterLayout` so that a stored theta can be turned back into weights.
Non-trainable state (BatchNorm moving statistics, RNG seeds) is not part of theta and is kept
separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.errors import UserError
from keras_landscape.flat import FlatLayout


@dataclass(frozen=True)
class ParameterLayout(FlatLayout):
    """Where each trainable variable lives inside theta.

    Attributes:
        paths: variable paths (`variable.path`), in theta order.
        shapes: the variables' shapes.
        offsets: start index of each variable inside theta.
        dtypes: the variables' dtype names.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    dtypes: tuple[str, ...]

    @classmethod
    def from_model(cls, model) -> ParameterLayout:
        """The layout of `model.trainable_variables` (the model must be built)."""
        variables = list(model.trainable_variables)
        if not variables:
            raise UserError(
                f"The model {getattr(model, 'name', '')!r} has no trainable variables: build it "
                "(call it on an input) or load a trained model; there is no landscape to probe."
            )
        shapes = tuple(tuple(int(d) for d in v.shape) for v in variables)
        return cls(
            paths=tuple(v.path for v in variables),
            shapes=shapes,
            offsets=cls.offsets_of(shapes),
            dtypes=tuple(str(v.dtype) for v in variables),
        )

    def bias_mask(self) -> np.ndarray:
        """(P,) bool: True on the entries of bias variables (a path ending in 'bias').
        Freeman & Bruna's cubic script measured path lengths on the other entries only."""
        mask = np.zeros(self.size, bool)
        for path, offset, shape in zip(self.paths, self.offsets, self.shapes):
            if path.rsplit("/", 1)[-1] == "bias":
                mask[offset : offset + int(np.prod(shape, dtype=np.int64))] = True
        return mask

    def flatten(self, weights) -> np.ndarray:
        """Concatenate per-variable arrays (in layout order) into a float32 theta."""
        weights = list(weights)
        if len(weights) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(weights)}")
        parts = []
        for path, shape, w in zip(self.paths, self.shapes, weights):
            w = np.asarray(w)
            if tuple(w.shape) != shape:
                raise ValueError(f"{path}: expected shape {shape}, got {tuple(w.shape)}")
            parts.append(w.astype(np.float32, copy=False).ravel())
        return np.concatenate(parts)

    def unflatten(self, theta: np.ndarray) -> list[np.ndarray]:
        """Split theta into per-variable arrays (views, in layout order)."""
        theta = np.asarray(theta)
        if theta.shape != (self.size,):
            raise ValueError(f"theta must have shape ({self.size},), got {theta.shape}")
        return self.split(theta)

    def theta_of(self, model) -> np.ndarray:
        """theta of a model with this layout."""
        self.check_compatible(ParameterLayout.from_model(model))
        return self.flatten(v.numpy() for v in model.trainable_variables)

    def assign(self, model, theta: np.ndarray) -> None:
        """Write theta into a model's trainable variables (used on clones, never the user's)."""
        for variable, value in zip(model.trainable_variables, self.unflatten(theta)):
            variable.assign(value.astype(variable.dtype))

    def describe_difference(self, other: ParameterLayout) -> str | None:
        """A sentence naming the first difference between two layouts, or None if they match.

        Paths are compared by shape and order only: two separately built models of one
        architecture get different auto-generated names (dense vs dense_1).
        """
        if len(self.shapes) != len(other.shapes):
            first = next(
                (i for i, (a, b) in enumerate(zip(self.shapes, other.shapes)) if a != b),
                min(len(self.shapes), len(other.shapes)),
            )
            return (
                f"they have {len(self.shapes)} and {len(other.shapes)} trainable variables "
                f"(first difference at variable {first}: "
                f"{self._describe(first)} vs {other._describe(first)})"
            )
        for i, (a, b) in enumerate(zip(self.shapes, other.shapes)):
            if a != b:
                return (
                    f"trainable variable {i} differs: {self._describe(i)} vs {other._describe(i)}"
                )
        return None

    def check_compatible(self, other: ParameterLayout, names: tuple[str, str] = ("A", "B")):
        """Raise UserError naming the first difference if the layouts differ."""
        difference = self.describe_difference(other)
        if difference is not None:
            raise UserError(
                f"Models {names[0]} and {names[1]} do not share an architecture: {difference}. "
                "Landscape probes compare models with the same parameter layout (same layers, "
                "same shapes, same order)."
            )

    def _describe(self, i: int) -> str:
        if i >= len(self.shapes):
            return "(none)"
        return f"{self.paths[i]} {self.shapes[i]}"

    def to_dict(self) -> dict:
        return {
            "paths": list(self.paths),
            "shapes": [list(s) for s in self.shapes],
            "offsets": list(self.offsets),
            "dtypes": list(self.dtypes),
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ParameterLayout:
        shapes = tuple(tuple(int(x) for x in s) for s in d["shapes"])
        return cls(
            paths=tuple(d["paths"]),
            shapes=shapes,
            offsets=tuple(int(o) for o in d["offsets"]),
            dtypes=tuple(d.get("dtypes") or ["float32"] * len(shapes)),
        )


def non_trainable_state(model) -> list[np.ndarray]:
    """Values of the model's non-trainable variables (BatchNorm statistics, seeds)."""
    return [np.array(v.numpy()) for v in model.non_trainable_variables]
