"""The `klandscape` command line: parses, calls library code, prints. It never computes.

Exit codes: 0 ok, 2 bad input (one paragraph on stderr, no traceback), 1 internal error,
130 interrupted (the partial store is kept and `--resume` continues it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import warnings
from dataclasses import dataclass, field

import click

from keras_landscape import registry
from keras_landscape._version import __version__
from keras_landscape.cli.display import (
    plot_report,
    probes_table,
    progress_display,
    results_summary,
    store_tables,
)
from keras_landscape.engine.options import (
    BN_MODES,
    DEFAULT_BN_BATCH_SIZE,
    DEFAULT_BN_BATCHES,
    parse_strategy,
)
from keras_landscape.errors import UserError
from keras_landscape.experiment.config import describe, load_config, parse_value
from keras_landscape.experiment.spec import RunSpec
from keras_landscape.models.files import check_model_file
from keras_landscape.progress import NullProgress
from keras_landscape.report.plots import FORMATS, PATH_CHOICES, plot_store
from keras_landscape.report.reference import probes_markdown
from keras_landscape.report.tables import summarize_store
from keras_landscape.store import to_json

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


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


@contextlib.contextmanager
def _deferred_interrupts():
    """Hold Ctrl-C while the frameworks import: a KeyboardInterrupt raised inside
    TensorFlow's start-up is sometimes swallowed by it (the run went on) or aborts it in
    native code (no message). A Ctrl-C there is delivered right after the import instead."""
    pending = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _parse_assignments(items: tuple[str, ...], what: str) -> dict[str, str]:
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"Malformed {what} {item!r}: write key=value (e.g. --set alpha=0.95).")
        options[key.strip()] = value.strip()
    return options


def config_overrides(settings: tuple[str, ...]) -> list[tuple[str, object]]:
    """--set KEY=VALUE of `run` and `census`: (dotted key, YAML value) pairs, in order."""
    return [(k, parse_value(v)) for k, v in _parse_assignments(settings, "--set option").items()]


def _state(ctx: click.Context) -> CliState:
    root = ctx.find_root()
    if root.obj is None:  # invoked without main() (click's CliRunner on `cli`)
        root.obj = CliState()
    return root.obj


def _set_verbose(ctx, param, value) -> None:
    if value:
        state = _state(ctx)
        state.verbose = max(state.verbose, value)
        quiet_frameworks(state.verbose)


def _set_quiet(ctx, param, value) -> None:
    if value:
        _state(ctx).quiet = True


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


def distribution_options(command):
    """--strategy, --tpu and --lockstep/--no-lockstep (unset: the config's or the default)."""
    options = [
        click.option(
            "--strategy",
            default=None,
            metavar="NAME[:cpus=N]",
            help="Where stacks of beads run: one (default), mirrored (every local GPU; "
            "mirrored:cpus=N splits the CPU), tpu, multiworker (docs/scaling.md).",
        ),
        click.option("--tpu", default=None, help="The TPU's name or address (default: TPU_NAME)."),
        click.option(
            "--lockstep/--no-lockstep",
            default=None,
            help="Run a probe's strings together in shared stacks (default) or one after "
            "another (same results).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _emit_json(document) -> None:
    click.echo(to_json(document))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="klandscape")
@click.option("-v", "--verbose", count=True, help="More detail (-vv: debug, framework logs).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """keras-landscape: topology and geometry of neural-network loss landscapes."""
    state = _state(ctx)
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
        _emit_json(
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
@click.option(
    "--data",
    "data",
    required=True,
    help="Data spec: digits, cubic, npz:PATH, ... (docs/data-specs.md).",
)
@click.option(
    "--probe", "probes", multiple=True, help="Probe to run (repeatable; default: evaluate)."
)
@click.option("--loss", default=None, help="Keras loss name (default: the model's compiled loss).")
@click.option(
    "--level-fn",
    default="loss",
    show_default=True,
    help="loss, error, perplexity or a Keras metric.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default=None,
    help="Split for the level function (default: test if present).",
)
@click.option("--level", type=float, default=None, help="Level u for probes that take one.")
@click.option(
    "--levels", default=None, help="Levels for curviness: '0.3,0.2,0.1' or 'start:stop:count'."
)
@click.option(
    "--partners",
    type=click.IntRange(min=0),
    default=None,
    help="With one model: fresh partners to train and connect.",
)
@click.option(
    "--retrain-endpoints",
    is_flag=True,
    default=None,
    help="Curviness: train endpoints down to lower levels.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Probe option (repeatable), e.g. --set alpha=0.95.",
)
@click.option(
    "--out", default=None, help="HDF5 store to write (default: klandscape-runs/run-<time>.h5)."
)
@click.option("--resume", is_flag=True, help="Continue the runs in an existing --out store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out store.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--custom-objects", default=None, help="A .py file or module defining custom layers/losses."
)
@click.option(
    "--unsafe",
    is_flag=True,
    help="Allow model files with Lambda layers (Keras safe_mode off: "
    "loading can run any code in the file; only for files you trust).",
)
@click.option(
    "--eval-batch-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Samples per compiled evaluation call.",
)
@click.option(
    "--xla",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="XLA compilation: auto = on for GPU/TPU and for CPU models without convolutions.",
)
@click.option(
    "--tf32", is_flag=True, help="Projections may use TF32 matmuls on GPUs (checks stay float32)."
)
@click.option(
    "--bn-stats",
    type=click.Choice(BN_MODES),
    default=BN_MODES[0],
    show_default=True,
    help="BatchNorm statistics at points between models: "
    "re-estimated from training data at each point, or interpolated like the weights.",
)
@click.option(
    "--bn-batches",
    type=click.IntRange(min=1),
    default=DEFAULT_BN_BATCHES,
    show_default=True,
    help="Training batches BatchNorm statistics are recomputed on.",
)
@click.option(
    "--bn-batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BN_BATCH_SIZE,
    show_default=True,
    help="Samples per batch when recomputing BatchNorm statistics.",
)
@distribution_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def probe_command(
    state: CliState,
    models,
    data,
    probes,
    loss,
    level_fn,
    split,
    level,
    levels,
    partners,
    retrain_endpoints,
    settings,
    out,
    resume,
    overwrite,
    seed,
    custom_objects,
    unsafe,
    eval_batch_size,
    xla,
    tf32,
    bn_stats,
    bn_batches,
    bn_batch_size,
    strategy,
    tpu,
    lockstep,
    as_json,
) -> None:
    """Run probes on MODEL files (.keras or .h5) over the data SPEC."""
    for path in models:  # before the frameworks load: a missing file is reported at once
        check_model_file(path)
    strategy = str(parse_strategy(strategy, tpu))  # a bad name too
    with _deferred_interrupts():
        from keras_landscape.experiment.runner import execute  # imports TensorFlow

    options = _parse_assignments(settings, "--set option")
    for key, value in (
        ("level", level),
        ("levels", levels),
        ("partners", partners),
        ("retrain_endpoints", retrain_endpoints),
    ):
        if value is not None:
            options[key] = value
    spec = RunSpec(
        models=list(models),
        data=data,
        probes=list(probes) or ["evaluate"],
        options=options,
        loss=loss,
        level_fn=level_fn,
        split=split,
        out=out,
        seed=seed,
        custom_objects=custom_objects,
        unsafe=unsafe,
        resume=resume,
        overwrite=overwrite,
        xla={"auto": "auto", "on": True, "off": False}[xla],
        eval_batch_size=eval_batch_size,
        fast_float32=tf32,
        bn_stats=bn_stats,
        bn_batches=bn_batches,
        bn_batch_size=bn_batch_size,
        strategy=strategy,
        tpu=tpu,
        lockstep=True if lockstep is None else lockstep,
        command=state.command_line,
    )
    document = execute(spec, state.progress())
    if as_json:
        _emit_json(document)
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
        _emit_json(summary)
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
        _emit_json(report)
        return
    if state.quiet:
        report = {**report, "skipped": []}
    plot_report(report)


@cli.command("run")
@click.argument("config_file", metavar="CONFIG.yaml")
@click.option("--scale", default=None, help="Merge this entry of the config's `scales` over it.")
@click.option("--out", default=None, help="The store (overrides `out`).")
@click.option("--seed", type=int, default=None, help="Overrides `seed`.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (model.train.epochs=5, probes.curviness.levels=0.1) "
    "or a probe option (max_steps=500); repeatable. Values are YAML.",
)
@click.option("--level", type=float, default=None, help="Level u for probes that take one.")
@click.option(
    "--levels",
    default=None,
    help="Levels for probes that take them: '0.3,0.1' or 'start:stop:count'.",
)
@click.option("--resume", is_flag=True, help="Continue the runs in an existing store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--no-plots", is_flag=True, help="Do not draw figures.")
@click.option(
    "--unsafe", is_flag=True, help="Allow model files with Lambda layers (as `unsafe: true`)."
)
@click.option(
    "--dry-run", is_flag=True, help="Validate and print the resolved settings as JSON; run nothing."
)
@distribution_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def run_command(
    state: CliState,
    config_file,
    scale,
    out,
    seed,
    settings,
    level,
    levels,
    resume,
    overwrite,
    no_plots,
    unsafe,
    dry_run,
    strategy,
    tpu,
    lockstep,
    as_json,
) -> None:
    """Run the experiment described by a YAML config (see configs/)."""
    overrides = config_overrides(settings)
    for key, value in (
        ("out", out),
        ("seed", seed),
        ("level", level),
        ("levels", levels),
        ("unsafe", unsafe or None),
        ("strategy", strategy),
        ("tpu", tpu),
        ("lockstep", lockstep),
    ):
        if value is not None:
            overrides.append((key, value))
    config = load_config(config_file, scale=scale, overrides=overrides, command=state.command_line)
    if dry_run:
        _emit_json(describe(config))
        return
    with _deferred_interrupts():
        from keras_landscape.experiment.runner import run_experiment  # imports TensorFlow

    document = run_experiment(
        config, state.progress(), resume=resume, overwrite=overwrite, plots=not no_plots
    )
    document.update({"config": config_file, "scale": scale})
    if as_json:
        _emit_json(document)
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
    with _deferred_interrupts():
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
        _emit_json(document)
    else:
        for line in summary_lines(document):
            click.echo(line)


@cli.command("export")
@click.argument("store")
@click.option("--run", "run_name", default=None, help="Run holding the string (e.g. connectivity).")
@click.option("--bead", type=int, default=None, help="Bead index along the string (0 = A, -1 = B).")
@click.option("--string", default=None, help="Which string of the run (e.g. pair_0_1), if several.")
@click.option("--model", default=None, help="Export a stored model instead of a bead.")
@click.option("-o", "--output", required=True, help="Output .keras or .h5 file.")
@click.option("--custom-objects", default=None, help="A .py file or module defining custom layers.")
@click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers (Keras safe_mode off; trusted files only)."
)
@verbosity_options
def export_command(store, run_name, bead, string, model, output, custom_objects, unsafe) -> None:
    """Write a bead of a stored string (or a stored model) back as a Keras model."""
    with _deferred_interrupts():
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
        ),
        err=True,
    )


cli.add_command(__import__("keras_landscape.cli.census", fromlist=["_"]).census_command)


def _json_error(
    state: CliState, code: int, kind: str, message: str, store: str | None = None
) -> int:
    """Under --json, the outcome as one JSON document on stdout: a script gets a parseable
    document for every exit code."""
    if "--json" in state.argv:
        _emit_json({"error": {"kind": kind, "message": message, "exit_code": code, "store": store}})
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
    try:
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
