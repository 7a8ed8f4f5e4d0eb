"""The probe registry: a Probe protocol, `@register_probe`, and entry-point discovery.

A probe is a class with a `name`, a one-line `summary`, a `Config` dataclass whose fields all
have defaults, and `run(landscape, models, store, progress) -> dict` (JSON-serialisable).
Built-in probes live in `keras_landscape.plugins` and are registered exactly as a third
party's are: through the `keras_landscape.probes` entry-point group (setup.cfg). A plugin that
fails to import is reported and skipped.

Example (a third-party package):
    from dataclasses import dataclass
    from keras_landscape.registry import register_probe

    @register_probe
    class Sharpness:
        name = "sharpness"
        summary = "Largest Hessian eigenvalue by power iteration."

        @dataclass
        class Config:
            iterations: int = 20

        def __init__(self, config=None):
            self.config = config or self.Config()

        def run(self, landscape, models, store, progress):
            ...

    # setup.cfg:  [options.entry_points] keras_landscape.probes = sharpness = pkg.mod:Sharpness
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from keras_landscape.errors import UserError

log = logging.getLogger("keras_landscape")

ENTRY_POINT_GROUP = "keras_landscape.probes"
_OWN_DISTRIBUTION = "keras-landscape"


@runtime_checkable
class Probe(Protocol):
    """What every probe provides."""

    name: str
    summary: str
    Config: type

    def __init__(self, config: Any = None) -> None: ...

    def run(self, landscape, models, store, progress) -> dict: ...


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
        value = coerce(raw, hints.get(name, str), f"{cls.name}.{name}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(
                f"Option {cls.name}.{name} must be a finite number, got {raw!r} (NaN and "
                "infinity are never meaningful settings)."
            )
        values[name] = value
    return cls.Config(**values)


def coerce(raw: Any, hint: Any, where: str) -> Any:
    """Turn a command-line string into the config field's type (bool, int, float, lists)."""
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw.lower() in ("none", "null", ""):
            return None
        return coerce(raw, args[0], where)
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if origin in (list, tuple):
            items = [coerce(part.strip(), args[0] if args else str, where) for part in raw.split(",")]
            return tuple(items) if origin is tuple else items
    except ValueError:
        raise UserError(f"Bad value {raw!r} for {where}: expected {getattr(hint, '__name__', hint)}.") from None
    return raw
