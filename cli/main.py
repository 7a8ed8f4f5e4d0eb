"""The `klandscape` command line: parses, calls library code, prints. It never computes.

Exit codes: 0 ok, 2 bad input (one paragraph on stderr, no traceback), 1 internal error,
130 interrupted by Ctrl-C or SIGTERM (the partial store is kept and `--resume` continues it).
"""

from __future__ import annotations

import os
import sys

from keras_landscape.progress import HeldInterrupts, deferred_interrupts, sigterm_interrupts

# A Ctrl-C (or SIGTERM) while the rest of the command line imports (click, h5py, pydantic:
# most of a second) is held, and main() reports it as an interruption (exit code 130, one
# line, JSON under --json) instead of a traceback.
with HeldInterrupts() as _IMPORTING:
    import click

    from keras_landscape import registry
    from keras_landscape._version import __version__
    from keras_landscape.cli.census import census_command
    from keras_landscape.cli.common import (
        CliState,
        config_overrides,
        emit_json,
        given_overrides,
        quiet_frameworks,
        set_options,
        setting_options,
        state_of,
        verbosity_options,
    )
    from keras_landscape.cli.display import (
        plot_report,
        probes_table,
        results_summary,
        store_tables,
    )
    from keras_landscape.errors import UserError
    from keras_landscape.experiment.config import describe, load_config
    from keras_landscape.models.files import check_model_file
    from keras_landscape.report.plots import FORMATS, PATH_CHOICES, plot_store
    from keras_landscape.report.reference import probes_markdown
    from keras_landscape.report.tables import summarize_store
    from keras_landscape.settings import RunSettings, RunSpec, run_spec


EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130

#: options of the probes given as their own flags (they go to every probe that has them;
#: the probe's Config types and checks them, as --set)
SHORTCUTS = {
    "level": (
        ("probe", "run"),
        dict(type=float, help="Level u for probes that take one."),
    ),
    "levels": (
        ("probe", "run"),
        dict(help="Levels for probes that take them: '0.3,0.1' or 'start:stop:count'."),
    ),
    "partners": (
        ("probe",),
        dict(
            type=click.IntRange(min=0), help="With one model: fresh partners to train and connect."
        ),
    ),
    "retrain_endpoints": (
        ("probe",),
        dict(is_flag=True, default=None, help="Curviness: train endpoints down to lower levels."),
    ),
}


def shortcut_options(command: str):
    """--level, --levels (and on `probe` --partners, --retrain-endpoints)."""

    def decorate(function):
        for name, (commands, kwargs) in reversed(SHORTCUTS.items()):
            if command in commands:
                flag = "--" + name.replace("_", "-")
                function = click.option(flag, name, **{"default": None, **kwargs})(function)
        return function

    return decorate


def shortcuts_given(values: dict) -> list[tuple[str, object]]:
    """(probe option, value) of the shortcut options given (popped from `values`)."""
    given = [(name, values.pop(name, None)) for name in SHORTCUTS]
    return [(name, value) for name, value in given if value is not None]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="klandscape")
