"""The probe registry: the Probe protocol, `ProbeBase`, and entry-point discovery.

A probe is a class with a `name`, a one-line `summary`, a `Config` dataclass whose fields all
have defaults, and `run(landscape, models, store, progress) -> dict` (JSON-serialisable).
It owns its output too: `tables` (what `klandscape show` prints), `figures` (what
`klandscape plot` draws), `expected_strings` / `string_level` (what an interrupted run still
lacks); `ProbeBase` gives every hook a default, so a probe defines only what it has.

Registration has one path: the `keras_landscape.probes` entry-point group. Built-in probes
(in `keras_landscape.plugins`) are listed there in setup.cfg exactly as a third party lists
its own. A plugin that fails to import is reported and skipped. Importing a probe module
must not import Keras or a framework (import them inside `run`): `klandscape probes`,
`show` and `plot` load every probe class.

Example (a third-party package):
    from dataclasses import dataclass
    from keras_landscape.registry import ProbeBase

    class Sharpness(ProbeBase):
        name = "sharpness"
        summary = "Largest Hessian eigenvalue by power iteration."

        @dataclass
        class Config:
            iterations: int = 20

        def run(self, landscape, models, store, progress):
            ...

    # setup.cfg:  [options.entry_points] keras_landscape.probes = sharpness = pkg.mod:Sharpness
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar, Protocol, runtime_checkable

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.values import to_type

log = logging.getLogger("keras_landscape")

ENTRY_POINT_GROUP = "keras_landscape.probes"
_OWN_DISTRIBUTION = "keras-landscape"


@runtime_checkable
class Probe(Protocol):
    """What every probe provides (see `ProbeBase` for the optional output hooks)."""

    name: str
    summary: str
    Config: type

    def __init__(self, config: Any = None) -> None: ...

    def run(self, landscape: LandscapeLike, models: list, store: Any, progress: Any) -> dict: ...


#: A table for `klandscape show`: {"title", "columns", "rows" (strings), "notes"}.
Table = dict
#: draw(result, run_name, level_label) -> (matplotlib Figure, one-line caption); raise
#: `keras_landscape.report.plots.NoFigure(reason)` when a result cannot be drawn.
DrawFunction = Callable[[dict, str, str], tuple]


class ProbeBase:
    """Defaults for a probe's output hooks; subclass it and override what the probe has.

    Attributes:
        name: the probe's registered name (`--probe NAME`).
        summary: one line for `klandscape probes`.
        Config: a dataclass of options, every field with a default.
        result_fields: result key -> meaning (docs/probes.md and `probes --json`).
        figures: kind -> draw function: the summary figures `klandscape plot` draws from a
            finished result (DSS strings the probe stores are drawn for every probe).
        no_figure: why a result has no figure, when `figures` is empty.
        takes_pairs: the probe measures pairs of models (given one model it may pair it
            with partners of its own): `LandscapeCallback` gives it the previous checkpoint
            and the current one; a probe without it sees the current checkpoint alone.
        takes_history: the probe measures a sequence of checkpoints (`trajectory`):
            `LandscapeCallback` runs it once, when fit ends, on every checkpoint it took,
            in order.
        census_columns: row key -> meaning: what the probe adds to its grid point's row of
            `klandscape census` (`census_row` fills them from a result). A probe with none
            cannot be listed in a census sweep.
        census_figures: kind -> draw(census) -> (figure, caption): figures over the whole
            census (`report.census.read_census`'s document), drawn by `klandscape census`
            beside its summary figure; raise `report.plots.NoFigure` when there is nothing.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    result_fields: ClassVar[dict[str, str]] = {}
    figures: ClassVar[dict[str, DrawFunction]] = {}
    no_figure: ClassVar[str | None] = None
    takes_pairs: ClassVar[bool] = False
    takes_history: ClassVar[bool] = False
    census_columns: ClassVar[dict[str, str]] = {}
    census_figures: ClassVar[dict[str, Callable[[dict], tuple]]] = {}

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def run(self, landscape: LandscapeLike, models: list, store: Any, progress: Any) -> dict:
        raise NotImplementedError

    def validate_inputs(self, models: list[str]) -> None:
        """Check the options against the run's input models, given by name in order
        (`len(models)` of them), before any model is loaded, trained or store created:
        `klandscape probe`, `run` (and `run --dry-run`), and every point of `census` (and
        `census --dry-run`) call it. Raise UserError naming the fix (e.g. a mode that takes
        two or three models). Default: nothing to check."""

    def validate_loaded(self, landscape: LandscapeLike, models: list) -> None:
        """Check what needs the loaded models (`models.minimum.Minimum`s) and the landscape
        (its `size`, `layout`, ...), after they load and before the store is created (e.g.
        a stored path of another architecture). Raise UserError. Default: nothing."""

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[Table] | None:
        """Compact tables of a result for `klandscape show` (None: a generic table)."""
        return None

    @classmethod
    def expected_strings(cls, config: dict, inputs: int) -> list[str] | None:
        """The DSS strings (store prefixes) a finished run of this config holds, for
        `inputs` input models (None: unknown; `show` then lists only what is stored)."""
        return None

    @classmethod
    def expected_partners(cls, config: dict, inputs: int) -> int:
        """How many partner models a run of this config trains (0: none)."""
        return 0

    @classmethod
    def export_point(cls, record: Any, string: str | None, t: float) -> tuple | None:
        """The point at position t in [0, 1] along a path the run stored (e.g. a trained
        curve), for `klandscape export --t`: (theta (P,), state (S,) or None, description);
        `record` is the run's `store.RunRecord`, `string` the path's prefix (None: the
        run's only one). None: the probe stores no such path (the beads of DSS strings are
        exported with --bead). Raise UserError for a path or t the run does not have."""
        return None

    @classmethod
    def census_row(cls, result: dict) -> dict[str, Any]:
        """The values of `census_columns` from one grid point's result (default: the
        result's top-level values of those keys; None where missing)."""
        return {key: result.get(key) for key in getattr(cls, "census_columns", {})}

    @classmethod
    def census_cells(cls, row: dict) -> dict[str, Any]:
        """The cells the probe adds to the printed census table, header -> value, from a
        census row (default: each of `census_columns` as it is)."""
        return {key: row.get(key) for key in getattr(cls, "census_columns", {})}

    @classmethod
    def census_notes(cls) -> list[str]:
        """Notes under the printed census table explaining the probe's cells."""
        return []

    @classmethod
    def census_tables(cls, points: list[tuple[str, dict]]) -> list[Table]:
        """More tables for `klandscape census` from every point's (name, result)."""
        return []

    @classmethod
    def string_level(cls, config: dict, prefix: str) -> float | None:
        """The level u the string at `prefix` was started at, from the run's options (for
        strings that have no verdict yet)."""
        level = config.get("level")
        is_number = isinstance(level, (int, float)) and not isinstance(level, bool)
        return float(level) if is_number else None


@dataclass
class ProbeEntry:
    """A registered probe and where it came from."""

    name: str
    cls: type
    origin: str = "built-in"

    @property
    def summary(self) -> str:
        return self.cls.summary


@dataclass
class BrokenPlugin:
    name: str
    origin: str
    error: str


@dataclass
class _Registry:
    probes: dict[str, ProbeEntry] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    discovered: bool = False


_REGISTRY = _Registry()


def _validate(cls) -> None:
    missing = [a for a in ("name", "summary", "Config", "run") if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"probe class {cls.__name__} lacks {', '.join(missing)}")
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass")
    for f in dataclasses.fields(cls.Config):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.Config.{f.name} needs a default")


def register_probe(cls=None, *, origin: str | None = None):
    """Class decorator that registers a probe under `cls.name`."""

    def decorate(cls):
        _validate(cls)
        existing = _REGISTRY.probes.get(cls.name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(
                f"probe name {cls.name!r} is already taken by {existing.cls.__module__}"
            )
        where = origin or (existing.origin if existing else "built-in")
        _REGISTRY.probes[cls.name] = ProbeEntry(cls.name, cls, where)
        return cls

    return decorate(cls) if cls is not None else decorate


def discover(force: bool = False) -> None:
    """Load every probe of the `keras_landscape.probes` entry-point group (once)."""
    if _REGISTRY.discovered and not force:
        return
    _REGISTRY.discovered = True
    _REGISTRY.broken.clear()
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown"
        origin = "built-in" if dist_name == _OWN_DISTRIBUTION else f"plugin ({dist_name})"
        try:
            cls = entry_point.load()
            register_probe(cls, origin=origin)
        except Exception as error:  # a broken plugin must not take the tool down
            message = f"{type(error).__name__}: {error}"
            _REGISTRY.broken.append(BrokenPlugin(entry_point.name, origin, message))
            log.warning("Skipping probe plugin %r (%s): %s", entry_point.name, origin, message)


def probes() -> dict[str, ProbeEntry]:
    """All registered probes by name (after discovery)."""
    discover()
    return dict(sorted(_REGISTRY.probes.items()))


def broken_plugins() -> list[BrokenPlugin]:
    discover()
    return list(_REGISTRY.broken)


def output_hook(probe: str, hook: str) -> Any:
    """The output hook `hook` of the probe registered as `probe` (one of ProbeBase's:
    tables, figures, no_figure, expected_strings, expected_partners, string_level,
    export_point, takes_pairs, takes_history, census_columns, census_row, census_cells,
    census_notes, census_tables, census_figures), or ProbeBase's default where the probe has
    none or is not installed here (a store written by a probe that is not installed can
    still be shown and drawn).
    A default class method is bound to the probe's own class, so that it reads the
    probe's attributes (`census_row` its `census_columns`)."""
    entry = probes().get(probe)
    own = getattr(entry.cls, hook, None) if entry is not None else None
    if own is not None:
        return own
    default = vars(ProbeBase).get(hook)
    if isinstance(default, classmethod) and entry is not None:
        return default.__get__(None, entry.cls)
    return getattr(ProbeBase, hook)


def get_probe(name: str) -> ProbeEntry:
    """The probe registered as `name`; UserError listing the known ones otherwise."""
    known = probes()
    if name not in known:
        raise UserError(
            f"Unknown probe {name!r}. Known probes: {', '.join(known) or '(none)'}. "
            "`klandscape probes` lists them with a summary."
        )
    return known[name]


def config_fields(cls) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls.Config))


