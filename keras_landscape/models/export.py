"""Turning stored parameter vectors (beads, partners, models) back into Keras models."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_landscape.engine.params import ParameterLayout
from keras_landscape.engine.state import StateLayout
from keras_landscape.errors import UserError
from keras_landscape.models.loading import (
    allow_unsafe_deserialization,
    load_custom_objects,
    load_model,
)
from keras_landscape.store.hdf5 import FORMAT_NAME, Store, reading
from keras_landscape.store.strings import choose_string, read_string, string_prefixes


def _architecture(store: Store, custom_objects: dict):
    layout = store.read_layout()
    config = layout.get("model_config") or ""
    if config:
        try:
            return keras.models.model_from_json(config, custom_objects=custom_objects)
        except Exception as error:
            first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            reason = f"its architecture could not be rebuilt ({first})"
    else:
        reason = "it holds no architecture config (subclassed model)"
    for name in store.model_names():
        source = store.read_model(name)["attrs"].get("source", "")
        if source and Path(source).is_file():
            return load_model(source, custom_objects)
    raise UserError(
        f"Cannot rebuild the model from {store.path!r}: {reason}, and no source model file is "
        "reachable. Pass --custom-objects for custom layers, or keep the source model file."
    )


def stored_theta(
    store: Store,
    run: str | None,
    bead: int | None,
    string: str | None,
    model: str | None,
    t: float | None = None,
    point_hook=None,
):
    """(theta, non-trainable state, description) for a bead of a run's string, a point at
    position `t` along a path the run stored, or a stored model. The state is the bead's
    own (the BatchNorm statistics its stored level was evaluated with: a (S,) vector, see
    `keras_landscape.engine.state`), the point's, or the model's own list of non-trainable
    arrays; None when the store holds none for it. `point_hook(probe)` gives the run's
    probe's `export_point(record, string, t)` (the registry's hook: the CLI passes it)."""
    if t is not None:
        if model is not None or bead is not None or run is None:
            raise UserError("--t takes a point along a run's path: give --run R --t T alone.")
        record = store.run(run)
        hook = point_hook(record.probe) if point_hook is not None else None
        point = hook(record, string, float(t)) if hook is not None else None
        if point is None:
            raise UserError(
                f"Run {run!r} (probe {record.probe!r}) stores no path to take a point at t "
                "from; export a bead of one of its strings with --bead, or a model with "
                "--model."
            )
        return point
    if model is not None:
        if model not in store.model_names():
            raise UserError(
                f"No model {model!r} in the store; it has {', '.join(store.model_names())}."
            )
        entry = store.read_model(model)
        return entry["theta"], entry["non_trainable"] or None, f"model {model}"
    if run is None or bead is None:
        raise UserError(
            "Say what to export: --run R --bead I (a bead of a string) or --model NAME."
        )
    record = store.run(run)
    string = choose_string(run, string_prefixes(record, relaxed=True), string)
    stored = read_string(record, string)
    rows = stored.rows
    if not -len(rows) <= bead < len(rows):
        raise UserError(
            f"String {string!r} has {len(rows)} beads (0 = A, {len(rows) - 1} = B); "
            f"got --bead {bead}."
        )
    row = rows[bead]
    where = f"{run}/{string}" if string else run
    return stored.beads[row], stored.state_of(row), f"bead {bead} of {where}"


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode (links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_store(path: str) -> bool:
    """A keras-landscape store (or an HDF5 file some process is writing: maybe one)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") in (FORMAT_NAME, FORMAT_NAME.encode())
    except (OSError, ValueError) as error:
        return "lock" in str(error).lower()


