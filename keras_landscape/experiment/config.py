"""YAML run configs: a whole experiment in one file, validated into a RunSpec.

`klandscape run CONFIG.yaml` reads a mapping with these keys (docs/user-guide.md has the
reference and examples; configs/ holds the shipped ones):

    description: text
    models: [a.keras, b.keras]          # model files, or:
    model:                              # an architecture, trained `replicas` times by fit
      builder: mlp                      # mlp, cnn or lstm
      input: [1]
      layers: [4, 4]                    # hidden widths (cnn: dense layers after the convs)
      activation: sigmoid
      output: 1
      replicas: 3
      train: {epochs: 100, batch_size: full, learning_rate: 0.001, optimizer: adam}
      dir: runs/cubic-models            # default: beside the store, <store stem>-models
    data: cubic:n=10000                 # or {online: tfds:mnist, offline: npz:mnist.npz}
    probes: [evaluate, {curviness: {levels: "0.3,0.1"}}]
    options: {learning_rate: 0.01}      # probe options for every listed probe that has them
    plots: true                         # or false, or {format: svg, dir: figures}
    scales: {small: {...}, full: {...}} # merged over the top level by --scale NAME
    loss: mae                           # and every other run setting, by its name:
    level_fn: mae                       # keras_landscape.settings.RunSettings declares
    seed: 0                             # them (split, out, xla, tf32, eval_batch_size,
    strategy: one                       # bn_stats, strategy, lockstep, ...)

The run settings' keys and checks come from `keras_landscape.settings.RunSettings` (the
declaration the command-line options come from too); `RunConfig` below adds the config's
own sections. Input paths (model files, npz/idx/text data, custom objects) are relative to
the config file's folder; output paths (`out`, `model.dir`, `plots.dir`) to the current
folder. A bad key or value is a ConfigError naming its key path, e.g.
`probes.curviness.alpah: unknown option (did you mean alpha?)`. Validation imports the
probe registry but no model code; `prepare` trains a `model:` recipe with
keras_landscape.models.recipes.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from keras_landscape import registry
from keras_landscape.data.specs import KINDS, load_data, parse_spec
from keras_landscape.errors import ConfigError, UserError
from keras_landscape.experiment.plan import (
    check_out,
    check_plan,
    refuse_resume_and_overwrite,
    replica_names,
)
from keras_landscape.models.recipes import (
    ModelRecipe,
    read_recipe,
    read_stamp,
    stamp,
    train_replicas,
)
from keras_landscape.report.plots import FORMATS, PATH_CHOICES
from keras_landscape.settings import (
    RunSettings,
    RunSpec,
    Text,
    closest,
    problem,
    unknown_key,
    validate,
)
from keras_landscape.store.hdf5 import refuse_existing
from keras_landscape.values import BadValue, to_type, yaml_load

DATA_PATH_KINDS = ("npz", "idx", "text")


def _fail(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


# ------------------------------------------------------------------- the config's schema


def _plots_in(value):
    if value is None or value is True:
        return {}
    if value is False or isinstance(value, (dict, PlotsConfig)):
        return None if value is False else value
    raise problem(f"expected true, false or {{format, dir, paths}}, got {value!r}")


class PlotsConfig(BaseModel):
    """`plots`: the figures `klandscape run` draws after the probes."""

    model_config = ConfigDict(extra="forbid")

    format: str = "png"
    dir: Text | None = None
    paths: Literal[PATH_CHOICES] = "best"  # type: ignore[valid-type]

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in FORMATS:
            raise problem(f"unknown format {value!r}; use one of {', '.join(FORMATS)}")
        return value


Plots = Annotated[PlotsConfig | None, BeforeValidator(_plots_in)]


class _PlotsKey(BaseModel):
    plots: Plots = Field(default_factory=PlotsConfig)


class DataChoices(BaseModel):
    """`data: {online, offline}`: specs tried in order (e.g. tfds, then a local .npz)."""

    model_config = ConfigDict(extra="forbid")

    online: Text | None = None
    offline: Text | None = None


class RunConfig(RunSettings):
    """A YAML run config: every run setting (`RunSettings`) plus the config's own sections."""

    description: Text | None = None
    models: Annotated[
        list[Text] | None, BeforeValidator(lambda v: [v] if isinstance(v, str) else v)
    ] = None
    model: dict[str, Any] | None = None  # a ModelRecipe (models/recipes.py declares its keys)
    data: Annotated[
        Any,
        Field(description="a data spec such as digits, cubic:n=10000 or npz:PATH"),
    ]
    probes: Any = None  # names or {name: options}: checked against the registry
    options: dict[str, Any] | None = None
    plots: Plots = Field(default_factory=PlotsConfig)
    scales: dict[str, Any] | None = None