@click.option("-v", "--verbose", count=True, help="More detail (-vv: debug, framework logs).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """keras-landscape: topology and geometry of neural-network loss landscapes."""
    state = state_of(ctx)
    state.verbose, state.quiet = verbose, quiet
    quiet_frameworks(verbose)


@cli.command("probes")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--markdown", is_flag=True, help="The built-in probe reference (docs/probes.md).")
@verbosity_options
def probes_command(as_json: bool, markdown: bool) -> None:
    """List the registered probes (built-in and plugins)."""
    if markdown:
        click.echo(probes_markdown(), nl=False)
        return

    entries = registry.probes()
    broken = registry.broken_plugins()
    if as_json:
        emit_json(
            {
                "probes": [
                    {"name": e.name, "summary": e.summary, "origin": e.origin}
                    for e in entries.values()
                ],
                "broken": [vars(b) for b in broken],
            }
        )
        return
    probes_table(entries, broken)


@cli.command("probe")
@click.argument("models", nargs=-1, required=True)
@setting_options(RunSpec, "probe")
@shortcut_options("probe")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Probe option (repeatable), e.g. --set alpha=0.95.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def probe_command(state: CliState, models, settings, as_json, **values) -> None:
    """Run probes on MODEL files (.keras or .h5) over the data SPEC."""
    for path in models:  # before the frameworks load: a missing file is reported at once
        check_model_file(path)
    options = {**set_options(settings), **dict(shortcuts_given(values))}
    values["probes"] = list(values["probes"]) or ["evaluate"]
    # every setting checked (a bad strategy too) before TensorFlow loads
    spec = run_spec(models=list(models), options=options, command=state.command_line, **values)
    with deferred_interrupts():
        from keras_landscape.experiment.runner import execute  # imports TensorFlow

    document = execute(spec, state.progress())
    if as_json:
        emit_json(document)
    else:
        results_summary(document)


@cli.command("show")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@verbosity_options
def show_command(store: str, as_json: bool) -> None:
    """Show the models, runs, options, status and results in a store (what is missing, for
    an interrupted run)."""
    summary = summarize_store(store)
    if as_json:
        emit_json(summary)
    else:
        store_tables(summary)


@cli.command("plot")
@click.argument("store")
@click.option(
    "-o",
    "--output",
    "out_dir",
    default=None,
    help="Folder for the figures (default: <store stem>_figures beside the store).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="png", show_default=True)
@click.option("--run", "runs", multiple=True, help="Only this run (repeatable).")
@click.option(
    "--paths",
    type=click.Choice(PATH_CHOICES),
    default="best",
    show_default=True,
    help="Path figures: best = every string, but only the lowest connected bisection "
    "string per pair; all; none.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@verbosity_options
@click.pass_obj
def plot_command(state: CliState, store, out_dir, fmt, runs, paths, as_json) -> None:
    """Draw the figures of a store: paths, curviness, barriers, components."""
    report = plot_store(store, out_dir, fmt=fmt, runs=list(runs) or None, paths=paths).to_dict()
    if as_json:
        emit_json(report)
        return
    if state.quiet:
        report = {**report, "skipped": []}
    plot_report(report)


@cli.command("run")
@click.argument("config_file", metavar="CONFIG.yaml")
@click.option("--scale", default=None, help="Merge this entry of the config's `scales` over it.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (model.train.epochs=5, probes.curviness.levels=0.1) "
    "or a probe option (max_steps=500); repeatable. Values are YAML.",
)
@shortcut_options("run")
@click.option("--resume", is_flag=True, help="Continue the runs in an existing store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--no-plots", is_flag=True, help="Do not draw figures.")
@click.option(
    "--dry-run", is_flag=True, help="Validate and print the resolved settings as JSON; run nothing."
)
@setting_options(RunSettings, "run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def run_command(
    state: CliState,
    config_file,
    scale,
    settings,
    resume,
    overwrite,
    no_plots,
    dry_run,
    as_json,
    **values,
) -> None:
    """Run the experiment described by a YAML config (see configs/). Every run setting is
    an option here too; given, it overrides the config's key."""
    overrides = config_overrides(settings) + shortcuts_given(values)
    overrides += given_overrides(RunSettings, "run", values)
    config = load_config(config_file, scale=scale, overrides=overrides, command=state.command_line)
    if dry_run:
        emit_json(describe(config))
        return
    with deferred_interrupts():
        from keras_landscape.experiment.runner import run_experiment  # imports TensorFlow

    document = run_experiment(
        config, state.progress(), resume=resume, overwrite=overwrite, plots=not no_plots
    )
    document.update({"config": config_file, "scale": scale})
    if as_json:
        emit_json(document)
        return
    results_summary(document)
    if config.recipe is not None:
        click.echo(f"models: {config.recipe.dir}/ ({config.recipe.replicas} trained)")
    if document["figures"]:
        count = len(document["figures"])
        click.echo(f"figures: {document['figures_dir']}/ ({count} file{'s' if count != 1 else ''})")


def _silence_native_stderr(argv: list[str]) -> None:
    """Send file descriptor 2 (where TensorFlow's C++ logger writes) to /dev/null.

    Python's own stderr (progress, messages) keeps a duplicate of the real descriptor, so the
    user sees everything we print and none of the framework's start-up noise. Skipped with
    -v/--verbose, and when stderr is not a real file (tests capturing output).
    """
    if any(a in ("-v", "-vv", "--verbose") for a in argv):
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    # A native crash (segfault, abort) would otherwise die silently with fd 2 closed.
    import faulthandler

    faulthandler.enable(file=sys.stderr)


@cli.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="klandscape-demo",
    show_default=True,
    help="Folder for models, store and figures.",
)
@click.option("--models", type=int, default=3, show_default=True, help="How many MLPs to train.")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted demo in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def demo_command(state: CliState, out_dir, models, epochs, seed, resume, as_json) -> None:
    """The first run: train small MLPs on the embedded digits data, probe them, draw figures."""
    with deferred_interrupts():
        from keras_landscape.experiment.demo import run_demo, summary_lines  # imports TensorFlow

    document = run_demo(
        out_dir,
        models=models,
        epochs=epochs,
        seed=seed,
        progress=state.progress(),
        resume=resume,
        command=state.command_line,
    )
    if as_json:
        emit_json(document)
    else:
        for line in summary_lines(document):
            click.echo(line)


