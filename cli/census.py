"""`klandscape census SWEEP.yaml`: train and probe every point of an architecture grid.

Registered in cli/main.py; what it shares with the other commands is in cli/common.py.
"""

from __future__ import annotations

import click

from keras_landscape.cli.common import (
    config_overrides,
    given_overrides,
    setting_options,
    verbosity_options,
)
from keras_landscape.cli.display import print_tables
from keras_landscape.experiment.census import describe_census, load_census
from keras_landscape.progress import deferred_interrupts
from keras_landscape.settings import RunSettings
from keras_landscape.store import to_json


@click.command("census")
@click.argument("sweep_file", metavar="SWEEP.yaml")
@click.option("--scale", default=None, help="Merge this entry of the sweep's `scales` over it.")
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
@setting_options(RunSettings, "census")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@verbosity_options
@click.pass_obj
def census_command(
    state, sweep_file, scale, settings, resume, overwrite, no_plots, dry_run, as_json, **values
) -> None:
    """The landscape census: N replicas per grid point, components and curviness, one store.
    Every run setting is an option here too; given, it overrides the sweep's key (`--out`:
    the census store)."""
    overrides = config_overrides(settings) + given_overrides(RunSettings, "census", values)
    census = load_census(sweep_file, scale=scale, overrides=overrides, command=state.command_line)
    if dry_run:
        click.echo(to_json(describe_census(census)))
        return
    with deferred_interrupts():
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
