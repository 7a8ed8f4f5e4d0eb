"""The probe registry: @register_probe, config coercion, entry-point discovery, broken plugins."""

import dataclasses
import types
from dataclasses import dataclass, field
from importlib import metadata

import pytest

from keras_landscape import registry
from keras_landscape.errors import UserError


@pytest.fixture
def clean_registry():
    """Whatever a test registers or discovers is undone afterwards."""
    registry.discover()
    saved = (
        dict(registry._REGISTRY.probes),
        list(registry._REGISTRY.broken),
        registry._REGISTRY.discovered,
    )
    yield registry._REGISTRY
    registry._REGISTRY.probes.clear()
    registry._REGISTRY.probes.update(saved[0])
    registry._REGISTRY.broken[:] = saved[1]
    registry._REGISTRY.discovered = saved[2]


def _probe_class(name="toy", **config_fields):
    """A minimal valid probe class with a Config of the given (annotation, default) fields."""
    annotations = {k: a for k, (a, _) in config_fields.items()}
    namespace = {"__annotations__": annotations}
    for key, (_, default) in config_fields.items():
        namespace[key] = default
    config = dataclass(type("Config", (), namespace))

    class Toy:
        summary = "A toy probe for tests."
        Config = config

        def __init__(self, config=None):
            self.config = config or self.Config()

        def run(self, landscape, models, store, progress):
            return {"ok": True}

    Toy.name = name
    return Toy


def test_builtin_evaluate_comes_through_the_entry_point():
    entries = registry.probes()
    assert "evaluate" in entries
    entry = entries["evaluate"]
    assert entry.origin == "built-in"
    assert entry.cls.__module__ == "keras_landscape.plugins.evaluate"
    assert entry.summary.startswith("Loss, level function")
    assert isinstance(entry.cls(), registry.Probe)
    assert registry.get_probe("evaluate") == entry


def test_registered_probe_appears_in_probes(clean_registry):
    @registry.register_probe
    class Curvature:
        name = "test-curvature"
        summary = "Largest Hessian eigenvalue."

        @dataclass
        class Config:
            iterations: int = 20

        def __init__(self, config=None):
            self.config = config or self.Config()

        def run(self, landscape, models, store, progress):
            return {}

    entries = registry.probes()
    assert entries["test-curvature"].cls is Curvature
    assert entries["test-curvature"].summary == "Largest Hessian eigenvalue."
    assert "evaluate" in entries
    assert list(entries) == sorted(entries)  # listed by name
    assert registry.get_probe("test-curvature").cls is Curvature
    # registering the same class again is harmless; another class under the name is not
    registry.register_probe(Curvature)
    with pytest.raises(ValueError, match="already taken"):
        registry.register_probe(_probe_class("test-curvature"))


def test_register_probe_with_origin_keyword(clean_registry):
    cls = _probe_class("test-origin")
    assert registry.register_probe(origin="plugin (acme)")(cls) is cls
    assert registry.probes()["test-origin"].origin == "plugin (acme)"


@pytest.mark.parametrize(
    "mutate, message",
    [
        ("no_default", "Config.alpha needs a default"),
        ("no_run", "lacks run"),
        ("no_summary", "lacks summary"),
        ("plain_config", "Config must be a dataclass"),
    ],
)
def test_invalid_probe_classes_are_rejected(clean_registry, mutate, message):
    if mutate == "no_default":

        @dataclass
        class Config:
            alpha: float
            beta: int = 1
    elif mutate == "plain_config":

        class Config:
            alpha = 1.0
    else:
        Config = _probe_class().Config

    class Bad:
        name = "test-bad"
        summary = "bad"

        def run(self, landscape, models, store, progress):
            return {}

    Bad.Config = Config
    if mutate == "no_run":
        del Bad.run
    if mutate == "no_summary":
        del Bad.summary
    with pytest.raises(TypeError, match=message):
        registry.register_probe(Bad)
    assert "test-bad" not in registry.probes()


