"""From a validated RunSpec to a store and results: the one path every front end takes.

CLI / config  ->  RunSpec  ->  Landscape + models  ->  probes from the registry  ->  Store.
The CLI only parses and prints; `execute` does the work and returns plain data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from keras_landscape import registry
from keras_landscape._version import __version__
from keras_landscape.blas import one_blas_thread
from keras_landscape.data.specs import load_data
from keras_landscape.engine import backend
from keras_landscape.engine.landscape import Landscape
from keras_landscape.engine.options import parse_strategy
from keras_landscape.engine.params import non_trainable_state
from keras_landscape.errors import Interrupted, UserError
from keras_landscape.experiment.config import prepare
from keras_landscape.experiment.plan import (
    check_plan,
    check_store_target,
    refuse_resume_and_overwrite,
    replica_names,
)
from keras_landscape.experiment.spec import RunSpec, default_store_path, model_names
from keras_landscape.models.loading import (
    allow_unsafe_deserialization,
    check_same_architecture,
    load_custom_objects,
    load_model,
)
from keras_landscape.models.minimum import Minimum
from keras_landscape.progress import NullProgress, Progress
from keras_landscape.report.plots import plot_store
from keras_landscape.store.hdf5 import Store, refuse_existing, to_json

log = logging.getLogger("keras_landscape")


def versions() -> dict[str, str]:
    return {
        "package_version": __version__,
        "keras_version": keras.__version__,
        "backend": backend.name,
        **backend.framework_versions(),
        **backend.machine(),
    }


def open_store(spec: RunSpec, landscape: Landscape) -> Store:
    """A new store for this run, or the existing one when resuming (layouts must match).

    In a run of several processes every process takes the same decision here (they meet
    before looking at the file), and only the writer touches the file: the others compute
    in a copy held in memory.
    """
    path = spec.out or default_store_path()
    refuse_resume_and_overwrite(spec.resume, spec.overwrite)
    if Path(path).is_dir():
        raise UserError(
            f"--out {path!r} is a directory; give a file path such as {path.rstrip('/')}/run.h5."
        )
    if spec.resume and not Path(path).exists():
        raise UserError(
            f"Nothing to resume: there is no store {path!r}. Run the same command without "
            "--resume to start, or give the --out of the interrupted run."
        )
    if not spec.resume and Path(path).exists() and not spec.overwrite:
        refuse_existing(path)
    landscape.devices.sync("store checked")  # every process decided before any writes
    writer = landscape.devices.writer
    if spec.resume:
        store = Store.open(path, "a") if writer else Store.scratch(path, copy_of=path)
        try:
            stored = store.read_layout()
        except BaseException:
            store.close()  # and its lock
            raise
        if [list(s) for s in stored["shapes"]] != [list(s) for s in landscape.layout.shapes]:
            store.close()
            raise UserError(
                f"Cannot resume into {path!r}: it was written for another architecture."
            )
        return store
    if writer:
        store = Store.create(
            path, versions=versions(), command=spec.command, overwrite=spec.overwrite
        )
    else:
        store = Store.scratch(path, versions=versions(), command=spec.command)
    try:
        write_header(store, landscape)
    except BaseException:
        store.close()  # and its lock
        raise
    return store


def write_header(store: Store, landscape: Landscape) -> None:
    """A new store's parameter layout (with the model's config, so beads can be exported
    as models) and what the landscape measures."""
    layout = landscape.layout
    store.write_layout(
        layout.paths,
        layout.shapes,
        layout.offsets,
        layout.size,
        model_config=_model_config_json(landscape.model),
        non_trainable_paths=[v.path for v in landscape.model.non_trainable_variables],
    )
    store.write_data_info(landscape.describe())


# What a store's results depend on besides the probe options: a resume must match them.
IDENTITY_KEYS = (
    "spec",
    "loss",
    "loss_config",
    "level_fn",
    "split",
    "backend",
    "bn_stats",
    "bn_batches",
    "bn_batch_size",
)


def check_same_run(store: Store, landscape: Landscape, minima: list[Minimum]) -> None:
    """Refuse to resume a store written with other data, loss, level function, BatchNorm
    statistics mode, or other models (their names, order, weights and statistics)."""
    stored, current = store.read_data_info(), _jsonish(landscape.describe())
    changed = [k for k in IDENTITY_KEYS if k in stored and stored[k] != current.get(k)]
    reasons = [f"{k} (stored {stored[k]!r}, now {current.get(k)!r})" for k in changed]
    entries = {n: store.read_model(n) for n in store.model_names()}
    inputs = {n: e["attrs"] for n, e in entries.items() if e["attrs"].get("role") == "input"}
    # Pair labels (pair_i_j) are positions: the models' order is part of the run.
    names = sorted(inputs, key=lambda n: (int(inputs[n].get("index", 0)), n))
    given = [m.name for m in minima]
    ordered = all("index" in a for a in inputs.values())  # stores of 0.1 kept no order
    if names and (names != given if ordered else sorted(names) != sorted(given)):
        reasons.append(f"models (stored {', '.join(names)}, now {', '.join(given)})")
    for minimum in minima:
        if minimum.name not in names:
            continue
        entry = entries[minimum.name]
        same_state = (
            minimum.state is None
            or not entry["non_trainable"]
            or np.array_equal(
                landscape.state_layout.state_of_values(entry["non_trainable"]), minimum.state
            )
        )
        if not np.array_equal(entry["theta"], minimum.theta) or not same_state:
            reasons.append(f"the weights of model {minimum.name!r} ({minimum.source})")
    if reasons:
        raise UserError(
            f"Cannot resume {store.path!r}: it was written with other settings: "
            f"{'; '.join(reasons)}. Resume with the same models, data and options, or write a "
            "new store (--out) or --overwrite."
        )


def _model_config_json(model) -> str:
    try:
        return model.to_json()
    except Exception:  # subclassed models without get_config: export then needs the source
        return ""


def load_minima(spec: RunSpec) -> list[Minimum]:
    """The spec's model files as Minimum entries (architectures checked to match)."""
    if not spec.models:
        raise UserError("Give at least one model file (.keras or .h5).")
    custom = load_custom_objects(spec.custom_objects)
    if spec.unsafe:
        allow_unsafe_deserialization()
    models = [load_model(path, custom) for path in spec.models]
    names = model_names(spec.models)
    layout = check_same_architecture(models, names)
    return [
        Minimum(name, layout.theta_of(model), str(path), model)
        for name, path, model in zip(names, spec.models, models)
    ]


