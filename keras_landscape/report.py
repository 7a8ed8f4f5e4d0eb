"""Reading a store back into plain data for `klandscape show`, result tables and scripts.

Nothing here computes a landscape quantity: it reads the store (h5py + numpy, no TensorFlow)
and reshapes results into rows that the CLI prints. `summarize_store` is the `show --json`
document; `result_tables` turns one probe result into compact tables (one row per pair, per
level, per merge), so that a reader sees the key numbers instead of a JSON dump.
"""

from __future__ import annotations

import json
import math
import re
import shlex

from keras_landscape.store import Run, Store, reading

#: Curviness measures 3 levels when `levels` is empty (plugins/curviness.py DEFAULT_FRACTIONS).
_DEFAULT_CURVINESS_LEVELS = 3


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


def _mean_sd(mean, sd) -> str:
    if mean is None:
        return "n/a"
    return f"{fmt(mean)} ± {fmt(sd if sd is not None else 0.0, 2)}"


def _table(title: str, columns: list[str], rows: list[list], notes: list[str] | None = None) -> dict:
    return {"title": title, "columns": columns, "rows": [[fmt(v) for v in row] for row in rows],
            "notes": notes or []}


# ------------------------------------------------------------------------ result tables


def _connectivity(name: str, result: dict) -> list[dict]:
    pairs = [p for p in result.get("pairs") or [] if isinstance(p, dict)] or [result]
    rows, notes = [], []
    for p in pairs:
        verdict = "connected" if p.get("connected") else p.get("reason", "not connected")
        rows.append([f"{p.get('a', 'A')} - {p.get('b', 'B')}", p.get("level"), verdict,
                     p.get("beads"), p.get("normalized_length"), p.get("max_loss"),
                     p.get("depth"), p.get("projection_steps")])
        if not p.get("connected") and p.get("reason"):
            worst = p.get("worst_segment") or {}
            detail = f"{p.get('a', 'A')} - {p.get('b', 'B')}: {p.get('explanation') or p['reason']}"
            if worst.get("index") is not None:
                detail += (f"; worst segment {worst['index']} reaches {fmt(worst.get('max_loss'))}"
                           f" at t = {fmt(worst.get('t'), 2)}")
            if worst.get("bead_level") is not None:
                detail += (f"; its bead stopped at {fmt(worst['bead_level'])} "
                           f"(target {fmt(worst.get('target'))})")
            notes.append(detail)
    connected = sum(bool(p.get("connected")) for p in pairs)
    notes.insert(0, f"{connected} of {len(pairs)} pair(s) connected; level function "
                    f"{result.get('level_fn', '?')}; beads include both endpoints"
                 + (f"; {fmt(result['seconds'], 3)} s" if result.get("seconds") is not None else ""))
    return [_table(name, ["pair", "level u", "verdict", "beads", "norm. length", "max level",
                          "depth", "steps"], rows, notes)]


def _curviness(name: str, result: dict) -> list[dict]:
    levels = result.get("levels") or []

    def column(key):
        values = result.get(key) or []
        return [values[i] if i < len(values) else None for i in range(len(levels))]

    length, length_sd = column("normalized_length"), column("normalized_length_sd")
    beads, beads_sd = column("beads"), column("beads_sd")
    good, failed, reasons = column("pairs"), column("failed"), column("reasons")
    rows = []
    for i, level in enumerate(levels):
        total = (good[i] or 0) + (failed[i] or 0)
        why = ", ".join(f"{k} {v}" for k, v in (reasons[i] or {}).items()) or "-"
        rows.append([level, f"{good[i] or 0}/{total}", _mean_sd(length[i], length_sd[i]),
                     _mean_sd(beads[i], beads_sd[i]), why])
    notes = [f"mean ± sample sd over the connected pairs; level function "
             f"{result.get('level_fn', '?')}; beads include both endpoints"
             + (f"; {fmt(result['seconds'], 3)} s" if result.get("seconds") is not None else "")]
    return [_table(name, ["level u", "connected", "norm. length", "beads", "failures"], rows, notes)]


def _bracket(saddle) -> str:
    if not isinstance(saddle, dict):
        return fmt(saddle)
    return f"[{fmt(saddle.get('lower'))}, {fmt(saddle.get('upper'))}]"