#: the keys of a run config, from its declaration: its own sections, then the run settings
TOP_KEYS = (
    *(k for k in RunConfig.model_fields if k not in RunSettings.model_fields),
    *RunSettings.model_fields,
)


# ---------------------------------------------------------------------------- results


@dataclass
class ExperimentConfig:
    """A validated config: the RunSpec to execute, and how to make its models and figures.

    Attributes:
        source: the config file ('' for a mapping given in code).
        scale: the scale merged in, or None.
        spec: the RunSpec; `spec.models` is empty until `prepare` trains a recipe.
        recipe: the architecture to train, or None when model files are given.
        data_choices: the data specs to try in order (online first, then offline).
        plots: {"format", "dir", "paths"} or None for no figures.
        document: the merged, validated mapping (for --dry-run and the record).
    """

    source: str
    scale: str | None
    spec: RunSpec
    recipe: ModelRecipe | None
    data_choices: list[str]
    plots: dict | None
    document: dict


# ------------------------------------------------------------------------------ loading


def read_yaml(path: str) -> dict:
    """The YAML mapping in `path`; UserError for a missing file or bad YAML."""
    file = Path(path)
    if file.is_dir():
        raise UserError(
            f"The config file {path!r} is a directory; give a YAML file such as configs/cubic.yaml."
        )
    if not file.is_file():
        raise UserError(f"The config file {path!r} does not exist.")
    try:
        document = yaml_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(
            f"The config file {path!r} is not a text file (it is not valid UTF-8); "
            "give a YAML run config."
        ) from None
    except OSError as error:
        reason = error.strerror or error
        raise UserError(f"Cannot read the config file {path!r}: {reason}.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"The config file {path!r} is not valid YAML{where}: {problem}.") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UserError(
            f"The config file {path!r} must hold a mapping of keys (models, data, "
            f"probes, ...), not a {type(document).__name__}."
        )
    return document