def check_output(out: str, store_path: str, *, overwrite: bool, protected=()) -> None:
    """Refuse an output path that would destroy something: the store itself or any other
    keras-landscape store, a file the store was computed from (`protected`: (what, path)),
    even with --overwrite; any other existing file without --overwrite."""
    if _same_file(out, store_path):
        raise UserError(
            f"The output {out!r} is the store being exported from: export writes a model file "
            "and never replaces a store, even with --overwrite. Choose another -o."
        )
    for what, path in protected:
        if path and _same_file(out, path):
            raise UserError(
                f"The output {out!r} is {what}: export never replaces a file a store was "
                "computed from, even with --overwrite. Choose another -o."
            )
    if not os.path.lexists(out):
        return
    if os.path.isdir(out):
        raise UserError(f"The output {out!r} is a directory; give a .keras or .h5 file path.")
    if _is_store(out):
        raise UserError(
            f"The output {out!r} is a keras-landscape store: export never replaces a store, "
            "even with --overwrite. Choose another -o."
        )
    if not overwrite:
        raise UserError(
            f"The output file {out!r} already exists. Use --overwrite to replace it, or choose "
            "another -o."
        )


def _inputs_of(store: Store, store_path: str) -> list[tuple[str, str]]:
    """The model files a store was computed from, as (what, path): each recorded source,
    read relative to the working directory and to the store's folder."""
    folder = os.path.dirname(os.path.abspath(store_path))
    out = []
    for name in store.model_names():
        source = str(store.read_model(name)["attrs"].get("source") or "")
        if source:
            what = f"the model file of the store's model {name!r}"
            out += [(what, source), (what, os.path.join(folder, source))]
    return out


def export(
    store_path: str,
    out: str,
    *,
    run=None,
    bead=None,
    string=None,
    model=None,
    custom_objects: str | None = None,
    unsafe: bool = False,
    overwrite: bool = False,
    t: float | None = None,
    point_hook=None,
) -> str:
    """Write a stored bead, a point at `t` along a stored path (`stored_theta`), or a model
    as a Keras model file (.keras or .h5); returns a summary.
    `unsafe` lets Keras rebuild Lambda layers (see `models.allow_unsafe_deserialization`).
    An existing output is replaced only with `overwrite`, and never when it is a store or
    a file the store was computed from (`check_output`); the file is written beside its
    path and moved into place whole."""
    if Path(out).suffix.lower() not in (".keras", ".h5"):
        raise UserError(f"Export to a .keras or .h5 file, not {out!r}.")
    protected = [("the --custom-objects file", custom_objects)] if custom_objects else []
    if not _same_file(out, store_path):  # (the store is refused by check_output)
        with reading(store_path), Store.open(store_path, "r") as store:
            protected += _inputs_of(store, store_path)
    check_output(out, store_path, overwrite=overwrite, protected=protected)
    custom = load_custom_objects(custom_objects)
    if unsafe:
        allow_unsafe_deserialization()
    with reading(store_path), Store.open(store_path, "r") as store:
        theta, state, what = stored_theta(store, run, bead, string, model, t, point_hook)
        target = _architecture(store, custom)
        first = store.read_model(store.model_names()[0]) if store.model_names() else None
    layout = ParameterLayout.from_model(target)
    if layout.size != theta.size:
        raise UserError(
            f"The stored theta has {theta.size} parameters, the architecture {layout.size}."
        )
    layout.assign(target, np.asarray(theta, np.float32))
    # Seed counters and anything the point has no own value for: the first model's.
    template = first["non_trainable"] if first is not None else []
    if len(template) != len(target.non_trainable_variables):
        template = [v.numpy() for v in target.non_trainable_variables]
    if isinstance(state, np.ndarray):
        values = StateLayout.from_model(target).non_trainable_values(state, template)
    else:
        values = state if state is not None else template
    for variable, value in zip(target.non_trainable_variables, values):
        variable.assign(value)
    folder = None
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        # Written in a private folder beside `out` (nobody else can plant a link in it),
        # then moved over `out` once whole.
        folder = tempfile.mkdtemp(prefix=f".{Path(out).name}.", dir=Path(out).parent)
        temporary = os.path.join(folder, Path(out).name)
        target.save(temporary)
        os.replace(temporary, out)
    except OSError as error:
        raise UserError(f"Cannot write {out!r}: {error.strerror or error}.") from None
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return f"wrote {what} ({layout.size} parameters) to {out}"