def _barrier(name: str, result: dict) -> list[dict]:
    pairs = [p for p in result.get("pairs") or [] if isinstance(p, dict)] or [result]
    rows, aligned_rows, notes = [], [], []
    for p in pairs:
        label = f"{p.get('a', 'A')} - {p.get('b', 'B')}"
        ends = [v for v in p.get("endpoint_levels") or [] if v is not None]
        rows.append([label, max(ends) if ends else None, p.get("linear_max"),
                     _bracket(p.get("saddle_level")), p.get("barrier"), p.get("relaxed_max")])
        aligned = p.get("aligned")
        if isinstance(aligned, dict):
            aligned_rows.append([label, f"{fmt(p.get('distance'))} -> {fmt(aligned.get('distance'))}",
                                 aligned.get("linear_max"), _bracket(aligned.get("saddle_level")),
                                 aligned.get("barrier")])
        estimators = p.get("estimators")
        if isinstance(estimators, dict):
            notes.append(f"{label}: upper bound from {estimators.get('upper')}, lower from "
                         f"{estimators.get('lower')}")
    notes.insert(0, "barrier = saddle level (upper) - higher minimum, in level-function units "
                    f"({result.get('level_fn', '?')}); the saddle bracket bounds it")
    tables = [_table(name, ["pair", "higher minimum", "linear max", "saddle [lower, upper]",
                            "barrier", "relaxed max"], rows, notes)]
    if aligned_rows:
        tables.append(_table(f"{name}: after weight matching", [
            "pair", "distance raw -> aligned", "linear max", "saddle [lower, upper]", "barrier"],
            aligned_rows))
    return tables


def _components(name: str, result: dict) -> list[dict]:
    minima = result.get("minima") or []
    levels = result.get("minimum_levels") or []
    tables = [_table(f"{name}: minima", ["minimum", "level"],
                     [[m, levels[i] if i < len(levels) else None] for i, m in enumerate(minima)])]
    grid = [(u, n) for u, n in zip(result.get("levels") or [], result.get("n_components") or [])
            if u is not None]
    grid.sort()
    runs: list[list] = []
    for u, n in grid:  # consecutive levels with the same N_u share a row
        if runs and runs[-1][2] == n:
            runs[-1][1] = u
        else:
            runs.append([u, u, n])
    tables.append(_table(f"{name}: N_u", ["levels from", "to", "N_u"], runs,
                         [f"{len(grid)} measured levels; N_u counts components holding a sampled minimum"]))
    members = {i: [m] for i, m in enumerate(minima)}
    merges = []
    for level, a, b, new in result.get("merge_tree") or []:
        left, right = members.get(int(a), [str(a)]), members.get(int(b), [str(b)])
        members[int(new)] = left + right
        merges.append([level, " ".join(left), " ".join(right)])
    unmerged = sum(1 for m in result.get("merge_levels") or [] if m is None)
    notes = [f"highest merge level {fmt(result.get('highest_merge_level'))} (above it all "
             "sampled minima are in one component)"]
    if unmerged:
        notes.append(f"{unmerged} merge(s) not found at any measured level")
    decided = {}
    for record in (result.get("pairs") or {}).values() if isinstance(result.get("pairs"), dict) else []:
        decided[record.get("decided_by")] = decided.get(record.get("decided_by"), 0) + 1
    if decided:
        notes.append("pairs decided by " + ", ".join(f"{k} {v}" for k, v in decided.items()))
    tables.append(_table(f"{name}: merges", ["level", "joins", "with"], merges, notes))
    return tables


def _evaluate(name: str, result: dict) -> list[dict]:
    rows = [r for r in result.get("models") or [] if isinstance(r, dict)]
    if not rows:
        return _generic(name, result)
    first = rows[0]
    level = f"level ({first.get('level_fn', '?')}, {first.get('split', '?')})"
    columns = ["model", "loss (train)", level, "|grad| (train)", "parameters"]
    keys = ["loss", "level", "grad_norm", "parameters"]
    notes = ["loss: mean training loss + regularisers on the training split; "
             "|grad|: its gradient norm; all with each model's own statistics (Keras's "
             "evaluate)"]
    if any("level_recomputed" in r for r in rows):
        columns.insert(3, "level, recomputed BN stats")
        keys.insert(2, "level_recomputed")
        notes.append("level, recomputed BN stats: the level the path probes see at the model "
                     "(--bn-stats recompute)")
    table = _table(name, columns, [[r.get("model")] + [r.get(k) for k in keys] for r in rows],
                   notes)
    return [table]


