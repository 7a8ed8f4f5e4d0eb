"""Text to values: the one `key=value,key=value` parser and the one converter.

Every place that reads settings from text goes through here: `--set KEY=VALUE`, probe
options, loss and initializer specs (`name:key=value,...`), optimizer options, data specs
and `--strategy NAME:key=value`. So a boolean is read by one rule everywhere:

    true, yes, 1   -> True          false, no, 0   -> False      (any case)

and anything else (`maybe`, `on`, `2`) is refused with a message naming the setting.
YAML files and `--set` values of `klandscape run` are read with `yaml_load`, which keeps
that rule too (YAML 1.1 would also read on/off as booleans; here they stay words).

Base layer: the standard library and pyyaml only.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

import yaml

from keras_landscape.errors import UserError

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
#: how a boolean is written, for messages
BOOLEAN = "true or false (or yes/no, 1/0)"
NONE_WORDS = ("none", "null")


class BadValue(UserError):
    """A value that does not convert to its setting's type.

    Attributes:
        value: the value as given.
        expected: what was expected, in words ('an integer', 'a number', ...).
        where: the setting's name (a key path, or probe.option).
    """

    def __init__(self, value: Any, expected: str, where: str = ""):
        self.value, self.expected, self.where = value, expected, where
        place = f" for {where}" if where else ""
        super().__init__(f"Bad value {value!r}{place}: expected {expected}.")

    @property
    def short(self) -> str:
        """`expected X, got V` (the config's `key.path: ...` messages)."""
        return f"expected {self.expected}, got {self.value!r}"


# ------------------------------------------------------------------------- one parser


def parse_pairs(
    text: str | Iterable[str],
    what: str,
    *,
    example: str,
    within: str | None = None,
    taken: dict[str, str] | None = None,
) -> dict[str, str]:
    """`key=value,key=value` (a text, split at commas) or separate `key=value` items (an
    iterable, e.g. repeated `--set`): {key: value text}, keys and values stripped.

    Args:
        text: the text, or the items.
        what: what the pairs are, for messages ('--set option', 'optimizer_options').
        example: a well-formed example for the message.
        within: the whole spec the pairs came from, named in messages.
        taken: keys already given elsewhere in the same spec (a key may not repeat).

    Raises:
        UserError: an item without `=` or without a key, or a key given twice.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    found: dict[str, str] = {}
    earlier = dict(taken or {})
    where = f" in {within!r}" if within else ""
    for item in items:
        if isinstance(text, str) and not item.strip():
            continue  # 'a=1,,b=2' and a trailing comma
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            pairs = "key=value pairs separated by commas" if isinstance(text, str) else "key=value"
            raise UserError(
                f"Malformed {what} {item.strip()!r}{where}: write {pairs}, e.g. {example}."
            )
        if key in found or key in earlier:
            raise UserError(f"{what.capitalize()} {key!r} is given twice{where}.")
        found[key] = value.strip()
    return found


def parse_named(spec: str, what: str, *, example: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, {key: text_value(value)}): loss, initializer and
    strategy specs."""
    name, _, rest = str(spec).partition(":")
    pairs = parse_pairs(rest, what, example=example, within=spec)
    return name.strip(), {k: text_value(v) for k, v in pairs.items()}


# ---------------------------------------------------------------------- one converter


def to_bool(value: Any, where: str = "") -> bool:
    """The one boolean rule: True/False, 1/0, or the words true/yes/1, false/no/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise BadValue(value, BOOLEAN, where)


def text_value(text: str) -> Any:
    """A value whose type is not known in advance: 'true'/'false' -> bool, 'none'/'null'
    -> None, '10' -> 10, '0.9' / '1e-3' -> float, anything else as text (outer quotes
    removed). Where the type is known, `to_type` reads it instead (so yes/no/1/0 become
    booleans exactly where a boolean is expected)."""
    text = text.strip()
    word = text.lower()
    if word in ("true", "false"):
        return word == "true"
    if word in NONE_WORDS:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def type_name(hint: Any) -> str:
    """What a type hint expects, in words."""
    hint = _strip_optional(hint)[0]
    if hint is bool:
        return BOOLEAN
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "text"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {type_name(args[0]) if args else 'values'} (a,b,...)"
    return getattr(hint, "__name__", str(hint))


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else hint), optional
    return hint, False


def to_type(value: Any, hint: Any, where: str = "") -> Any:
    """`value` (command-line text, or a typed value from YAML or code) as the type `hint`
    says: bool (the one rule above), int, float (finite), str, Literal choices, lists and
    tuples (a comma-separated text or a list), optional types ('none', 'null' and '' are
    None). Other hints pass the value through.

    Raises:
        BadValue: the value does not convert; the message names `where`.
    """
    hint, optional = _strip_optional(hint)
    is_text = isinstance(value, str)
    if value is None or (optional and is_text and value.strip().lower() in (*NONE_WORDS, "")):
        if optional or hint is Any:
            return None
        raise BadValue(value, type_name(hint), where)
    origin = typing.get_origin(hint)
    if hint is bool:
        return to_bool(value, where)
    if hint is int:
        if is_text and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise BadValue(value, "an integer", where)
    if hint is float:
        try:
            number = float(value) if is_text or _is_number(value) else None
        except ValueError:
            number = None
        if number is None:
            raise BadValue(value, "a number", where)
        if not math.isfinite(number):
            raise BadValue(value, "a finite number (NaN and infinity are never settings)", where)
        return number
    if hint is str:
        if is_text:
            return value
        if isinstance(value, list):  # YAML levels: [0.3, 0.1] -> "0.3,0.1"
            return ",".join(str(v) for v in value)
        if _is_number(value):
            return str(value)
        raise BadValue(value, "text", where)
    if origin is Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice or (is_text and value.strip() == str(choice)):
                return choice
        raise BadValue(value, type_name(hint), where)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        items = [p.strip() for p in value.split(",")] if is_text else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        converted = [to_type(item, args[0] if args else Any, where) for item in items]
        return tuple(converted) if origin is tuple else converted
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def conform(options: dict[str, Any], target: Any, where: str) -> dict[str, Any]:
    """Options read without known types (`text_value`) made the types of `target`'s keyword
    arguments, judged by their defaults: a boolean argument gets the one boolean rule
    (`from_logits=maybe` is refused, `from_logits=1` is True), a float argument a finite
    number (`stddev=x` is refused).
    Arguments the signature does not show are left as they are.

    Args:
        options: {argument: value}.
        target: a class (its __init__) or a function.
        where: what the options belong to, for messages ('loss sparse_categorical_...').
    """
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return dict(options)
    typed = {}
    for key, value in options.items():
        parameter = parameters.get(key)
        default = None if parameter is None else parameter.default
        if isinstance(default, bool):
            value = to_bool(value, f"{where} option {key}")
        elif isinstance(default, float) and value is not None:
            value = to_type(value, float, f"{where} option {key}")
        typed[key] = value
    return typed


# ------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """YAML with the one boolean rule: true/false and yes/no (any case) are booleans; on,
    off, y and n stay words (so `xla: on` is the word on)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO)$"),
    list("tTfFyYnN"),
)


def yaml_load(text: str) -> Any:
    """YAML text as Python values, booleans by the one rule (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


def yaml_value(text: str) -> Any:
    """A command-line value read as YAML (`0.5`, `true`, `[4, 4]`, `cubic:n=10`); text that
    is not YAML stays text."""
    try:
        return yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


__all__ = [
    "BOOLEAN",
    "BadValue",
    "conform",
    "parse_named",
    "parse_pairs",
    "text_value",
    "to_bool",
    "to_type",
    "type_name",
    "yaml_load",
    "yaml_value",
]