@dataclass
class _TypedConfig:
    alpha: float = 0.95
    strict: bool = False
    steps: int = 10
    sizes: list[int] = field(default_factory=list)
    levels: tuple[float, ...] = ()
    tag: str = "x"
    budget: float | None = None


class _Typed:
    name = "typed"
    summary = "typed options"
    Config = _TypedConfig


def test_make_config_coerces_strings_to_field_types():
    config = registry.make_config(
        _Typed,
        {
            "alpha": "0.5",
            "strict": "true",
            "steps": "7",
            "sizes": "1,2",
            "levels": "0.1, 2",
            "tag": "hello",
            "budget": "2.5",
        },
    )
    assert config == _TypedConfig(0.5, True, 7, [1, 2], (0.1, 2.0), "hello", 2.5)
    assert type(config.alpha) is float and type(config.steps) is int
    assert type(config.sizes[0]) is int and isinstance(config.levels, tuple)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
def test_make_config_bool_spellings(raw, expected):
    assert registry.make_config(_Typed, {"strict": raw}).strict is expected


@pytest.mark.parametrize("raw", ["maybe", "on", "off", "2", "y", ""])
def test_make_config_refuses_other_bool_words(raw):
    """One boolean rule everywhere (keras_landscape.values.to_bool): true/yes/1, false/no/0."""
    with pytest.raises(UserError, match="for typed.strict: expected true or false"):
        registry.make_config(_Typed, {"strict": raw})


def test_make_config_defaults_typed_values_and_none():
    assert registry.make_config(_Typed, {}) == _TypedConfig()
    # already-typed values (a YAML config) pass through; 'none' clears an optional field
    config = registry.make_config(_Typed, {"alpha": 0.25, "sizes": [3]})
    assert config.alpha == 0.25 and config.sizes == [3]
    assert registry.make_config(_Typed, {"budget": "none"}).budget is None


def test_make_config_rejects_unknown_keys_naming_the_options():
    with pytest.raises(UserError) as info:
        registry.make_config(_Typed, {"alhpa": "0.5"})
    message = str(info.value)
    assert "Unknown option 'alhpa' for probe 'typed'" in message
    assert "alpha, strict, steps, sizes, levels, tag, budget" in message


@pytest.mark.parametrize(
    "key, raw, expected_type",
    [
        ("alpha", "high", "a number"),
        ("steps", "2.5", "an integer"),
        ("strict", "maybe", "true or false"),
        ("sizes", "1,x", "an integer"),
    ],
)
def test_make_config_rejects_bad_values(key, raw, expected_type):
    pattern = f"Bad value '.*' for typed.{key}: expected .*{expected_type}"
    with pytest.raises(UserError, match=pattern):
        registry.make_config(_Typed, {key: raw})


def test_make_config_with_a_dashed_key():
    @dataclass
    class Config:
        allow_nonfinite: bool = False

    class Probe:
        name = "dashed"
        summary = "s"

    Probe.Config = Config
    assert registry.make_config(Probe, {"allow-nonfinite": "true"}).allow_nonfinite is True


def test_get_probe_unknown_lists_known_probes():
    with pytest.raises(UserError) as info:
        registry.get_probe("evaluat")
    assert "Unknown probe 'evaluat'" in str(info.value)
    assert "evaluate" in str(info.value) and "klandscape probes" in str(info.value)


class _BrokenEntryPoint:
    """Looks like an importlib.metadata.EntryPoint whose module fails to import."""

    name = "exploding"
    group = registry.ENTRY_POINT_GROUP
    value = "no_such_package.probes:Exploding"
    dist = None

    def load(self):
        raise ImportError("No module named 'no_such_package'")


class _InvalidEntryPoint(_BrokenEntryPoint):
    """Loads, but what it loads is not a valid probe (Config without defaults)."""

    name = "invalid"

    def load(self):
        @dataclass
        class Config:
            needed: int

        cls = _probe_class("test-invalid")
        cls.Config = Config
        return cls


