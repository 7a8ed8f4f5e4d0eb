"""Stores as pandas DataFrames, for notebooks: no Keras, no TensorFlow, no JAX.

    >>> from keras_landscape.report.frames import frames, runs, models
    >>> runs("runs/cubic.h5")                      # one row per run
    >>> tables = frames("runs/cubic.h5", "curviness")
    >>> tables["levels"]                           # one row per level
    >>> tables["strings"]                          # one row per (level, pair) string
    >>> tables["beads"]                            # one row per bead of every string
    >>> tables["checks"]                           # one row per checked point of a segment

Everything is read from the store alone (the run's result and its datasets).
`frames(store, run)` gives every table the run holds, by name:

- `result`: the result's scalar fields, one row;
- one frame per list of records in the result, one row per record (`models` of evaluate and
  hessian, `pairs` of connectivity and barrier, `marks` of slices); a list of lists of
  records (curviness `details`: per level, per pair) becomes one frame with an `index_0`
  column for the outer position (`strings` for curviness details); a list of records that
  each hold one list of records becomes one row per inner record, with the outer record's
  fields beside it (hessian `path`: one row per bead of each measured string: string, bead,
  position, level, top_eigenvalue, trace, trace_se); other lists of records inside records
  get their own frame with the outer record's name (hessian `layers`: model, variable,
  parameters, top_eigenvalue);
- in every record row, nested mappings become `key.sub` columns, and two-element brackets
  and intervals (`barrier_bracket`, `*_interval`) `key_lower` and `key_upper` columns;
  other lists are left to the frames below;
- `eigenvalues`: one row per eigenvalue of every record holding `eigenvalues` (hessian
  `models`): model, rank (1 = largest), eigenvalue, residual (||Hq - lambda q||), and the
  model's trace and trace_se (Hutchinson's standard error);
- `density`: one row per grid point of a spectral density: model, eigenvalue, density;
- `intervals`: one row per bootstrap interval (barrier with bootstrap > 0): pair, a, b,
  aligned (after weight matching), split, path (linear, dss, neb, bezier, polychain),
  max_level with max_lower, max_upper, barrier with barrier_lower, barrier_upper,
  confidence, resamples;
- `levels`: the result's per-level lists side by side, one row per level (curviness; the
  components probe: `level`, `n_components` and its bounds `n_components_lower`,
  `n_components_upper`);
- `beads`: one row per bead of every DSS string stored in the run, relaxed copies
  (`<prefix>_relaxed`) included: string, row, position in the final string (NaN for beads
  it no longer holds), distance (Euclidean length along the final string from A) and t
  (distance over the string's length, A = 0, B = 1; both NaN off the final string),
  level, depth, steps, verdict (its reason);
- `checks`: one row per checked point of every stored segment: string, left and right
  bead rows, depth, point (0..R), s (fraction of the segment, 0 at left), level,
  on_path (the last check of a segment of the final string, the curve `klandscape plot`
  draws) and, on the path, distance and t as in `beads`;
- a mapping of records in the result (components `pairs`, by "i-j") is a frame with a
  `key` column;
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
# fields of a record that name it, carried into the frames of its nested lists
_NAMES = ("model", "string", "prefix", "a", "b", "variable")
# result fields with frames of their own (not columns of their record's row)
_OWN_FRAMES = ("intervals",)

_BEAD_COLUMNS = [
    "string",
    "row",
    "position",
    "distance",
    "t",
    "level",
    "depth",
    "steps",
    "verdict",
]
_CHECK_COLUMNS = [
    "string",
    "left",
    "right",
    "depth",
    "point",
    "s",
    "level",
    "on_path",
    "distance",
    "t",
]


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


def _keyed_records(value) -> bool:
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())
    )


def _is_interval(key: str, value) -> bool:
    """A [lower, upper] pair: a bisection bracket or a bootstrap interval."""
    return (
        (key.endswith("_bracket") or key.endswith("_interval"))
        and isinstance(value, list)
        and len(value) == 2
        and all(_scalar(v) for v in value)
    )


def _flat(record: dict, prefix: str = "", depth: int = 0) -> dict:
    """A record's scalar fields; nested mappings as key.sub (two levels deep); brackets and
    intervals as key_lower, key_upper. Other lists are left out (they have frames)."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if _scalar(value):
            out[name] = value
        elif _is_interval(key, value):
            out[f"{name}_lower"], out[f"{name}_upper"] = value
        elif isinstance(value, dict) and depth < 2 and key not in _OWN_FRAMES:
            if _keyed_records(value):
                continue  # a frame of its own
            out.update(_flat(value, f"{name}.", depth + 1))
    return out


