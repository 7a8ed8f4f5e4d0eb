"""Arrays laid end to end in one flat vector (C order): theta, a point's state, a stored row.

The one place that cuts a flat vector into arrays; the store (h5py only), the parameter and
state layouts (numpy) and the compiled kernels (keras.ops tensors) all go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def offsets_of(shapes) -> tuple[int, ...]:
    """Start index of each array of `shapes` in the flat vector."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    return tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)[:-1]])) if sizes else ()


def split_flat(flat, shapes, reshape: Callable[[Any, tuple], Any] = np.reshape) -> list:
    """Cut `flat` into arrays of `shapes` (numpy views; tensors with reshape=ops.reshape)."""
    return [
        reshape(flat[o : o + int(np.prod(s, dtype=np.int64))], tuple(s))
        for o, s in zip(offsets_of(shapes), shapes)
    ]


class FlatLayout:
    """Arrays of `shapes` laid end to end in one flat vector (C order)."""

    shapes: tuple[tuple[int, ...], ...]

    offsets_of = staticmethod(offsets_of)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """The flat vector's length."""
        return int(sum(self.sizes))

    def split(self, flat, reshape: Callable[[Any, tuple], Any] = np.reshape) -> list:
        """`flat` cut into one array per shape, in order (see `split_flat`)."""
        return split_flat(flat, self.shapes, reshape)


__all__ = ["FlatLayout", "offsets_of", "split_flat"]
