"""`RunSpec`: everything one `klandscape probe` / `run` needs, as plain validated data.

No framework import: the CLI and the YAML loader build specs before TensorFlow loads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_landscape.engine.options import (
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    DEFAULT_EVAL_BATCH,
)


@dataclass
class RunSpec:
    """Everything one `klandscape probe` / `run` needs, as plain validated data."""

    models: list[str]
    data: str
    probes: list[str] = field(default_factory=lambda: ["evaluate"])
    options: dict[str, Any] = field(default_factory=dict)
    probe_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    loss: str | None = None
    level_fn: str = "loss"
    split: str | None = None
    out: str | None = None
    seed: int = 0
    custom_objects: str | None = None
    unsafe: bool = False
    resume: bool = False
    overwrite: bool = False
    xla: bool | str = "auto"
    fast_float32: bool = False
    eval_batch_size: int = DEFAULT_EVAL_BATCH
    bn_stats: str = BN_MODES[0]
    bn_batches: int = DEFAULT_BN_BATCHES
    bn_batch_size: int = DEFAULT_BN_BATCH_SIZE
    strategy: str = "one"
    tpu: str | None = None
    lockstep: bool = True
    command: str = ""


def default_store_path() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("klandscape-runs") / f"run-{stamp}.h5")


__all__ = ["RunSpec", "default_store_path"]