def _names(record: dict) -> dict:
    """The fields that name a record (model, string, a, b, ...)."""
    return {k: record[k] for k in _NAMES if k in record and _scalar(record[k])}


def _inner_records(record: dict) -> list[str]:
    return [k for k, v in record.items() if _records(v)]


def _record_frames(key: str, value: list[dict]) -> dict[str, pd.DataFrame]:
    """Frames of a list of records: one row per record, or per inner record where each
    record holds one list of records beside scalars (hessian `path`), and a frame per
    other list of records inside them (hessian `layers`)."""
    inner = {k for record in value for k in _inner_records(record)}
    if len(inner) == 1 and all(
        _scalar(v) or k in inner for record in value for k, v in record.items()
    ):
        (field,) = inner
        rows = [
            {**_flat({k: v for k, v in record.items() if k != field}), **_flat(item)}
            for record in value
            for item in record.get(field) or []
        ]
        return {key: pd.DataFrame(rows)}
    out = {key: pd.DataFrame([_flat(v) for v in value])}
    for field in sorted(inner):
        rows = [
            {**(_names(record) or {"index_0": i}), **_flat(item)}
            for i, record in enumerate(value)
            for item in (record.get(field) if _records(record.get(field)) else [])
        ]
        out.setdefault(field, pd.DataFrame(rows))
    return out


def _model_records(result: dict) -> list[tuple[object, dict]]:
    """(name, record) of every record in the result's lists of records."""
    found = []
    for value in result.values():
        if _records(value):
            found += [(r.get("model", i), r) for i, r in enumerate(value)]
    return found


def _eigenvalues(result: dict) -> pd.DataFrame | None:
    rows = []
    for name, record in _model_records(result):
        values = record.get("eigenvalues")
        if not isinstance(values, list):
            continue
        residuals = record.get("residuals") or []
        for rank, value in enumerate(values, start=1):
            rows.append(
                {
                    "model": name,
                    "rank": rank,
                    "eigenvalue": value,
                    "residual": residuals[rank - 1] if rank <= len(residuals) else None,
                    "trace": record.get("trace"),
                    "trace_se": record.get("trace_se"),
                }
            )
    columns = ["model", "rank", "eigenvalue", "residual", "trace", "trace_se"]
    return pd.DataFrame(rows, columns=columns) if rows else None


def _density(result: dict) -> pd.DataFrame | None:
    rows = []
    for name, record in _model_records(result):
        grid, density = record.get("density_grid"), record.get("density")
        if isinstance(grid, list) and isinstance(density, list) and len(grid) == len(density):
            rows += [{"model": name, "eigenvalue": g, "density": d} for g, d in zip(grid, density)]
    return pd.DataFrame(rows, columns=["model", "eigenvalue", "density"]) if rows else None


def _interval_rows(intervals: dict, base: dict) -> list[dict]:
    """Rows of one `intervals` mapping: {confidence, resamples, split: {path: values}}."""
    rows = []
    for split, paths in intervals.items():
        if not isinstance(paths, dict):
            continue
        for path, values in paths.items():
            if not isinstance(values, dict):
                continue
            row = {**base, "split": split, "path": path}
            for key, value in values.items():
                if _is_interval(key, value):
                    stem = key[: -len("_interval")]
                    row[f"{stem}_lower"], row[f"{stem}_upper"] = value
                elif _scalar(value):
                    row[key] = value
            row["confidence"] = intervals.get("confidence")
            row["resamples"] = intervals.get("resamples")
            rows.append(row)
    return rows


