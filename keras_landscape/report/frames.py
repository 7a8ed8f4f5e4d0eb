"""Stores as pandas DataFrames, for notebooks: no Keras, no TensorFlow, no JAX.

    >>> from keras_landscape.report.frames import frames, runs, models
    >>> runs("runs/cubic.h5")                      # one row per run
    >>> tables = frames("runs/cubic.h5", "curviness")
    >>> tables["levels"]                           # one row per level
    >>> tables["strings"]                          # one row per (level, pair) string
    >>> tables["beads"]                            # one row per bead of every string

`frames(store, run)` gives every table the run's result and datasets hold, by name:

- `result`: the result's scalar fields, one row;
- one frame per list of records in the result, one row per record (`models` of evaluate and
  hessian, `pairs` of connectivity and barrier, `marks` of slices); a list of lists of
  records (curviness `details`: per level, per pair) becomes one frame with an `index_0`
  column for the outer position (`strings` for curviness details);
- `levels`: the result's per-level lists side by side, one row per level (curviness; the
  components probe: `level`, `n_components` and its bounds `n_components_lower`,
  `n_components_upper`);
- `beads`: one row per bead of every DSS string stored in the run (prefix, row, position in
  the final string or NaN, level, depth, steps);
- `grid`: one row per grid point of a slice (x, y, loss, level).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from keras_landscape.store.hdf5 import Store
from keras_landscape.store.strings import read_string, string_prefixes

# per-level fields that name the level list they run along
_LEVEL_KEYS = {"levels": "level", "grid": "level"}


def runs(path: str | os.PathLike) -> pd.DataFrame:
    """One row per run: name, probe, status, seed, started, finished, seconds."""
    with Store.open(path) as store:
        rows = []
        for name in store.run_names():
            run = store.run(name)
            attrs = run.get_attrs()
            result = run.result or {}
            rows.append(
                {
                    "run": name,
                    "probe": attrs.get("probe"),
                    "status": run.status,
                    "seed": attrs.get("seed"),
                    "started": attrs.get("started"),
                    "finished": attrs.get("finished"),
                    "seconds": result.get("seconds") if isinstance(result, dict) else None,
                }
            )
    return pd.DataFrame(
        rows, columns=["run", "probe", "status", "seed", "started", "finished", "seconds"]
    )


def models(path: str | os.PathLike) -> pd.DataFrame:
    """One row per stored model: name, source, role, parameters."""
    with Store.open(path) as store:
        rows = []
        for name in store.model_names():
            entry = store.read_model(name)
            attrs = dict(entry["attrs"])
            rows.append(
                {
                    "model": name,
                    "source": attrs.get("source"),
                    "role": attrs.get("role"),
                    "parameters": int(np.size(entry["theta"])),
                }
            )
    return pd.DataFrame(rows, columns=["model", "source", "role", "parameters"])


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _nested_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_records(v) or v == [] for v in value)


def _flat(record: dict) -> dict:
    """A record's scalar fields, and its nested mappings one level deep (key.sub)."""
    out = {}
    for key, value in record.items():
        if _scalar(value):
            out[key] = value
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if _scalar(v)})
    return out


def _levels(result: dict) -> pd.DataFrame | None:
    axis = next((k for k in _LEVEL_KEYS if isinstance(result.get(k), list)), None)
    if axis is None or not all(_scalar(v) for v in result[axis]):
        return None
    n = len(result[axis])
    columns = {_LEVEL_KEYS[axis]: result[axis]}
    for key, value in result.items():
        if key != axis and isinstance(value, list) and len(value) == n:
            if all(_scalar(v) for v in value):
                columns[key] = value
            elif all(isinstance(v, dict) and all(_scalar(x) for x in v.values()) for v in value):
                columns[key] = [dict(v) for v in value]
    return pd.DataFrame(columns)


def _grid(result: dict) -> pd.DataFrame | None:
    if not all(k in result for k in ("x", "y", "loss", "level")):
        return None
    x, y = np.asarray(result["x"], float), np.asarray(result["y"], float)
    loss, level = np.asarray(result["loss"], float), np.asarray(result["level"], float)
    xx, yy = np.meshgrid(x, y)
    return pd.DataFrame(
        {"x": xx.ravel(), "y": yy.ravel(), "loss": loss.ravel(), "level": level.ravel()}
    )


def _beads(run) -> pd.DataFrame:
    rows = []
    for prefix in string_prefixes(run):
        stored = read_string(run, prefix)
        position = {int(r): i for i, r in enumerate(stored.order)}
        for row in range(len(stored.bead_level)):
            rows.append(
                {
                    "string": prefix,
                    "row": row,
                    "position": position.get(row, math.nan),
                    "level": float(stored.bead_level[row]),
                    "depth": int(stored.bead_depth[row]) if stored.bead_depth is not None else None,
                    "steps": int(stored.bead_steps[row]) if stored.bead_steps is not None else None,
                    "verdict": (stored.verdict or {}).get("reason"),
                }
            )
    return pd.DataFrame(
        rows, columns=["string", "row", "position", "level", "depth", "steps", "verdict"]
    )


def frames(path: str | os.PathLike, run: str) -> dict[str, pd.DataFrame]:
    """Every table of one run (see the module docstring), by name."""
    with Store.open(path) as store:
        record = store.run(run)
        result = record.result or {}
        out: dict[str, pd.DataFrame] = {"result": pd.DataFrame([_flat(result)])}
        levels = _levels(result)
        per_level = set(levels.columns) if levels is not None else set()
        for key, value in result.items():
            if key in per_level:
                continue  # a column of `levels`
            if _records(value):
                out[key] = pd.DataFrame([_flat(v) for v in value])
            elif _nested_records(value):
                name = "strings" if key == "details" else key
                out[name] = pd.DataFrame(
                    [{"index_0": i, **_flat(v)} for i, inner in enumerate(value) for v in inner]
                )
        if levels is not None:
            out["levels"] = levels
        grid = _grid(result)
        if grid is not None:
            out["grid"] = grid
        beads = _beads(record)
        if len(beads):
            out["beads"] = beads
    return out


__all__ = ["frames", "models", "runs"]
