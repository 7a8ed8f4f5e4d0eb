"""YAML run configs: a whole experiment in one file, validated into a RunSpec.

`klandscape run CONFIG.yaml` reads a mapping with these keys (docs/user-guide.md has the
reference and examples; configs/ holds the shipped ones):

    description: text
    models: [a.keras, b.keras]          # model files, or:
    model:                              # an architecture, trained `replicas` times by fit
      builder: mlp                      # mlp, cnn or lstm
      input: [1]
      layers: [4, 4]                    # hidden widths (cnn: dense layers after the convs)
      filters: [8, 16]                  # cnn only: Conv2D filters, kernel_size, pool
      activation: sigmoid
      output: 1
      output_activation: null
      replicas: 3
      train: {epochs: 100, batch_size: full, learning_rate: 0.001, optimizer: adam}
      dir: runs/cubic-models            # default: beside the store, <store stem>-models
    data: cubic:n=10000                 # or {online: tfds:mnist, offline: npz:mnist.npz}
    loss: mae
    level_fn: mae
    split: test
    probes: [evaluate, {curviness: {levels: "0.3,0.1"}}]
    options: {learning_rate: 0.01}      # probe options for every listed probe that has them
    seed: 0
    out: runs/cubic.h5
    xla: auto
    strategy: one                       # one, mirrored[:cpus=N], tpu, multiworker
    tpu: null                           # the TPU's name (strategy tpu)
    lockstep: true                      # run a probe's strings together
    plots: true                         # or false, or {format: svg, dir: figures}
    scales: {small: {...}, full: {...}} # merged over the top level by --scale NAME

Input paths (model files, npz/idx/text data, custom objects) are relative to the config
file's folder; output paths (`out`, `model.dir`, `plots.dir`) to the current folder.
A bad key or value is a UserError naming its key path, e.g.
`probes.curviness.alpah: unknown option`. Validation imports the probe registry but no
model code; `prepare` trains a `model:` recipe with keras_landscape.models.recipes.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keras_landscape import registry
from keras_landscape.data.specs import KINDS, load_data, parse_spec
from keras_landscape.engine.options import (
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    parse_strategy,
)
from keras_landscape.errors import ConfigError, UserError
from keras_landscape.experiment.spec import RunSpec
from keras_landscape.models.recipes import (
    BUILDERS,
    DEFAULT_TRAIN,
    OPTIMIZERS,
    ModelRecipe,
    read_stamp,
    stamp,
    train_replicas,
)
from keras_landscape.report.plots import FORMATS, PATH_CHOICES
from keras_landscape.store.hdf5 import refuse_existing

TOP_KEYS = (
    "description",
    "models",
    "model",
    "data",
    "loss",
    "level_fn",
    "split",
    "probes",
    "options",
    "seed",
    "out",
    "xla",
    "tf32",
    "strategy",
    "tpu",
    "lockstep",
    "eval_batch_size",
    "custom_objects",
    "bn_stats",
    "bn_batches",
    "bn_batch_size",
    "unsafe",
    "plots",
    "scales",
)
MODEL_KEYS = ("builder", "replicas", "train", "dir") + tuple(
    sorted({k for keys in BUILDERS.values() for k in keys})
)
TRAIN_KEYS = ("epochs", "batch_size", "learning_rate", "optimizer")
PLOT_KEYS = ("format", "dir", "paths")
DATA_PATH_KINDS = ("npz", "idx", "text")


def _fail(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


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
    spec: Any
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
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
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


def parse_value(text: str) -> Any:
    """A command-line override value, read as YAML (`0.5`, `true`, `[4, 4]`, `cubic:n=10`)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


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
    if parts[0] not in TOP_KEYS and len(parts) == 1 and key not in probe_options:
        hint = _closest(key, [*TOP_KEYS, *probe_options])
        _fail(
            key,
            "neither a config key nor an option of any probe"
            + (f" (did you mean {hint}?)" if hint else "")
            + f"; config keys: {', '.join(TOP_KEYS)}; "
            "probe options: `klandscape probes --markdown`",
        )
    if parts[0] not in TOP_KEYS and len(parts) == 1:
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
    _check_keys(document, TOP_KEYS, "")
    return _validate(document, path, folder, scale, command)