def _intervals(result: dict) -> pd.DataFrame | None:
    pairs = result.get("pairs") if _records(result.get("pairs")) else [result]
    rows = []
    for index, pair in enumerate(pairs):
        base = {"pair": index, "a": pair.get("a"), "b": pair.get("b")}
        for aligned, holder in ((False, pair), (True, pair.get("aligned"))):
            if isinstance(holder, dict) and isinstance(holder.get("intervals"), dict):
                rows += _interval_rows(holder["intervals"], {**base, "aligned": aligned})
    if not rows:
        return None
    first = ["pair", "a", "b", "aligned", "split", "path", "max_level", "max_lower", "max_upper"]
    first += ["barrier", "barrier_lower", "barrier_upper"]
    frame = pd.DataFrame(rows)
    order = [c for c in first if c in frame] + [c for c in frame if c not in first]
    return frame[order]


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


def _strings(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `beads` and `checks` frames of every string stored in the run."""
    beads, checks = [], []
    for prefix in string_prefixes(run, relaxed=True):
        stored = read_string(run, prefix)
        rows = stored.rows
        final = stored.beads[rows].astype(np.float64)
        steps = np.linalg.norm(np.diff(final, axis=0), axis=1) if len(rows) > 1 else np.zeros(0)
        distances = np.concatenate([[0.0], np.cumsum(steps)])
        length = float(distances[-1])
        position = {row: i for i, row in enumerate(rows)}

        def t_of(distance: float, length=length) -> float:
            return distance / length if length > 0 else math.nan

        for row in range(len(stored.bead_level)):
            i = position.get(row)
            distance = math.nan if i is None else float(distances[i])
            beads.append(
                {
                    "string": prefix,
                    "row": row,
                    "position": math.nan if i is None else i,
                    "distance": distance,
                    "t": t_of(distance),
                    "level": float(stored.bead_level[row]),
                    "depth": None if stored.bead_depth is None else int(stored.bead_depth[row]),
                    "steps": None if stored.bead_steps is None else int(stored.bead_steps[row]),
                    "verdict": (stored.verdict or {}).get("reason"),
                }
            )
        # the last check of a segment counts (as in the path figure)
        last = {(left, right): k for k, (left, right, _, _) in enumerate(stored.curves)}
        segment = {(left, right): i for i, (left, right) in enumerate(zip(rows, rows[1:]))}
        for k, (left, right, depth, levels) in enumerate(stored.curves):
            i = segment.get((left, right)) if last[(left, right)] == k else None
            s = np.linspace(0.0, 1.0, len(levels))
            for point, (fraction, level) in enumerate(zip(s, levels)):
                distance = math.nan if i is None else float(distances[i] + fraction * steps[i])
                checks.append(
                    {
                        "string": prefix,
                        "left": left,
                        "right": right,
                        "depth": depth,
                        "point": point,
                        "s": float(fraction),
                        "level": float(level),
                        "on_path": i is not None,
                        "distance": distance,
                        "t": t_of(distance),
                    }
                )
    return (
        pd.DataFrame(beads, columns=_BEAD_COLUMNS),
        pd.DataFrame(checks, columns=_CHECK_COLUMNS),
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
                for name, frame in _record_frames(key, value).items():
                    out.setdefault(name, frame)
            elif _nested_records(value):
                name = "strings" if key == "details" else key
                out[name] = pd.DataFrame(
                    [{"index_0": i, **_flat(v)} for i, inner in enumerate(value) for v in inner]
                )
            elif _keyed_records(value):
                out[key] = pd.DataFrame([{"key": k, **_flat(v)} for k, v in value.items()])
        for name, make in (
            ("eigenvalues", _eigenvalues),
            ("density", _density),
            ("intervals", _intervals),
            ("levels", lambda _: levels),
            ("grid", _grid),
        ):
            frame = make(result)
            if frame is not None:
                out[name] = frame
        beads, checks = _strings(record)
        if len(beads):
            out["beads"] = beads
        if len(checks):
            out["checks"] = checks
    return out


__all__ = ["frames", "models", "runs"]
