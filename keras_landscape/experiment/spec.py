"""`RunSpec`: everything one `klandscape probe` / `run` needs, as plain validated data.

RunSpec is declared in `keras_landscape.settings` with the run settings it is made of (one
list of fields for the command-line options, the YAML keys and the spec); it is
re-exported here. No framework import: the CLI and the YAML loader build specs before
TensorFlow loads.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from keras_landscape.settings import RunSpec


def default_store_path() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("klandscape-runs") / f"run-{stamp}.h5")


__all__ = ["RunSpec", "default_store_path"]
