"""`LandscapeCallback`: run probes every N epochs of `model.fit`, into one store.

    >>> from keras_landscape.callbacks import LandscapeCallback
    >>> callback = LandscapeCallback(
    ...     data="cubic", probes=["barrier", "hessian"], every=5, store="runs/fit.h5",
    ...     options={"max_bisections": 0, "top_k": 1}, log_dir="logs/landscape")
    >>> model.fit(x, y, epochs=50, callbacks=[callback])

At the end of every `every`-th epoch the callback takes the model's weights as a checkpoint
(`epoch_<E>` in the store's models) and runs each probe on it. Pair probes (a probe class
declaring `takes_pairs = True`, as `barrier`, `connectivity`, `curviness`, `components` and
every `plugins.pairs.PairProbe` do) see the previous checkpoint and this one (at the
first checkpoint: the weights fit started from), so `barrier` with `max_bisections=0` is
the linear barrier to the previous checkpoint. Probes of a sequence (declaring
`takes_history = True`, as `trajectory`) run once, when fit ends, on every checkpoint
taken, in order from the weights fit started from (at least three are needed: train for
at least two checkpoints). Other probes see this checkpoint alone, e.g. `hessian` gives
its top eigenvalues. Each result is a run `<probe>_epoch<E>` of the store (E: the last
checkpoint's epoch). Results are also written to TensorBoard when `log_dir` is given, at step E:

- every number of a result as a scalar `<probe>/<field>` (nested fields joined by '/',
  lists of records indexed: `hessian/models/0/trace`);
- a list holding one number as that number's scalar; a two-number bracket or interval
  (a field named `*_bracket` or `*_interval`, e.g. a bootstrap interval) as the scalars
  `<tag>/lower` and `<tag>/upper`; every other list of numbers as a histogram;
- the probe's own summaries as scalars `<probe>/<name>`: a probe class may define
  `summaries(result) -> {name: number}` for the single numbers worth following in
  training (the `hessian` probe: `top_eigenvalue` and `trace`, per model
  `<model>/top_eigenvalue` when it measured several), so that a number inside a list gets
  its own curve.

The landscape is built once, from the model being fitted, on `data` (a data spec or a
`Dataset`): its loss is the model's compiled loss unless `loss` is given.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from keras_landscape import registry
from keras_landscape.data.specs import Dataset, load_data
from keras_landscape.engine import backend
from keras_landscape.engine.landscape import Landscape
from keras_landscape.engine.params import non_trainable_state
from keras_landscape.errors import UserError
from keras_landscape.experiment.plan import build_probes
from keras_landscape.experiment.runner import run_probe, versions, write_header
from keras_landscape.experiment.spec import RunSpec
from keras_landscape.models.minimum import Minimum
from keras_landscape.progress import NullProgress
from keras_landscape.store.hdf5 import Store


class LandscapeCallback(keras.callbacks.Callback):
    """Probes every `every` epochs during `model.fit` (see the module docstring).

    Args:
        data: a data spec (`docs/data-specs.md`) or a `Dataset`.
        probes: registered probe names.
        every: run them at the end of every `every`-th epoch (epochs counted from 1).
        store: the HDF5 store to append to (created if missing; a run of the same name in
            it is refused, as `klandscape probe` refuses it).
        options: probe options (as `--set`), given to every probe that has them.
        loss, level_fn, split: as `klandscape probe` (default: the compiled loss, 'loss').
        log_dir: write TensorBoard scalars and histograms there (None: none).
        seed: the probes' seed.
    """

    def __init__(
        self,
        data: str | Dataset,
        probes: list[str],
        *,
        every: int = 1,
        store: str | os.PathLike,
        options: dict | None = None,
        loss: str | None = None,
        level_fn: str = "loss",
        split: str | None = None,
        log_dir: str | os.PathLike | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if int(every) < 1:
            raise UserError(f"every must be >= 1, got {every}.")
        self.every = int(every)
        self.store_path = os.fspath(store)
        self.loss, self.level_fn, self.split = loss, level_fn, split
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        # Options are checked now, before fit starts: a typo fails at once.
        self._spec = RunSpec(
            models=[],
            data=(data if isinstance(data, str) else getattr(data, "spec", "")) or "dataset",
            probes=list(probes),
            options=dict(options or {}),
            seed=seed,
        )
        built = build_probes(self._spec)
        # a probe declares what it measures (registry: ProbeBase.takes_pairs / takes_history)
        self._at_end = [p for p in built if registry.output_hook(p.name, "takes_history")]
        self._probes = [p for p in built if p not in self._at_end]
        self._checkpoints: list[Minimum] = []  # every checkpoint, kept for the end probes
        self._data = data
        self._landscape = None
        self._previous: Minimum | None = None
        self._non_trainable: dict[str, list] = {}  # checkpoint -> its non-trainable values
        self._writer = None
        self.history: list[dict] = []  # (epoch, probe, result) of every run, in order

    # ------------------------------------------------------------------ fit hooks
    def on_train_begin(self, logs=None) -> None:
        self._previous = self._checkpoint(0)
        self._epoch = 0

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        number = epoch + 1
        if number % self.every:
            return
        current = self._checkpoint(number)
        with self._open() as store:
            self._add_models(store, [self._previous, current])
            for probe in self._probes:
                pairs = registry.output_hook(probe.name, "takes_pairs")
                self._run(store, probe, [self._previous, current] if pairs else [current])
        self._previous = current

    def on_train_end(self, logs=None) -> None:
        if self._at_end and len(self._checkpoints) > 1:
            with self._open() as store:
                self._add_models(store, self._checkpoints)
                for probe in self._at_end:
                    self._run(store, probe, self._checkpoints)
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ the work
    def _add_models(self, store: Store, minima: list[Minimum]) -> None:
        for minimum in minima:
            if minimum.name not in store.model_names():
                store.add_model(
                    minimum.name,
                    minimum.theta,
                    source=minimum.source,
                    role="input",
                    non_trainable=self._non_trainable.pop(minimum.name),
                )

    def _run(self, store: Store, probe, minima: list[Minimum]) -> None:
        """`probe` on `minima` into the run `<probe>_epoch<E>` (E: the last checkpoint's)."""
        number = self._epoch
        result = run_probe(
            probe,
            self.landscape,
            minima,
            store,
            self._spec,
            NullProgress(),
            run_name=f"{probe.name}_epoch{number:04d}",
        )
        self.history.append({"epoch": number, "probe": probe.name, "result": result})
        self._log(probe, result, number)

    @property
    def landscape(self) -> Landscape:
        if self._landscape is None:
            data = self._data if isinstance(self._data, Dataset) else load_data(self._data)
            self._landscape = Landscape(
                self.model, data, loss=self.loss, level_fn=self.level_fn, split=self.split
            )
        return self._landscape

    def _checkpoint(self, epoch: int) -> Minimum:
        landscape = self.landscape
        self._non_trainable[f"epoch_{epoch}"] = non_trainable_state(self.model)
        minimum = Minimum(
            f"epoch_{epoch}",
            landscape.theta_of(self.model).astype(np.float32),
            f"fit:epoch {epoch}",
            state=landscape.state_of(self.model),
        )
        self._epoch = epoch
        if self._at_end:
            self._checkpoints.append(minimum)
        return minimum

    def _open(self) -> Store:
        if os.path.exists(self.store_path):
            return Store.open(self.store_path, "a")
        store = Store.create(self.store_path, versions=versions(), command="LandscapeCallback")
        write_header(store, self.landscape)
        return store

    def _log(self, probe, result: dict, epoch: int) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            self._writer = backend.summary_writer(self.log_dir)
        for tag, value in [*_summaries(probe, result), *_numbers(result, probe.name)]:
            if isinstance(value, list):
                self._writer.histogram(tag, value, epoch)
            else:
                self._writer.scalar(tag, value, epoch)
        self._writer.flush()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _summaries(probe, result: dict):
    """(`<probe>/<name>`, number) of the probe's own `summaries(result)`, where it has
    them (finite numbers only)."""
    summaries = getattr(probe, "summaries", None)
    found = summaries(result) if callable(summaries) else None
    for name, value in (found or {}).items():
        if _is_number(value) and math.isfinite(value):
            yield f"{probe.name}/{name}", float(value)


def _numbers(value, tag: str, depth: int = 0):
    """(tag, number) and (tag, [numbers]) pairs of a result, nested keys joined by '/';
    lists of records are indexed (models/0/eigenvalues). A one-number list is its number;
    a bracket or interval ([lower, upper] under `*_bracket` / `*_interval`) is the numbers
    `<tag>/lower` and `<tag>/upper`."""
    if depth > 6:
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            yield tag, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "seconds":
                yield from _numbers(item, f"{tag}/{key}", depth + 1)
    elif isinstance(value, list) and value:
        field = tag.rsplit("/", 1)[-1]
        if len(value) == 2 and field.endswith(("_bracket", "_interval")):
            for bound, v in zip(("lower", "upper"), value):
                if _is_number(v) and math.isfinite(v):
                    yield f"{tag}/{bound}", float(v)
        elif all(_is_number(v) for v in value):
            finite = [float(v) for v in value if math.isfinite(v)]
            if len(value) == 1 and finite:
                yield tag, finite[0]
            elif finite:
                yield tag, finite
        elif all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                yield from _numbers(item, f"{tag}/{i}", depth + 1)


__all__ = ["LandscapeCallback"]
