"""Every run setting, declared once: name, type, default, constraints, help text, and the
command-line option it is.

`RunSettings` is that declaration. From it come
- the options of `klandscape probe` (which sets them) and of `klandscape run` and
  `klandscape census` (which override the config's keys): `cli/common.py` turns each field
  into a click option, its help text the field's description;
- the keys of a YAML run config and their validation (`experiment/config.py`'s
  `RunConfig` adds the config-only sections: model, probes, plots, scales, ...);
- `RunSpec`, what one `klandscape probe` / `run` executes (the settings plus the models,
  probes and their options).

A bad value is refused with a message that names the setting (`explain`). Values from text
go through the one converter of `keras_landscape.values`, so `--set`, YAML and key=value
specs read booleans alike.

Base layer: pydantic, the standard library and `keras_landscape.values`; no framework.
"""

from __future__ import annotations

import difflib
import functools
import operator
import os
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import is_typeddict

from keras_landscape.errors import ConfigError, UserError
from keras_landscape.values import BadValue, parse_pairs, to_type, type_name

#: samples per evaluation batch (--eval-batch-size)
DEFAULT_EVAL_BATCH = 1024
#: how BatchNorm statistics are set at points between models (--bn-stats)
BN_MODES = ("recompute", "interpolate")
# Recomputed statistics: 32 batches of 128 training samples in train mode (4,096 samples:
# the standard error of a recomputed mean is ~1.6% of the activation's standard deviation).
DEFAULT_BN_BATCHES = 32
DEFAULT_BN_BATCH_SIZE = 128
#: where stacks of beads run (--strategy; docs/scaling.md)
STRATEGIES = ("one", "mirrored", "tpu", "multiworker")
#: --xla: auto = on for GPU/TPU and for CPU models without convolutions
XLA_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Cli:
    """How a setting appears on the command line (pydantic keeps it in the field's metadata).

    Attributes:
        flags: the option's declaration, e.g. '--eval-batch-size' or
            '--lockstep/--no-lockstep'.
        metavar: the placeholder in --help (default: click's).
        commands: the commands that have the option. On `probe` it sets the setting; on
            `run` and `census` it overrides the config key of the same name.
        choices: the words the option takes, where they differ from the type's.
    """

    flags: str
    metavar: str | None = None
    commands: tuple[str, ...] = ("probe", "run", "census")
    choices: tuple[str, ...] | None = None


# ------------------------------------------------------------------- typed fields


def problem(message: str) -> PydanticCustomError:
    """A validation problem in our own words (raise it in a validator); `explain` shows it
    as `key.path: message`."""
    return PydanticCustomError("bad_value", "{problem}", {"problem": message})


def _converter(hint):
    """A pydantic before-validator reading a value with `values.to_type` (the one rule)."""

    def convert(value):
        try:
            return to_type(value, hint)
        except BadValue as error:
            raise problem(error.short) from None

    return BeforeValidator(convert)


def _text(value):
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise problem(f"expected a non-empty string, got {value!r}")
    return value.strip()


Int = Annotated[int, _converter(int)]
Float = Annotated[float, _converter(float)]
Bool = Annotated[bool, _converter(bool)]
#: non-empty text (paths as os.PathLike too), stripped
Text = Annotated[str, BeforeValidator(_text)]


def _xla(value):
    """auto, on, off, or a boolean by the one rule (YAML `xla: false`)."""
    if isinstance(value, str) and value.strip().lower() in XLA_CHOICES:
        return {"auto": "auto", "on": True, "off": False}[value.strip().lower()]
    try:
        return to_type(value, bool)
    except BadValue:
        raise problem(f"expected auto, on or off, got {value!r}") from None


def _texts(value):
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]


# --------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class StrategySpec:
    """Where stacks of beads run: `--strategy NAME[:key=value,...]` as plain data.

    Attributes:
        name: 'one' (one device), 'mirrored' (every local GPU, else the CPU: one process),
            'tpu' (a TPU through its cluster resolver) or 'multiworker' (several processes,
            one program: TF_CONFIG on TensorFlow, `jax.distributed` on JAX).
        cpus: split the CPU into this many logical devices (mirrored; tests, CPU hosts).
        tpu: the TPU's name or address (None: from the environment, e.g. TPU_NAME).
    """

    name: str = "one"
    cpus: int | None = None
    tpu: str | None = None

    def __str__(self) -> str:
        extra = [f"{k}={v}" for k, v in (("cpus", self.cpus), ("tpu", self.tpu)) if v]
        return self.name + (":" + ",".join(extra) if extra else "")