def execute(spec: RunSpec, progress: Progress | None = None) -> dict:
    """Run every probe of `spec`, writing the store as work completes.

    Returns:
        {"store": path, "models": [...], "results": {probe name: result}}.
    """
    progress = progress or NullProgress()
    # Everything checkable before a model loads or a file is created: the probes, their
    # options against the input models, where the store goes.
    probes = check_plan(spec)
    if not spec.out:
        spec = spec.model_copy(update={"out": default_store_path()})
    check_store_target(spec.out, resume=spec.resume, overwrite=spec.overwrite)
    # Before any model is loaded: a strategy (a logical CPU split, a cluster) is set up
    # before other framework work.
    devices = backend.devices_for(parse_strategy(spec.strategy, spec.tpu))
    minima = load_minima(spec)
    dataset = load_data(spec.data, seed=spec.seed)
    landscape = Landscape(
        minima[0].model,
        dataset,
        loss=spec.loss,
        level_fn=spec.level_fn,
        split=spec.split,
        eval_batch_size=spec.eval_batch_size,
        xla=spec.xla,
        fast_float32=spec.tf32,
        bn_stats=spec.bn_stats,
        bn_batches=spec.bn_batches,
        bn_batch_size=spec.bn_batch_size,
        devices=devices,
        lockstep=spec.lockstep,
    )
    if devices.count > 1:
        progress.note(
            f"--strategy {devices.name}: {devices.count} replicas"
            + (f" in {devices.processes} processes" if devices.processes > 1 else "")
            + "; every stack of beads is split across them"
        )
    for minimum in minima:  # every model keeps its own BatchNorm statistics
        minimum.state = landscape.state_of(minimum.model)
    for probe in probes:  # what needs the loaded models, before the store is created
        registry.check_loaded(probe, landscape, minima)
    results = {}
    with open_store(spec, landscape) as store:
        devices.sync("store open")  # a resumed store is read by every process first
        if spec.resume:
            check_same_run(store, landscape, minima)
        for index, minimum in enumerate(minima):
            if minimum.name not in store.model_names():
                store.add_model(
                    minimum.name,
                    minimum.theta,
                    source=minimum.source,
                    role="input",
                    non_trainable=non_trainable_state(minimum.model),
                    index=index,
                )
        try:
            for probe in probes:
                results[probe.name] = run_probe(probe, landscape, minima, store, spec, progress)
        except KeyboardInterrupt:
            raise Interrupted(store.path) from None
        path = store.path
    return {
        "store": path,
        "models": [{"name": m.name, "source": m.source} for m in minima],
        "results": results,
        "devices": devices.describe(),  # this process's replicas and the rows they ran
        "writer": devices.writer,
    }