def _rows_of_dicts(name: str, rows: list[dict]) -> dict:
    columns = list(rows[0])
    return _table(name, columns, [[row.get(c) for c in columns] for row in rows])


def _generic(name: str, result: dict) -> list[dict]:
    rows = result.get("models") if isinstance(result, dict) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return [_rows_of_dicts(name, rows)]
    return [_table(name, ["field", "value"], [[k, v] for k, v in (result or {}).items()])]


_TABLES = {"evaluate": _evaluate, "connectivity": _connectivity, "curviness": _curviness, "barrier": _barrier,
           "components": _components}


def result_tables(name: str, probe: str, result: dict) -> list[dict]:
    """Compact tables of a probe result: [{"title", "columns", "rows" (strings), "notes"}].

    Known kinds (connectivity, curviness, barrier, components) get one row per pair, level or
    merge; any other result becomes a table of its rows (`models`) or of its fields.
    """
    maker = _TABLES.get(probe)
    if maker is not None and isinstance(result, dict):
        try:
            return maker(name, result)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a result of another shape (e.g. a plugin reusing a name): show it plainly
    return _generic(name, result)


# ----------------------------------------------------------------------- string progress


def _string_prefixes(run: Run) -> list[str]:
    keys = set(run.keys())
    found = []
    for key in keys:
        if key == "order" or key.endswith("/order"):
            prefix = key[: -len("order")].rstrip("/")
            beads = f"{prefix}/beads" if prefix else "beads"
            if beads in keys and not prefix.endswith("_relaxed"):
                found.append(prefix)
    return sorted(found, key=lambda s: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)])


def _levels(text) -> list[float]:
    """A `levels` option ('0.3,0.1' or 'start:stop:count') as numbers, highest first."""
    text = str(text or "").strip()
    try:
        if ":" in text:
            start, stop, count = (float(v) for v in text.split(":"))
            n = int(count)
            values = [start + (stop - start) * i / (n - 1) for i in range(n)] if n > 1 else [start]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return []
    return sorted(values, reverse=True)


def configured_level(config: dict, prefix: str) -> float | None:
    """The level a string was started at, from the run's options (for strings that have no
    verdict yet): `level`, or for `level_<k>/...` the k-th of `levels` (highest first)."""
    match = re.match(r"^level_(\d+)/", prefix)
    if match:
        levels = _levels(config.get("levels"))
        k = int(match.group(1))
        return levels[k] if k < len(levels) else None
    level = config.get("level")
    return float(level) if isinstance(level, (int, float)) and not isinstance(level, bool) else None


def strings_of(run: Run) -> list[dict]:
    """The DSS strings stored in a run: key, beads on the string, depth done, verdict."""
    out = []
    config = run.config
    for prefix in _string_prefixes(run):
        attrs = run.get_attrs(prefix or None)
        verdict = attrs.get("verdict") if isinstance(attrs.get("verdict"), dict) else None
        level = verdict.get("level") if verdict is not None else configured_level(config, prefix)
        out.append({
            "key": prefix,
            "beads": run.length(f"{prefix}/order" if prefix else "order"),
            "depth_done": attrs.get("depth_done"),
            "finished": verdict is not None,
            "connected": None if verdict is None else bool(verdict.get("connected")),
            "reason": None if verdict is None else verdict.get("reason"),
            "level": level,
        })
    return out


def _level_count(levels) -> int:
    text = str(levels or "").strip()
    return len(_levels(text)) if text else _DEFAULT_CURVINESS_LEVELS


def expected_strings(probe: str, config: dict, inputs: int) -> list[str] | None:
    """The strings a connectivity or curviness run writes when it finishes (None: unknown).

    Pairs are every i < j of the input models, or the model and each of its partners.
    """
    if probe not in ("connectivity", "curviness"):
        return None
    if inputs >= 2:
        pairs = [(i, j) for i in range(inputs) for j in range(i + 1, inputs)]
    elif inputs == 1:
        pairs = [(0, k) for k in range(1, int(config.get("partners") or 1) + 1)]
    else:
        return None
    names = [f"pair_{i}_{j}" for i, j in pairs]
    if probe == "connectivity":
        return names
    return [f"level_{k}/{n}" for k in range(_level_count(config.get("levels"))) for n in names]


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


def run_progress(run: Run, inputs: int) -> dict:
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
    partners = int(run.config.get("partners") or 0)
    if inputs == 1 and partners and run.probe in ("connectivity", "curviness"):
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
