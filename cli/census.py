"""`klandscape census SWEEP.yaml`: train and probe every point of an architecture grid.

Registered in cli/main.py. This module does not import cli.main at import time (main
imports it); -q/-v after the subcommand reach main's handlers through small callbacks.
"""

from __future__ import annotations

import click

from keras_landscape.cli.display import print_tables
from keras_landscape.experiment.census import describe_census, load_census
from keras_landscape.store import to_json


def _verbose(ctx, param, value) -> None:
    from keras_landscape.cli.main import _set_verbose

    _set_verbose(ctx, param, value)


def _quiet(ctx, param, value) -> None:
    from keras_landscape.cli.main import _set_quiet

    _set_quiet(ctx, param, value)


def _assignments(settings: tuple[str, ...]) -> list[tuple[str, object]]:
    from keras_landscape.cli.main import config_overrides  # main imports this module

    return config_overrides(settings)


@click.command("census")
@click.argument("sweep_file", metavar="SWEEP.yaml")
@click.option("--scale", default=None, help="Merge this entry of the sweep's `scales` over it.")
@click.option("--out", default=None, help="The census store (overrides `out`).")
@click.option("--seed", type=int, default=None, help="Overrides `seed`.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a sweep key (grid.width=[1,2], replicas=3, components.levels=0.1, "
    "model.train.epochs=5) or a probe option (max_steps=500); repeatable. Values are YAML.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted census in its store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--no-plots", is_flag=True, help="Do not draw figures.")
@click.option(
    "--dry-run", is_flag=True, help="Validate, print the grid points as JSON; run nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    callback=_verbose,
    help="More detail (-vv: debug, framework logs).",
)
@click.option(
    "-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet, help="No progress display."
)
@click.pass_obj
def census_command(
    state, sweep_file, scale, out, seed, settings, resume, overwrite, no_plots, dry_run, as_json
) -> None:
    """The landscape census: N replicas per grid point, components and curviness, one store."""
    from keras_landscape.cli.main import _deferred_interrupts

    overrides = _assignments(settings)
    for key, value in (("out", out), ("seed", seed)):
        if value is not None:
            overrides.append((key, value))
    census = load_census(sweep_file, scale=scale, overrides=overrides, command=state.command_line)
    if dry_run:
        click.echo(to_json(describe_census(census)))
        return
    with _deferred_interrupts():
        import keras_landscape.experiment.runner  # noqa: F401  (imports TensorFlow)
        from keras_landscape.experiment.census import run_census

    document = run_census(
        census, state.progress(), resume=resume, overwrite=overwrite, plots=not no_plots
    )
    document.update({"config": sweep_file, "scale": scale})
    if as_json:
        click.echo(to_json(document))
        return
    from keras_landscape.report.census import census_tables

    print_tables(census_tables(document["store"]))
    click.echo(f"store: {document['store']}")
    if document["figures"]:
        count = len(document["figures"])
        click.echo(f"figures: {document['figures_dir']}/ ({count} file{'s' if count != 1 else ''})")


__all__ = ["census_command"]
