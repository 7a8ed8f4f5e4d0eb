"""`klandscape census SWEEP.yaml`: the landscape census over a grid of architectures.

A sweep is a run config (the keys of `klandscape run`, see `experiment.config`, without
`models` and `probes`) plus:

    grid:                      # recipe keys -> lists of values; every combination is a point
      width: [1, 2, 4, 8]      # width and depth set the recipe's layers: [width] * depth
      depth: [1]
    replicas: 4                # minima trained per point (model.replicas is the same key)
    probes: [components, curviness]        # the default; names or {name: options}
    components: {levels: "0.01:0.2:20"}    # options of the components probe
    curviness: {levels: "0.1,0.05"}        # options of the curviness probe
    scales: {small: {...}, full: {...}}    # merged over the top level by --scale NAME

`probes` lists the census probes of every point: any registered probe that declares census
columns (`registry.ProbeBase.census_columns`: what it adds to a point's row), a third
party's as well as `components` and `curviness`. A listed probe's options go beside it in
the list or under a top-level key of its name.

Each point is an ordinary run config (`model.layers` from width and depth, the listed
probes), validated by `experiment.config.load_config` and run by
`experiment.config.prepare` (train or reuse the point's replicas) and
`experiment.runner.execute`, into a working store `<out stem>-work/<point>.h5`. When a point
is finished its runs and models are copied into the census store (`out`) as runs
`<point>.<probe>` (`<point>.components`, `<point>.curviness`) and models
`<point>.<model>`, each run marked
with its grid values (`census_point`, `census_grid`, `census_index`, `census_stamp`,
`parameters`), and the working store is removed. So the census store is one file, and an
interrupted census resumes (`--resume`): finished points are reused from it (after checking
that their settings are the same), an unfinished point resumes its working store.
`keras_landscape.report.census` reads the census back (table and figures, no Keras).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_landscape import registry
from keras_landscape.engine.options import parse_strategy
from keras_landscape.errors import ConfigError, Interrupted, UserError
from keras_landscape.experiment.config import (
    TOP_KEYS,
    ExperimentConfig,
    _check_keys,
    _probe_map,
    apply_override,
    default_out,
    describe,
    load_config,
    load_with,
    prepare,
    refuse_unknown_probes,
    with_scale,
)
from keras_landscape.experiment.config import _plots as run_plots
from keras_landscape.experiment.plan import check_out, refuse_resume_and_overwrite
from keras_landscape.models.recipes import BUILDERS
from keras_landscape.progress import NullProgress, Progress
from keras_landscape.report.census import CENSUS_ATTRS, census_points, census_rows, plot_census
from keras_landscape.report.plots import default_directory
from keras_landscape.store.hdf5 import (
    Store,
    check_not_in_use,
    hold_store,
    refuse_existing,
    to_json,
)

#: the probes of a sweep that lists none
DEFAULT_PROBES = ("components", "curviness")
#: the run-config keys a sweep takes (a `strategy` key passes through once config.py has it)
BASE_KEYS = tuple(k for k in TOP_KEYS if k not in ("models", "probes", "scales"))
CENSUS_KEYS = ("grid", "replicas", "probes")
#: a sweep's keys, besides a top-level key per census probe (its options)
SWEEP_KEYS = (*BASE_KEYS, *CENSUS_KEYS, "scales")
#: grid keys that are not recipe keys: both set `layers` ([width] * depth)
SHAPE_KEYS = ("width", "depth")
#: keys of `describe` that do not change a point's results (paths, the command)
_NOT_STAMPED = ("out", "models", "command", "resume", "overwrite")


_ONE_PROCESS = (
    "klandscape census runs in one process: use strategy one, mirrored or tpu (each "
    "point's stacks of beads are split across the devices of this host). Several "
    "hosts can each run a part of the grid into its own census store."
)


def _fail(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


def census_probes() -> list[str]:
    """The registered probes that can take part in a census: those declaring census
    columns (`census_columns`, the values they add to a point's row)."""
    return [name for name in registry.probes() if registry.output_hook(name, "census_columns")]


def _sweep_probes(document: dict) -> dict[str, dict]:
    """The sweep's census probes and their options: `probes` (default components,
    curviness) with options given in the list or under a top-level key of the probe's
    name (both: merged, the list's winning)."""
    capable = census_probes()
    listed = _probe_map(document.get("probes", list(DEFAULT_PROBES)), "probes")
    if not listed:
        _fail("probes", f"list at least one census probe ({', '.join(capable)})")
    refuse_unknown_probes(listed, registry.probes(), capable, "census probes")
    for name in listed:
        if name not in capable:
            _fail(
                f"probes.{name}",
                f"the {name} probe adds nothing to a census row (its class declares no "
                f"census_columns); census probes: {', '.join(capable)}",
            )
    for name in capable:
        options = document.get(name)
        if options is None:
            continue
        if not isinstance(options, dict):
            _fail(name, f"expected a mapping of {name} probe options, got {options!r}")
        if name not in listed:
            _fail(name, f"options of a probe that is not listed (probes: {', '.join(listed)})")
        listed[name] = {**options, **listed[name]}
    return listed


@dataclass
class CensusPoint:
    """One grid point: its name, grid values and validated run config."""

    name: str
    index: int
    values: dict[str, Any]
    config: ExperimentConfig
    work: str

    @property
    def probes(self) -> list[str]:
        """The point's census probes, in the sweep's order."""
        return list(self.config.spec.probes)

    @property
    def stamp(self) -> dict:
        """What the point's results depend on (checked before a finished point is reused)."""
        described = describe(self.config)
        run = {k: v for k, v in described["run"].items() if k not in _NOT_STAMPED}
        model = {k: v for k, v in (described["model"] or {}).items() if k != "dir"}
        return {
            "grid": self.values,
            "run": run,
            "model": model,
            "data_choices": described["data_choices"],
        }


@dataclass
class Census:
    """A validated sweep: its grid, its points, and where the store and figures go."""

    source: str
    scale: str | None
    grid: dict[str, list]
    points: list[CensusPoint]
    out: str
    plots: dict | None
    document: dict
    command: str = ""

    @property
    def work_dir(self) -> str:
        out = Path(self.out)
        return str(out.with_name(out.stem + "-work"))

    @property
    def figures_dir(self) -> str | None:
        if self.plots is None:
            return None
        return self.plots["dir"] or default_directory(self.out)


# --------------------------------------------------------------------------- loading


def load_census(
    source: str | dict,
    *,
    scale: str | None = None,
    overrides: list[tuple[str, Any]] = (),
    base_dir: str | None = None,
    command: str = "",
) -> Census:
    """Validate a sweep file (or mapping) into a Census; every point's config is validated.

    Raises:
        UserError (ConfigError): a bad key or value, with its key path.
    """
    return load_with(source, base_dir, lambda *read: _load(*read, scale, overrides, command))


def _load(document, path, folder, scale, overrides, command) -> Census:
    keys = (*SWEEP_KEYS, *census_probes())
    document = with_scale(document, keys, scale, "sweep")
    for key, value in overrides:
        _override(document, key, value)
    _check_keys(document, [k for k in keys if k != "scales"], "")
    if document.get("model") is None:
        _fail("model", "missing: a census trains an architecture (model: builder, input, ...)")
    model = document["model"]
    if not isinstance(model, dict):
        _fail("model", "expected a mapping with builder, input, layers, output, ...")
    builder = model.get("builder")
    if builder not in BUILDERS:
        _fail("model.builder", f"expected one of {', '.join(BUILDERS)}, got {builder!r}")
    grid = _grid(document.get("grid"), builder)
    replicas = document.get("replicas", model.get("replicas", 4))
    if "replicas" in document and "replicas" in model and model["replicas"] != replicas:
        _fail("replicas", f"given twice (replicas {replicas}, model.replicas {model['replicas']})")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 2:
        _fail("replicas", f"expected an integer >= 2 (pairs of minima), got {replicas!r}")
    probes = [{n: o} if o else n for n, o in _sweep_probes(document).items()]
    out = str(document.get("out") or default_out(path, scale))
    if not out.strip():
        _fail("out", "expected a store path")
    try:
        check_out(out, "out")
    except UserError as error:
        raise ConfigError(str(error)) from None
    stem = Path(out)
    models_root = Path(model["dir"]) if model.get("dir") else stem.with_name(stem.stem + "-models")
    work_dir = stem.with_name(stem.stem + "-work")
    base = {k: v for k, v in document.items() if k in BASE_KEYS}
    base.pop("plots", None)
    points = []
    for index, combination in enumerate(itertools.product(*grid.values())):
        values = dict(zip(grid, combination))
        name = point_name(values)
        run = copy.deepcopy(base)
        run["model"] = _point_model(model, values, replicas, str(models_root / name))
        run["probes"] = copy.deepcopy(probes)
        run["out"] = str(work_dir / f"{name}.h5")
        run["plots"] = False
        try:
            config = load_config(run, base_dir=str(folder), command=command)
        except ConfigError as error:
            raise ConfigError(
                f"grid point {name}: {_census_path(str(error), run['probes'])}"
            ) from None
        points.append(CensusPoint(name, index, values, config, run["out"]))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        _fail("grid", "two grid points get the same name; give distinct values")
    first = points[0].config.spec
    if parse_strategy(first.strategy, first.tpu).name == "multiworker":
        _fail("strategy", _ONE_PROCESS)
    plots = _plots(document.get("plots"))
    return Census(path, scale, grid, points, out, plots, document, command)


def _override(document: dict, key: str, value: Any) -> None:
    """--set KEY=VALUE: census keys (grid.width, components.levels, replicas, probes) are set
    as written; anything else as `klandscape run --set` does (a probe option goes to
    options)."""
    parts = key.split(".")
    if parts[0] in CENSUS_KEYS or (len(parts) > 1 and parts[0] in census_probes()):
        target = document
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
        return
    options = {f.name for e in registry.probes().values() for f in registry.config_fields(e.cls)}
    apply_override(document, key, value, options)


def _grid(value, builder: str) -> dict[str, list]:
    if not isinstance(value, dict) or not value:
        _fail("grid", "expected a mapping of recipe keys to lists of values, e.g. {width: [1, 2]}")
    allowed = SHAPE_KEYS + tuple(
        k for k in BUILDERS[builder] if k not in ("input", "output", "embedding")
    )
    _check_keys(value, allowed, "grid.")
    if "layers" in value and any(k in value for k in SHAPE_KEYS):
        _fail("grid.layers", "give either layers or width/depth, not both")
    grid = {}
    for key, items in value.items():
        if not isinstance(items, list) or not items:
            _fail(f"grid.{key}", f"expected a non-empty list of values, got {items!r}")
        if key in SHAPE_KEYS:
            for i, item in enumerate(items):
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    _fail(f"grid.{key}[{i}]", f"expected a positive integer, got {item!r}")
        if len({repr(v) for v in items}) != len(items):
            _fail(f"grid.{key}", f"a value is listed twice: {items!r}")
        grid[str(key)] = list(items)
    return grid


def point_name(values: dict) -> str:
    """`width_4-depth_1`: every grid key and its value (lists joined by 'x')."""

    def text(value) -> str:
        if isinstance(value, list):
            return "x".join(text(v) for v in value) or "none"
        return re.sub(r"[^A-Za-z0-9_.+=]+", "_", str(value)).strip("_") or "none"

    return "-".join(f"{key}_{text(value)}" for key, value in values.items())


def _point_model(model: dict, values: dict, replicas: int, folder: str) -> dict:
    point = copy.deepcopy(model)
    point.pop("replicas", None)
    layers = list(point.get("layers") or [])
    if any(k in values for k in SHAPE_KEYS):
        width = values.get("width", layers[0] if layers else None)
        depth = values.get("depth", len(layers) if layers else 1)
        if width is None:
            _fail("grid.depth", "depth needs a width: give grid.width or model.layers")
        point["layers"] = [width] * depth
    for key, value in values.items():
        if key not in SHAPE_KEYS:
            point[key] = copy.deepcopy(value)
    point["replicas"] = replicas
    point["dir"] = folder
    return point


def _census_path(message: str, probes: list) -> str:
    """A point config's key path as the sweep spells it (probes.components.x -> components.x)."""
    for item in probes:
        name = item if isinstance(item, str) else next(iter(item))
        message = message.replace(f"probes.{name}.", f"{name}.").replace(
            f"probes.{name}:", f"{name}:"
        )
    return message.replace("model.replicas", "replicas")


def _plots(value) -> dict | None:
    """The census figures: true (default), false, or {format, dir, paths}. `paths` chooses
    the per-point path figures (default none: a census holds hundreds of strings)."""
    if value is False:
        return None
    if value is None or value is True:
        value = {}
    if not isinstance(value, dict):
        _fail("plots", f"expected true, false or {{format, dir, paths}}, got {value!r}")
    plots = run_plots({"paths": "none", **value})
    return plots


def describe_census(census: Census) -> dict:
    """The expanded grid as plain data (`klandscape census --dry-run`)."""
    return {
        "config": census.source,
        "scale": census.scale,
        "out": census.out,
        "grid": census.grid,
        "points": [
            {"name": p.name, "values": p.values, **describe(p.config)} for p in census.points
        ],
        "figures": census.figures_dir,
    }


# --------------------------------------------------------------------------- running


def run_census(
    census: Census,
    progress: Progress | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
) -> dict:
    """`_run_census` holding the census store's lock (`<out>.lock`) from start to end: a
    second census on the same store (--overwrite, --resume) is refused before it deletes
    anything, as a second writer of a probe store is. Where the store goes is checked
    first (nothing is created for a bad --out)."""
    check_out(census.out, "out")
    refuse_resume_and_overwrite(resume, overwrite)
    if Path(census.out).exists() and not (resume or overwrite):
        refuse_existing(census.out)
    with hold_store(census.out):
        return _run_census(census, progress, resume=resume, overwrite=overwrite, plots=plots)


def _run_census(
    census: Census,
    progress: Progress | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
) -> dict:
    """Every grid point trained and probed into the census store, then the figures.

    Returns:
        {"store", "points": [{"name", "values", "reused", "seconds"}], "rows" (the census
        table), "figures", "figures_dir"}.
    """
    from keras_landscape.engine import backend  # TensorFlow
    from keras_landscape.experiment.runner import execute, versions  # TensorFlow

    progress = progress or NullProgress()
    first = census.points[0].config.spec
    strategy = parse_strategy(first.strategy, first.tpu)
    if strategy.name == "multiworker":
        raise UserError(_ONE_PROCESS)
    backend.devices_for(strategy)  # before training touches the framework
    out = Path(census.out)
    refuse_resume_and_overwrite(resume, overwrite)
    if out.is_dir():
        raise UserError(f"out {census.out!r} is a directory; give a file path such as census.h5.")
    if out.exists() and not (resume or overwrite):
        refuse_existing(out)
    work = Path(census.work_dir)
    if not (resume and out.exists()):
        for point in census.points:  # working stores of an earlier census here: start afresh
            check_not_in_use(point.work)  # ...unless a process is writing one
        for point in census.points:
            Path(point.work).unlink(missing_ok=True)
        Store.create(out, versions=versions(), command=census.command, overwrite=overwrite).close()
    done = _finished(census)
    task = progress.task("census", total=len(census.points))
    summary = []
    for point in census.points:
        task.update(status=point.name)
        if point.name in done:
            progress.note(f"{point.name}: finished in the store, reusing it")
            summary.append({"name": point.name, "values": point.values, "reused": True})
            task.advance()
            continue
        progress.note(f"census point {point.index + 1}/{len(census.points)}: {point.name}")
        exists = Path(point.work).exists()
        try:
            spec = prepare(point.config, progress, resume=exists, overwrite=False)
            document = execute(spec, progress)
        except KeyboardInterrupt:
            raise Interrupted(census.out) from None
        _copy_point(census, point, document["store"])
        Path(point.work).unlink(missing_ok=True)
        seconds = {k: v.get("seconds") for k, v in document["results"].items()}
        summary.append(
            {"name": point.name, "values": point.values, "reused": False, "seconds": seconds}
        )
        task.advance()
    task.close()
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    result = {"store": str(out), "points": summary, "rows": census_rows(str(out))}
    result["figures"], result["figures_dir"] = [], None
    if census.plots is not None and plots:
        report = plot_census(
            str(out), census.figures_dir, fmt=census.plots["format"], paths=census.plots["paths"]
        )
        result["figures"] = [f.path for f in report.figures]
        result["figures_dir"] = report.directory
    return result


def _finished(census: Census) -> set[str]:
    """Points whose runs are complete in the store (a point of other settings is refused)."""
    by_name = {p.name: p for p in census.points}
    finished = set()
    with Store.open(census.out, "a") as store:
        stored = census_points(store)
        for name, entry in stored.items():
            point = by_name.get(name)
            if point is None or set(entry["runs"]) != set(point.config.spec.probes):
                continue
            if any(r["status"] != "complete" for r in entry["runs"].values()):
                continue
            if _jsonish(_renamed(entry["stamp"])) != _jsonish(point.stamp):
                raise UserError(
                    f"Cannot resume {census.out!r}: its grid point {name} was run with other "
                    "settings (model, data, loss, seed or probe options) than the sweep now "
                    "gives. Resume with the same sweep, or write a new store (--out) or "
                    "--overwrite."
                )
            finished.add(name)
        # runs of a point copied only in part (interrupted while copying) are copied again
        for run in store.run_names():
            point, _, probe = run.rpartition(".")
            if point in by_name and point not in finished and probe in by_name[point].probes:
                del store.h5["runs"][run]
    return finished


def _jsonish(value):
    return json.loads(to_json(value))


#: run settings renamed since a census store may have been written (old name: new name)
_RENAMED_SETTINGS = {"fast_float32": "tf32"}


def _renamed(stamp: dict) -> dict:
    """A stored point stamp with its run settings under their current names."""
    run = stamp.get("run") if isinstance(stamp, dict) else None
    if not isinstance(run, dict):
        return stamp
    return {**stamp, "run": {_RENAMED_SETTINGS.get(k, k): v for k, v in run.items()}}


def _copy_point(census: Census, point: CensusPoint, work_path: str) -> None:
    """The point's runs and models copied from its working store into the census store."""
    with Store.open(work_path, "r") as work, Store.open(census.out, "a") as store:
        layout = work.read_layout()
        data = {k: v for k, v in work.read_data_info().items() if k != "parameters"}
        if not store.read_data_info():
            store.write_data_info(data)
        models = []
        for name in work.model_names():
            entry = work.read_model(name)
            attrs = dict(entry["attrs"])
            source, role = attrs.pop("source", ""), attrs.pop("role", "input")
            store.add_model(
                f"{point.name}.{name}",
                entry["theta"],
                source=source,
                role=role,
                non_trainable=dict(zip(entry["non_trainable_paths"], entry["non_trainable"])),
                **{**attrs, CENSUS_ATTRS["point"]: point.name},
            )
            models.append(name)
        for probe in point.probes:
            target = f"{point.name}.{probe}"
            if store.has_run(target):
                del store.h5["runs"][target]
            # an exact copy of a run group the store module wrote (datasets, strings, attrs)
            work.h5.copy(work.h5["runs"][probe], store.h5["runs"], name=target)
            store.run(target).set_attrs(
                **{
                    CENSUS_ATTRS["grid"]: point.values,
                    CENSUS_ATTRS["index"]: point.index,
                    CENSUS_ATTRS["stamp"]: point.stamp,
                    CENSUS_ATTRS["models"]: [f"{point.name}.{m}" for m in models],
                    CENSUS_ATTRS["layout"]: {"paths": layout["paths"], "shapes": layout["shapes"]},
                    "parameters": layout["size"],
                    "data": {k: data.get(k) for k in ("spec", "loss", "level_fn", "split")},
                    # last: marks the copy complete
                    CENSUS_ATTRS["point"]: point.name,
                }
            )


__all__ = [
    "BASE_KEYS",
    "DEFAULT_PROBES",
    "census_probes",
    "Census",
    "CensusPoint",
    "describe_census",
    "load_census",
    "point_name",
    "run_census",
]
