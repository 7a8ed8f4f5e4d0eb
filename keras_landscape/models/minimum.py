"""`Minimum`: a model taking part in a probe (plain data; no framework import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Minimum:
    """A model taking part in a probe: its name, theta and where it came from.

    Attributes:
        name: unique name inside the store (`/models/<name>`).
        theta: flat trainable parameters (float32, the landscape's layout).
        source: a file path, or 'trained:<how>' for partners trained by a probe.
        model: the Keras model object (never mutated).
        state: its own non-trainable state s (S,): BatchNorm statistics and other float
            non-trainable variables (see `keras_landscape.engine.state`); None: the landscape's.
    """

    name: str
    theta: np.ndarray
    source: str
    model: Any = None
    state: np.ndarray | None = None


__all__ = ["Minimum"]