def parse_strategy(text: str | None, tpu: str | None = None) -> StrategySpec:
    """'mirrored', 'mirrored:cpus=2', 'tpu', 'tpu:tpu=NAME', 'multiworker' -> StrategySpec.

    Raises:
        UserError: an unknown strategy or key, or a bad value.
    """
    text = str(text or "one").strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name not in STRATEGIES:
        raise UserError(
            f"Unknown strategy {name!r}: use one of {', '.join(STRATEGIES)} (docs/scaling.md)."
        )
    values: dict[str, Any] = parse_pairs(
        rest, "strategy option", example="mirrored:cpus=2", within=text
    )
    for key, value in values.items():
        if key not in ("cpus", "tpu"):
            raise UserError(
                f"Bad strategy option {f'{key}={value}'!r} in {text!r}: the options are cpus=N "
                "(mirrored) and tpu=NAME (tpu)."
            )
    cpus = values.get("cpus")
    if cpus is not None:
        try:
            cpus = to_type(cpus, int)
        except BadValue:
            cpus = 0
        if cpus < 1 or name != "mirrored":
            raise UserError(
                f"Strategy {text!r}: cpus=N takes a whole number >= 1 and goes with mirrored."
            )
    tpu = values.get("tpu") or tpu
    if tpu and name != "tpu":
        raise UserError(f"A TPU name ({tpu!r}) was given with strategy {name!r}.")
    return StrategySpec(name, cpus, tpu or None)


# ------------------------------------------------------------------ the declaration