@cli.command("export")
@click.argument("store")
@click.option("--run", "run_name", default=None, help="Run holding the string (e.g. connectivity).")
@click.option("--bead", type=int, default=None, help="Bead index along the string (0 = A, -1 = B).")
@click.option("--string", default=None, help="Which string of the run (e.g. pair_0_1), if several.")
@click.option("--model", default=None, help="Export a stored model instead of a bead.")
@click.option(
    "--t",
    "t",
    type=float,
    default=None,
    help="A point at position t in [0, 1] along a run's stored path (the curve probe's).",
)
@click.option("-o", "--output", required=True, help="Output .keras or .h5 file.")
@click.option("--custom-objects", default=None, help="A .py file or module defining custom layers.")
@click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers (Keras safe_mode off; trusted files only)."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing output file (never a store or the store's input models).",
)
@verbosity_options
def export_command(
    store, run_name, bead, string, model, t, output, custom_objects, unsafe, overwrite
) -> None:
    """Write a bead of a stored string, a point along a stored curve (--t), or a stored model
    back as a Keras model."""
    with deferred_interrupts():
        from keras_landscape.models.export import export  # imports Keras

    click.echo(
        export(
            store,
            output,
            run=run_name,
            bead=bead,
            string=string,
            model=model,
            custom_objects=custom_objects,
            unsafe=unsafe,
            overwrite=overwrite,
            t=t,
            point_hook=lambda probe: registry.output_hook(probe, "export_point"),
        ),
        err=True,
    )


cli.add_command(census_command)


def _json_error(
    state: CliState, code: int, kind: str, message: str, store: str | None = None
) -> int:
    """Under --json, the outcome as one JSON document on stdout: a script gets a parseable
    document for every exit code."""
    if "--json" in state.argv:
        emit_json({"error": {"kind": kind, "message": message, "exit_code": code, "store": store}})
    return code


def _failed(state: CliState, code: int, kind: str, message: str, store: str | None = None) -> int:
    """Say why on stderr (and as JSON under --json)."""
    click.echo(message, err=True)
    return _json_error(state, code, kind, message, store)


def _interrupted(state: CliState, store: str | None) -> int:
    if store:
        message = (
            f"Interrupted. Finished work is kept in {store}; run the same command with "
            f"--resume --out {store} to continue."
        )
    else:
        message = "Interrupted before any store was written."
    return _failed(state, EXIT_INTERRUPTED, "interrupted", message, store)


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps errors to exit codes and one-paragraph messages."""
    if argv is None:
        _silence_native_stderr(sys.argv[1:])
    state = CliState(argv=list(sys.argv[1:] if argv is None else argv))
    if _IMPORTING.signal is not None:  # interrupted while this module imported
        _IMPORTING.signal = None
        return _interrupted(state, None)
    try:
        with sigterm_interrupts():  # SIGTERM stops a command as Ctrl-C does
            cli.main(args=argv, prog_name="klandscape", standalone_mode=False, obj=state)
    except click.exceptions.Abort as error:
        # click turns Ctrl-C into Abort; the KeyboardInterrupt (with the store) is its context
        interrupt = error.__context__ if isinstance(error.__context__, KeyboardInterrupt) else None
        return _interrupted(state, getattr(interrupt, "store", None))
    except click.ClickException as error:
        error.show()
        return _json_error(state, EXIT_BAD_INPUT, "bad_input", error.format_message())
    except UserError as error:
        return _failed(state, EXIT_BAD_INPUT, "bad_input", f"Error: {error}")
    except KeyboardInterrupt as error:
        return _interrupted(state, getattr(error, "store", None))
    except Exception as error:  # internal error: short message, traceback only with -v
        if state.verbose:
            raise
        return _failed(
            state,
            EXIT_INTERNAL,
            "internal",
            f"Internal error: {type(error).__name__}: {error}. Rerun with -v for the traceback "
            "and report it.",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
