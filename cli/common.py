"""What every `klandscape` command shares: the invocation's state, -q/-v, quieting the
frameworks, deferring Ctrl-C while they import, `--set` parsing, and the click options made
from the run settings' one declaration (`keras_landscape.settings`).

cli/main.py (the group and most commands) and cli/census.py both import this module;
neither imports the other's internals.
"""

from __future__ import annotations

import logging
import os
import shlex
import typing
import warnings
from dataclasses import dataclass, field

import click

from keras_landscape.cli.display import progress_display
from keras_landscape.progress import NullProgress
from keras_landscape.settings import bound, cli_of, option_settings, setting_type
from keras_landscape.store import to_json
from keras_landscape.values import parse_pairs, yaml_value


@dataclass
class CliState:
    """What every command needs to know about this invocation (click's `ctx.obj`)."""

    argv: list[str] = field(default_factory=list)
    verbose: int = 0
    quiet: bool = False

    @property
    def command_line(self) -> str:
        """The command as typed, recorded in the store (and used to suggest --resume)."""
        return " ".join(["klandscape"] + [shlex.quote(a) for a in self.argv])

    def progress(self):
        """Where a long command reports progress: nowhere under -q."""
        return NullProgress() if self.quiet else progress_display()


def quiet_frameworks(verbose: int) -> None:
    """Silence TensorFlow's C++ and Python log noise unless -v was given.

    Must run before TensorFlow is imported: the C++ logger reads the variable once.
    """
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        warnings.resetwarnings()
        logging.basicConfig(
            level=logging.INFO if verbose == 1 else logging.DEBUG,
            format="%(levelname)s %(name)s: %(message)s",
            force=True,
        )
        for name in ("tensorflow", "absl", "h5py", "jax"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "MPLCONFIGDIR" not in os.environ and not os.access(os.path.expanduser("~"), os.W_OK):
        # matplotlib would warn (twice, past -q) that it cannot write its cache under HOME
        import tempfile

        cache = os.path.join(tempfile.gettempdir(), f"klandscape-matplotlib-{os.getuid()}")
        os.makedirs(cache, mode=0o700, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = cache
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    # force: a run in the same process after a -v run (tests, notebooks) must not keep its
    # INFO level and handler.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
    for name in ("tensorflow", "absl", "h5py", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_options(items: tuple[str, ...]) -> dict[str, str]:
    """Repeated --set KEY=VALUE of `probe`: {key: value text} (typed later, by the probe's
    Config through `registry.make_config`)."""
    return parse_pairs(items, "--set option", example="--set alpha=0.95")


def config_overrides(settings: tuple[str, ...]) -> list[tuple[str, object]]:
    """--set KEY=VALUE of `run` and `census`: (dotted key, YAML value) pairs, in order."""
    return [(k, yaml_value(v)) for k, v in set_options(settings).items()]


def state_of(ctx: click.Context) -> CliState:
    root = ctx.find_root()
    if root.obj is None:  # invoked without main() (click's CliRunner on `cli`)
        root.obj = CliState()
    return root.obj


def _set_verbose(ctx, param, value) -> None:
    if value:
        state = state_of(ctx)
        state.verbose = max(state.verbose, value)
        quiet_frameworks(state.verbose)


def _set_quiet(ctx, param, value) -> None:
    if value:
        state_of(ctx).quiet = True


def verbosity_options(command):
    """-q / -v after the subcommand too (`klandscape probe ... -q`), where users type them."""
    command = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_set_verbose,
        help="More detail (-vv: debug, framework logs).",
    )(command)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="No progress display.",
    )(command)


def emit_json(document) -> None:
    click.echo(to_json(document))


# ------------------------------------------------------- options from the declaration


def _click_type(field, choices):
    """The click type of a setting: choices, a bounded integer, a number, or text."""
    if choices:
        return click.Choice(list(choices))
    hint, _ = setting_type(field)
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(c) for c in typing.get_args(hint)])
    if hint is int:
        return click.IntRange(min=bound(field, "ge"), max=bound(field, "le"))
    if hint is float:
        return click.FLOAT
    return click.STRING


def setting_option(name: str, field, command: str):
    """The click option of one setting on `command`: on `probe` it has the setting's
    default; on `run` and `census` it is unset (None) unless given, and then overrides the
    config key `name`."""
    cli = cli_of(field)
    sets = command == "probe"
    hint, _ = setting_type(field)
    help_text = field.description or ""
    if not sets:
        help_text = f"{help_text} Overrides `{name}`."
    kwargs: dict = {"help": help_text}
    if cli.metavar:
        kwargs["metavar"] = cli.metavar
    list_like = typing.get_origin(hint) is list
    if list_like:
        kwargs["multiple"] = True
    elif hint is bool:
        if "/" in cli.flags:
            kwargs["default"] = field.get_default(call_default_factory=True) if sets else None
        elif sets:
            kwargs.update(is_flag=True, default=False)
        else:  # an override can turn the config's value either way
            flag = cli.flags
            return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, **kwargs)
    else:
        kwargs["type"] = _click_type(field, cli.choices)
        if sets and field.is_required():
            kwargs["required"] = True
        elif sets:
            default = field.get_default(call_default_factory=True)
            if cli.choices and not isinstance(default, str):  # xla True/False -> on/off
                default = {True: "on", False: "off"}.get(default, default)
            kwargs["default"] = default
            kwargs["show_default"] = default is not None
        else:
            kwargs["default"] = None
    return click.option(cli.flags, name, **kwargs)


def setting_options(model, command: str):
    """A decorator adding the click option of every setting of `model` that `command` has
    (in declaration order); the command receives each as a keyword argument of its name."""

    def decorate(function):
        for name, setting in reversed(list(option_settings(model, command).items())):
            function = setting_option(name, setting, command)(function)
        return function

    return decorate


def given_overrides(model, command: str, values: dict) -> list[tuple[str, object]]:
    """(config key, value) of the setting options given on a `run` / `census` command line
    (the unset ones are None)."""
    return [
        (name, values[name])
        for name in option_settings(model, command)
        if values.get(name) is not None
    ]


__all__ = [
    "CliState",
    "config_overrides",
    "emit_json",
    "given_overrides",
    "quiet_frameworks",
    "set_options",
    "setting_options",
    "state_of",
    "verbosity_options",
]