class RunSettings(BaseModel):
    """The settings of a run: each is a `klandscape probe` option, a `klandscape run` /
    `census` override and a YAML config key of the same name (README and
    docs/user-guide.md list them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: Annotated[
        Text,
        Field(description="Data spec: digits, cubic, npz:PATH, ... (docs/data-specs.md)."),
        Cli("--data", metavar="SPEC"),
    ]
    loss: Annotated[
        Text | None,
        Field(
            description="Keras loss name, options as name:key=value "
            "(default: the model's compiled loss)."
        ),
        Cli("--loss"),
    ] = None
    level_fn: Annotated[
        Text,
        Field(description="loss, error, perplexity or a Keras metric."),
        Cli("--level-fn"),
    ] = "loss"
    split: Annotated[
        Literal["train", "test"] | None,
        Field(description="Split for the level function (default: test if present)."),
        Cli("--split"),
    ] = None
    out: Annotated[
        Text | None,
        Field(
            description="HDF5 store to write (default: klandscape-runs/run-<time>.h5; for a "
            "config, klandscape-runs/<config>[-<scale>].h5)."
        ),
        Cli("--out"),
    ] = None
    seed: Annotated[Int, Field(ge=0, description="Seed of every random choice."), Cli("--seed")] = 0
    custom_objects: Annotated[
        Text | None,
        Field(description="A .py file or module defining custom layers/losses."),
        Cli("--custom-objects"),
    ] = None
    unsafe: Annotated[
        Bool,
        Field(
            description="Allow model files with Lambda layers (Keras safe_mode off: loading "
            "can run any code in the file; only for files you trust)."
        ),
        Cli("--unsafe"),
    ] = False
    eval_batch_size: Annotated[
        Int,
        Field(ge=1, description="Samples per compiled evaluation call."),
        Cli("--eval-batch-size"),
    ] = DEFAULT_EVAL_BATCH
    xla: Annotated[
        Literal["auto"] | bool,
        BeforeValidator(_xla),
        Field(
            description="XLA compilation: auto = on for GPU/TPU and for CPU models without "
            "convolutions."
        ),
        Cli("--xla", choices=XLA_CHOICES),
    ] = "auto"
    tf32: Annotated[
        Bool,
        Field(description="Projections may use TF32 matmuls on GPUs (checks stay float32)."),
        Cli("--tf32"),
    ] = False
    bn_stats: Annotated[
        Literal[BN_MODES],  # type: ignore[valid-type]
        Field(
            description="BatchNorm statistics at points between models: re-estimated from "
            "training data at each point, or interpolated like the weights."
        ),
        Cli("--bn-stats"),
    ] = BN_MODES[0]
    bn_batches: Annotated[
        Int,
        Field(ge=1, description="Training batches BatchNorm statistics are recomputed on."),
        Cli("--bn-batches"),
    ] = DEFAULT_BN_BATCHES
    bn_batch_size: Annotated[
        Int,
        Field(ge=1, description="Samples per batch when recomputing BatchNorm statistics."),
        Cli("--bn-batch-size"),
    ] = DEFAULT_BN_BATCH_SIZE
    tpu: Annotated[
        Text | None,
        Field(description="The TPU's name or address (default: TPU_NAME)."),
        Cli("--tpu"),
    ] = None
    strategy: Annotated[
        Text,
        Field(
            description="Where stacks of beads run: one (default), mirrored (every local GPU; "
            "mirrored:cpus=N splits the CPU), tpu, multiworker (docs/scaling.md).",
            validate_default=True,  # with the tpu: a TPU name needs strategy tpu
        ),
        Cli("--strategy", metavar="NAME[:cpus=N]"),
    ] = "one"
    lockstep: Annotated[
        Bool,
        Field(
            description="Run a probe's strings together in shared stacks (default) or one "
            "after another (same results)."
        ),
        Cli("--lockstep/--no-lockstep"),
    ] = True

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str, info: ValidationInfo) -> str:
        """The strategy in its normal form ('mirrored:cpus=2'); a bad name or option, or a
        TPU name given with another strategy, is refused."""
        try:
            return str(parse_strategy(value, info.data.get("tpu")))
        except UserError as error:
            raise problem(str(error)) from None


class RunSpec(RunSettings):
    """Everything one `klandscape probe` / `run` executes, as plain validated data: the run
    settings, the model files, the probes and their options."""

    models: Annotated[list[str], BeforeValidator(_texts)] = Field(default_factory=list)
    probes: Annotated[
        list[str],
        BeforeValidator(_texts),
        Field(description="Probe to run (repeatable; default: evaluate)."),
        Cli("--probe", commands=("probe",)),
    ] = Field(default_factory=lambda: ["evaluate"])
    #: probe options for every probe that has them (--set, --level, ...)
    options: dict[str, Any] = Field(default_factory=dict)
    #: options of one probe (a config's probes: [{name: {...}}]), typed
    probe_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resume: Annotated[
        Bool,
        Field(description="Continue the runs in an existing --out store."),
        Cli("--resume", commands=("probe",)),
    ] = False
    overwrite: Annotated[
        Bool,
        Field(description="Replace an existing --out store."),
        Cli("--overwrite", commands=("probe",)),
    ] = False
    #: the command line, recorded in the store
    command: str = ""


# ------------------------------------------------------------------ introspection


def cli_of(field) -> Cli | None:
    """The `Cli` marker of a pydantic field, or None."""
    return next((m for m in field.metadata if isinstance(m, Cli)), None)


def option_settings(model: type[BaseModel], command: str) -> dict[str, Any]:
    """{field name: pydantic field} of the settings that are options of `command`, in
    declaration order."""
    return {
        name: field
        for name, field in model.model_fields.items()
        if (cli := cli_of(field)) is not None and command in cli.commands
    }


def setting_type(field) -> tuple[Any, bool]:
    """(the field's value type without None, whether None is allowed)."""
    hint = field.annotation
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return hint, False


def bound(field, kind: str) -> float | None:
    """A numeric constraint of the field (kind 'ge', 'gt', 'le', 'lt'), or None."""
    for meta in field.metadata:
        value = getattr(meta, kind, None)
        if value is not None:
            return value
    return None


# ------------------------------------------------------------------------- messages


def key_path(loc: tuple) -> str:
    """('model', 'layers', 1) -> 'model.layers[1]'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _fields_of(kind) -> dict[str, Any] | None:
    """{name: pydantic field or type} of a model, a pydantic dataclass or a TypedDict."""
    fields = getattr(kind, "__pydantic_fields__", None)
    if isinstance(fields, dict):
        return fields
    if is_typeddict(kind):
        return typing.get_type_hints(kind)
    return None


def _inner(entry) -> Any:
    """The type a field holds, looking through Optional, list[...] and dict[..., ...]."""
    kind = setting_type(entry)[0] if hasattr(entry, "annotation") else entry
    if typing.get_origin(kind) in (list, dict):
        kind = typing.get_args(kind)[-1]
    return kind


def _walk(model, loc: tuple) -> tuple[Any, Any]:
    """(the kind holding the last key of `loc`, that key's field or type), or Nones."""
    kind, entry = model, None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = _fields_of(kind)
        if fields is None or part not in fields:
            return None, None
        entry = fields[part]
        kind = _inner(entry)
    return kind, entry


def _fields_at(model, loc: tuple) -> list[str] | None:
    """The keys the model (or a nested model) takes at `loc`, or None when unknown."""
    kind = _walk(model, loc)[0] if loc else model
    fields = _fields_of(kind) if kind is not None else None
    return None if fields is None else list(fields)


def closest(word: str, choices) -> str | None:
    """The choice most like `word` (a likely typo), or None."""

    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return found[0] if found else None


def unknown_key(key: str, allowed) -> str:
    """The message for a key that is not a setting: a guess and the allowed keys."""
    hint = closest(key, allowed)
    return (
        "unknown key"
        + (f" (did you mean {hint}?)" if hint else "")
        + f"; allowed: {', '.join(allowed)}"
    )


def explain(error: ValidationError, model: Any) -> tuple[str, str]:
    """(key path, message) of a validation error's first problem, in the project's words:
    'model.layers[1]', 'must be >= 1, got -1'."""
    first = error.errors(include_url=False)[0]
    loc, kind, ctx = tuple(first["loc"]), first["type"], first.get("ctx") or {}
    value = first.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1]) or []
        return key_path(loc), unknown_key(str(loc[-1]), allowed)
    if kind == "missing":
        field = _walk(model, loc)[1]
        described = getattr(field, "description", None)
        what = f" ({described.rstrip('.')})" if described else ""
        return key_path(loc), f"missing{what}"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<"}.get(kind, "<=")
        limit = next(iter(ctx.values()))
        if kind == "greater_than" and limit == 0:
            return key_path(loc), f"must be a positive number, got {value!r}"
        return key_path(loc), f"must be {sign} {limit}, got {value!r}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "")
        return key_path(loc), f"expected {choices}, got {value!r}"
    if kind in ("model_type", "dict_type", "typed_dict_type", "dataclass_type"):
        return key_path(loc), f"expected a mapping, got {value!r}"
    if kind in ("list_type", "tuple_type"):
        return key_path(loc), f"expected a list, got {value!r}"
    if kind == "string_type":
        return key_path(loc), f"expected a non-empty string, got {value!r}"
    # custom problems ('bad_value') carry their own words; pydantic's others are clear
    message = first["msg"]
    if not (kind == "bad_value" or message.startswith("expected")):
        message = f"{message[0].lower()}{message[1:]}, got {value!r}"
    return key_path(loc), message


def validate(model: type[BaseModel], data: dict, *, prefix: str = "") -> BaseModel:
    """`model` of a mapping (a YAML section); ConfigError('key.path: message') otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        where, message = explain(error, model)
        raise ConfigError(f"{prefix}{where}: {message}") from None


def run_spec(**values) -> RunSpec:
    """A RunSpec of keyword values (a front end's); UserError naming the option otherwise."""
    try:
        return RunSpec(**values)
    except ValidationError as error:
        where, message = explain(error, RunSpec)
        field = RunSpec.model_fields.get(where)
        cli = cli_of(field) if field is not None else None
        name = cli.flags.split("/")[0] if cli else where
        raise UserError(f"{name}: {message}") from None


__all__ = [
    "BN_MODES",
    "Cli",
    "DEFAULT_BN_BATCHES",
    "DEFAULT_BN_BATCH_SIZE",
    "DEFAULT_EVAL_BATCH",
    "RunSettings",
    "RunSpec",
    "STRATEGIES",
    "StrategySpec",
    "XLA_CHOICES",
    "closest",
    "explain",
    "key_path",
    "option_settings",
    "parse_strategy",
    "problem",
    "run_spec",
    "type_name",
    "unknown_key",
    "validate",
]