def check_config(probe) -> None:
    """The probe's own option checks, before any model or data is loaded: its
    `validate_config()` method, else its config's `validate()`, where it has one."""
    check = getattr(probe, "validate_config", None) or getattr(probe.config, "validate", None)
    if callable(check):
        check()


def check_inputs(probe, models: list[str]) -> None:
    """The probe's checks of its options against the run's input models (names, in order),
    before anything is loaded or created: its `validate_inputs`, where it has one (a probe
    that does not subclass ProbeBase may lack it)."""
    check = getattr(probe, "validate_inputs", None)
    if callable(check):
        check(list(models))


def check_loaded(probe, landscape: LandscapeLike, models: list) -> None:
    """The probe's checks that need the loaded models and landscape, before the store is
    created: its `validate_loaded`, where it has one."""
    check = getattr(probe, "validate_loaded", None)
    if callable(check):
        check(landscape, models)


def make_config(cls, options: dict[str, Any]):
    """cls.Config from string or typed options; UserError naming an unknown key or bad value."""
    fields = {f.name: f for f in config_fields(cls)}
    hints = typing.get_type_hints(cls.Config)
    values = {}
    for key, raw in options.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise UserError(
                f"Unknown option {key!r} for probe {cls.name!r}. Its options: "
                f"{', '.join(fields) or '(none)'}."
            )
        values[name] = coerce(raw, hints.get(name, str), f"{cls.name}.{name}")
    return cls.Config(**values)


def coerce(raw: Any, hint: Any, where: str) -> Any:
    """A command-line string (or a typed value) as the config field's type: the one
    converter, `keras_landscape.values.to_type` (booleans true/yes/1, false/no/0; finite
    numbers; comma-separated lists; 'none' for optional fields)."""
    return to_type(raw, hint, where)