def run_experiment(
    config,
    progress: Progress | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
) -> dict:
    """A validated run config end to end: models (trained from its recipe or loaded), every
    probe into the store, then the figures. `klandscape run` and `klandscape demo` both
    call this.

    Args:
        config: an `ExperimentConfig` from `experiment.config.load_config`.
        progress: where stages and progress go (None: nowhere).
        resume: continue the runs in the existing store.
        overwrite: replace an existing store.
        plots: draw the config's figures (when it asks for them).

    Returns:
        The `execute` document plus "figures" (files written) and "figures_dir".
    """
    # The strategy first: it must be set up before training touches the framework.
    devices = backend.devices_for(parse_strategy(config.spec.strategy, config.spec.tpu))
    # every probe option checked against the models before any training
    check_plan(config.spec, None if config.recipe is None else replica_names(config.recipe))
    spec = prepare(config, progress, resume=resume, overwrite=overwrite)
    document = execute(spec, progress)
    document["figures"] = []
    if config.plots is not None and plots and devices.writer:
        try:
            report = plot_store(
                document["store"],
                config.plots["dir"],
                fmt=config.plots["format"],
                paths=config.plots["paths"],
            )
        except KeyboardInterrupt:
            raise Interrupted(document["store"]) from None
        document["figures"] = [f.path for f in report.figures]
        document["figures_dir"] = report.directory
    return document


def _jsonish(value):
    """A config value as it reads back from the store's JSON (tuples become lists)."""
    return json.loads(to_json(value))


def run_probe(
    probe, landscape, minima, store: Store, spec: RunSpec, progress, run_name: str | None = None
) -> dict:
    """One probe in its own run group (`run_name`, default the probe's name): status
    running -> complete | failed | interrupted."""
    run_name = run_name or probe.name
    existing = run_name in store.run_names()
    if existing and not spec.resume:
        raise UserError(f"The store already has a run {run_name!r}; use --resume or another --out.")
    config = dataclasses.asdict(probe.config)
    if existing:
        stored = store.run(run_name).config
        # An option newer than the store was run at its default there.
        defaults = {k: _jsonish(v) for k, v in dataclasses.asdict(type(probe.config)()).items()}
        changed = sorted(
            k
            for k in set(stored) | set(config)
            if stored.get(k, defaults.get(k)) != _jsonish(config.get(k))
        )
        if changed:
            differences = ", ".join(
                f"{k} (stored {stored.get(k)!r}, now {config.get(k)!r})" for k in changed
            )
            raise UserError(
                f"Cannot resume run {run_name!r} in {store.path!r} with other options: "
                f"{differences}. "
                "Resume with the same options, or write a new store (--out) or --overwrite."
            )
    if existing and store.run(run_name).status == "complete":
        progress.note(f"{run_name}: already complete in the store, reusing its result")
        return store.run(run_name).result
    run = store.begin_run(run_name, probe.name, config, seed=spec.seed, resume=existing)
    started = time.perf_counter()
    rows_before = dict(landscape.devices.rows)
    try:
        with one_blas_thread():  # NumPy between the kernels: see keras_landscape.blas
            result = probe.run(landscape, minima, run, progress)
    except KeyboardInterrupt:
        run.fail("interrupted by the user", status="interrupted")
        raise
    except Exception as error:
        run.fail(f"{type(error).__name__}: {error}")
        raise
    result = dict(result)
    result.setdefault("seconds", time.perf_counter() - started)
    placement = landscape.devices.describe()
    placement["rows_per_device"] = {
        device: rows - rows_before.get(device, 0)
        for device, rows in landscape.devices.rows.items()
        if rows > rows_before.get(device, 0)
    }
    run.set_attrs(devices=placement)
    run.complete(result)
    return run.result