def test_broken_entry_point_is_reported_and_skipped(clean_registry, monkeypatch, caplog):
    real = list(metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    assert any(ep.name == "evaluate" for ep in real)

    def entry_points(group):
        assert group == registry.ENTRY_POINT_GROUP
        return [_BrokenEntryPoint(), *real, _InvalidEntryPoint()]

    monkeypatch.setattr(registry, "metadata", types.SimpleNamespace(entry_points=entry_points))
    clean_registry.probes.clear()
    clean_registry.broken.clear()
    registry.discover(force=True)  # must not raise

    entries = registry.probes()
    broken = registry.broken_plugins()
    # the good plugins after the broken one still load (evaluate at least, and any other
    # installed probe that loads)
    assert entries["evaluate"].origin == "built-in"
    assert "exploding" not in entries and "test-invalid" not in entries
    assert set(entries) | {b.name for b in broken} == {ep.name for ep in real} | {
        "exploding",
        "invalid",
    }
    ours = [(b.name, b.origin) for b in broken if b.name in ("exploding", "invalid")]
    assert ours == [("exploding", "plugin (unknown)"), ("invalid", "plugin (unknown)")]
    broken = [b for b in broken if b.name in ("exploding", "invalid")]
    assert broken[0].error == "ImportError: No module named 'no_such_package'"
    assert broken[1].error == "TypeError: Toy.Config.needed needs a default"
    assert "Skipping probe plugin 'exploding'" in caplog.text
    with pytest.raises(UserError, match="Unknown probe 'exploding'"):
        registry.get_probe("exploding")


def test_discover_runs_once_unless_forced(clean_registry, monkeypatch):
    calls = []

    def entry_points(group):
        calls.append(group)
        return []

    monkeypatch.setattr(registry, "metadata", types.SimpleNamespace(entry_points=entry_points))
    registry.discover()
    registry.probes()
    assert calls == []  # already discovered in this process
    registry.discover(force=True)
    assert calls == [registry.ENTRY_POINT_GROUP]


def test_config_fields_lists_dataclass_fields():
    assert [f.name for f in registry.config_fields(_Typed)] == [
        f.name for f in dataclasses.fields(_TypedConfig)
    ]


def test_forced_rediscovery_does_not_duplicate_broken_plugins(clean_registry, monkeypatch):
    monkeypatch.setattr(
        registry,
        "metadata",
        types.SimpleNamespace(entry_points=lambda group: [_BrokenEntryPoint()]),
    )
    clean_registry.broken.clear()
    registry.discover(force=True)
    registry.discover(force=True)
    assert [b.name for b in registry.broken_plugins()] == ["exploding"]


def test_pair_and_census_declarations_come_from_the_probe_class(clean_registry):
    """What callbacks and the census need to know of a probe is declared on its class:
    the built-ins' pair probes say takes_pairs, the census probes their columns; a class
    that does not subclass ProbeBase gets the defaults, bound to its own attributes."""
    pairs = {n for n in registry.probes() if registry.output_hook(n, "takes_pairs")}
    assert {"barrier", "connectivity", "curviness", "components"} <= pairs
    assert not {"evaluate", "hessian", "slices"} & pairs
    census = {n for n in registry.probes() if registry.output_hook(n, "census_columns")}
    assert {"components", "curviness"} <= census and "evaluate" not in census

    plain = _probe_class("plain-census")
    plain.takes_pairs = True
    plain.census_columns = {"gap": "a number", "count": "another"}
    registry.register_probe(plain)
    assert registry.output_hook("plain-census", "takes_pairs") is True
    row = registry.output_hook("plain-census", "census_row")({"gap": 0.5, "other": 1})
    assert row == {"gap": 0.5, "count": None}
    cells = registry.output_hook("plain-census", "census_cells")(row)
    assert cells == {"gap": 0.5, "count": None}
    assert registry.output_hook("plain-census", "census_tables")([("p", {})]) == []
    assert registry.output_hook("not-installed", "census_row")({"gap": 1}) == {}
    assert registry.output_hook("not-installed", "takes_pairs") is False