def _merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`: mappings key by key, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if key == "probes" and key in merged:
            merged[key] = _merge_probes(merged[key], value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_probes(base, over):
    try:
        first, second = _probe_map(base, "probes"), _probe_map(over, "probes")
    except ConfigError:
        return copy.deepcopy(over)  # validation reports the bad shape
    for name, options in second.items():
        first[name] = {**first.get(name, {}), **options}
    return [{name: options} if options else name for name, options in first.items()]


def apply_override(document: dict, key: str, value: Any, probe_options: set[str]) -> None:
    """Set `key` (a dotted path such as `model.train.epochs` or `probes.curviness.levels`).

    A key that is not a config key but a probe option (`max_steps`) goes to `options`, so it
    reaches every listed probe that has it, and replaces per-probe values of that option.
    """
    parts = key.split(".")
    if parts[0] == "probes" and len(parts) == 3:
        probes = _probe_map(document.get("probes", ["evaluate"]), "probes")
        if parts[1] not in probes:
            _fail(
                f"probes.{parts[1]}",
                f"not a listed probe ({', '.join(probes)}); list it under "
                "probes to set its options",
            )
        probes[parts[1]][parts[2]] = value
        document["probes"] = [{n: o} if o else n for n, o in probes.items()]
        return
    if parts[0] not in TOP_KEYS and len(parts) == 1:
        if key not in probe_options:
            hint = closest(key, [*TOP_KEYS, *probe_options])
            _fail(
                key,
                "neither a config key nor an option of any probe"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; config keys: {', '.join(TOP_KEYS)}; "
                "probe options: `klandscape probes --markdown`",
            )
        document.setdefault("options", {})
        if not isinstance(document["options"], dict):
            _fail("options", "must be a mapping of probe options")
        document["options"][key] = value
        try:
            probes = _probe_map(document.get("probes", []), "probes")
        except ConfigError:
            return
        for options in probes.values():
            options.pop(key, None)
        document["probes"] = [{n: o} if o else n for n, o in probes.items()]
        return
    target = document
    for i, part in enumerate(parts[:-1]):
        if not isinstance(target.get(part), dict):
            if part in target and target[part] is not None:
                _fail(".".join(parts[: i + 1]), f"is not a mapping, so {key} cannot be set")
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def load_config(
    source: str | dict,
    *,
    scale: str | None = None,
    overrides: list[tuple[str, Any]] = (),
    base_dir: str | None = None,
    command: str = "",
) -> ExperimentConfig:
    """Validate a config file (or mapping) with a scale and overrides into a ExperimentConfig.

    Args:
        source: a YAML file path, or the mapping itself.
        scale: a name under `scales` to merge over the top level.
        overrides: (dotted key, value) pairs applied after the scale, in order.
        base_dir: the folder relative input paths are resolved against (default: the
            config file's folder, or the current folder for a mapping).
        command: the command line recorded in the store.

    Raises:
        UserError (ConfigError): a bad key or value, with its key path.
    """
    return load_with(source, base_dir, lambda *read: _load(*read, scale, overrides, command))


def load_with(source: str | dict, base_dir: str | None, build):
    """build(document, path, folder) of a YAML file or a mapping (a copy), where `folder`
    is what relative input paths are resolved against; its ConfigErrors name the file."""
    if isinstance(source, dict):
        document, path = copy.deepcopy(source), ""
    else:
        document, path = read_yaml(source), str(source)
    folder = Path(base_dir) if base_dir is not None else (Path(path).parent if path else Path("."))
    try:
        return build(document, path, folder)
    except ConfigError as error:
        where = f"In {path}, " if path else ""
        raise ConfigError(f"{where}{error}") from None


def with_scale(document: dict, keys, scale: str | None, noun: str = "config") -> dict:
    """The document with its `scales` checked against `keys` and removed, and the one
    named `scale` merged over the top level."""
    _check_keys(document, keys, "")
    scales = document.pop("scales", None) or {}
    if not isinstance(scales, dict):
        _fail("scales", "must be a mapping of scale name -> overrides")
    for name, over in scales.items():
        if not isinstance(over, dict):
            _fail(f"scales.{name}", "must be a mapping of keys to override")
        _check_keys(over, [k for k in keys if k != "scales"], f"scales.{name}.")
    if scale is not None:
        if scale not in scales:
            known = ", ".join(scales) or "none"
            raise ConfigError(f"--scale {scale}: unknown scale; the {noun} defines: {known}")
        document = _merge(document, scales[scale])
    return document


def _load(document, path, folder, scale, overrides, command) -> ExperimentConfig:
    document = with_scale(document, TOP_KEYS, scale)
    all_options = {
        f.name for e in registry.probes().values() for f in registry.config_fields(e.cls)
    }
    for key, value in overrides:
        apply_override(document, key, value, all_options)
    return _validate(document, path, folder, scale, command)


def _check_keys(mapping: dict, allowed, prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            _fail(f"{prefix}{key}", unknown_key(str(key), list(allowed)))


# --------------------------------------------------------------------------- validation


def _resolve(path: str, folder: Path) -> str:
    candidate = Path(path).expanduser()
    return os.path.normpath(candidate if candidate.is_absolute() else folder / candidate)


def _data_spec(spec: str, where: str, folder: Path, must_exist: bool) -> str:
    """A data spec with a relative file path resolved against the config folder."""
    try:
        kind, positionals, options = parse_spec(spec)
    except UserError as error:
        _fail(where, str(error))
    if kind not in KINDS:
        _fail(where, f"unknown data kind {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    if kind in DATA_PATH_KINDS and positionals:
        positionals = [_resolve(positionals[0], folder), *positionals[1:]]
        if must_exist and not Path(positionals[0]).exists():
            _fail(where, f"the data file {positionals[0]!r} does not exist")
    if kind == "tfds" and "data_dir" in options:
        options = {**options, "data_dir": _resolve(options["data_dir"], folder)}
    tokens = [kind, *positionals]
    if options:
        tokens.append(",".join(f"{k}={v}" for k, v in options.items()))
    return ":".join(tokens)


def _data(value, folder: Path) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [_data_spec(value.strip(), "data", folder, must_exist=True)]
    if not isinstance(value, dict):
        _fail(
            "data",
            f"expected a data spec (e.g. cubic:n=10000) or {{online, offline}}, got {value!r}",
        )
    choices = validate(DataChoices, value, prefix="data.")
    specs = [(k, getattr(choices, k)) for k in ("online", "offline") if getattr(choices, k)]
    if not specs:
        _fail("data", "give online and/or offline data specs")
    return [_data_spec(spec, f"data.{key}", folder, must_exist=False) for key, spec in specs]


def _probe_map(value, where: str) -> dict[str, dict]:
    """`probes` as an ordered {name: options}: a list of names / {name: options}, or a map."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        value = [{k: v} for k, v in value.items()]
    if not isinstance(value, list):
        _fail(where, f"expected a list of probe names or {{name: options}}, got {value!r}")
    probes: dict[str, dict] = {}
    for i, item in enumerate(value):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = options or {}
        else:
            _fail(f"{where}[{i}]", f"expected a probe name or {{name: options}}, got {item!r}")
        if not isinstance(options, dict):
            _fail(f"{where}.{name}", f"expected a mapping of options, got {options!r}")
        if name in probes:
            _fail(f"{where}.{name}", "listed twice")
        probes[str(name)] = dict(options)
    return probes


def refuse_unknown_probes(names, known, choices, noun: str) -> None:
    """ConfigError for the first of `names` not among `known`, hinting from `choices`."""
    for name in names:
        if name not in known:
            hint = closest(name, choices)
            _fail(
                f"probes.{name}",
                "unknown probe"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; {noun}: {', '.join(choices)}",
            )


def _probe_configs(value, shared: dict) -> tuple[list[str], dict[str, dict]]:
    """Probe names and their typed options (shared ones given to every probe that has them)."""
    probes = _probe_map(value if value is not None else ["evaluate"], "probes")
    if not probes:
        _fail("probes", "list at least one probe (see `klandscape probes`)")
    known = registry.probes()
    refuse_unknown_probes(probes, known, known, "known probes")
    fields_of = {n: [f.name for f in registry.config_fields(known[n].cls)] for n in probes}
    for key in shared:
        if not any(key in f for f in fields_of.values()):
            _fail(f"options.{key}", f"no listed probe ({', '.join(probes)}) has this option")
    typed = {}
    for name, options in probes.items():
        cls, fields = known[name].cls, fields_of[name]
        hints = typing.get_type_hints(cls.Config)
        values = {}
        for key, raw in {**{k: v for k, v in shared.items() if k in fields}, **options}.items():
            source = f"probes.{name}.{key}" if key in options else f"options.{key}"
            if key not in fields:
                hint = closest(key, fields)
                _fail(
                    source,
                    "unknown option"
                    + (f" (did you mean {hint}?)" if hint else "")
                    + f"; options of {name}: {', '.join(fields)}",
                )
            try:
                values[key] = to_type(raw, hints.get(key, str))
            except BadValue as error:
                _fail(source, error.short)
        try:
            config = cls.Config(**values)
            for check in ("validate", "validate_bisection"):
                if hasattr(config, check):
                    getattr(config, check)()
            registry.check_config(cls(config))  # the probe's own checks (levels, ...)
        except UserError as error:
            _fail(f"probes.{name}", str(error))
        typed[name] = values
    return list(probes), typed


def _plots(value) -> dict | None:
    """`plots` as {"format", "dir", "paths"}, or None for no figures."""
    plots = validate(_PlotsKey, {"plots": value}).plots
    return None if plots is None else plots.model_dump()


def default_out(source: str, scale: str | None) -> str:
    stem = Path(source).stem if source else "run"
    return str(Path("klandscape-runs") / (f"{stem}-{scale}.h5" if scale else f"{stem}.h5"))


def _validate(document: dict, source: str, folder: Path, scale, command: str) -> ExperimentConfig:
    run = validate(RunConfig, document)
    if (run.models is None) == (run.model is None):
        _fail(
            "models",
            "give either models (a list of model files) or model (an architecture "
            "to train), not " + ("neither" if run.models is None else "both"),
        )
    recipe, models = None, []
    if run.model is None:
        if not run.models:
            _fail("models", f"expected a list of model files, got {document['models']!r}")
        for i, item in enumerate(run.models):
            models.append(_resolve(item, folder))
            if not Path(models[-1]).exists():
                _fail(f"models[{i}]", f"the model file {models[-1]!r} does not exist")
            if not Path(models[-1]).is_file():  # a directory; a FIFO would block its loading
                _fail(
                    f"models[{i}]",
                    f"{models[-1]!r} is not a regular file (a directory, pipe or device); give "
                    "a saved model file (.keras, .h5)",
                )
    else:
        recipe = read_recipe(run.model)
    data_choices = _data(run.data, folder)
    if recipe is not None and run.loss is None:
        _fail(
            "loss",
            "missing: a trained architecture needs a loss (e.g. mae, "
            "sparse_categorical_crossentropy:from_logits=true)",
        )
    probes, probe_options = _probe_configs(run.probes, run.options or {})
    out = run.out or default_out(source, scale)
    if recipe is not None and not recipe.dir:
        recipe.dir = str(Path(out).with_name(Path(out).stem + "-models"))
    custom = run.custom_objects
    if custom is not None and (custom.endswith(".py") or "/" in custom):
        custom = _resolve(custom, folder)
    settings = {name: getattr(run, name) for name in RunSettings.model_fields}
    spec = RunSpec(
        **{**settings, "data": data_choices[0], "out": out, "custom_objects": custom},
        models=models,
        probes=probes,
        probe_options=probe_options,
        command=command,
    )
    try:  # the options against the models (a recipe's replicas by the names they will get)
        check_plan(spec, None if recipe is None else replica_names(recipe))
    except UserError as error:
        raise ConfigError(str(error)) from None
    plots = None if run.plots is None else run.plots.model_dump()
    return ExperimentConfig(source, scale, spec, recipe, data_choices, plots, document)


def _spec_dump(spec: RunSpec) -> dict:
    """The spec as plain data: what runs first (models, data, probes), then the settings."""
    dump = spec.model_dump(exclude={"command"})
    first = ("models", "data", "probes", "options", "probe_options")
    return {**{k: dump.pop(k) for k in first}, **dump}


def describe(config: ExperimentConfig) -> dict:
    """The resolved settings as plain data (what `klandscape run --dry-run` prints)."""
    return {
        "config": config.source,
        "scale": config.scale,
        "run": _spec_dump(config.spec),
        "model": None if config.recipe is None else dataclasses.asdict(config.recipe),
        "data_choices": config.data_choices,
        "plots": config.plots,
    }


# ------------------------------------------------------------------- preparing the run


def choose_data(config: ExperimentConfig, progress=None) -> str:
    """The first data spec that loads (online, then offline); notes a fallback."""
    if len(config.data_choices) == 1:
        return config.data_choices[0]
    reasons = []
    for spec in config.data_choices:
        probe = _with_limit(spec)
        try:
            load_data(probe, seed=config.spec.seed)
        except (UserError, ImportError) as error:
            reasons.append(f"{spec}: {str(error).replace(probe, spec)}")
            continue
        if reasons and progress is not None:
            progress.note(f"using data {spec}, because " + "; ".join(reasons))
        return spec
    raise UserError("None of the config's data specs could be loaded: " + " ".join(reasons))


def _with_limit(spec: str) -> str:
    """The spec reading one sample, to check cheaply that it is available."""
    kind, positionals, options = parse_spec(spec)
    return ":".join(
        [kind, *positionals, ",".join(f"{k}={v}" for k, v in {**options, "limit": 1}.items())]
    )


def prepare(
    config: ExperimentConfig, progress=None, *, resume: bool = False, overwrite: bool = False
) -> Any:
    """The RunSpec ready to execute: data chosen, a recipe's replicas trained (or reused).

    An existing store without resume or overwrite is refused before any training.
    """
    out = Path(config.spec.out)
    check_out(str(out))
    refuse_resume_and_overwrite(resume, overwrite)
    if out.exists() and not (resume or overwrite):
        refuse_existing(out)
    # A config run interrupted before its store was written (while training replicas)
    # resumes by reusing the trained models and starting the store.
    spec = config.spec.model_copy(
        deep=True,
        update={
            "data": choose_data(config, progress),
            "resume": resume and out.exists(),
            "overwrite": overwrite,
        },
    )
    if config.recipe is not None and resume and out.exists():
        previous = read_stamp(Path(config.recipe.dir) / "recipe.json")
        if previous is not None and previous != stamp(
            config.recipe, spec.data, spec.loss, spec.seed
        ):
            raise UserError(
                f"Cannot resume {str(out)!r}: its models in {config.recipe.dir!r} were trained "
                "from another model recipe, data, loss or seed than the config now gives. Resume "
                "with the same settings, or write a new store (--out) or --overwrite."
            )
    if config.recipe is not None:
        spec.models = train_replicas(config.recipe, spec.data, spec.loss, spec.seed, progress)
    return spec


__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ModelRecipe",
    "RunConfig",
    "TOP_KEYS",
    "apply_override",
    "describe",
    "load_config",
    "prepare",
    "read_yaml",
]