def _check_keys(mapping: dict, allowed, prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = _closest(str(key), allowed)
            _fail(
                f"{prefix}{key}",
                "unknown key"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; allowed: {', '.join(allowed)}",
            )


def _closest(word: str, choices) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return found[0] if found else None


# --------------------------------------------------------------------------- validation


def _string(value, where: str, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        _fail(where, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _integer(value, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            _fail(where, f"expected an integer, got {value!r}")
    if value < minimum:
        _fail(where, f"must be >= {minimum}, got {value}")
    return value


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, f"expected true or false, got {value!r}")
    return value


def _number(value, where: str, positive: bool = False) -> float:
    if isinstance(value, bool):
        _fail(where, f"expected a number, got {value!r}")
    try:
        number = float(value)  # YAML 1.1 reads 1e-3 as a string
    except (TypeError, ValueError):
        _fail(where, f"expected a number, got {value!r}")
    if not math.isfinite(number) or (positive and number <= 0):
        _fail(where, f"must be a {'positive' if positive else 'finite'} number, got {value!r}")
    return number


def _int_list(value, where: str, *, allow_empty: bool = True) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or (not value and not allow_empty):
        _fail(where, f"expected a list of positive integers, got {value!r}")
    return [_integer(v, f"{where}[{i}]", 1) for i, v in enumerate(value)]


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
    if isinstance(value, str):
        return [_data_spec(value, "data", folder, must_exist=True)]
    if isinstance(value, dict):
        _check_keys(value, ("online", "offline"), "data.")
        if not value:
            _fail("data", "give online and/or offline data specs")
        choices = []
        for key in ("online", "offline"):
            if value.get(key) is not None:
                spec = _string(value[key], f"data.{key}")
                choices.append(_data_spec(spec, f"data.{key}", folder, must_exist=False))
        return choices
    _fail(
        "data", f"expected a data spec (e.g. cubic:n=10000) or {{online, offline}}, got {value!r}"
    )


def _recipe(value, where: str = "model") -> ModelRecipe:
    if not isinstance(value, dict):
        _fail(where, "expected a mapping with builder, input, layers, output, ...")
    _check_keys(value, MODEL_KEYS, f"{where}.")
    builder = _string(value.get("builder"), f"{where}.builder")
    if builder not in BUILDERS:
        _fail(f"{where}.builder", f"unknown builder {builder!r}; builders: {', '.join(BUILDERS)}")
    allowed = set(BUILDERS[builder]) | {"builder", "replicas", "train", "dir"}
    for key in value:
        if key not in allowed:
            _fail(
                f"{where}.{key}",
                f"not an option of the {builder} builder; its options: "
                f"{', '.join(sorted(allowed))}",
            )
    for key in ("input", "output"):
        if key not in value:
            _fail(f"{where}.{key}", "missing (the model's input shape and output width)")
    train = value.get("train") or {}
    if not isinstance(train, dict):
        _fail(f"{where}.train", "expected a mapping: epochs, batch_size, learning_rate, optimizer")
    _check_keys(train, TRAIN_KEYS, f"{where}.train.")
    merged = {**DEFAULT_TRAIN, **train}
    batch = merged["batch_size"]
    if batch in (None, "full"):
        batch = "full"
    else:
        batch = _integer(batch, f"{where}.train.batch_size", 1)
    optimizer = _string(merged["optimizer"], f"{where}.train.optimizer").lower()
    if optimizer not in OPTIMIZERS:
        _fail(
            f"{where}.train.optimizer",
            f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}",
        )
    recipe = ModelRecipe(
        builder=builder,
        input=_int_list(value["input"], f"{where}.input", allow_empty=False),
        output=_integer(value["output"], f"{where}.output", 1),
        layers=_int_list(value.get("layers", []), f"{where}.layers"),
        filters=_int_list(value.get("filters", []), f"{where}.filters"),
        kernel_size=_integer(value.get("kernel_size", 3), f"{where}.kernel_size", 1),
        pool=_integer(value.get("pool", 2), f"{where}.pool", 1),
        activation=_string(value.get("activation", "relu"), f"{where}.activation"),
        output_activation=_string(
            value.get("output_activation"), f"{where}.output_activation", allow_none=True
        ),
        dropout=_number(value.get("dropout", 0.0), f"{where}.dropout", False),
        embedding=_integer(value.get("embedding", 0), f"{where}.embedding", 0),
        use_bias=_flag(value.get("use_bias", True), f"{where}.use_bias"),
        kernel_initializer=_string(
            value.get("kernel_initializer") or None, f"{where}.kernel_initializer", allow_none=True
        )
        or "",
        bias_initializer=_string(
            value.get("bias_initializer") or None, f"{where}.bias_initializer", allow_none=True
        )
        or "",
        replicas=_integer(value.get("replicas", 2), f"{where}.replicas", 1),
        train={
            "epochs": _integer(merged["epochs"], f"{where}.train.epochs", 1),
            "batch_size": batch,
            "learning_rate": _number(merged["learning_rate"], f"{where}.train.learning_rate", True),
            "optimizer": optimizer,
        },
        dir=_string(value["dir"], f"{where}.dir") if value.get("dir") is not None else "",
    )
    if not 0.0 <= recipe.dropout < 1.0:
        _fail(f"{where}.dropout", f"a dropout rate in [0, 1), got {recipe.dropout}")
    if builder == "lstm" and (len(recipe.input) != 1 or recipe.embedding < 1 or not recipe.layers):
        _fail(
            where,
            "the lstm builder needs input [steps], embedding >= 1 and layers "
            "(LSTM units, e.g. [200, 200]); output is the vocabulary size",
        )
    if builder == "cnn":
        if not recipe.filters:
            _fail(f"{where}.filters", "the cnn builder needs at least one Conv2D layer")
        if len(recipe.input) != 3:
            _fail(
                f"{where}.input",
                f"the cnn builder needs an image shape [height, width, "
                f"channels], got {recipe.input}",
            )
    return recipe


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


def _option_value(value, hint, where: str):
    """A YAML value converted to a probe Config field's type."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return None if value is None else _option_value(value, args[0], where)
    if isinstance(value, str):
        try:
            return registry.coerce(value, hint, where)
        except UserError:
            _fail(where, f"expected {getattr(hint, '__name__', hint)}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            _fail(where, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        return _number(value, where)
    if hint is str:
        if isinstance(value, list):  # levels: [0.3, 0.1] -> "0.3,0.1"
            return ",".join(str(v) for v in value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        _fail(where, f"expected text, got {value!r}")
    return value


def _probe_configs(value, shared: dict) -> tuple[list[str], dict[str, dict]]:
    """Probe names and their typed options (shared ones given to every probe that has them)."""
    probes = _probe_map(value if value is not None else ["evaluate"], "probes")
    if not probes:
        _fail("probes", "list at least one probe (see `klandscape probes`)")
    known = registry.probes()
    fields_of, typed = {}, {}
    for name in probes:
        if name not in known:
            hint = _closest(name, known)
            _fail(
                f"probes.{name}",
                "unknown probe"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; known probes: {', '.join(known)}",
            )
        cls = known[name].cls
        fields_of[name] = {f.name: f for f in registry.config_fields(cls)}
    for key in shared:
        if not any(key in f for f in fields_of.values()):
            _fail(f"options.{key}", f"no listed probe ({', '.join(probes)}) has this option")
    for name, options in probes.items():
        cls = known[name].cls
        fields = fields_of[name]
        hints = typing.get_type_hints(cls.Config)
        merged = {k: v for k, v in shared.items() if k in fields}
        merged.update(options)
        values = {}
        for key, raw in merged.items():
            source = f"probes.{name}.{key}" if key in options else f"options.{key}"
            if key not in fields:
                hint = _closest(key, fields)
                _fail(
                    source,
                    "unknown option"
                    + (f" (did you mean {hint}?)" if hint else "")
                    + f"; options of {name}: {', '.join(fields)}",
                )
            values[key] = _option_value(raw, hints.get(key, str), source)
        try:
            config = cls.Config(**values)
            for check in ("validate", "validate_bisection"):
                if hasattr(config, check):
                    getattr(config, check)()
        except UserError as error:
            _fail(f"probes.{name}", str(error))
        typed[name] = values
    return list(probes), typed


def _plots(value) -> dict | None:
    if value is None or value is True:
        return {"format": "png", "dir": None, "paths": "best"}
    if value is False:
        return None
    if not isinstance(value, dict):
        _fail("plots", f"expected true, false or {{format, dir, paths}}, got {value!r}")
    _check_keys(value, PLOT_KEYS, "plots.")
    fmt = value.get("format", "png")
    if fmt not in FORMATS:
        _fail("plots.format", f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    paths = value.get("paths", "best")
    if paths not in PATH_CHOICES:
        _fail("plots.paths", f"use one of {', '.join(PATH_CHOICES)}, got {paths!r}")
    directory = _string(value["dir"], "plots.dir") if value.get("dir") is not None else None
    return {"format": fmt, "dir": directory, "paths": paths}


def _xla(value):
    choices = {"auto": "auto", "on": True, "off": False, True: True, False: False}
    if value is None:
        return "auto"
    if value not in choices:  # YAML reads on/off as booleans
        _fail("xla", f"expected auto, on or off, got {value!r}")
    return choices[value]


def _strategy(document: dict) -> str:
    value = document.get("strategy", "one")
    try:
        return str(parse_strategy(_string(value, "strategy"), document.get("tpu")))
    except UserError as error:
        _fail("strategy", str(error))


def default_out(source: str, scale: str | None) -> str:
    stem = Path(source).stem if source else "run"
    return str(Path("klandscape-runs") / (f"{stem}-{scale}.h5" if scale else f"{stem}.h5"))


def _validate(document: dict, source: str, folder: Path, scale, command: str) -> ExperimentConfig:
    if document.get("description") is not None:
        _string(document["description"], "description")
    has_files, has_recipe = document.get("models") is not None, document.get("model") is not None
    if has_files == has_recipe:
        _fail(
            "models",
            "give either models (a list of model files) or model (an architecture "
            "to train), not " + ("both" if has_files else "neither"),
        )
    recipe, models = None, []
    if has_files:
        files = document["models"]
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files:
            _fail("models", f"expected a list of model files, got {document['models']!r}")
        for i, item in enumerate(files):
            path = _resolve(_string(item, f"models[{i}]"), folder)
            if not Path(path).exists():
                _fail(f"models[{i}]", f"the model file {path!r} does not exist")
            models.append(path)
    else:
        recipe = _recipe(document["model"])
    if document.get("data") is None:
        _fail("data", "missing: a data spec such as digits, cubic:n=10000 or npz:PATH")
    data_choices = _data(document["data"], folder)
    loss = _string(document.get("loss"), "loss", allow_none=True)
    if recipe is not None and loss is None:
        _fail(
            "loss",
            "missing: a trained architecture needs a loss (e.g. mae, "
            "sparse_categorical_crossentropy:from_logits=true)",
        )
    level_fn = _string(document.get("level_fn", "loss"), "level_fn")
    split = document.get("split")
    if split not in (None, "train", "test"):
        _fail("split", f"expected train or test, got {split!r}")
    shared = document.get("options") or {}
    if not isinstance(shared, dict):
        _fail("options", f"expected a mapping of probe options, got {shared!r}")
    probes, probe_options = _probe_configs(document.get("probes"), shared)
    seed = _integer(document.get("seed", 0), "seed", 0)
    out = (
        _string(document["out"], "out")
        if document.get("out") is not None
        else default_out(source, scale)
    )
    if recipe is not None and not recipe.dir:
        recipe.dir = str(Path(out).with_name(Path(out).stem + "-models"))
    custom = document.get("custom_objects")
    if custom is not None:
        custom = _string(custom, "custom_objects")
        if custom.endswith(".py") or "/" in custom:
            custom = _resolve(custom, folder)
    eval_batch = _integer(document.get("eval_batch_size", 1024), "eval_batch_size", 1)
    tf32 = document.get("tf32", False)
    if not isinstance(tf32, bool):
        _fail("tf32", f"expected true or false, got {tf32!r}")
    unsafe = document.get("unsafe", False)
    if not isinstance(unsafe, bool):
        _fail("unsafe", f"expected true or false, got {unsafe!r}")
    bn_stats = document.get("bn_stats", BN_MODES[0])
    if bn_stats not in BN_MODES:
        _fail("bn_stats", f"expected one of {', '.join(BN_MODES)}, got {bn_stats!r}")
    bn_batches = _integer(document.get("bn_batches", DEFAULT_BN_BATCHES), "bn_batches", 1)
    bn_batch_size = _integer(
        document.get("bn_batch_size", DEFAULT_BN_BATCH_SIZE), "bn_batch_size", 1
    )
    spec = RunSpec(
        models=models,
        data=data_choices[0],
        probes=probes,
        options={},
        probe_options=probe_options,
        loss=loss,
        level_fn=level_fn,
        split=split,
        out=out,
        seed=seed,
        custom_objects=custom,
        xla=_xla(document.get("xla")),
        strategy=_strategy(document),
        tpu=_string(document.get("tpu"), "tpu", allow_none=True),
        lockstep=_flag(document.get("lockstep", True), "lockstep"),
        fast_float32=tf32,
        eval_batch_size=eval_batch,
        unsafe=unsafe,
        bn_stats=bn_stats,
        bn_batches=bn_batches,
        bn_batch_size=bn_batch_size,
        command=command,
    )
    return ExperimentConfig(
        source, scale, spec, recipe, data_choices, _plots(document.get("plots")), document
    )


def describe(config: ExperimentConfig) -> dict:
    """The resolved settings as plain data (what `klandscape run --dry-run` prints)."""
    spec = dataclasses.asdict(config.spec)
    spec.pop("command", None)
    return {
        "config": config.source,
        "scale": config.scale,
        "run": spec,
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
    if resume and overwrite:
        raise UserError(
            "--resume continues the work in a store and --overwrite replaces it: give one of them."
        )
    if out.exists() and not (resume or overwrite):
        refuse_existing(out)
    # A config run interrupted before its store was written (while training replicas)
    # resumes by reusing the trained models and starting the store.
    spec = dataclasses.replace(
        config.spec,
        data=choose_data(config, progress),
        resume=resume and out.exists(),
        overwrite=overwrite,
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
    "ModelRecipe",
    "ExperimentConfig",
    "apply_override",
    "describe",
    "load_config",
    "parse_value",
    "prepare",
    "read_yaml",
]
