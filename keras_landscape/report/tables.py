"""Reading a store back into plain data for `klandscape show`, result tables and scripts.

Nothing here computes a landscape quantity: it reads the store (h5py + numpy, no TensorFlow)
and reshapes results into rows that the CLI prints. `summarize_store` is the `show --json`
document; `result_tables` asks the probe that wrote a result for its compact tables (one row
per pair, per level, per merge; `ProbeBase.tables`), or makes a generic one. `fmt`, `table`
and `mean_sd` are the helpers probes build their tables with.
"""

from __future__ import annotations

import json
import math
import shlex

from keras_landscape import registry
from keras_landscape.store.hdf5 import RunRecord, Store, reading
from keras_landscape.store.strings import read_string, string_prefixes

# --------------------------------------------------------------------------- formatting


def fmt(value, digits: int = 4) -> str:
    """A number in `digits` significant digits; None (not finite in the store) as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def mean_sd(mean, sd) -> str:
    """'mean ± sd' in 4 and 2 significant digits ('n/a' without a mean)."""
    if mean is None:
        return "n/a"
    return f"{fmt(mean)} ± {fmt(sd if sd is not None else 0.0, 2)}"


def table(title: str, columns: list[str], rows: list[list], notes: list[str] | None = None) -> dict:
    """A table for `klandscape show`: every cell formatted by `fmt`."""
    return {
        "title": title,
        "columns": columns,
        "rows": [[fmt(v) for v in row] for row in rows],
        "notes": notes or [],
    }


# ------------------------------------------------------------------------ result tables


def _rows_of_dicts(name: str, rows: list[dict]) -> dict:
    columns = list(rows[0])
    return table(name, columns, [[row.get(c) for c in columns] for row in rows])


def generic_tables(name: str, result: dict) -> list[dict]:
    rows = result.get("models") if isinstance(result, dict) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return [_rows_of_dicts(name, rows)]
    return [table(name, ["field", "value"], [[k, v] for k, v in (result or {}).items()])]


def result_tables(name: str, probe: str, result: dict) -> list[dict]:
    """Compact tables of a probe result: [{"title", "columns", "rows" (strings), "notes"}].

    The probe that wrote the result makes them (`ProbeBase.tables`); a probe without tables,
    or one not installed here, gets a table of its rows (`models`) or of its fields.
    """
    if isinstance(result, dict):
        try:
            made = registry.output_hook(probe, "tables")(name, result)
        except (KeyError, TypeError, ValueError, AttributeError):
            made = None  # a result of another shape (e.g. a plugin reusing a name)
        if made is not None:
            return made
    return generic_tables(name, result)


# ----------------------------------------------------------------------- string progress


def string_level(run: RunRecord, prefix: str) -> float | None:
    """The level a string without a verdict was started at, as its probe configured it."""
    return registry.output_hook(run.probe, "string_level")(run.config, prefix)


def strings_of(run: RunRecord) -> list[dict]:
    """The DSS strings stored in a run: key, beads on the string, depth done, verdict."""
    out = []
    for prefix in string_prefixes(run):
        stored = read_string(run, prefix, arrays=False)  # beads can be large
        verdict = stored.verdict
        out.append(
            {
                "key": prefix,
                "beads": len(stored.order),
                "depth_done": stored.depth_done,
                "finished": verdict is not None,
                "connected": None if verdict is None else bool(verdict.get("connected")),
                "reason": None if verdict is None else verdict.get("reason"),
                "level": verdict.get("level") if verdict is not None else string_level(run, prefix),
            }
        )
    return out


def expected_strings(probe: str, config: dict, inputs: int) -> list[str] | None:
    """The strings a finished run of `probe` holds, as the probe says (None: unknown)."""
    return registry.output_hook(probe, "expected_strings")(config, inputs)


def resume_command(command: str, store: str) -> str:
    """The store's recorded command with --resume (and without --overwrite)."""
    if not command:
        return f"the same command with --resume --out {store}"
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    words = [w for w in words if w != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join(words)


def run_progress(run: RunRecord, inputs: int) -> dict:
    """What an unfinished run holds and what it still lacks."""
    strings = strings_of(run)
    expected = expected_strings(run.probe, run.config, inputs)
    present = {s["key"] for s in strings}
    progress = {
        "strings_finished": sum(s["finished"] for s in strings),
        "strings_in_progress": [s["key"] for s in strings if not s["finished"]],
        "strings_expected": None if expected is None else len(expected),
        "not_started": None if expected is None else [k for k in expected if k not in present],
    }
    partners = registry.output_hook(run.probe, "expected_partners")(run.config, inputs)
    if partners:
        progress["partners_trained"] = run.length("partners/theta")
        progress["partners_expected"] = partners
    return progress


# ------------------------------------------------------------------------------ summary


def summarize_store(path: str) -> dict:
    """Everything a reader needs from a store, as JSON-ready data.

    Works on stores of interrupted runs: each run reports its status and, when it is not
    complete, how much of it is stored (rows per dataset, strings finished or in progress)
    and what is missing, instead of a result.
    """
    with reading(path), Store.open(path, "r") as store:
        layout = store.read_layout() if store.has_layout() else None
        models = []
        for name in store.model_names():
            entry = store.read_model(name)
            models.append({"name": name, **entry["attrs"]})
        inputs = sum(1 for m in models if m.get("role") == "input")
        attrs = store.attrs()
        runs = []
        for name in store.run_names():
            run = store.run(name)
            entry = {
                "name": name,
                "probe": run.probe,
                "status": run.status,
                "config": run.config,
                "result": run.result,
                "stored": {key: run.length(key) for key in run.keys()},
                **{
                    k: v
                    for k, v in run.get_attrs(None).items()
                    if k in ("started", "finished", "error", "seed", "resumed")
                },
                "strings": strings_of(run),
            }
            if run.status != "complete":
                entry["progress"] = run_progress(run, inputs)
                entry["resume"] = resume_command(str(attrs.get("command") or ""), store.path)
            runs.append(entry)
        runs.sort(key=lambda r: str(r.get("started") or ""))  # in the order they ran
        return {
            "store": store.path,
            "attrs": attrs,
            "parameters": layout["size"] if layout else None,
            "variables": len(layout["paths"]) if layout else 0,
            "data": store.read_data_info(),
            "models": models,
            "runs": runs,
        }


def n_u_bounds(result: dict) -> list[tuple[float, int | None, int]]:
    """(level, lower, upper) of N_u by increasing level; a store from before the bounds
    has n_components only, an upper bound, and its lower bound is None (unknown)."""
    levels = result.get("levels") or []
    upper = result.get("n_components_upper") or result.get("n_components") or []
    lower = result.get("n_components_lower") or [None] * len(upper)
    rows = [
        (float(u), None if lo is None else int(lo), int(hi))
        for u, lo, hi in zip(levels, lower, upper)
        if u is not None and hi is not None
    ]
    return sorted(rows, key=lambda row: row[0])


def interval(lower: int | None, upper: int) -> str:
    """'2' when the bounds agree, '1-4' when they differ, '<=4' with no lower bound."""
    if lower is None:
        return f"<={upper}"
    return str(upper) if lower == upper else f"{lower}-{upper}"


def n_u_runs_of(curve: list[tuple[float, int | None, int]]) -> list[list]:
    """[first level, last level, lower, upper] for each run of consecutive levels of
    `n_u_bounds` with the same bounds."""
    runs: list[list] = []
    for u, lo, hi in curve:
        if runs and runs[-1][2:] == [lo, hi]:
            runs[-1][1] = u
        else:
            runs.append([u, u, lo, hi])
    return runs
