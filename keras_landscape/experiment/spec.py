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


def model_names(paths: list[str]) -> list[str]:
    """The store name of each model file: unique, and the same for the same files.

    A file whose stem no other input shares is named by its stem (`runs/a.keras` -> `a`).
    Files sharing a stem are named `<folder>_<stem>`, the folder being the one that holds
    the file (`x/m.keras`, `y/m.keras` -> `x_m`, `y_m`; found from the resolved path, so
    the same file gets the same name from any working directory). A name that is still
    taken (by another input's stem or an earlier name) gets the first free suffix `_2`,
    `_3`, ... (`a/m.keras` twice -> `a_m`, `a_m_2`). No name is another input's stem, and
    no two inputs share a name.
    """
    stems = [Path(str(path)).stem or "model" for path in paths]
    counts = {stem: stems.count(stem) for stem in stems}
    reserved = set(stems)
    names: list[str] = []
    for path, stem in zip(paths, stems):
        if counts[stem] == 1:
            names.append(stem)
            continue
        folder = Path(str(path)).resolve().parent.name
        candidate = f"{folder}_{stem}" if folder else stem
        name, k = candidate, 1
        while name in reserved or name in names:
            k += 1
            name = f"{candidate}_{k}"
        names.append(name)
    return names


__all__ = ["RunSpec", "default_store_path", "model_names"]
